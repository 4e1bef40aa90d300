"""The NVDIMM bus view that ndctl and PMDK walk, inside `daxfuse exec`."""
import errno
import json
import mmap
import os
import shutil
import struct
import sys

import pytest

from conftest import inside, write_errno


pytestmark = [pytest.mark.mounted, pytest.mark.timeout(120),
              pytest.mark.skipif(shutil.which("ndctl") is None, reason="ndctl is missing (scripts/test installs it)")]

MiB = 1 << 20


def test_ndctl_lists_bus_dimm_regions_and_a_devdax_namespace_per_device(daxfuse_factory):
    d = daxfuse_factory("--size", "64M")
    d.control("create-region size=32M align=4K id=1\ncreate-device region=1 size=8M\n"
              "create-device region=1 size=4M\ncreate-device region=1 size=0")
    r = inside(d, "ndctl", "list", "-RBNDMv")
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    (bus,) = json.loads(r.stdout)
    assert bus["provider"] == "daxfuse" and [m["dev"] for m in bus["dimms"]] == ["nmem0"]
    regions = {r["dev"]: r for r in bus["regions"]}
    assert set(regions) == {"region0", "region1"}
    r1 = regions["region1"]
    assert (r1["size"], r1["align"], r1["type"], r1["persistence_domain"]) == (32 * MiB, 4096, "pmem",
                                                                               "memory_controller")
    assert r1["mappings"] == [{"dimm": "nmem0", "offset": 64 * MiB, "length": 32 * MiB, "position": 0}]
    namespaces = {n["dev"]: n for n in r1["namespaces"]}
    assert set(namespaces) == {"namespace1.0", "namespace1.1"}, "no namespace for a device of size 0"
    for name, size in (("namespace1.0", 8 * MiB), ("namespace1.1", 4 * MiB)):
        ns = namespaces[name]
        assert (ns["mode"], ns["size"], ns["align"]) == ("devdax", size, 4096)
        (dev,) = ns["daxregion"]["devices"]
        assert dev["chardev"] == f"dax1.{name[-1]}" and dev["size"] == size
    # daxctl's own view is unchanged: the dynamic dax regions
    r = inside(d, "daxctl", "list", "-R")
    assert [x["path"] for x in json.loads(r.stdout)] == ["/platform/daxfuse.1", "/platform/daxfuse.0"]


def test_deep_flush_makes_mapped_stores_durable(daxfuse_factory, tmp_path):
    """Writing 1 to a region's deep_flush writes clients' dirty mapped pages
    back into the memory file."""
    memory = tmp_path / "memory"
    d = daxfuse_factory("--size", "64M", "--memory-file", str(memory))
    fd = os.open(d.path("dax", "dax0.0"), os.O_RDWR)
    with mmap.mmap(fd, 4096, mmap.MAP_SHARED) as m:
        m[:7] = b"durable"  # in the page cache, not yet in the memory file
        assert memory.read_bytes()[:7] == bytes(7)
        deep_flush = d.path("sys", "devices", "platform", "daxfuse-nvdimm", "ndbus0", "region0", "deep_flush")
        with open(deep_flush) as f:
            assert f.read() == "1\n"
        with open(deep_flush, "w") as f:
            f.write("1")
        assert memory.read_bytes()[:7] == b"durable"
    os.close(fd)


def test_namespaces_follow_the_devices(daxfuse_factory):
    d = daxfuse_factory("--size", "64M")
    r = inside(d, "ndctl", "list", "-N")
    assert [n["dev"] for n in json.loads(r.stdout)] == ["namespace0.0"]
    d.control("disable-device dax0.0\nresize-device dax0.0 size=0")
    assert inside(d, "ndctl", "list", "-N").stdout == ""


def test_short_or_malformed_ioctls_fail_alone_and_change_nothing(daxfuse_factory):
    """Every command with every payload too short is EINVAL, never EIO with
    a traceback; an injection whose payload has no room for its status
    poisons nothing."""
    import errno
    import random
    import struct
    d = daxfuse_factory("--size", "64M")
    node = d.path("dev", "ndctl0")
    fd = os.open(node, os.O_RDWR)
    rng = random.Random(7)
    try:
        for _ in range(500):
            nr, need = rng.choice([(1, 32), (2, 32), (3, 48), (4, 32), (10, 64)])
            payload = rng.randbytes(rng.randrange(0, need))
            with pytest.raises(OSError) as e:
                os.pwrite(fd, struct.pack("<I", nr) + payload, 0)
            assert e.value.errno in (errno.EINVAL, errno.ENOTTY), (nr, payload)
        pkg = struct.pack("<QQII", 0, 7, 17, 4) + bytes(40)  # INJECT_SET, with 16 bytes of body
        with pytest.raises(OSError) as e:
            os.pwrite(fd, struct.pack("<I", 10) + pkg + struct.pack("<QQ", 0, 512), 0)
        assert e.value.errno == errno.EINVAL
    finally:
        os.close(fd)
    assert all(dev["badblocks"] == [] for r in d.layout() for dev in r["devices"]), "nothing poisoned"
    assert "Traceback" not in d.log()


def test_regions_and_namespaces_report_emulated_physical_addresses(daxfuse_factory):
    """Above the host's own memory and GiB-aligned, as ndctl and the
    kernel's resource tree would show them; a namespace where its device is."""
    d = daxfuse_factory("--size", "64M")
    d.control("create-region size=32M align=4K id=1\ncreate-device region=1 size=8M")

    def read(*parts):
        with open(d.path("sys", *parts)) as f:
            return int(f.read(), 16)
    nd = ("bus", "nd", "devices")
    base = read(*nd, "region0", "resource")
    host_end = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if os.path.isdir("/sys/devices/system/memory"):  # the memory blocks exec shows beside ours
        with open("/sys/devices/system/memory/block_size_bytes") as f:
            host_end = int(f.read(), 16) * (1 + max(int(n[6:]) for n in os.listdir("/sys/devices/system/memory")
                                                    if n.startswith("memory") and n[6:].isdigit()))
    assert base >= max(host_end, 4 << 30) and base % (1 << 30) == 0
    assert read(*nd, "region1", "resource") == base + 64 * MiB
    assert read(*nd, "namespace1.0", "resource") == read("bus", "dax", "devices", "dax1.0", "resource") == base + 64 * MiB


def _ok(r, said: str) -> None:
    assert r.returncode == 0 and said in r.stderr, r.stdout + r.stderr


def _open_errno(d, path: str) -> int:
    """The errno of opening path inside exec (0 if it opens)."""
    r = inside(d, sys.executable, "-c", "import os, sys\ntry: os.open(sys.argv[1], os.O_RDWR)\n"
                                        "except OSError as e: sys.exit(e.errno)", path)
    return r.returncode


def _one(listing: str) -> dict:
    """The one region ndctl listed (alone, in a list of one, or in its bus's "regions")."""
    found = json.loads(listing)
    if type(found) is dict and "regions" in found:
        found = found["regions"]
    if type(found) is list:
        (found,) = found
    return found


def _states(d) -> dict:
    return {dev["name"]: dev["state"] for region in d.layout() for dev in region["devices"]}


def test_ndctl_disables_and_enables_a_namespace_and_its_device_keeps_its_data(daxfuse_factory):
    """disable-namespace unbinds the nd dax device (dax_pmem/unbind): the
    device goes down and /dev/dax0.0 no longer opens; enable-namespace
    binds the namespace and the device comes back with its data."""
    d = daxfuse_factory("--size", "64M")
    fd = os.open(d.path("dax", "dax0.0"), os.O_RDWR)
    os.pwrite(fd, b"kept", 4096)
    os.close(fd)
    nd_dax = d.path("sys", "bus", "nd", "devices", "dax0.0")
    _ok(inside(d, "ndctl", "disable-namespace", "namespace0.0"), "disabled 1 namespace")
    assert _states(d)["dax0.0"] == "disabled" and not os.path.lexists(os.path.join(nd_dax, "driver"))
    assert [n["state"] for n in json.loads(inside(d, "ndctl", "list", "-Ni").stdout)] == ["disabled"]
    assert _open_errno(d, "/dev/dax0.0") == errno.ENXIO
    _ok(inside(d, "ndctl", "enable-namespace", "namespace0.0"), "enabled 1 namespace")
    assert _states(d)["dax0.0"] == "enabled" and os.path.islink(os.path.join(nd_dax, "driver"))
    assert _open_errno(d, "/dev/dax0.0") == 0
    fd = os.open(d.path("dax", "dax0.0"), os.O_RDONLY)
    assert os.pread(fd, 4, 4096) == b"kept"
    os.close(fd)


def test_ndctl_disables_a_region_whose_devices_stay_down_until_it_is_enabled(daxfuse_factory):
    """disable-region: the region's namespaces go and its devices are down;
    daxctl can neither enable nor create one there (ENXIO) until
    enable-region brings every device with a size back, data intact."""
    d = daxfuse_factory("--size", "64M")
    d.control("create-region size=32M id=1\ncreate-device region=1 size=8M\ncreate-device region=1 size=8M")
    fd = os.open(d.path("dax", "dax1.1"), os.O_RDWR)
    os.pwrite(fd, b"kept", 0)
    os.close(fd)
    _ok(inside(d, "daxctl", "disable-device", "dax1.0"), "disabled 1 device")
    _ok(inside(d, "ndctl", "disable-region", "region1"), "disabled 1 region")
    region = _one(inside(d, "ndctl", "list", "-RNi", "-r", "region1").stdout)
    assert region["state"] == "disabled" and "namespaces" not in region
    assert _states(d) == {"dax0.0": "enabled", "dax1.0": "disabled", "dax1.1": "disabled"}
    assert inside(d, "daxctl", "enable-device", "dax1.1").returncode != 0
    assert inside(d, "daxctl", "create-device", "-r", "1", "-s", "2M").returncode != 0
    _ok(inside(d, "ndctl", "enable-region", "region1"), "enabled 1 region")
    assert _states(d) == {"dax0.0": "enabled", "dax1.0": "enabled", "dax1.1": "enabled"}
    region = _one(inside(d, "ndctl", "list", "-RN", "-r", "region1").stdout)
    assert sorted(n["dev"] for n in region["namespaces"]) == ["namespace1.0", "namespace1.1"]
    fd = os.open(d.path("dax", "dax1.1"), os.O_RDONLY)
    assert os.pread(fd, 4, 0) == b"kept"
    os.close(fd)


def test_ndctl_writes_labels_only_to_an_idle_dimm_and_they_outlive_a_remount(daxfuse_factory, tmp_path):
    """/dev/nmem0's label area, as ndctl's label commands and its tests'
    reset (disable-region all, init-labels, enable-region all) use it."""
    memory = str(tmp_path / "memory")
    d = daxfuse_factory("--size", "64M", "--memory-file", memory)
    dump, again = tmp_path / "labels", tmp_path / "labels-again"
    r = inside(d, "ndctl", "init-labels", "nmem0")
    assert r.returncode != 0 and "regions active" in r.stderr, r.stderr
    _ok(inside(d, "ndctl", "disable-region", "all"), "disabled 1 region")
    _ok(inside(d, "ndctl", "init-labels", "nmem0"), "initialized 1 nmem")
    r = inside(d, "ndctl", "read-labels", "-j", "nmem0")
    assert [i["signature"] for i in json.loads(r.stdout)[0]["index"]] == ["NAMESPACE_INDEX"] * 2
    _ok(inside(d, "ndctl", "read-labels", "nmem0", "-o", str(dump)), "read 1 nmem")
    assert dump.stat().st_size == 128 << 10 and dump.read_bytes() != bytes(128 << 10)
    _ok(inside(d, "ndctl", "zero-labels", "nmem0"), "zeroed 1 nmem")
    _ok(inside(d, "ndctl", "read-labels", "nmem0", "-o", str(again)), "read 1 nmem")
    assert again.read_bytes() == bytes(128 << 10)
    _ok(inside(d, "ndctl", "write-labels", "nmem0", "-i", str(dump)), "wrote 1 nmem")
    _ok(inside(d, "ndctl", "enable-region", "all"), "enabled 1 region")
    assert inside(d, "ndctl", "zero-labels", "nmem0").returncode != 0
    d.stop()
    d = daxfuse_factory("--memory-file", memory, name="again")
    _ok(inside(d, "ndctl", "read-labels", "nmem0", "-o", str(again)), "read 1 nmem")
    assert again.read_bytes() == dump.read_bytes()


def test_dimm_ioctls_out_of_bounds_or_while_busy_fail_and_change_nothing(daxfuse_factory):
    """What the personality forwards for /dev/nmem0, sent by hand: a short
    payload, a range past the area or past max_xfer is EINVAL; a label
    write while a region is enabled is EBUSY."""
    d = daxfuse_factory("--size", "64M")
    fd = os.open(d.path("dev", "nmem0"), os.O_RDWR)
    try:
        os.pwrite(fd, struct.pack("<I", 4) + bytes(12), 0)
        assert struct.unpack("<III", os.pread(fd, 12, 0)) == (0, 128 << 10, 4096)
        for request, err in ((struct.pack("<III", 5, 0, 8), errno.EINVAL),  # no room for the data
                             (struct.pack("<IIII", 5, 0, 8192, 0) + bytes(8192), errno.EINVAL),
                             (struct.pack("<IIII", 5, 128 << 10, 8, 0) + bytes(8), errno.EINVAL),
                             (struct.pack("<III", 6, 0, 4) + b"data" + bytes(4), errno.EBUSY),
                             (struct.pack("<I", 3) + bytes(12), errno.ENOTTY)):
            with pytest.raises(OSError) as e:
                os.pwrite(fd, request, 0)
            assert e.value.errno == err, request[:16]
        os.pwrite(fd, struct.pack("<IIII", 5, 0, 4, 0) + bytes(4), 0)
        assert os.pread(fd, 16, 0)[12:] == bytes(4), "no label was written"
    finally:
        os.close(fd)
    assert "Traceback" not in d.log()


def test_nd_drivers_bind_and_unbind_only_what_they_drive(daxfuse_factory):
    """bind_store and unbind_store's answers: ENODEV for a device the driver
    does not drive (or is not bound to), EBUSY for one bound already."""
    d = daxfuse_factory("--size", "64M")
    drivers = ("sys", "bus", "nd", "drivers")
    for driver, attr, name, err in (("nd_region", "bind", "region0", errno.EBUSY),
                                    ("nd_region", "unbind", "region9", errno.ENODEV),
                                    ("nd_region", "bind", "dax0.0", errno.ENODEV),
                                    ("nd_pmem", "bind", "dax0.0", errno.ENODEV),
                                    ("nd_pmem", "bind", "namespace0.0", errno.EBUSY),
                                    ("nd_pmem", "unbind", "namespace0.0", errno.ENODEV),
                                    ("dax_pmem", "unbind", "namespace0.0", errno.ENODEV),
                                    ("nvdimm", "unbind", "nmem0", errno.EBUSY),
                                    ("nvdimm", "bind", "nmem0", errno.EBUSY)):
        assert write_errno(d.path(*drivers, driver, attr), name.encode() + b"\n") == err, (driver, attr, name)
    claim = d.path("sys", "bus", "nd", "devices", "dax0.0", "namespace")
    assert write_errno(claim, b"\n") == errno.EBUSY, "the namespace of a bound nd dax device stays"
    assert write_errno(d.path(*drivers, "dax_pmem", "unbind"), b"dax0.0\n") == 0
    assert write_errno(claim, b"namespace0.1\n") == errno.ENODEV
    assert write_errno(claim, b"\n") == 0
    assert _states(d)["dax0.0"] == "disabled"
    assert write_errno(d.path(*drivers, "dax_pmem", "bind"), b"dax0.0\n") == 0
    assert _states(d)["dax0.0"] == "enabled"


def test_device_pages_offline_as_the_kernel_offlines_them(daxfuse_factory):
    """/sys/devices/system/memory/{soft,hard}_offline_page with a physical
    address of a device: soft fails with EIO, hard poisons the page (the
    region's badblocks list its 8 sectors)."""
    d = daxfuse_factory("--size", "64M")
    r = inside(d, "sh", "-c", 'res=$(cat /sys/bus/dax/devices/dax0.0/resource) && '
                              'echo $res > /sys/devices/system/memory/soft_offline_page; '
                              'echo $((res + 8192)) > /sys/devices/system/memory/hard_offline_page && '
                              'cat /sys/bus/nd/devices/region0/badblocks')
    assert r.returncode == 0 and "I/O error" in r.stderr, r.stderr  # dash says it so
    assert r.stdout == "16 8\n"
