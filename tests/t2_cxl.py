"""The CXL bus inside `daxfuse exec`, driven by Debian 12's cxl-cli (76.1)
and raw sysfs writes (76.1 refuses `create-region -t ram` itself), down to a
dax device that daxctl reconfigures and a program maps; mirrors of what
ndctl's cxl-topology.sh, cxl-region-sysfs.sh and cxl-create-region.sh check."""
import errno
import json
import os
import shutil

import pytest

from conftest import inside

pytestmark = [pytest.mark.mounted, pytest.mark.timeout(180),
              pytest.mark.skipif(shutil.which("cxl") is None, reason="cxl is missing (scripts/test installs ndctl)")]

G = 1 << 30
DEVICES = "/sys/bus/cxl/devices"


def cxl(d, *args, root=None) -> list | dict:
    """`cxl ARGS` inside exec: its JSON, asserting it ran cleanly."""
    r = inside(d, "cxl", *args, options=("--root", root) if root else ())
    assert r.returncode == 0 and "failed" not in r.stderr, (args, r.stderr)
    return json.loads(r.stdout) if r.stdout.strip() else []


def sh(d, script: str, root=None) -> str:
    r = inside(d, "sh", "-ec", script, options=("--root", root) if root else ())
    assert r.returncode == 0, (script, r.stdout, r.stderr)
    return r.stdout


def sysfs_errno(d, path: str, value: str) -> int:
    """What writing value (with its NUL, as libcxl writes) to a sysfs file gives, inside exec."""
    r = inside(d, "python3", "-c", "import os, sys\n"
               "fd = os.open(sys.argv[1], os.O_WRONLY)\n"
               "try:\n    os.write(fd, sys.argv[2].encode() + b'\\0')\nexcept OSError as e:\n    print(e.errno)\n"
               "else:\n    print(0)", path, value)
    assert r.returncode == 0, r.stderr
    return int(r.stdout)


def ram_region(root: str, targets: list[str], size: int) -> str:
    """The writes of a RAM region, as cxl 85's create-region makes them (SPEC section 3)."""
    ways = len(targets)
    lines = [f"r=$(cat {DEVICES}/{root}/create_ram_region)", f'printf "$r\\0" > {DEVICES}/{root}/create_ram_region',
             f"echo 4096 > {DEVICES}/$r/interleave_granularity", f"echo {ways} > {DEVICES}/$r/interleave_ways",
             f"echo {size:#x} > {DEVICES}/$r/size"]
    for i, t in enumerate(targets):
        lines += [f"echo ram > {DEVICES}/{t}/mode", f"echo {size // ways:#x} > {DEVICES}/{t}/dpa_size",
                  f"echo {t} > {DEVICES}/$r/target{i}"]
    lines += [f"echo 1 > {DEVICES}/$r/commit", "echo $r > /sys/bus/cxl/drivers/cxl_region/bind", "echo $r"]
    return "\n".join(lines)


MAP = """import mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
m = mmap.mmap(fd, 2 << 20, mmap.MAP_SHARED, offset=int(sys.argv[2]))
if sys.argv[3] == "write":
    m[:16] = b"cxl region data!"
print(m[:16].decode())
"""


def test_cxl_list_shows_the_default_topology_with_each_flag_set(daxfuse_factory):
    d = daxfuse_factory("--size", "64M")
    (bus,) = cxl(d, "list", "-b", "cxl_test")
    assert bus == {"bus": "root0", "provider": "cxl_test"}
    bridges = cxl(d, "list", "-BP")[0]["ports:root0"]
    assert sorted(p["port"] for p in bridges) == ["port1", "port2", "port3"]
    assert [len(cxl(d, "list", "-T", "-P", "-p", p)[0]["dports"]) for p in ("port1", "port2", "port3")] == [2, 2, 1]
    memdevs = cxl(d, "list", "-M")
    assert len(memdevs) == 10 and all((m["ram_size"], m["pmem_size"]) == (G, G) for m in memdevs)
    assert {m["memdev"] for m in memdevs} == {f"mem{i}" for i in range(10)}
    assert len(cxl(d, "list", "-E")) == 10
    roots = sorted(cxl(d, "list", "-D", "-d", "root"), key=lambda x: x["decoder"])
    assert [(r["size"] // G, r["nr_targets"], "volatile_capable" in r, "pmem_capable" in r) for r in roots] == [
        (1, 1, True, False), (2, 2, True, False), (1, 1, False, True), (2, 2, False, True), (1, 1, False, True)]
    assert all(r["max_available_extent"] == r["size"] for r in roots)
    assert cxl(d, "list", "-R") == []
    for flags in (["-vv"], ["-vvv"], ["-BPEMDT"], ["-M", "-H", "-I"], ["-u", "-D"], ["-E", "-m", "mem3"],
                  ["-P", "-p", "port1", "-S"], ["-D", "-d", "endpoint", "-m", "mem0", "-i"]):
        assert cxl(d, "list", *flags) != [], flags
    (mem,) = cxl(d, "list", "-M", "-H", "-I", "-m", "mem2")
    assert mem["health"]["temperature"] == 25 and mem["health"]["media_normal"]
    assert mem["partition_info"]["active_volatile_size"] == G and mem["serial"] == 2


def test_a_ram_region_through_sysfs_becomes_system_ram_then_devdax_and_its_data_survives_recreation(daxfuse_factory):
    d = daxfuse_factory("--size", "64M")
    region = sh(d, ram_region("decoder0.1", ["decoder9.0", "decoder13.0"], G)).split()[-1]
    assert region == "region1"
    (r,) = cxl(d, "list", "-R", "-T", "-r", region)
    assert (r["size"], r["interleave_ways"], r["decode_state"]) == (G, 2, "commit")
    assert sorted(m["memdev"] for m in r["mappings"]) == ["mem0", "mem4"]
    (dev,) = json.loads(inside(d, "daxctl", "list", "-d", "dax1.0").stdout)
    assert (dev["mode"], dev["size"], dev["total_memblocks"]) == ("system-ram", G, G // (128 << 20))
    sh(d, "daxctl reconfigure-device -m devdax dax1.0 >/dev/null")
    assert sh(d, f"python3 -c '{MAP}' /dev/dax1.0 {4 << 20} write").strip() == "cxl region data!"
    assert sh(d, f"python3 -c '{MAP}' /dev/dax1.0 {4 << 20} read").strip() == "cxl region data!"
    # cxl destroy-region (76.1): disable, reset, detach, free the DPA, delete; then the same writes again
    sh(d, f"cxl destroy-region -f {region} 2>/dev/null")
    assert cxl(d, "list", "-R", "-i") == []
    assert sh(d, f"cat {DEVICES}/decoder9.0/dpa_size {DEVICES}/decoder0.1/create_ram_region").split() == \
        ["0x0000000000000000", "region1"]
    sh(d, ram_region("decoder0.1", ["decoder9.0", "decoder13.0"], G))
    sh(d, "daxctl reconfigure-device -m devdax dax1.0 >/dev/null")
    assert sh(d, f"python3 -c '{MAP}' /dev/dax1.0 {4 << 20} read").strip() == "cxl region data!"


def test_each_assembly_step_fails_as_the_kernels_does(daxfuse_factory):
    d = daxfuse_factory("--size", "64M")
    sh(d, f'printf "region1\\0" > {DEVICES}/decoder0.1/create_ram_region')
    r = f"{DEVICES}/region1"
    assert sysfs_errno(d, f"{r}/interleave_ways", "3") == errno.EINVAL  # not a multiple of the window's 2
    assert sysfs_errno(d, f"{r}/interleave_granularity", "8192") == errno.EINVAL  # the window's is 4096
    assert sysfs_errno(d, f"{r}/size", f"{G:#x}") == errno.ENXIO  # ways not set yet
    sh(d, f"echo 4096 > {r}/interleave_granularity; echo 2 > {r}/interleave_ways")
    assert sysfs_errno(d, f"{r}/size", f"{4 * G:#x}") == errno.ERANGE  # the window has 2G
    assert sysfs_errno(d, f"{r}/size", f"{1 << 20:#x}") == errno.EINVAL
    sh(d, f"echo {G:#x} > {r}/size; echo ram > {DEVICES}/decoder9.0/mode")
    assert sysfs_errno(d, f"{DEVICES}/decoder9.0/dpa_size", f"{2 * G:#x}") == errno.ENOSPC  # 1G of ram
    assert sysfs_errno(d, f"{DEVICES}/decoder9.1/dpa_size", f"{G // 2:#x}") == errno.EBUSY  # .0 first
    assert sysfs_errno(d, f"{DEVICES}/decoder9.0/mode", "volatile") == errno.EINVAL
    sh(d, f"echo {G // 2:#x} > {DEVICES}/decoder9.0/dpa_size; echo ram > {DEVICES}/decoder10.0/mode; "
          f"echo {G // 2:#x} > {DEVICES}/decoder10.0/dpa_size")
    assert sysfs_errno(d, f"{r}/target1", "decoder10.0") == errno.ENXIO  # mem1 is behind bridge 0, not 1
    assert sysfs_errno(d, f"{r}/target0", "decoder0.0") == errno.EINVAL  # not an endpoint decoder
    assert sysfs_errno(d, f"{r}/target0", "decoder99.0") == errno.ENODEV
    assert sysfs_errno(d, f"{r}/commit", "1") == errno.ENXIO  # targets missing
    assert sysfs_errno(d, "/sys/bus/cxl/drivers/cxl_region/bind", "region1") == errno.ENXIO  # not committed
    assert sysfs_errno(d, "/sys/bus/cxl/drivers/cxl_port/bind", "region1") == errno.ENODEV
    assert sysfs_errno(d, f"{DEVICES}/decoder0.0/create_ram_region", "region5") == errno.EBUSY
    assert "create_ram_region" not in sh(d, f"ls {DEVICES}/decoder0.2/")  # a pmem window
    # nothing of the failures stuck: the region takes its targets and comes up
    sh(d, f"echo decoder9.0 > {r}/target0; echo ram > {DEVICES}/decoder13.0/mode; "
          f"echo {G // 2:#x} > {DEVICES}/decoder13.0/dpa_size; echo decoder13.0 > {r}/target1; "
          f"echo 1 > {r}/commit; echo region1 > /sys/bus/cxl/drivers/cxl_region/bind")
    assert cxl(d, "list", "-R")[0]["size"] == G


def test_a_memdev_in_a_live_region_is_not_disabled_while_its_memory_is_online(daxfuse_factory):
    d = daxfuse_factory("--size", "64M")
    sh(d, ram_region("decoder0.0", ["decoder9.0"], G // 2))
    sh(d, "daxctl online-memory dax1.0 >/dev/null 2>&1")
    r = inside(d, "cxl", "disable-memdev", "mem0")  # 76.1 refuses without --force
    assert r.returncode != 0
    assert sysfs_errno(d, "/sys/bus/cxl/drivers/cxl_mem/unbind", "mem0") == errno.EBUSY  # kmem holds it
    assert sysfs_errno(d, f"{DEVICES}/region1/commit", "0") == errno.EBUSY
    sh(d, "daxctl offline-memory dax1.0 >/dev/null 2>&1; cxl disable-memdev --force mem0 2>/dev/null")
    (region,) = cxl(d, "list", "-R", "-i", "-T")
    assert region.get("state") == "disabled" and region["decode_state"] == "reset"
    assert "dax1.0" not in inside(d, "daxctl", "list").stdout
    sh(d, "cxl enable-memdev mem0 2>/dev/null")
    assert len(cxl(d, "list", "-M")) == 10


def test_labels_written_through_the_mailbox_outlive_a_remount(daxfuse_factory, tmp_path):
    memory = str(tmp_path / "memory")
    d = daxfuse_factory("--size", "64M", "--memory-file", memory)
    (tmp_path / "labels").write_bytes(b"CXL label storage area" * 100)
    sh(d, f"cxl write-labels mem3 -i {tmp_path}/labels 2>/dev/null")
    d.teardown()
    d2 = daxfuse_factory("--memory-file", memory, name="again")
    sh(d2, f"cxl read-labels mem3 -s 2200 -o {tmp_path}/back 2>/dev/null")
    assert (tmp_path / "back").read_bytes() == b"CXL label storage area" * 100
    sh(d2, f"cxl read-labels mem2 -s 64 -o {tmp_path}/other 2>/dev/null")
    assert (tmp_path / "other").read_bytes() == bytes(64)


def test_a_ram_region_outlives_a_remount_as_committed_decoders_do(daxfuse_factory, tmp_path):
    memory = str(tmp_path / "memory")
    d = daxfuse_factory("--size", "64M", "--memory-file", memory)
    sh(d, ram_region("decoder0.0", ["decoder9.0"], G // 2))
    sh(d, f"daxctl reconfigure-device -m devdax dax1.0 >/dev/null; python3 -c '{MAP}' /dev/dax1.0 0 write")
    d.teardown()
    d2 = daxfuse_factory("--memory-file", memory, name="again")
    (region,) = cxl(d2, "list", "-R", "-T")
    assert region["mappings"][0]["decoder"] == "decoder9.0" and region["decode_state"] == "commit"
    assert sh(d2, f"python3 -c '{MAP}' /dev/dax1.0 0 read").strip() == "cxl region data!"


def test_no_cxl_bus_with_cxl_topology_none_and_a_topology_of_ones_own(daxfuse_factory, tmp_path):
    d = daxfuse_factory("--size", "64M", "--cxl-topology", "none")
    assert inside(d, "sh", "-c", "ls /sys/bus/cxl").returncode != 0
    topology = tmp_path / "topology.json"
    topology.write_text(json.dumps({"host_bridges": [{"root_ports": [{"memdev": {"ram": "512M", "pmem": "0"}},
                                                                     {"memdev": {"ram": "512M"}}]}],
                                    "memdev": {"ram": "1G", "pmem": "256M"},
                                    "windows": [{"size": "1G", "targets": [0], "type": "ram"}]}))
    d2 = daxfuse_factory("--size", "64M", "--cxl-topology", str(topology), name="own")
    memdevs = cxl(d2, "list", "-M")
    assert sorted((m["memdev"], m["ram_size"], m.get("pmem_size", 0)) for m in memdevs) == \
        [("mem0", G // 2, 0), ("mem1", G // 2, 256 << 20)]
    # two memdevs straight under one bridge's root ports: a 2-way region across them
    sh(d2, ram_region("decoder0.0", ["decoder2.0", "decoder3.0"], G))  # root0, port1, then the endpoints
    assert cxl(d2, "list", "-R")[0]["interleave_ways"] == 2


def test_a_topology_that_is_not_one_fails_the_mount_with_a_message(tmp_path):
    import subprocess
    from daxfuse.testing import DAXFUSE
    (tmp_path / "mnt").mkdir()
    (tmp_path / "t.json").write_text('{"host_bridges": [], "windows": []}')
    r = subprocess.run([*DAXFUSE, "mount", str(tmp_path / "mnt"), "--cxl-topology", str(tmp_path / "t.json")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "CXL topology: host_bridges" in r.stderr


# --- mirrors of ndctl's cxl tests (test/cxl-*.sh), on cxl 76.1 ------------------------------------------
def test_cxl_topology_sh(daxfuse_factory):
    d = daxfuse_factory("--size", "64M")
    assert len(cxl(d, "list", "-b", "cxl_test")) == 1
    bridges = cxl(d, "list", "-b", "cxl_test", "-BP")[0]["ports:root0"]
    assert len(bridges) == 3
    assert [len(_switches(d, b)) for b in ("port1", "port2", "port3")] == [2, 2, 1]
    base = sorted(cxl(d, "list", "-D", "-d", "root"), key=lambda x: int(x["decoder"][9:]))[0]["size"]
    assert sum(1 for m in cxl(d, "list", "-M") if m["pmem_size"] == base) == 10
    for switch in ("port4", "port6"):
        mems = [m["memdev"] for m in cxl(d, "list", "-M", "-p", switch)]
        assert len(mems) == 2

        def count() -> int:
            return len(cxl(d, "list", "-P", "-p", switch))
        sh(d, f"cxl disable-memdev {mems[0]} --force 2>/dev/null")
        assert count() == 1
        sh(d, f"cxl disable-memdev {mems[1]} --force 2>/dev/null")
        assert count() == 0, "the switch port goes with its last endpoint"
        sh(d, f"cxl enable-memdev {' '.join(mems)} 2>/dev/null")
        assert count() == 1
        sh(d, f"cxl disable-port {switch} --force 2>/dev/null")
        assert count() == 0
        sh(d, f"cxl enable-memdev {' '.join(mems)} 2>/dev/null")
        assert count() == 1
    for bridge in ("port1", "port2"):
        sh(d, f"cxl disable-port {bridge} --force 2>/dev/null")
        off = cxl(d, "list", "-M", "-i", "-p", bridge)
        assert len(off) == 4 and all(m.get("state") == "disabled" for m in off)
        sh(d, f"cxl enable-port {bridge} -m 2>/dev/null")
        assert len(cxl(d, "list", "-M", "-p", bridge)) == 4
    sh(d, "cxl disable-bus root0 -f 2>/dev/null")
    assert cxl(d, "list", "-b", "cxl_test") == [] and len(cxl(d, "list", "-M", "-i")) == 10
    sh(d, "echo cxl_acpi.0 > /sys/bus/platform/drivers/cxl_acpi/bind")  # no cxl enable-bus: the driver's bind
    assert len(cxl(d, "list", "-b", "cxl_test")) == 1 and len(cxl(d, "list", "-M")) == 10


def test_cxl_region_sysfs_sh(daxfuse_factory):
    """An 8-way pmem region under the 2-way window, made through sysfs, its
    decoders checked at every level, then taken apart."""
    d = daxfuse_factory("--size", "64M")
    (root,) = [x for x in cxl(d, "list", "-D", "-d", "root") if "pmem_capable" in x and x["nr_targets"] == 2]
    decoder, ig = root["decoder"], root["interleave_granularity"]
    mems = [m["memdev"] for m in cxl(d, "list", "-M", "-d", decoder)]
    assert len(mems) == 8
    for m in mems:
        sh(d, f"cxl reserve-dpa -t pmem -s 256M {m} >/dev/null 2>&1")
    # memdevs in interleave order: position p behind the root's target p % 2,
    # that bridge's switch (p / 2) % 2, that switch's memdev (p / 4) % 2
    targets = sorted(cxl(d, "list", "-T", "-d", decoder)[0]["targets"], key=lambda t: t["position"])
    bridges = {p["host"]: p["port"] for p in cxl(d, "list", "-BP")[0]["ports:root0"]}
    below = [[sorted((m["memdev"] for m in cxl(d, "list", "-M", "-p", s)), key=lambda m: int(m[3:]))
              for s in _switches(d, bridges[t["target"]])] for t in targets]
    ordered = [below[p % 2][(p // 2) % 2][(p // 4) % 2] for p in range(8)]
    region = sh(d, f"cat {DEVICES}/{decoder}/create_pmem_region").strip()
    sh(d, f'printf "{region}\\0" > {DEVICES}/{decoder}/create_pmem_region; cd {DEVICES}/{region}; '
          f"cat /proc/sys/kernel/random/uuid > uuid; echo 8 > interleave_ways; echo {ig} > interleave_granularity; "
          f"echo {8 * 256 << 20} > size")
    for i, m in enumerate(ordered):
        (ep,) = [x for x in cxl(d, "list", "-D", "-i", "-d", "endpoint", "-m", m) if x.get("mode") == "pmem"]
        sh(d, f"echo {ep['decoder']} > {DEVICES}/{region}/target{i}")
    res = sh(d, f"cat {DEVICES}/{region}/resource").strip()
    for m in ordered:
        (ep,) = [x for x in cxl(d, "list", "-D", "-i", "-d", "endpoint", "-m", m) if x.get("mode") == "pmem"]
        assert (ep["interleave_ways"], ep["interleave_granularity"], ep["size"]) == (8, ig, 8 * 256 << 20)
        assert ep["resource"] == int(res, 16)
    switch_decoders = cxl(d, "list", "-D", "-r", region, "-d", "switch")
    assert len(switch_decoders) == 6
    for x in switch_decoders:
        port = x["decoder"].split(".")[0].removeprefix("decoder")
        depth = cxl(d, "list", "-P", "-p", f"port{port}", "-S")[0]["depth"]
        assert (x["interleave_ways"], x["interleave_granularity"], x["size"]) == (2, ig << depth, 8 * 256 << 20)
    sh(d, f"echo 1 > {DEVICES}/{region}/commit; echo 0 > {DEVICES}/{region}/commit")
    for i in range(8):
        sh(d, f'printf "\\0" > {DEVICES}/{region}/target{i}')
    for m in mems:
        sh(d, f"cxl free-dpa -t pmem {m} >/dev/null 2>&1")
    sh(d, f'printf "{region}\\0" > {DEVICES}/{decoder}/delete_region')
    assert cxl(d, "list", "-R", "-i") == []


def _switches(d, bridge: str) -> list[str]:
    """A host bridge port's switch ports, in the order of its dports."""
    (port,) = cxl(d, "list", "-P", "-p", bridge)
    return sorted((p["port"] for p in port[f"ports:{bridge}"]), key=lambda p: int(p[4:]))


def test_cxl_create_region_sh(daxfuse_factory):
    """pmem regions through cxl create-region (76.1's default type): x2 with
    no -m, x1 per memdev behind a pmem x1 window, enable/disable/destroy, then
    4 back-to-back sub-regions destroyed in reverse."""
    d = daxfuse_factory("--size", "64M")
    root5 = sorted(cxl(d, "list", "-D", "-d", "root"), key=lambda x: int(x["decoder"][9:]))[4]["decoder"]
    made = cxl(d, "create-region", "-d", "decoder0.3", "-m", "mem0", "mem4", "-s", "1G")
    assert made["interleave_ways"] == 2
    sh(d, f"cxl destroy-region -f {made['region']} 2>/dev/null")
    for mem in ("mem0", "mem8"):
        (x1,) = [r for r in cxl(d, "list", "-D", "-d", "root", "-m", mem)
                 if "pmem_capable" in r and r["nr_targets"] == 1]
        r = cxl(d, "create-region", "-d", x1["decoder"], "-m", mem)
        name = r["region"]
        sh(d, f"cxl disable-region {name} 2>/dev/null; cxl enable-region {name} 2>/dev/null; "
              f"cxl destroy-region -f -b cxl_test {name} 2>/dev/null")
        r = cxl(d, "create-region", "-d", x1["decoder"], "-m", mem)
        sh(d, f"cxl destroy-region -f {r['region']} 2>/dev/null")
    assert root5 == "decoder0.4"
    names = []
    for _ in range(4):
        r = cxl(d, "create-region", "-d", "decoder0.2", "-m", "mem0", "-s", "256M")
        names.append(r["region"])
    regions = sorted((x["resource"], x["region"]) for x in cxl(d, "list", "-R"))
    assert [n for _, n in regions] == names and all(
        b[0] - a[0] == 256 << 20 for a, b in zip(regions, regions[1:])), "back to back in HPA"
    for name in reversed(names):
        sh(d, f"cxl destroy-region -f {name} 2>/dev/null")
    assert cxl(d, "list", "-R", "-i") == []


def test_what_an_unbinding_removes_is_gone_at_once(daxfuse_factory):
    """Found by review: the kernel kept a memdev's debugfs and the ports,
    endpoints and decoders below an unbound port in its entry cache."""
    d = daxfuse_factory("--size", "64M")
    devices = d.path("sys", "bus", "cxl", "devices")
    paths = [d.path("sys", "kernel", "debug", "cxl", "mem0", "dpamem"), *(os.path.join(devices, name) for name in (
        "port4", "endpoint9", "decoder9.0", "decoder4.0"))]
    for path in paths:
        os.stat(path)
    with open(d.path("sys", "bus", "cxl", "drivers", "cxl_port", "unbind"), "w") as f:
        f.write("port1")
    for path in paths:
        assert not os.path.exists(path), path


EFAULT = """import ctypes, os, struct
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open("/dev/cxl/mem0", os.O_RDWR)
for cmd, size_in, in_ptr, size_out, out_ptr in ((6, 8, 0x10, 64, 0), (1, 0, 0, 0x43, 0x10)):
    buf = ctypes.create_string_buffer(struct.pack("<IIIIIIQIIQ", cmd, 0, 0, 0, size_in, 0, in_ptr, size_out, 0,
                                                  out_ptr or ctypes.addressof(ctypes.create_string_buffer(64))))
    rc = libc.ioctl(fd, ctypes.c_ulong(0xC030CE02), buf)
    print(rc, ctypes.get_errno())
"""


def test_a_mailbox_command_with_a_bad_pointer_is_efault(daxfuse_factory):
    """Found by review: the library copied from and to the caller's pointers
    as they were, and a bad one killed the program (the kernel says EFAULT)."""
    d = daxfuse_factory("--size", "64M")
    r = inside(d, "python3", "-c", EFAULT)
    assert (r.returncode, r.stdout.split()) == (0, ["-1", str(errno.EFAULT)] * 2), r.stderr

