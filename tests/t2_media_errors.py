"""Media errors seen from real processes: reads fail with EIO, mappings
raise SIGBUS on just the poisoned pages (FUSE and direct), whole-block
writes clear, and ndctl's inject-error drives it all unmodified."""
import errno
import json
import mmap
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

from daxfuse.testing import DAXFUSE


pytestmark = [pytest.mark.mounted, pytest.mark.timeout(120)]

MiB = 1 << 20
PAGE = 4096


@pytest.fixture
def d(daxfuse_factory, tmp_path):
    return daxfuse_factory("--size", "64M", "--align", "4K", "--memory-file", str(tmp_path / "memory"))


def badblocks(d, device="dax0.0"):
    r = subprocess.run([*DAXFUSE, "inject-error", "-m", d.mountpoint, device, "--status"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [(b["offset"], b["length"]) for b in json.loads(r.stdout)["badblocks"]]


def eio(call, *args):
    with pytest.raises(OSError) as e:
        call(*args)
    return e.value.errno == errno.EIO


def test_reads_covering_poison_fail_and_others_do_not(d):
    fd = os.open(d.path("dax", "dax0.0"), os.O_RDWR)
    os.pwrite(fd, b"x" * 3 * PAGE, 0)
    d.control("inject-error dax0.0 block=9")  # in the second page
    assert eio(os.pread, fd, 1, 9 * 512)
    assert os.pread(fd, 3 * PAGE, 0) == b"x" * PAGE, "a buffered read stops short at the poisoned page"
    assert os.pread(fd, PAGE, 2 * PAGE) == b"x" * PAGE
    os.close(fd)
    direct = os.open(d.path("dax", "dax0.0"), os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, 3 * PAGE)
    assert eio(os.preadv, direct, [buf], 0), "an O_DIRECT read that covers it fails whole"
    assert eio(os.preadv, direct, [memoryview(buf)[:512]], 9 * 512)
    assert os.preadv(direct, [memoryview(buf)[:512]], 8 * 512) == 512, "O_DIRECT fails per block, not per page"
    assert bytes(buf[:512]) == b"x" * 512
    os.close(direct)
    r = subprocess.run(["dd", f"if={d.path('dax', 'dax0.0')}", "of=/dev/null", "bs=4k", "count=4"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "Input/output error" in r.stderr


def test_whole_block_writes_clear_and_partial_ones_fail(d):
    d.control("inject-error dax0.0 block=16 count=3")
    direct = os.open(d.path("dax", "dax0.0"), os.O_RDWR | os.O_DIRECT)
    buf = mmap.mmap(-1, PAGE)
    buf[:] = b"c" * PAGE
    assert os.pwritev(direct, [memoryview(buf)[:512]], 17 * 512) == 512, "the pmem driver's clear-on-write"
    assert badblocks(d) == [(16, 1), (18, 1)]
    fd = os.open(d.path("dax", "dax0.0"), os.O_RDWR)
    assert eio(os.pwrite, fd, b"p", 16 * 512 + 7), "part of a poisoned block"
    assert badblocks(d) == [(16, 1), (18, 1)]
    os.pwrite(fd, b"w" * 3 * 512, 16 * 512)
    assert badblocks(d) == [] and os.pread(fd, 3 * 512, 16 * 512) == b"w" * 3 * 512, "cleared: never fails"
    os.close(fd)
    os.close(direct)


def test_dirty_mapped_pages_written_back_do_not_clear_fresh_poison(d):
    """The injection drops the cached pages, writing dirty ones back over
    the poison: stores from before it, not a clearing write."""
    fd = os.open(d.path("dax", "dax0.0"), os.O_RDWR)
    with mmap.mmap(fd, MiB, mmap.MAP_SHARED) as m:
        m[16 * PAGE:17 * PAGE] = b"D" * PAGE
        d.control("inject-error dax0.0 block=130")
    assert badblocks(d) == [(130, 1)]
    assert eio(os.pread, fd, 512, 130 * 512)
    os.close(fd)


MAPPER = textwrap.dedent("""
    import mmap, os, sys
    fd = os.open(sys.argv[1], os.O_RDWR)
    m = mmap.mmap(fd, 2 << 20, mmap.MAP_SHARED)
    m[0:1] = m[4096:4097] = m[8192:8193] = b"m"
    print("mapped", flush=True)
    sys.stdin.readline()
    print("page 0", m[0:1].decode(), "page 2", m[8192:8193].decode(), flush=True)
    m[4096]  # the poisoned page
    print("read poison", flush=True)
""")


@pytest.mark.parametrize("inside", [False, True], ids=["fuse-mapping", "direct-mapping"])
def test_a_mapping_loses_just_its_poisoned_page(d, inside):
    """The page holding poison raises SIGBUS on the next load; the rest of
    the mapping lives on. Outside exec that is the FUSE path's fault; inside,
    the direct mapping's poisoned page is revoked alone."""
    argv = [sys.executable, "-c", MAPPER]
    if inside:
        argv = [*DAXFUSE, "exec", "-m", d.mountpoint, "--", *argv, "/dev/dax0.0"]
    else:
        argv.append(d.path("dax", "dax0.0"))
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "mapped\n"
        d.control("inject-error dax0.0 block=8 count=1")  # page 1
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == "page 0 m page 2 m\n"
        assert proc.wait(30) in (-signal.SIGBUS, 128 + signal.SIGBUS)
        assert proc.stdout.read() == "", "the poisoned page never reads as data"
    finally:
        proc.kill()
        proc.wait()


def test_poison_in_the_layout_and_the_cli(d):
    cli = [*DAXFUSE, "inject-error", "-m", d.mountpoint, "dax0.0"]
    assert subprocess.run([*cli, "-B", "100", "-n", "4"], timeout=60).returncode == 0
    assert subprocess.run([*cli, "-B", "104"], timeout=60).returncode == 0
    assert badblocks(d) == [(100, 5)], "merged"
    assert subprocess.run([*cli, "-B", "101", "-n", "2", "--uninject"], timeout=60).returncode == 0
    assert badblocks(d) == [(100, 1), (103, 2)], "sorted, split"
    r = subprocess.run([*DAXFUSE, "list", "-m", d.mountpoint, "--media-errors"], capture_output=True, text=True)
    assert json.loads(r.stdout)[0]["badblocks"] == [{"offset": 100, "length": 1}, {"offset": 103, "length": 2}]
    r = subprocess.run([*DAXFUSE, "list", "-m", d.mountpoint], capture_output=True, text=True)
    assert "badblocks" not in r.stdout, "only with --media-errors, as ndctl"
    for bad in (["-B", str(64 * MiB // 512)], ["-B", "-1"], ["-B", "0", "-n", "0"]):
        r = subprocess.run([*cli, *bad], capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and r.stderr.count("\n") == 1 and r.stderr.startswith("daxfuse: "), r.stderr
    assert badblocks(d) == [(100, 1), (103, 2)], "refused changes leave it as it was"


@pytest.mark.skipif(shutil.which("ndctl") is None, reason="ndctl is missing (scripts/test installs it)")
def test_unmodified_ndctl_inject_error(d):
    def ndctl(*args):
        r = subprocess.run([*DAXFUSE, "exec", "-m", d.mountpoint, "--", "ndctl", *args],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout
    ns = json.loads(ndctl("inject-error", "namespace0.0", "-B", "40", "-n", "3"))
    assert (ns["badblock_count"], ns["badblocks"][0]["offset"], ns["badblocks"][0]["length"]) == (3, 40, 3)
    assert badblocks(d) == [(40, 3)], "the daemon's poison, under the namespace's blocks"
    assert json.loads(ndctl("inject-error", "namespace0.0", "--status")) == {"badblocks": [{"block": 40, "count": 3}]}
    ndctl("inject-error", "namespace0.0", "-B", "40", "-n", "3", "--uninject")
    assert ndctl("inject-error", "namespace0.0", "--status") == "", "nothing injected any more"
    assert badblocks(d) == [(40, 3)], "un-injection leaves the kernel's badblocks, as ndctl warns"
    region = d.path("sys", "devices", "platform", "daxfuse-nvdimm", "ndbus0", "region0", "badblocks")
    with open(region) as f:
        assert f.read() == "40 3\n"
    (ns,) = json.loads(ndctl("list", "-N", "--media-errors"))
    assert ns["badblocks"] == [{"offset": 40, "length": 3, "dimms": ["nmem0"]}]


REMAPPER = textwrap.dedent("""
    import mmap, os, sys
    fd = os.open("/dev/dax0.0", os.O_RDWR)
    for line in sys.stdin:  # each line: map again, and read the page it names
        page = int(line)
        with mmap.mmap(fd, 2 << 20, mmap.MAP_SHARED) as m:
            print(page, m[page * 4096:page * 4096 + 5].decode(), flush=True)
""")


def test_a_write_that_clears_poison_gives_a_direct_mapping_its_page_back(d):
    """Clear-on-write is a change of the bus with its event: a process that
    mapped the device around the poison, and maps it again after a write
    cleared it, reads the page (it was SIGBUSed: its copy of the window's
    mapping still had the hole)."""
    fd = os.open(d.path("dax", "dax0.0"), os.O_RDWR)
    os.pwrite(fd, b"page0" + b"\0" * (PAGE - 5) + b"page1", 0)
    proc = subprocess.Popen([*DAXFUSE, "exec", "-m", d.mountpoint, "--", sys.executable, "-c", REMAPPER],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        def read(page: int) -> str:
            proc.stdin.write(f"{page}\n")
            proc.stdin.flush()
            return proc.stdout.readline()
        assert read(0) == "0 page0\n"
        d.control("inject-error dax0.0 block=8 count=8")  # page 1
        assert read(0) == "0 page0\n", "mapped again, around the poison"
        os.pwrite(fd, b"clean" + b"\0" * (PAGE - 5), PAGE)  # covers the poison whole: cleared
        assert badblocks(d) == []
        assert read(1) == "1 clean\n"
    finally:
        proc.stdin.close()
        assert proc.wait(30) == 0
        os.close(fd)


PMEMPOOL_LOAD = textwrap.dedent("""
    import mmap, os, sys
    m = mmap.mmap(os.open("/dev/dax0.0", os.O_RDONLY), 2 << 20, mmap.MAP_SHARED, mmap.PROT_READ)
    print(m[4096:4101].hex(), flush=True)   # block 8: clean, in the poisoned page
    print(m[int(sys.argv[1])], flush=True)  # a poisoned block
""")


@pytest.mark.skipif(not (shutil.which("pmempool") and shutil.which("ndctl")),
                    reason="pmempool and ndctl are missing (scripts/test installs them)")
@pytest.mark.parametrize("align", ["2M", "4K"])
def test_pmempool_check_reports_bad_blocks_past_the_header(daxfuse_factory, tmp_path, align):
    """PMDK 1.12.1's pmempool_check TEST32: a poolset whose devdax part has
    bad blocks 11-18 (namespace-relative, as ndctl inject-error takes them),
    a few KiB past the pool header. pmempool check reads the header (bytes
    0-4095) and the obj layout (4096-5119) before it asks libpmem2 for bad
    blocks; on device-dax only the poisoned lines fault, so it reports them
    and exits 1. A load of the poisoned bytes themselves is memory failure."""
    d = daxfuse_factory("--size", "64M", "--align", align)

    def inside(*argv, ok=True):
        r = subprocess.run([*DAXFUSE, "exec", "-m", d.mountpoint, "--", *argv],
                           capture_output=True, text=True, timeout=120)
        assert not ok or r.returncode == 0, (argv, r.returncode, r.stdout, r.stderr)
        return r
    poolset = tmp_path / "testset1"
    poolset.write_text(f"PMEMPOOLSET\nAUTO /dev/dax0.0\nREPLICA\n10M {tmp_path}/testfile1\n")
    inside("pmempool", "create", "obj", "--layout", "pmempool", str(poolset))
    inside("pmempool", "feature", "-e", "CHECK_BAD_BLOCKS", str(poolset))
    inside("ndctl", "inject-error", "--block=11", "--count=8", "namespace0.0")
    r = inside("pmempool", "check", "-v", str(poolset), ok=False)
    assert r.returncode == 1, f"pmempool check died ({r.returncode}) instead of reporting: {r.stderr}"
    assert "poolset contains bad blocks" in r.stdout and f"{poolset}: cannot repair" in r.stdout
    r = inside(sys.executable, "-c", PMEMPOOL_LOAD, str(11 * 512 + 100), ok=False)
    assert r.returncode in (-7, 135) and r.stdout.count("\n") == 1, "the poisoned block itself is memory failure"
