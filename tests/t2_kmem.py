"""The dax bus's kmem and fsdev_dax drivers inside `daxfuse exec`, driven by
Debian 12's daxctl (76.1) and read by numactl: memory hotplug emulated
where tools look, no memory reaching the host."""
import errno
import json
import os
import shutil
import sys

import pytest

from conftest import inside, write_errno

pytestmark = [pytest.mark.mounted, pytest.mark.timeout(180),
              pytest.mark.skipif(shutil.which("daxctl") is None, reason="daxctl is missing (scripts/test installs it)")]

MiB = 1 << 20
SYS_MEMORY = "/sys/devices/system/memory"


def ok(r) -> str:
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def device(d, name: str) -> dict:
    (found,) = json.loads(ok(inside(d, "daxctl", "list", "-d", name)))
    return found


def blocks(d, name: str) -> list[int]:
    """The phys_index of each memory block of name's memory, as daxctl finds them."""
    with open(d.path("sys", "bus", "dax", "devices", name, "resource")) as f:
        start = int(f.read(), 16)
    with open(d.path("sys", "bus", "dax", "devices", name, "size")) as f:
        size = int(f.read())
    with open(f"{SYS_MEMORY}/block_size_bytes") as f:
        block = int(f.read(), 16)
    return list(range(-(-start // block), (start + size) // block))


def block_attr(d, index: int, attr: str) -> str:
    with open(d.path("sys", "devices", "system", "memory", f"memory{index}", attr)) as f:
        return f.read().strip()


def test_daxctl_devices_sh(daxfuse_factory):
    """ndctl's test/daxctl-devices.sh: a 256M devdax device to system-ram
    (no onlining) and back, its memory onlined and offlined, -f to take it
    back to devdax with its memory online; ndctl disable-namespace refused
    while it is system RAM; reconfiguring with -N refused while the kernel's
    policy would online the memory itself."""
    d = daxfuse_factory("--size", "256M")
    assert ok(inside(d, "cat", f"{SYS_MEMORY}/auto_online_blocks")) == "offline\n"
    ok(inside(d, "daxctl", "reconfigure-device", "-N", "-m", "system-ram", "dax0.0"))
    found = device(d, "dax0.0")
    assert (found["mode"], found["online_memblocks"], found["total_memblocks"]) == ("system-ram", 0, 2)
    assert "movable" not in found, "daxctl leaves it out while a block is offline"
    ok(inside(d, "daxctl", "online-memory", "dax0.0"))
    found = device(d, "dax0.0")
    assert (found["online_memblocks"], found["movable"]) == (2, True)
    assert [block_attr(d, i, "valid_zones") for i in blocks(d, "dax0.0")] == ["Movable", "Movable"]
    ok(inside(d, "daxctl", "offline-memory", "dax0.0"))
    assert [block_attr(d, i, "state") for i in blocks(d, "dax0.0")] == ["offline", "offline"]
    ok(inside(d, "daxctl", "reconfigure-device", "-m", "devdax", "dax0.0"))
    assert device(d, "dax0.0")["mode"] == "devdax"
    ok(inside(d, "daxctl", "reconfigure-device", "-m", "system-ram", "dax0.0"))
    assert device(d, "dax0.0")["online_memblocks"] == 2
    r = inside(d, "daxctl", "reconfigure-device", "-m", "devdax", "dax0.0")
    assert r.returncode != 0 and "Device or resource busy" in r.stderr, "its memory is online: daxctl refuses"
    ok(inside(d, "daxctl", "reconfigure-device", "-f", "-m", "devdax", "dax0.0"))
    assert device(d, "dax0.0")["mode"] == "devdax"
    ok(inside(d, "daxctl", "reconfigure-device", "-m", "system-ram", "dax0.0"))
    r = inside(d, "ndctl", "disable-namespace", "namespace0.0")
    assert "disabled 0 namespaces" in r.stderr and device(d, "dax0.0")["mode"] == "system-ram", r.stderr
    ok(inside(d, "daxctl", "reconfigure-device", "-f", "-m", "devdax", "dax0.0"))
    r = inside(d, "sh", "-c", f"echo online > {SYS_MEMORY}/auto_online_blocks && "
                              "daxctl reconfigure-device -N -m system-ram dax0.0")
    assert r.returncode != 0 and "kernel policy will auto-online memory, aborting" in r.stderr, r.stderr
    assert device(d, "dax0.0")["mode"] == "devdax"


def test_a_kmem_region_comes_up_as_system_ram_on_a_node_of_its_own(daxfuse_factory):
    """What hmem and CXL RAM regions are: a region of type kmem whose
    devices bind kmem by default, onlined as auto_online_blocks says, on
    its target node, which numactl then shows with the memory's size. The
    character device does not open while kmem holds it."""
    d = daxfuse_factory("--size", "64M")
    with open(d.path("sys", "devices", "system", "memory", "auto_online_blocks"), "w") as f:
        f.write("online_movable")
    d.control("create-region size=512M target_node=1 type=kmem\ncreate-device region=1")
    found = device(d, "dax1.0")
    assert (found["mode"], found["target_node"], found["online_memblocks"], found["movable"]) == \
        ("system-ram", 1, 4, True)
    numactl = ok(inside(d, "numactl", "-H"))  # scripts/test installs it
    assert "available: 2 nodes (0-1)" in numactl and "node 1 size: 512 MB" in numactl, numactl
    lists = ok(inside(d, "cat", "/sys/devices/system/node/has_memory", "/sys/devices/system/node/has_normal_memory"))
    assert lists.splitlines()[0].endswith("1") and not lists.splitlines()[1].endswith("1"), "Movable only"
    r = inside(d, sys.executable, "-c", "import os\ntry: os.open('/dev/dax1.0', os.O_RDWR)\n"
                                        "except OSError as e: raise SystemExit(e.errno)")
    assert r.returncode == errno.ENXIO
    ok(inside(d, "daxctl", "reconfigure-device", "-f", "-m", "devdax", "dax1.0"))
    assert device(d, "dax1.0")["mode"] == "devdax"
    assert "node1" not in os.listdir(d.path("sys", "devices", "system", "node")), "gone with its memory"


def test_a_pinned_block_fails_offlining_and_daxctl_says_so(daxfuse_factory):
    """The fault users script: `pin-memory memoryN` in the control file, and
    offlining that block fails with EBUSY, as unmovable pages make it fail."""
    d = daxfuse_factory("--size", "256M")
    ok(inside(d, "daxctl", "reconfigure-device", "-m", "system-ram", "dax0.0"))
    first = blocks(d, "dax0.0")[0]
    assert d.control(f"pin-memory memory{first}") == f"ok memory{first}"
    r = inside(d, "daxctl", "reconfigure-device", "-f", "-m", "devdax", "dax0.0")
    assert r.returncode != 0 and "failed to offline memory: Device or resource busy" in r.stderr, r.stderr
    assert device(d, "dax0.0")["mode"] == "system-ram"
    assert d.control(f"unpin-memory memory{first}") == f"ok memory{first}"
    ok(inside(d, "daxctl", "reconfigure-device", "-f", "-m", "devdax", "dax0.0"))
    assert device(d, "dax0.0")["mode"] == "devdax"


def test_no_movable_onlines_into_normal(daxfuse_factory):
    d = daxfuse_factory("--size", "256M")
    ok(inside(d, "daxctl", "reconfigure-device", "--no-movable", "-m", "system-ram", "dax0.0"))
    found = device(d, "dax0.0")
    assert (found["online_memblocks"], found["movable"]) == (2, False)
    assert ok(inside(d, "cat", "/sys/devices/system/node/has_normal_memory")).strip().split(",")[-1].endswith("0")


def test_memory_blocks_answer_as_the_kernel(daxfuse_factory):
    """memoryN/state: EINVAL for its own state again or a word it does not
    know; online: 1 or 0, a no-op in that state; auto_online_blocks: the four
    words alone; unbinding kmem with memory online: EBUSY (the kernel would
    leave it stuck until a reboot); memmap_on_memory fixed while kmem holds it."""
    d = daxfuse_factory("--size", "256M")
    ok(inside(d, "daxctl", "reconfigure-device", "-N", "-m", "system-ram", "dax0.0"))
    index = blocks(d, "dax0.0")[0]
    block = d.path("sys", "devices", "system", "memory", f"memory{index}")
    assert block_attr(d, index, "phys_index") == f"{index:08x}"
    assert block_attr(d, index, "valid_zones") == "Normal Movable"
    assert write_errno(os.path.join(block, "state"), b"offline\n") == errno.EINVAL
    assert write_errno(os.path.join(block, "state"), b"sideways\n") == errno.EINVAL
    assert write_errno(os.path.join(block, "online"), b"1\n") == 0
    assert write_errno(os.path.join(block, "online"), b"1\n") == 0
    assert block_attr(d, index, "state") == "online" and block_attr(d, index, "valid_zones") == "Normal"
    assert write_errno(os.path.join(block, "state"), b"online_movable\n") == errno.EINVAL
    auto = d.path("sys", "devices", "system", "memory", "auto_online_blocks")
    for word in (b"onlined\n", b"online_movable \n", b" online\n"):  # sysfs_streq: blanks count
        assert write_errno(auto, word) == errno.EINVAL, word
    for alias in (f"memory0{index}", f"memory{index}\u00b2", "node00", "node\u0660"):
        assert not os.path.exists(d.path("sys", "devices", "system", "memory", alias)), alias
    drivers = d.path("sys", "bus", "dax", "drivers")
    assert write_errno(os.path.join(drivers, "kmem", "new_id"), b" dax0.0\n") == errno.EINVAL
    memory_dir = d.path("sys", "devices", "system", "memory")
    with open(d.path("sys", "bus", "dax", "devices", "dax0.0", "resource")) as f:
        resource = int(f.read(), 16)
    assert write_errno(os.path.join(memory_dir, "soft_offline_page"), str(resource).encode()) == 0, \
        "a page of online kmem memory migrates"
    assert write_errno(os.path.join(memory_dir, "soft_offline_page"), b"4096") == errno.EOPNOTSUPP, \
        "the host's memory is not daxfuse's to offline"
    assert write_errno(os.path.join(memory_dir, "soft_offline_page"), b"0x1ffffffffffffffff") == errno.EINVAL
    assert write_errno(os.path.join(drivers, "kmem", "unbind"), b"dax0.0\n") == errno.EBUSY
    assert write_errno(d.path("sys", "bus", "dax", "devices", "dax0.0", "memmap_on_memory"), b"1\n") in \
        (errno.EBUSY, errno.EOPNOTSUPP)
    assert write_errno(os.path.join(block, "state"), b"offline\n") == 0
    assert write_errno(os.path.join(drivers, "kmem", "unbind"), b"dax0.0\n") == 0
    assert not os.path.exists(block), "the block goes with kmem"


def test_a_kmem_device_state_plugs_and_unplugs_its_memory_whole(daxfuse_factory):
    """daxX.Y/state (Linux 7.3, kmem's): "unplugged" offlines and removes
    all of it, an online type adds it all back, from unplugged alone."""
    d = daxfuse_factory("--size", "256M")
    ok(inside(d, "daxctl", "reconfigure-device", "-m", "system-ram", "dax0.0"))
    state = d.path("sys", "bus", "dax", "devices", "dax0.0", "state")
    with open(state) as f:
        assert f.read() == "offline\n", "what the policy plugged it as; daxctl onlined the blocks after"
    assert write_errno(state, b"offline\n") == errno.EINVAL
    first = blocks(d, "dax0.0")[0]
    assert os.path.exists(d.path("sys", "devices", "system", "memory", f"memory{first}", "state"))
    assert write_errno(state, b"unplugged\n") == 0
    assert device(d, "dax0.0")["total_memblocks"] == 0
    assert not os.path.exists(d.path("sys", "devices", "system", "memory", f"memory{first}", "state")), \
        "no lookup finds a block that went"
    assert write_errno(state, b"online_kernel\n") == 0
    assert write_errno(state, b"online_movable\n") == errno.EBUSY
    found = device(d, "dax0.0")
    assert (found["online_memblocks"], found["movable"]) == (2, False)
    ok(inside(d, "daxctl", "reconfigure-device", "-f", "-m", "devdax", "dax0.0"))
    assert not os.path.exists(state), "kmem's attribute, gone with it"


def test_fsdev_dax_binds_by_id_and_its_device_opens_but_does_not_map(daxfuse_factory):
    """fsdev_dax (famfs mode) never binds by type: new_id binds it. Its
    character device opens; read fails with EINVAL and mmap with ENODEV.
    daxctl 76.1, which does not know it, calls it devdax."""
    d = daxfuse_factory("--size", "64M")
    drivers = d.path("sys", "bus", "dax", "drivers")
    assert write_errno(os.path.join(drivers, "fsdev_dax", "bind"), b"dax0.0\0") == errno.ENODEV
    assert write_errno(os.path.join(drivers, "device_dax", "remove_id"), b"dax0.0\0") == 0
    assert write_errno(os.path.join(drivers, "device_dax", "unbind"), b"dax0.0\0") == 0
    assert write_errno(os.path.join(drivers, "fsdev_dax", "new_id"), b"dax0.0\0") == 0
    assert os.readlink(d.path("sys", "bus", "dax", "devices", "dax0.0", "driver")).endswith("/fsdev_dax")
    assert write_errno(os.path.join(drivers, "fsdev_dax", "new_id"), b"dax0\0") == errno.EINVAL
    r = inside(d, sys.executable, "-c", "import mmap, os\nfd = os.open('/dev/dax0.0', os.O_RDWR)\n"
                                        "for call in (lambda: os.read(fd, 8), lambda: mmap.mmap(fd, 2 << 20)):\n"
                                        "    try: call()\n"
                                        "    except OSError as e: print(e.errno)")
    assert ok(r).split() == [str(errno.EINVAL), str(errno.ENODEV)]
    assert device(d, "dax0.0")["mode"] == "devdax"
    ok(inside(d, "daxctl", "disable-device", "dax0.0"))
    assert write_errno(os.path.join(drivers, "fsdev_dax", "remove_id"), b"dax0.0\0") == 0
    ok(inside(d, "daxctl", "enable-device", "dax0.0"))
    assert os.readlink(d.path("sys", "bus", "dax", "devices", "dax0.0", "driver")).endswith("/device_dax")


def test_system_ram_and_its_blocks_outlive_a_remount(daxfuse_factory, tmp_path):
    """kmem's binding, its blocks' states and the policy are kept with the
    layout, as a reboot would find them bound again."""
    memory = str(tmp_path / "memory")
    d = daxfuse_factory("--size", "64M", "--memory-file", memory)
    d.control("create-region size=256M target_node=1 type=kmem\ncreate-device region=1")
    ok(inside(d, "daxctl", "online-memory", "--no-movable", "dax1.0"))
    with open(d.path("sys", "devices", "system", "memory", "auto_online_blocks"), "w") as f:
        f.write("online_kernel")
    d.stop()
    d = daxfuse_factory("--memory-file", memory, name="again")
    found = device(d, "dax1.0")
    assert (found["mode"], found["online_memblocks"], found["movable"]) == ("system-ram", 2, False)
    assert ok(inside(d, "cat", f"{SYS_MEMORY}/auto_online_blocks")) == "online_kernel\n"


def test_a_failed_reconfigure_leaves_the_device_unbound_as_daxctl_leaves_it(daxfuse_factory):
    """daxctl unbinds before it binds the new driver: where kmem refuses the
    device (no target node; no whole memory block in it), the kernel's probe
    fails and the device is left unbound, "state":"disabled"."""
    d = daxfuse_factory("--size", "64M")
    d.control("create-region size=256M target_node=-1\ncreate-device region=1 size=256M")
    r = inside(d, "daxctl", "reconfigure-device", "-N", "-m", "system-ram", "dax1.0")
    assert r.returncode != 0, r.stderr
    found = device(d, "dax1.0")
    assert (found["mode"], found["state"]) == ("devdax", "disabled")
    ok(inside(d, "daxctl", "enable-device", "dax1.0"))
    assert "state" not in device(d, "dax1.0")
