"""The NVDIMM bus view that ndctl and PMDK walk, inside `daxfuse exec`."""
import json
import mmap
import os
import shutil

import pytest

from conftest import inside


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
    r = inside(d, "ndctl", "disable-region", "region0")
    assert "disabled 0 regions" in r.stderr


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
