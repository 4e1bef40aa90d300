"""ndctl's own device-dax tests (pmem/ndctl v76.1, test/), mirrored with real
processes inside `daxfuse exec`: ndctl, daxctl and the C programs of
tests/c. Mirrored elsewhere: device-dax.c (t2_personality,
tests/c/device_dax.c) and dax-poison.c (t2_personality,
tests/c/dax_poison.c). Here: what dax-pmd.c runs on a device-dax instance
(tests/c/dax_pmd.c), multi-dax.sh, daxdev-errors.sh with daxdev-errors.c
(tests/c/daxdev_errors.c), and daxctl-create.sh whole (t2_sysfs checks
parts of it: a device over a hole and the tail, the --input round trip).

What the emulator does its own way: nfit_test's `ndctl create-namespace -m
devdax` becomes `daxctl create-device` (namespaces follow the devices:
README, "The NVDIMM bus"), the bus is provider `daxfuse` on the platform
device `daxfuse-nvdimm` instead of nfit_test.0, and a fresh mount stands for
the scripts' `reset` (disable-region, init-labels, enable-region). The
scripts' check_dmesg (no kernel warning) is the daemon's log holding no
error or traceback."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import inside


pytestmark = [pytest.mark.mounted, pytest.mark.timeout(120)]

needs_ndctl = pytest.mark.skipif(shutil.which("ndctl") is None or shutil.which("daxctl") is None,
                                 reason="ndctl or daxctl is missing (scripts/test installs them)")

C_DIR = os.path.join(os.path.dirname(__file__), "c")
MiB = 1 << 20
ALIGNS = {"4K": 4096, "2M": 2 * MiB, "1G": 1 << 30}
BUS_PLATFORM = "daxfuse-nvdimm"  # the bus's platform device (nfit_test.0 in the scripts)


def compile_program(out, name: str, *libraries: str) -> str:
    path = str(out / name)
    subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-o", path, os.path.join(C_DIR, f"{name}.c"), *libraries],
                   check=True)
    return path


@pytest.fixture(scope="module")
def dax_pmd(tmp_path_factory):
    """tests/c/dax_pmd.c, compiled once."""
    return compile_program(tmp_path_factory.mktemp("c"), "dax_pmd")


@pytest.fixture(scope="module")
def daxdev_errors(tmp_path_factory):
    """tests/c/daxdev_errors.c, compiled once, against libndctl and
    libdaxctl by their runtime sonames (their -dev packages need not be
    there: it declares what it uses where their headers are missing)."""
    return compile_program(tmp_path_factory.mktemp("c"), "daxdev_errors", "-l:libndctl.so.6", "-l:libdaxctl.so.1")


def ok(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 0, f"exit {r.returncode}: {r.stdout}{r.stderr}"
    return r.stdout


def no_kernel_warnings(d) -> None:
    """check_dmesg: nothing went wrong underneath (the daemon's log)."""
    assert d.failures() == []


def aligned_mount(daxfuse_factory, align: str):
    """A region of two aligns, dax0.0 over it: dax-pmd maps 2 * align."""
    size = 2 * ALIGNS[align] if align == "1G" else 64 * MiB
    return daxfuse_factory("--size", str(size), "--align", align)


# --- dax-pmd.c -----------------------------------------------------------------------------

@pytest.mark.parametrize("align", list(ALIGNS))
def test_dax_pmd_directio(daxfuse_factory, dax_pmd, tmp_path, align):
    """dax-pmd.c's test_dax_directio, as device-dax.c runs it for 4K, 2M and
    1G devices: five rounds of a fresh 2 * align MAP_SHARED mapping and an
    O_DIRECT file: write out of and read into unfaulted device addresses
    (rounds 0, 4), O_DIRECT of a pre-faulted address (1), fork with a
    pre-faulted PMD (2), a read fault made writable (3); and what each
    transfer carried (beyond the original)."""
    d = aligned_mount(daxfuse_factory, align)
    out = ok(inside(d, dax_pmd, "/dev/dax0.0", str(ALIGNS[align]), "directio", cwd=str(tmp_path)))
    assert out.endswith("all checks passed\n") and out.count("ok: round") == 25, out
    assert not os.path.exists(tmp_path / "test_dax_mnt"), "the program cleaned up"
    no_kernel_warnings(d)


@pytest.mark.parametrize("align", ["4K", "2M", "1G"])
def test_dax_pmd_remap(daxfuse_factory, dax_pmd, align):
    """dax-pmd.c's test_dax_remap on a device-dax mapping: mremap of its
    first 4 KiB onto an anonymous mapping. The kernel (5.9 on: mremap asks
    dev_dax_may_split) refuses it with EINVAL off the align (2M, 1G), and for
    a 4K device moves the device page: stores through the new address reach
    the device, no SIGBUS (ndctl also accepts a SIGBUS for align > 4K or a
    failure, from older kernels)."""
    d = aligned_mount(daxfuse_factory, align)
    out = ok(inside(d, dax_pmd, "/dev/dax0.0", str(ALIGNS[align]), "remap"))
    assert out.endswith("all checks passed\n"), out
    no_kernel_warnings(d)


# --- multi-dax.sh --------------------------------------------------------------------------

def ndctl_json(d, *args):
    out = ok(inside(d, "ndctl", *args))
    return json.loads(out) if out else []


def roomiest_region(d) -> str:
    """query=". | sort_by(.available_size) | reverse | .[0].dev" over
    `ndctl list -b BUS -t pmem -Ri`."""
    regions = ndctl_json(d, "list", "-b", "daxfuse", "-t", "pmem", "-Ri")
    if isinstance(regions, dict):
        regions = [regions]
    return sorted(regions, key=lambda r: r["available_size"], reverse=True)[0]["dev"]


def create_devdax(d, region: str, *args: str) -> str:
    """`ndctl create-namespace -r REGION -t pmem -m devdax ARGS`, the
    emulator's way: daxctl create-device in the region; the chardev of the
    devdax it made."""
    made = json.loads(ok(inside(d, "daxctl", "create-device", "-r", region.removeprefix("region"), *args)))
    (chardev,) = [dev["chardev"] for dev in made if dev["mode"] == "devdax"]
    return chardev


@needs_ndctl
def test_multi_dax(daxfuse_factory):
    """multi-dax.sh: in the pmem region with the most available size, two
    16M devdax namespaces with the page size as align, each with its device
    (`.daxregion.devices[0].chardev` of a devdax namespace); no warning.
    The regions are a 32M and a 64M one, so the choice is the 64M one."""
    d = daxfuse_factory("--size", "32M", "--no-default-device")
    d.control("create-region size=64M id=1")
    region = roomiest_region(d)
    assert region == "region1"
    page = os.sysconf("SC_PAGE_SIZE")
    chardevs = [create_devdax(d, region, "-s", "16M", "-a", str(page)) for _ in range(2)]
    assert len(set(chardevs)) == 2, chardevs
    namespaces = ndctl_json(d, "list", "-b", "daxfuse", "-r", region, "-N", "-X")
    devdax = [ns for ns in namespaces if ns["mode"] == "devdax"]
    assert sorted(ns["daxregion"]["devices"][0]["chardev"] for ns in devdax) == sorted(chardevs)
    for ns in devdax:
        (dev,) = ns["daxregion"]["devices"]
        assert (ns["size"], dev["size"], ns["align"], dev["align"]) == (16 * MiB, 16 * MiB, page, page), ns
    show = 'for dev; do stat -c "%F %t:%T" "/dev/$dev"; done'
    kinds = ok(inside(d, "sh", "-c", show, "sh", *chardevs)).splitlines()
    assert [k.split()[0:2] for k in kinds] == [["character", "special"]] * 2 and len(set(kinds)) == 2, kinds
    no_kernel_warnings(d)


# --- daxdev-errors.sh + daxdev-errors.c ----------------------------------------------------

def read_badblocks(d, path: str) -> str:
    """The script's `read sector len < PATH`: its first line, or '' where
    there is none (the read fails)."""
    r = inside(d, "sh", "-c", 'if read sector len < "$1"; then echo "$sector $len"; fi', "sh", path)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    return r.stdout.strip()


@needs_ndctl
def test_daxdev_errors(daxfuse_factory, daxdev_errors):
    """daxdev-errors.sh: a devdax namespace over the roomiest region (align
    4096, all of it); 8 errors injected with ndctl inject-error in the middle
    of the namespace (its size / 512 / 2) where the region's badblocks had
    none; the region's badblocks list them; daxdev-errors BUS REGION then
    finds the bus, the region's enabled and configured nd dax device and
    its first bad range, and sends ND_CMD_ARS_CAP, ARS_START (persistent),
    ARS_STATUS and ND_CMD_CLEAR_ERROR over it, clearing all of it; after
    that /sys/bus/platform/devices/PLATFORM/BUS/REGION/badblocks is empty.
    Beyond the original (tests/c/daxdev_errors.c says what): an ARS record
    covers the range, a load of the poisoned page raises SIGBUS
    BUS_MCEERR_AR before the clear and reads after it."""
    d = daxfuse_factory("--size", "16M", "--align", "4K", "--no-default-device")
    d.control("create-region size=64M align=4K id=1")
    region = roomiest_region(d)
    assert region == "region1"
    chardev = create_devdax(d, region, "-a", "4096")
    assert chardev == "dax1.0"
    # json2var of `ndctl list -b BUS --mode=devdax --namespaces`: dev, size
    (ns,) = ndctl_json(d, "list", "-b", "daxfuse", "--mode=devdax", "--namespaces")
    nsdev, size = ns["dev"], ns["size"]
    assert (nsdev, size) == ("namespace1.0", 64 * MiB)
    (bus,) = ndctl_json(d, "list", "-b", "daxfuse")
    busdev = bus["dev"]
    assert busdev == "ndbus0"
    err_sector, err_count = size // 512 // 2, 8
    nd_badblocks = f"/sys/bus/nd/devices/{region}/badblocks"
    assert read_badblocks(d, nd_badblocks) == "", "a fresh region has no badblocks"
    ok(inside(d, "ndctl", "inject-error", f"--block={err_sector}", f"--count={err_count}", nsdev))

    def resource(*parts):
        with open(d.path("sys", "bus", "nd", "devices", *parts, "resource")) as f:
            return int(f.read(), 16)
    ns_start = (resource(nsdev) - resource(region)) // 512
    assert read_badblocks(d, nd_badblocks) == f"{ns_start + err_sector} {err_count}"

    r = inside(d, daxdev_errors, busdev, region)
    assert r.returncode == 0 and r.stdout == "all checks passed\n", r.stdout + r.stderr
    assert "check_clear_error: clearing at" in r.stderr and r.stderr.count("** Received a SIGBUS **") == 1, r.stderr

    platform_badblocks = f"/sys/bus/platform/devices/{BUS_PLATFORM}/{busdev}/{region}/badblocks"
    assert read_badblocks(d, platform_badblocks) == "", "badblocks empty after the clear"
    (ns,) = ndctl_json(d, "list", "-N", "--media-errors", "-r", region)
    assert "badblocks" not in ns, ns
    (region1,) = [r for r in d.layout() if r["id"] == 1]
    assert {dev["name"]: dev["badblocks"] for dev in region1["devices"]}[chardev] == [], "the daemon's poison is gone"
    no_kernel_warnings(d)


# --- daxctl-create.sh ----------------------------------------------------------------------

def daxctl_create_sh() -> None:
    """daxctl-create.sh, step for step; run inside exec by the test below
    (one process for its hundred daxctl calls). An AssertionError names the
    step that failed."""
    def daxctl(*args: str) -> str:
        r = subprocess.run(["daxctl", *args], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"daxctl {' '.join(args)}: exit {r.returncode}: {r.stderr}"
        return r.stdout

    def created(*args: str) -> str:  # $(daxctl create-device ARGS | jq -er '.[].chardev')
        (dev,) = json.loads(daxctl("create-device", *args))
        assert dev["chardev"], args
        return dev["chardev"]

    def region0() -> dict:
        return json.loads(daxctl("list", "-r", "0"))[0]

    def nr_mappings(dev: str) -> int:
        """daxctl_get_nr_mappings: mappingN while it exists, 0 unless
        their sizes add up to the device's size."""
        path, i, total = os.path.realpath(f"/sys/bus/dax/devices/{dev}"), 0, 0
        while os.path.isdir(f"{path}/mapping{i}"):
            with open(f"{path}/mapping{i}/start") as s, open(f"{path}/mapping{i}/end") as e:
                size = int(e.read(), 0) - int(s.read(), 0) + 1
            if size == 0:
                i = 0
                break
            total, i = total + size, i + 1
        return i if json.loads(daxctl("list", "-d", dev))[0]["size"] == total else 0

    def test_pass(step: str) -> None:
        assert region0().get("available_size") == available, f"{step}: available size"

    def fail_if_available(step: str) -> None:
        assert "available_size" not in region0(), f"{step}: unexpected available size {region0()}"

    def clear_dev() -> None:
        daxctl("disable-device", testdev)
        daxctl("reconfigure-device", "-s", "0", testdev)

    def destroy(dev: str) -> None:
        daxctl("disable-device", dev)
        daxctl("destroy-device", dev)

    def test_multi(hole: str, reconfigure: bool, step: str) -> None:
        size = available // 4
        if reconfigure:
            daxctl("disable-device", testdev)
            daxctl("reconfigure-device", "-s", str(size), testdev)
        created("-r", "0", "-s", str(size))
        created("-r", "0", "-s", str(size))
        if not reconfigure:
            created("-r", "0", "-s", str(size))
        destroy(hole)  # a hole
        daxdev_4 = created("-r", "0", "-s", str(size * 2))  # space in the hole and at the end
        assert nr_mappings(daxdev_4) == 2, f"{step}: {daxdev_4} in the hole and at the end"
        fail_if_available(step)
        daxctl("disable-device", "-r", "0", "all")
        daxctl("destroy-device", "-r", "0", "all")

    def test_multi_reconfig(ncfgs: int, step: str) -> str:
        size = available // ncfgs
        daxctl("disable-device", testdev)
        daxctl("reconfigure-device", "-s", str(size), testdev)
        daxctl("disable-device", testdev)
        daxdev_1 = created("-r", "0", "-s", str(size))
        daxctl("disable-device", daxdev_1)
        for i in range(2 * size, size * ncfgs // 2 + 1, size):
            daxctl("disable-device", testdev)
            daxctl("reconfigure-device", "-s", str(i), testdev)
            daxctl("disable-device", daxdev_1)
            daxctl("reconfigure-device", "-s", str(i), daxdev_1)
        assert nr_mappings(testdev) == ncfgs // 2, f"{step}: {testdev}'s mappings"
        assert nr_mappings(daxdev_1) == ncfgs // 2, f"{step}: {daxdev_1}'s mappings"
        (dump,) = json.loads(daxctl("list", "-M", "-d", daxdev_1))  # jq -er '.[]' > input.json
        fail_if_available(step)
        destroy(daxdev_1)
        return json.dumps(dump)

    # find_testdev: a victim region (dax_hmem's there, daxfuse's dynamic one here) and device
    assert region0()["path"] == "/platform/daxfuse.0"
    testdev = json.loads(daxctl("list", "-D", "-r", "0"))[0]["chardev"]
    # setup_dev
    assert nr_mappings(testdev) != 0, "the device is idle"
    clear_dev()
    available = region0()["available_size"]
    # test 0: zero out the region's device; all of the space is available again
    clear_dev()
    test_pass("test 0")
    # test 1: a device of the whole available space, one mapping
    daxdev = created("-r", "0")
    assert nr_mappings(daxdev) == 1, "test 1"
    fail_if_available("test 1")
    destroy(daxdev)
    clear_dev()
    test_pass("test 1")
    # test 2: space in the middle and at the end; test 3: at the beginning and at the end
    test_multi("dax0.1", True, "test 2")
    clear_dev()
    test_pass("test 2")
    test_multi("dax0.1", False, "test 3")
    clear_dev()
    test_pass("test 3")
    # test 4: two devices reconfigured in turn to ever larger sizes: four mappings each
    test_multi_reconfig(8, "test 4")
    clear_dev()
    test_pass("test 4")
    # test 5: two resources adjusted to fill the region, towards its beginning, then its end
    size = available // 4
    for _ in range(4):
        assert nr_mappings(created("-r", "0", "-s", str(size))) == 1, "test 5"
    destroy("dax0.1")
    destroy("dax0.4")
    daxctl("disable-device", "dax0.2")
    daxctl("reconfigure-device", "-s", str(size * 2), "dax0.2")
    assert nr_mappings("dax0.2") == 2, "test 5: grown into space before it, a second mapping"
    daxctl("disable-device", "dax0.3")
    daxctl("reconfigure-device", "-s", str(size * 2), "dax0.3")
    assert nr_mappings("dax0.3") == 1, "test 5: grown at the end of its range, one mapping"
    fail_if_available("test 5")
    destroy("dax0.3")
    destroy("dax0.2")
    clear_dev()
    test_pass("test 5")
    # test 6: a device with an align: 1G, as the script always picks (its [[ $((available >= 1G)) ]] holds)
    daxdev = created("-r", "0", "-s", str(1 << 30), "-a", str(1 << 30))
    assert json.loads(daxctl("list", "-d", daxdev))[0]["align"] == 1 << 30, "test 6"
    destroy(daxdev)
    clear_dev()
    test_pass("test 6")
    # test 7: a device made from test 4's listing (--input): its four mappings again
    dump = test_multi_reconfig(8, "test 7")
    with open("input.json", "w") as f:
        f.write(dump)
    daxdev_1 = created("--input", "input.json")
    assert nr_mappings(daxdev_1) == 4, "test 7"
    destroy(daxdev_1)
    clear_dev()
    test_pass("test 7")
    # reset_dev
    daxctl("disable-device", testdev)
    daxctl("reconfigure-device", "-s", str(available), testdev)
    daxctl("enable-device", testdev)
    print("all checks passed")


@pytest.mark.skipif(shutil.which("daxctl") is None, reason="daxctl is missing (scripts/test installs it)")
def test_daxctl_create_sh(daxfuse_factory, tmp_path):
    """daxctl-create.sh (tests 0-7, t2_sysfs mirrors parts of it): on a
    dynamic region's victim device, emptied; devices of all the space, in a
    hole and at the end (mapping counts from mappingN), two devices grown in
    turn to four mappings each, growth before a range (a second mapping) and
    at its end (one), a 1G-aligned device, a device made again from a
    listing (--input); the region's available size back each time. Its
    `daxctl list -r 0` path is daxfuse's dynamic region, not dax_hmem's."""
    d = daxfuse_factory("--size", "4G")
    tests = os.path.dirname(os.path.abspath(__file__))
    r = inside(d, sys.executable, "-c", f"import sys; sys.path.insert(0, {tests!r}); "
               "import t2_ndctl_mirrors; t2_ndctl_mirrors.daxctl_create_sh()", cwd=str(tmp_path))
    assert r.returncode == 0 and r.stdout == "all checks passed\n", r.stdout + r.stderr
    no_kernel_warnings(d)
