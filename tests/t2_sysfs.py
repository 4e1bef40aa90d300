"""The sysfs view, written and read as the kernel's, and the real daxctl driving it
through `daxfuse exec`."""
import errno
import itertools
import json
import os
import random
import stat
import shutil
import subprocess

import pytest

from conftest import write_errno
from daxfuse.testing import DAXFUSE


MiB = 1 << 20
pytestmark = [pytest.mark.mounted, pytest.mark.timeout(120)]
needs_daxctl = pytest.mark.skipif(shutil.which("daxctl") is None,
                                  reason="daxctl is missing (scripts/test installs it)")


@pytest.fixture
def region(daxfuse_factory):
    """A kernel-style dynamic region: 1 GiB, 2M align, born with its size-0 seed dax0.0."""
    return daxfuse_factory("--size", "1G", "--no-default-device")


def sys_path(d, *parts):
    return d.path("sys", *parts)


def dev_dir(d, name):
    return os.path.realpath(sys_path(d, "bus", "dax", "devices", name))


def write_attr(path, text, nul=True):
    """One write of text (+ NUL, as daxctl does); the errno on failure."""
    return write_errno(path, text.encode() + (b"\0" if nul else b""))


def read_attr(path):
    with open(path) as f:
        return f.read().rstrip("\n")


def daxctl(d, *args, check=True):
    r = subprocess.run([*DAXFUSE, "exec", "-m", d.mountpoint, "--", "daxctl", *args],
                       capture_output=True, text=True, timeout=60)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def daxfuse_list(d, *flags):
    r = subprocess.run([*DAXFUSE, "list", "-m", d.mountpoint, *flags], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_tree_matches_the_kernels_layout(region):
    d = region
    assert dev_dir(d, "dax0.0") == sys_path(d, "devices", "platform", "daxfuse.0", "dax0.0")
    base = dev_dir(d, "dax0.0")
    assert os.path.realpath(os.path.join(base, "subsystem")) == sys_path(d, "bus", "dax")
    assert not os.path.lexists(os.path.join(base, "driver"))  # size 0: not bound
    rb = os.path.join(base, "..", "dax_region")
    assert {n: read_attr(os.path.join(rb, n)) for n in ("id", "size", "align", "available_size", "seed")} == {
        "id": "0", "size": str(1 << 30), "align": str(2 * MiB), "available_size": str(1 << 30), "seed": "dax0.0"}
    assert read_attr(os.path.join(base, "modalias")) == "dax:t0"
    major_minor = read_attr(os.path.join(base, "dev"))
    assert os.path.realpath(sys_path(d, "dev", "char", major_minor)) == base
    assert read_attr(sys_path(d, "module", "device_dax", "initstate")) == "live"
    # every platform device, as ndctl's daxdev-errors looks it up; a new region's too
    d.control("create-region size=16M id=5")
    platform = sorted(n for n in os.listdir(sys_path(d, "devices", "platform")) if n.startswith("daxfuse"))
    assert set(platform) <= set(os.listdir(sys_path(d, "bus", "platform", "devices")))
    assert "daxfuse.5" in platform
    for name in platform:
        assert os.path.realpath(sys_path(d, "bus", "platform", "devices", name)) == sys_path(d, "devices", "platform", name)
    d.control("destroy-region 5")
    assert not os.path.lexists(sys_path(d, "bus", "platform", "devices", "daxfuse.5"))
    assert os.path.exists(d.path("dev", "dax0.0"))
    assert os.readlink(d.path("dev", "fuse")) == ".host/fuse"  # resolves under daxfuse exec
    assert stat.S_ISREG(os.lstat(d.path("dev", "null")).st_mode)  # where exec mounts the host's


def test_attribute_writes_follow_the_kernel(region):
    d = region
    base = dev_dir(d, "dax0.0")
    rb = os.path.join(base, "..", "dax_region")
    drv = sys_path(d, "bus", "dax", "drivers", "device_dax")
    assert write_attr(os.path.join(base, "align"), "bogus") == errno.ENXIO
    assert write_attr(os.path.join(base, "align"), "0x3000") == errno.EINVAL
    assert write_attr(os.path.join(base, "size"), "0x100001") == errno.EINVAL
    assert write_attr(os.path.join(base, "size"), "0x80000000") == errno.ENOSPC
    assert write_attr(os.path.join(drv, "bind"), "dax0.0") == errno.ENXIO  # size 0
    assert write_attr(os.path.join(base, "size"), "0x10000000\n") == 0
    assert read_attr(os.path.join(base, "size")) == str(256 * MiB)
    assert read_attr(os.path.join(rb, "available_size")) == str(768 * MiB)  # never stale
    assert write_attr(os.path.join(drv, "bind"), "dax0.0") == 0
    assert os.path.islink(os.path.join(base, "driver"))
    assert write_attr(os.path.join(base, "size"), "0") == errno.EBUSY
    assert write_attr(os.path.join(rb, "create"), "2") == errno.EINVAL
    assert write_attr(os.path.join(rb, "create"), "1") == 0
    assert read_attr(os.path.join(rb, "create")) == "dax0.1"
    assert read_attr(os.path.join(rb, "seed")) == "dax0.1"
    assert write_attr(os.path.join(rb, "delete"), "dax0.0") == errno.EBUSY  # enabled
    assert write_attr(os.path.join(rb, "delete"), "dax0.7") == errno.ENXIO
    m = dev_dir(d, "dax0.1")
    phys = int(read_attr(os.path.join(base, "resource")), 16)  # dax0.0 starts the region: its physical start
    assert phys >= 4 << 30 and phys % (1 << 30) == 0, "above the host's memory, GiB-aligned"
    # mapping, as 6.18's mapping_store: physical addresses in hex; the length
    # a multiple of the align (ENXIO), the start need not be; taken: ENOMEM
    assert write_attr(os.path.join(m, "mapping"), f"{phys + 0x30000000:#x}-{phys + 0x301fffff:#x}") == 0
    assert read_attr(os.path.join(m, "mapping0", "start")) == f"{phys + 0x30000000:#x}"
    assert read_attr(os.path.join(m, "mapping0", "end")) == f"{phys + 0x301fffff:#x}"
    assert write_attr(os.path.join(m, "mapping"), f"{phys:x}-{phys + 0x1fffff:x}") == errno.ENOMEM  # dax0.0's
    assert write_attr(os.path.join(m, "mapping"), f"{phys + 0x30200000:#x}-{phys + 0x302fffff:#x}") == errno.ENXIO
    assert write_attr(os.path.join(m, "mapping"), "0x0-0x1fffff") == errno.ENOMEM  # below the region
    assert write_attr(os.path.join(m, "mapping"), f"{phys + 0x30300000:#x}-{phys + 0x304fffff:#x}") == 0
    assert read_attr(os.path.join(m, "mapping1", "start")) == f"{phys + 0x30300000:#x}", "start not aligned"
    assert write_attr(os.path.join(m, "size"), "0") == 0
    assert write_attr(os.path.join(rb, "delete"), "dax0.1") == 0
    assert not os.path.exists(d.path("dax", "dax0.1"))
    assert write_attr(os.path.join(drv, "unbind"), "dax0.0") == 0
    assert not os.path.lexists(os.path.join(base, "driver"))
    with pytest.raises(OSError) as e:
        open(d.path("dax", "dax0.0"), "rb")
    assert e.value.errno == errno.ENXIO


def test_control_file_and_sysfs_are_one_model(region):
    d = region
    d.control("resize-device dax0.0 size=64M\nenable-device dax0.0")
    base = dev_dir(d, "dax0.0")
    assert read_attr(os.path.join(base, "size")) == str(64 * MiB)
    assert os.path.islink(os.path.join(base, "driver"))
    write_attr(os.path.join(base, "..", "dax_region", "create"), "1")
    assert [dev["name"] for dev in d.layout()[0]["devices"]] == ["dax0.0", "dax0.1"]
    assert os.listdir(d.path("dax")) == ["dax0.0", "dax0.1"]


@needs_daxctl
def test_daxctl_create_reconfigure_disable_enable_destroy(region):
    d = region
    out = json.loads(daxctl(d, "create-device", "-r", "0", "-s", "256M").stdout)
    assert out[0]["chardev"] == "dax0.0" and out[0]["size"] == 256 * MiB
    fd = os.open(d.path("dax", "dax0.0"), os.O_RDWR)  # enabled: the data path works
    os.pwrite(fd, b"via daxctl", 0)
    os.close(fd)
    daxctl(d, "disable-device", "dax0.0")
    assert json.loads(daxctl(d, "list", "-D").stdout)[0]["state"] == "disabled"
    daxctl(d, "reconfigure-device", "dax0.0", "-s", "128M", "-a", "4K")
    daxctl(d, "enable-device", "dax0.0")
    dev = json.loads(daxctl(d, "list", "-D").stdout)[0]
    assert (dev["size"], dev["align"], "state" in dev) == (128 * MiB, 4096, False)
    r = daxctl(d, "reconfigure-device", "dax0.0", "-s", "64M", check=False)  # enabled: refused
    assert r.returncode != 0 and "reconfigured 0 devices" in r.stderr
    # an application inside the namespace reaches the device through /dev
    r = subprocess.run([*DAXFUSE, "exec", "-m", d.mountpoint, "--read-write", "--", "head", "-c", "10", "/dev/dax0.0"],
                       capture_output=True, timeout=60)
    assert r.stdout == b"via daxctl"
    name = json.loads(daxctl(d, "create-device", "-r", "0", "-s", "64M").stdout)[0]["chardev"]
    daxctl(d, "disable-device", name)
    daxctl(d, "destroy-device", name)
    assert not os.path.exists(d.path("dax", name))
    # as on the kernel, id 0 stays while its region does: emptied, not deleted
    daxctl(d, "disable-device", "dax0.0")
    r = daxctl(d, "destroy-device", "dax0.0", check=False)
    assert r.returncode != 0 and "Device or resource busy" in r.stderr
    assert ("dax0.0", 0) in [(x["chardev"], x["size"]) for x in json.loads(daxctl(d, "list", "-Di").stdout)]


@needs_daxctl
def test_daxctl_acts_on_devices_in_the_kernels_listing_order(region):
    """kernfs lists by name hash: dax0.2, dax0.0, dax0.1. `destroy-device
    all` reports its last device's status, so it succeeds as on the kernel
    (dax0.1 last); in creation order dax0.0, which stays (EBUSY), would come
    last and fail it."""
    d = region
    for _ in range(2):
        daxctl(d, "create-device", "-r", "0", "-s", "64M")  # dax0.0, dax0.1, and the seed dax0.2
    assert os.listdir(sys_path(d, "bus", "dax", "devices")) == ["dax0.2", "dax0.0", "dax0.1"]
    daxctl(d, "disable-device", "-r", "0", "all")
    r = daxctl(d, "destroy-device", "-r", "0", "all", check=False)
    assert r.returncode == 0, r.stderr
    assert [(x["chardev"], x["size"]) for x in json.loads(daxctl(d, "list", "-Di").stdout)] == [("dax0.0", 0)]


@needs_daxctl
def test_daxctl_device_over_a_hole_and_the_tail(region):
    d = region
    for _ in range(2):
        daxctl(d, "create-device", "-r", "0", "-s", "128M", "-a", "2M")
    daxctl(d, "disable-device", "dax0.0")
    d.control("destroy-device dax0.0")          # a hole at the start of the region
    out = json.loads(daxctl(d, "create-device", "-r", "0", "-s", "256M", "-a", "4K").stdout)[0]
    assert out["align"] == 4096
    listed = [dev for dev in json.loads(daxctl(d, "list", "-DM").stdout) if dev["chardev"] == out["chardev"]][0]
    phys = int(read_attr(sys_path(d, "bus", "nd", "devices", "region0", "resource")), 16)
    assert sorted((m["start"] - phys, m["size"]) for m in listed["mappings"]) == [(0, 128 * MiB), (256 * MiB, 128 * MiB)]
    assert daxfuse_list(d, "-RDMi") == daxctl(d, "list", "-RDMi").stdout
    assert daxfuse_list(d) == daxctl(d, "list").stdout


@needs_daxctl
def test_daxctl_system_ram_mode_fails_clearly(region):
    d = region
    daxctl(d, "create-device", "-r", "0", "-s", "64M")
    r = daxctl(d, "reconfigure-device", "-m", "system-ram", "dax0.0", check=False)
    assert r.returncode != 0 and "reconfigured 0 devices" in r.stderr
    assert d.proc.poll() is None  # the daemon is unharmed
    assert daxctl(d, "list").returncode == 0


def test_names_and_numbers_parse_as_the_kernel(region):
    d = region
    base = dev_dir(d, "dax0.0")
    for name in ("dax0.²", "dax0.٠", "dax0.00", "daxfuse.٠"):
        assert not os.path.exists(d.path("dax", name))
        assert not os.path.exists(sys_path(d, "bus", "dax", "devices", name))
    assert write_attr(os.path.join(base, "size"), "-0x200000") == errno.EINVAL
    assert write_attr(os.path.join(base, "size"), "1_000") == errno.EINVAL
    assert write_attr(os.path.join(base, "size"), "+0x200000") == 0     # kstrtoull takes '+'
    assert write_attr(os.path.join(base, "size"), "010000000") == 0     # a leading 0 is octal
    assert read_attr(os.path.join(base, "size")) == str(0o10000000)
    d.control("enable-device dax0.0")
    # the value is checked before the state, as the kernel does
    assert write_attr(os.path.join(base, "size"), "0x1001") == errno.EINVAL
    assert write_attr(os.path.join(base, "align"), "0x3000") == errno.EINVAL
    assert write_attr(os.path.join(base, "size"), "0x400000") == errno.EBUSY


LIST_FLAGS = ["".join(f) for f in itertools.product(["", "R"], ["", "D"], ["", "M"], ["", "i"])]


@needs_daxctl
@pytest.mark.parametrize("layout", [
    "",  # a fresh --no-default-device mount: only the seed dax0.0, of size 0
    "create-device region=0 size=16M\ncreate-device region=0 size=8M\ndisable-device dax0.1\n"
    "create-region size=8M align=4K\ncreate-device region=1 size=4M\ncreate-region size=2M",
    "create-region size=8M align=4K target_node=-1 numa_node=-1\ncreate-device region=1 size=4M\n"
    "create-region size=8M align=4K target_node=3 numa_node=1\ncreate-device region=2 size=4M",
    "create-device region=0 size=16M\ncreate-region size=512M target_node=1 type=kmem\n"
    "create-device region=1 size=256M\ncreate-device region=1 size=256M",
], ids=["seed-only", "two-regions", "nodes", "system-ram"])
def test_daxfuse_list_is_daxctl_list_for_every_flag_combination(region, layout):
    if layout:
        region.control(layout)
    for dev in (dev for r in region.layout() for dev in r["devices"] if dev["name"] == "dax1.0"):
        for block in dev["memory_blocks"]:  # one system-ram device online, the other not
            assert write_attr(sys_path(region, "devices", "system", "memory", f"memory{block['index']}", "state"),
                              "online_movable") == 0
    for flags in LIST_FLAGS:
        args = [f"-{flags}"] if flags else []
        assert daxfuse_list(region, *args) == daxctl(region, "list", *args).stdout, f"list {' '.join(args)}"


def _walk(top: str) -> list[str]:
    """Every path under top, each looked up (so the kernel caches it); in
    sys/, the emulated trees alone (the host's are passed through live)."""
    if os.path.basename(top) == "sys":
        tops = [os.path.join(top, "bus", "dax"), os.path.join(top, "bus", "nd")]
        tops += [os.path.join(top, "devices", "platform", n) for n in os.listdir(os.path.join(top, "devices", "platform"))
                 if n.startswith("daxfuse")]
        return [top for top in tops] + [path for top in tops for path in _walk(top)]
    found = []
    for parent, dirs, files in os.walk(top):
        for name in dirs + files:
            os.lstat(os.path.join(parent, name))
            found.append(os.path.join(parent, name))
    return found


def _stale(paths: list[str]) -> list[str]:
    """The paths that a lookup still finds though their directory no longer
    lists them (READDIR always asks the daemon; a lookup may be answered by
    the kernel's cache): what a change forgot to drop."""
    stale = []
    for path in paths:
        parent, name = os.path.split(path)
        try:
            listed = name in os.listdir(parent)
        except (FileNotFoundError, NotADirectoryError):
            listed = False
        if os.path.lexists(path) != listed:
            stale.append(path)
    return stale


def test_the_kernel_never_finds_an_entry_a_change_removed(region):
    """Entries are cached for seconds, and every change drops what it made
    stale before it is answered: after each step, no path found before it
    is found unless listed. Steps cover each place a device or region shows:
    its driver link (unbind), its mappingN (shrink), its namespace (size 0),
    its directories and links (destroy), a whole region (destroy-region)."""
    d = region
    rng = random.Random(20)
    steps = []
    for _ in range(40):
        live = [n for n in os.listdir(d.path("dax"))]
        name = rng.choice(live) if live else None
        step = rng.choice([
            "create-device region=0 size=4M",
            f"disable-device {name}", f"enable-device {name}",
            f"disable-device {name}\nresize-device {name} size=2M",
            f"disable-device {name}\nresize-device {name} size=0",
            f"disable-device {name}\ndestroy-device {name}",
            "create-region size=8M align=2M id=1\ncreate-device region=1 size=4M",
            "disable-device dax1.1\ndestroy-device dax1.1\ndestroy-region 1",
        ])
        before = _walk(d.path("sys")) + _walk(d.path("dax"))
        try:
            d.control(step)
        except OSError:
            continue  # refused (EBUSY, ENXIO...): nothing changed
        steps.append(step)
        assert not _stale(before), f"after {step!r}: {_stale(before)}"
    assert len(steps) >= 15, steps


def test_a_driver_link_is_gone_when_unbind_returns(region):
    """What daxctl disable-device checks right after its write."""
    d = region
    d.control("create-device region=0 size=4M")
    link = os.path.join(dev_dir(d, "dax0.0"), "driver")
    listed = sys_path(d, "bus", "dax", "drivers", "device_dax", "dax0.0")
    assert os.path.islink(link) and os.path.islink(listed)
    assert write_attr(sys_path(d, "bus", "dax", "drivers", "device_dax", "unbind"), "dax0.0") == 0
    assert not os.path.lexists(link) and not os.path.lexists(listed)


def _requests(d) -> int:
    """Read calls the daemon made: one per FUSE request it took, and little else."""
    with open(f"/proc/{d.proc.pid}/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("syscr:"))


def test_a_walk_of_cached_sysfs_asks_the_daemon_nothing(region):
    """What makes daxctl's walks cheap at any scale: once looked up, entries
    and attributes stay with the kernel until a change drops them, so a
    second walk of every path, 100 devices' worth, costs no request."""
    d = region
    d.control("create-region size=200M align=4K id=1\n" + "\n".join(["create-device region=1 size=2M"] * 100))
    paths = _walk(d.path("sys"))
    assert len(paths) > 2000
    for path in paths:  # a directory read has made its own time stale: one GETATTR each
        os.lstat(path)
    before = _requests(d)
    for path in paths:
        os.lstat(path)
    assert _requests(d) - before < 10, "a cached lookup went to the daemon"
    d.control("disable-device dax1.7")  # drops dax1.7's entries only
    before = _requests(d)
    for path in paths:
        if not path.endswith(("device_dax/dax1.7", "dax1.7/driver")):  # the links its unbind removed
            os.lstat(path)
    assert 0 < _requests(d) - before < 100, "a change dropped more than its device's entries"


def test_node_attributes_and_memmap_on_memory(region):
    """target_node is hidden while negative (dev_dax_visible); numa_node is
    the region's, -1 included; memmap_on_memory takes kstrtobool and is
    EOPNOTSUPP to turn on where the host's memory_hotplug cannot."""
    d = region
    d.control("create-region size=8M align=4K target_node=-1 numa_node=-1\ncreate-device region=1 size=4M\n"
              "create-region size=8M align=4K target_node=3 numa_node=1\ncreate-device region=2 size=4M")
    hidden, shown = dev_dir(d, "dax1.0"), dev_dir(d, "dax2.0")
    assert "target_node" not in os.listdir(hidden) and not os.path.exists(os.path.join(hidden, "target_node"))
    assert read_attr(os.path.join(hidden, "numa_node")) == "-1"
    assert (read_attr(os.path.join(shown, "target_node")), read_attr(os.path.join(shown, "numa_node"))) == ("3", "1")
    assert read_attr(sys_path(d, "bus", "nd", "devices", "region2", "numa_node")) == "1"
    for bad in ("target_node=-2", "numa_node=1024", "target_node=x"):
        with pytest.raises(OSError) as e:
            d.control(f"create-region size=2M {bad}")
        assert e.value.errno == errno.EINVAL
    attr = os.path.join(shown, "memmap_on_memory")
    assert read_attr(attr) == "0"
    assert write_attr(attr, "off") == 0 and write_attr(attr, "bogus") == errno.EINVAL
    with open("/sys/module/memory_hotplug/parameters/memmap_on_memory") as f:
        supported = f.read().strip() not in ("N", "0")
    assert write_attr(attr, "Y") == (0 if supported else errno.EOPNOTSUPP)
    assert read_attr(attr) == ("1" if supported else "0")


def test_a_4k_aligned_device_still_grows_in_2m_steps(region):
    """alloc_is_aligned(): max(align, memremap_compat_align()), 2 MiB on
    x86_64, for sysfs size, mapping lengths, the control file and the CLI."""
    d = region
    d.control("create-region size=64M align=4K id=1")
    base = dev_dir(d, "dax1.0")
    assert write_attr(os.path.join(base, "size"), "0x1000") == errno.EINVAL
    assert write_attr(os.path.join(base, "size"), "0x201000") == errno.EINVAL
    assert write_attr(os.path.join(base, "size"), "0x400000") == 0
    with pytest.raises(OSError) as e:
        d.control("create-device region=1 size=4K")
    assert e.value.errno == errno.EINVAL and "memremap_compat_align" in e.value.strerror
    r = subprocess.run([*DAXFUSE, "create-device", "-m", d.mountpoint, "-r", "1", "-s", "12K", "-a", "4K"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "EINVAL" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert d.create_device(1, "6M", align="4K") == "dax1.0"  # the seed, sized through sysfs, grown by a step
    assert read_attr(os.path.join(base, "size")) == str(6 << 20)


def test_exec_sys_is_the_hosts_with_the_emulated_laid_over(region):
    """numactl, libnuma and ndctl's tests find the host's nodes, CPUs,
    memory blocks and hugepages inside exec, beside the emulated bus; the
    host's own attributes read live, and keep the host's owner and mode."""
    d = region
    script = ("{ numactl -H 2>/dev/null || echo no numactl; } | head -1; ls /sys/kernel/mm/hugepages | head -1; "
              "cat /sys/devices/system/memory/block_size_bytes; ls /sys/bus/dax/devices; "
              "stat -c '%u %a' /sys/kernel/mm/transparent_hugepage/enabled; "
              "ls /sys/devices/platform | grep -c daxfuse; ls /sys/module | grep -c .")
    r = subprocess.run([*DAXFUSE, "exec", "-m", d.mountpoint, "--", "sh", "-c", script],
                       capture_output=True, text=True, timeout=60)
    lines = r.stdout.splitlines()
    host_nodes = len([n for n in os.listdir("/sys/devices/system/node") if n[4:].isdigit() and n.startswith("node")])
    numactl = f"available: {host_nodes} nodes" if shutil.which("numactl") else "no numactl"  # scripts/test has it
    assert lines[0].startswith(numactl), r.stdout + r.stderr
    assert lines[1] == sorted(os.listdir("/sys/kernel/mm/hugepages"))[0]
    with open("/sys/devices/system/memory/block_size_bytes") as f:
        assert lines[2] == f.read().strip()
    assert lines[3] == "dax0.0", "the emulated bus, not the host's"
    st = os.stat("/sys/kernel/mm/transparent_hugepage/enabled")
    assert lines[4] == f"{st.st_uid} {oct(st.st_mode & 0o777)[2:]}"
    assert lines[5] == "2", "daxfuse.0 and daxfuse-nvdimm among the host's platform devices"
    assert int(lines[6]) >= len(os.listdir("/sys/module")), "the host's modules, and the emulated ones"


@needs_daxctl
def test_daxctl_create_device_input_recreates_its_mappings(region, tmp_path):
    """daxctl-create.sh's round trip: a device of two mappings, listed with
    -M, destroyed, then made again from that JSON through mapping writes
    (physical addresses, in page_offset order): the same ranges come back."""
    d = region
    for size in ("256M", "128M"):
        daxctl(d, "create-device", "-r", "0", "-s", size)
    daxctl(d, "disable-device", "dax0.0")
    daxctl(d, "reconfigure-device", "dax0.0", "-s", "0")  # a hole at the region's start
    name = json.loads(daxctl(d, "create-device", "-r", "0", "-s", "512M").stdout)[0]["chardev"]
    (listed,) = json.loads(daxctl(d, "list", "-M", "-d", name).stdout)
    assert len(listed["mappings"]) == 2
    spec = tmp_path / "device.json"
    spec.write_text(json.dumps(listed))  # one object, as daxctl's --input reads
    daxctl(d, "disable-device", name)
    daxctl(d, "destroy-device", name)
    made = json.loads(daxctl(d, "create-device", "-r", "0", "--input", str(spec)).stdout)[0]
    (again,) = json.loads(daxctl(d, "list", "-M", "-d", made["chardev"]).stdout)
    assert (again["size"], sorted(again["mappings"], key=lambda m: m["page_offset"])) == \
        (listed["size"], sorted(listed["mappings"], key=lambda m: m["page_offset"]))


def test_links_are_cached_and_a_reused_minor_leads_to_its_new_device(region):
    """The kernel keeps what a link points to (FUSE_CAP_CACHE_SYMLINKS,
    daemon/cache_symlinks.c): a link followed again asks the daemon nothing.
    A minor's /sys/dev/char link keeps its name when the minor goes to
    another device, and then leads there, not to the old one."""
    d = region
    d.control("create-region size=8M id=1\ncreate-device region=1 size=2M\ncreate-region size=8M id=2")
    link = sys_path(d, "bus", "dax", "devices", "dax1.0")
    os.readlink(link)
    before = _requests(d)
    for _ in range(50):
        os.readlink(link)
        os.stat(os.path.join(link, "size"))  # through the link
    assert _requests(d) - before < 10, "a cached link went to the daemon"  # 100 READLINKs uncached
    major, minor = read_attr(os.path.join(link, "dev")).split(":")
    char = sys_path(d, "dev", "char", f"{major}:{minor}")
    assert os.path.realpath(char) == dev_dir(d, "dax1.0")
    held = os.open(char, os.O_PATH | os.O_NOFOLLOW)  # keeps the link's inode, and so its number, cached
    d.control("disable-device dax1.0\ndestroy-device dax1.0")  # its minor is free once the batch is done
    d.control("create-device region=2 size=2M\ncreate-device region=2 size=2M")  # dax2.0, then dax2.1 on it
    moved = [name for name in os.listdir(d.path("dax")) if name.startswith("dax2.")
             if read_attr(sys_path(d, "bus", "dax", "devices", name, "dev")) == f"{major}:{minor}"]
    assert moved, "the minor went to a device of region 2"
    assert os.path.realpath(char) == dev_dir(d, moved[0]), "the cached target was dropped"
    os.close(held)
