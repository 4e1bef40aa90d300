"""scripts/bench: daxfuse beside a tmpfs file holding the same bytes, medians of
several runs taken in turns, page caches dropped before each cold
measurement, and two minimal daemons serving the tmpfs file, one in C
libfuse (what FUSE itself costs, without Python) and one in pyfuse3 (what
pyfuse3 and trio add). Prints a table (with daxfuse's ratio to each) and
writes JSON."""
import argparse
import contextlib
import functools
import json
import mmap
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from daxfuse.cxl import GRANULE
from daxfuse import client
from daxfuse.daemon.mount import UNMAP_IDLE
from daxfuse.client.runfiles import daemon_pid
from daxfuse.core.units import format_size, parse_size

MiB = 1 << 20
GiB = 1 << 30
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# a region for 1,000 devices of 2 MiB (the smallest a device grows by) and
# the one created and destroyed beside them
MANY_MiB = 2 * 1002
DAXFUSE = [sys.executable, "-m", "daxfuse"]


def drop_caches(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class Target:
    """One file under test: a daxfuse device, the tmpfs reference or the C
    libfuse baseline. Each method measures one run, caches dropped first."""

    _dst: np.ndarray | None = None  # the warm copy's destination, shared and pre-touched

    def __init__(self, path: str, size: int, pid: int | None = None) -> None:
        self.path, self.size, self.pid = path, size, pid  # pid: the daemon serving path
        self.buf = mmap.mmap(-1, MiB)  # page-aligned, as O_DIRECT wants
        self.buf.write(os.urandom(MiB))
        rng = random.Random(42)
        self.offsets = [rng.randrange(size // 4096) * 4096 for _ in range(20000)]

    def seq(self, write: bool, direct: bool) -> dict:
        flags = (os.O_RDWR if write else os.O_RDONLY) | (os.O_DIRECT if direct else 0)
        op = os.pwritev if write else os.preadv
        drop_caches(self.path)
        fd = os.open(self.path, flags)
        elapsed = timed(lambda: [op(fd, [self.buf], off) for off in range(0, self.size, MiB)])
        os.close(fd)
        key = f"seq_{'write' if write else 'read'}{'_direct' if direct else ''}_GBps"
        return {key: self.size / elapsed / 1e9}

    def rand_read(self) -> dict:
        buf = bytearray(4096)
        drop_caches(self.path)
        fd = os.open(self.path, os.O_RDONLY)
        elapsed = timed(lambda: [os.preadv(fd, [buf], off) for off in self.offsets])
        os.close(fd)
        return {"rand_read_4k_qd1_iops": len(self.offsets) / elapsed}

    def mmap_faults(self) -> dict:
        """First touch of every page (reads; writes in a second mapping) and
        a warm copy of the whole mapping."""
        if Target._dst is None or len(Target._dst) != self.size:
            Target._dst = np.ones(self.size, dtype=np.uint8)
        dst = Target._dst
        out = {}
        fd = os.open(self.path, os.O_RDWR)
        drop_caches(self.path)
        with mmap.mmap(fd, self.size, mmap.MAP_SHARED, mmap.PROT_READ) as m:
            a = np.frombuffer(m, dtype=np.uint8)
            out["mmap_first_touch_read_GBps"] = self.size / timed(lambda: int(a[::4096].sum())) / 1e9
            out["mmap_warm_read_GBps"] = self.size / timed(lambda: np.copyto(dst, a)) / 1e9
            a = None
        drop_caches(self.path)
        with mmap.mmap(fd, self.size, mmap.MAP_SHARED) as m:
            a = np.frombuffer(m, dtype=np.uint8)
            out["mmap_first_touch_write_GBps"] = self.size / timed(lambda: a[::4096].fill(7)) / 1e9
            a = None
            m.flush()
        os.close(fd)
        return out

    def measures(self) -> list:
        return [lambda: self.seq(False, False), lambda: self.seq(False, True),
                lambda: self.seq(True, False), lambda: self.seq(True, True),
                self.rand_read, self.mmap_faults]


def interleaved(targets: dict[str, Target], runs: int) -> dict:
    """Medians per target and measure, the targets taking turns run by run so
    that the machine's drift hits them alike."""
    samples = {name: {} for name in targets}
    plans = {name: t.measures() for name, t in targets.items()}
    for i in range(max(map(len, plans.values()))):
        for _ in range(runs):
            for name, plan in plans.items():
                if i < len(plan):
                    for key, value in plan[i]().items():
                        samples[name].setdefault(key, []).append(value)
    return {name: {k: statistics.median(v) for k, v in s.items()} for name, s in samples.items()}


class Control:
    def __init__(self, mountpoint: str) -> None:
        self.mountpoint = mountpoint
        self.fd = os.open(os.path.join(mountpoint, "control"), os.O_RDWR)

    def __call__(self, command: str) -> str:
        return client.batch(self.fd, command)

    def latency_ms(self, command: str, undo: str | None = None, runs: int = 51) -> float:
        samples = []
        for _ in range(runs):
            samples.append(timed(lambda: self(command)))
            if undo:
                self(undo)
        return statistics.median(samples) * 1000


def control_plane(work: str, mnt: str, pid: int, size: int) -> dict:
    ctl = Control(mnt)
    dev = os.path.join(mnt, "dax", "dax0.0")
    out = {"disable_ms": ctl.latency_ms("disable-device dax0.0", "enable-device dax0.0")}
    dirty = min(256 * MiB, size)
    fd = os.open(dev, os.O_RDWR)
    samples = []
    for _ in range(3):
        with mmap.mmap(fd, dirty, mmap.MAP_SHARED) as m:
            np.frombuffer(m, dtype=np.uint8)[::4096] = 1
            samples.append(timed(lambda: ctl("disable-device dax0.0")))
        ctl("enable-device dax0.0")
    os.close(fd)
    out[f"disable_dirty_{dirty // MiB}M_ms"] = statistics.median(samples) * 1000

    ctl(f"create-region size={MANY_MiB}M align=4K id=1")
    ctl("\n".join(["create-device region=1 size=2M"] * 1000))
    out["create_destroy_1000_ms"] = ctl.latency_ms(
        "create-device region=1 size=2M", "disable-device dax1.1000\ndestroy-device dax1.1000")
    with open(os.path.join(mnt, "control")) as f:
        out["layout_read_1000_ms"] = statistics.median(
            timed(lambda: (f.seek(0), f.read())) for _ in range(21)) * 1000
    out["cli_list_1000_ms"] = statistics.median(
        timed(lambda: subprocess.run([*DAXFUSE, "list", "-m", mnt], check=True, capture_output=True))
        for _ in range(5)) * 1000

    # A new region of 16 GiB remaps the memory file: what the daemon keeps
    # of its own, the emulated memory it touched no longer mapped.
    ctl(f"create-region size={16 * 1024}M id=2\ncreate-device region=2")
    out.update({f"daemon_{key}_MiB": value for key, value in rss(pid).items()})
    # what a sparse device costs in RAM: a byte stored every 64 MiB through a
    # direct mapping allocates a huge page (2 MiB) each on the daemon's tmpfs
    exe = compile_c(work, "scripts/bench_touch.c")
    # the toucher's own shared-memory RSS: the machine's Shmem moves with whatever else runs
    out["sparse_16G_byte_per_64M_MiB"] = float(
        in_exec(mnt, exe, "touch", "/dev/dax2.0", str(16 * 1024 * MiB), "sparse").split()[1])
    out["disable_sparse_16G_ms"] = timed(lambda: ctl("disable-device dax2.0")) * 1000  # its window moves back
    return out


def durable_layout(work: str) -> dict:
    """The create+destroy of control_plane with the layout record on a disk
    (/var/tmp): each change waits for its record's write, fsync and rename."""
    mnt, disk = os.path.join(work, "dmnt"), tempfile.mkdtemp(prefix="daxfuse-bench-", dir="/var/tmp")
    memory = os.path.join(disk, "memory")
    os.mkdir(mnt)
    subprocess.run([*DAXFUSE, "mount", mnt, "--size", "64M", "--nr-dax", "2048", "--memory-file", memory],
                   check=True, capture_output=True)
    try:
        ctl = Control(mnt)
        ctl(f"create-region size={MANY_MiB}M align=4K id=1")
        ctl("\n".join(["create-device region=1 size=2M"] * 1000))
        return {"create_destroy_1000_durable_ms": ctl.latency_ms(
                    "create-device region=1 size=2M", "disable-device dax1.1000\ndestroy-device dax1.1000"),
                "layout_record_1000_KiB": os.stat(memory + ".layout").st_size / 1024}
    finally:
        subprocess.run([*DAXFUSE, "umount", mnt], check=False)
        shutil.rmtree(disk)


def scale(work: str, runs: int) -> dict:
    """What a sysfs walk, a listing and a batch cost as the bus grows: a
    region of 2 MiB devices (the smallest step, alloc_is_aligned); each
    measure at the device count of its row."""
    mnt = os.path.join(work, "smnt")
    os.mkdir(mnt)
    subprocess.run([*DAXFUSE, "mount", mnt, "--size", "64M", "--nr-dax", "12000"], check=True, capture_output=True)
    try:
        ctl, have, out = Control(mnt), 1, {}

        def grow(to: int) -> float:
            nonlocal have
            took = timed(lambda: ctl("\n".join(["create-device region=1 size=2M"] * (to - have))))
            have = to
            return took

        def cold_lookup_us() -> float:
            """stat of a device's attribute no one has looked up: a LOOKUP of
            its directory and of the attribute (the median of 100 devices)."""
            paths = [os.path.join(mnt, "sys", "devices", "platform", "daxfuse.1", f"dax1.{i}", "size")
                     for i in range(have - 101, have - 1)]  # dax1.0 .. dax1.{have - 2}, and the seed
            return statistics.median(timed(functools.partial(os.stat, p)) for p in paths) * 1e6

        def daxctl_list() -> float:
            return timed(lambda: in_exec(mnt, "daxctl", "list", "-D"))

        ctl(f"create-region size={2 * 11_002}M align=4K id=1")  # 11,001 devices of 2 MiB, sparse
        grow(101)
        out["sysfs_cold_stat_100_us"] = cold_lookup_us()
        grow(1001)
        out["daxctl_list_1000_cold_s"] = daxctl_list()
        out["daxctl_list_1000_s"] = statistics.median(daxctl_list() for _ in range(runs))
        grow(4001)
        ls = [os.path.join(mnt, "sys", "devices", "platform", "daxfuse.1")]
        out["ls_region_4000_s"] = statistics.median(
            timed(lambda: subprocess.run(["ls", "-l", *ls], check=True, capture_output=True)) for _ in range(runs))
        grow(10001)
        out["sysfs_cold_stat_10000_us"] = cold_lookup_us()
        out["batch_1000_at_10000_s"] = grow(11001)
        return out
    finally:
        subprocess.run([*DAXFUSE, "umount", mnt], check=False)


def cxl(work: str, size: int, runs: int) -> dict:
    """A CXL RAM region of size (256 MiB steps, at most the 1 GiB of the
    default topology's windows) made as cxl create-region makes it (the sysfs
    writes of SPEC section 3, here straight to the mount), ready as a dax
    device bound to kmem; one across one memdev and one 2-way; then taken
    apart again. And first-touch writes of the resulting device in devdax
    mode inside exec, against the 2M-aligned dax0.0 of the same mount."""
    size = min(GiB, max(GRANULE, size - size % GRANULE))
    mnt = os.path.join(work, "cxlmnt")
    os.mkdir(mnt)
    subprocess.run([*DAXFUSE, "mount", mnt, "--size", str(size)], check=True, capture_output=True)
    devices = os.path.join(mnt, "sys", "bus", "cxl", "devices")

    def write(path: str, value: str) -> None:
        fd = os.open(os.path.join(devices, path), os.O_WRONLY)
        try:
            os.write(fd, value.encode() + b"\0")
        finally:
            os.close(fd)

    def create(root: str, targets: list[str]) -> str:
        total = max(size, GRANULE * len(targets))  # each target holds 256 MiB steps
        with open(os.path.join(devices, root, "create_ram_region")) as f:
            region = f.read().strip()
        write(f"{root}/create_ram_region", region)
        write(f"{region}/interleave_granularity", "4096")
        write(f"{region}/interleave_ways", str(len(targets)))
        write(f"{region}/size", f"{total:#x}")
        for i, t in enumerate(targets):
            write(f"{t}/mode", "ram")
            write(f"{t}/dpa_size", f"{total // len(targets):#x}")
            write(f"{region}/target{i}", t)
        write(f"{region}/commit", "1")
        write("../drivers/cxl_region/bind", region)
        assert os.path.exists(os.path.join(mnt, "dax", f"dax{region[6:]}.0"))
        return region

    def destroy(root: str, region: str, targets: list[str]) -> None:
        write("../drivers/cxl_region/unbind", region)
        write(f"{region}/commit", "0")
        for i, t in enumerate(targets):
            write(f"{region}/target{i}", "")
            write(f"{t}/dpa_size", "0")
        write(f"{root}/delete_region", region)

    try:
        out = {}
        for key, root, targets in (("cxl_region_ms", "decoder0.0", ["decoder9.0"]),
                                   ("cxl_region_x2_ms", "decoder0.1", ["decoder9.0", "decoder13.0"])):
            samples = []
            for _ in range(runs):
                region = None

                def made():
                    nonlocal region
                    region = create(root, targets)
                samples.append(timed(made))
                destroy(root, region, targets)
            out[key] = statistics.median(samples) * 1000
        region = create("decoder0.0", ["decoder9.0"])
        dev = f"dax{region[6:]}.0"
        with open(os.path.join(mnt, "sys", "bus", "dax", "drivers", "kmem", "unbind"), "w") as f:
            f.write(dev)
        with open(os.path.join(mnt, "sys", "bus", "dax", "drivers", "device_dax", "new_id"), "w") as f:
            f.write(dev)  # and device_dax takes it at once, as driver_attach
        exe = compile_c(work, "scripts/bench_touch.c")
        out.update(samples_of({
            "cxl_touch_write_GBps": lambda: size / float(in_exec(mnt, exe, "touch", f"/dev/{dev}", str(size), "write")) / 1e9,
            "dax_touch_write_GBps": lambda: size / float(in_exec(mnt, exe, "touch", "/dev/dax0.0", str(size), "write")) / 1e9,
        }, runs))
        return out
    finally:
        subprocess.run([*DAXFUSE, "umount", mnt], check=False)


def compile_c(work: str, source: str, *flags: str) -> str:
    exe = os.path.join(work, os.path.basename(source).removesuffix(".c"))
    subprocess.run(["gcc", "-O2", "-o", exe, os.path.join(ROOT, source), *flags], check=True)
    return exe


def in_exec(mnt: str, *argv: str, options: tuple = ()) -> str:
    return subprocess.run([*DAXFUSE, "exec", "-m", mnt, *options, "--", *argv], check=True,
                          capture_output=True, text=True).stdout


def run_c(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def samples_of(plan: dict, runs: int) -> dict:
    """Medians of each measure of plan (name -> function), the measures
    taking turns run by run."""
    samples: dict[str, list[float]] = {}
    for _ in range(runs):
        for key, fn in plan.items():
            samples.setdefault(key, []).append(fn())
    return {k: statistics.median(v) for k, v in samples.items()}


def personality(work: str, mnt: str, size: int, runs: int) -> dict:
    """What the personality costs: a stat() of a device and of another file,
    with and without it, a stat() of a host /dev name inside exec (a link
    into .host/ that FUSE resolves) and outside, and first-touch faults through FUSE mappings (a C
    loop over a MAP_SHARED mapping) inside exec against the same loop on the
    FUSE file outside it."""
    exe = compile_c(work, "scripts/bench_touch.c")
    dev = os.path.join(mnt, "dax", "dax0.0")
    fuse = ("--fuse-mappings",)

    def touch(op: str, inside: bool) -> float:
        drop_caches(dev)
        argv = ("touch", "/dev/dax0.0" if inside else dev, str(size), op)
        return size / float(in_exec(mnt, exe, *argv, options=fuse) if inside else run_c(exe, *argv)) / 1e9

    return samples_of({
        "stat_device_personality_ns": lambda: float(in_exec(mnt, exe, "stat", "/dev/dax0.0", "200000")),
        "stat_device_plain_ns": lambda: float(in_exec(mnt, exe, "stat", "/dev/dax0.0", "200000",
                                                      options=("--no-personality",))),
        "stat_other_personality_ns": lambda: float(in_exec(mnt, exe, "stat", exe, "200000")),
        "stat_other_plain_ns": lambda: float(in_exec(mnt, exe, "stat", exe, "200000",
                                                     options=("--no-personality",))),
        "stat_devnull_exec_ns": lambda: float(in_exec(mnt, exe, "stat", "/dev/null", "20000")),
        "stat_devnull_host_ns": lambda: float(run_c(exe, "stat", "/dev/null", "200000")),
        "touch_read_exec_GBps": lambda: touch("read", True),
        "touch_read_plain_GBps": lambda: touch("read", False),
        "touch_write_exec_GBps": lambda: touch("write", True),
        "touch_write_plain_GBps": lambda: touch("write", False),
    }, runs)


@contextlib.contextmanager
def huge_tmpfs(work: str, size: int):
    """A tmpfs mounted with huge=always: the kernel's PMD-mapped reference."""
    path = os.path.join(work, "huge")
    os.mkdir(path)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"huge=always,size={size + (64 << 20)}", "tmpfs", path],
                   check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", path], check=False)


def fill(path: str, size: int, data: bytes) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    for off in range(0, size, len(data)):
        os.pwrite(fd, data[:size - off], off)
    os.close(fd)


def direct(work: str, mnt: str, ctl: "Control", size: int, plain_ref: str, runs: int) -> dict:
    """Direct mappings inside exec: first-touch reads and writes and warm
    reads (the same C loop) of a 2M-aligned device against a file on a
    huge-page tmpfs, of a 4K-aligned one against a plain tmpfs file; a
    libpmem2 persist loop against the same loop on tmpfs; disable latency
    with a mapper storing nonstop, and with one stopped."""
    ctl(f"create-region size={size} align=4K id=1\ncreate-device region=1")
    data = os.urandom(64 * MiB)
    fill(os.path.join(mnt, "dax", "dax1.0"), size, data)
    exe = compile_c(work, "scripts/bench_touch.c", "-DWITH_PMEM2", "-lpmem2")
    revoke = compile_c(work, "tests/c/revoke.c", "-pthread")
    out = {}
    with huge_tmpfs(work, size) as huge:
        huge_ref = os.path.join(huge, "ref")
        fill(huge_ref, size, data)

        def touch(op: str, path: str, inside: bool) -> float:
            argv = (exe, "touch", path, str(size), op)
            return size / float(in_exec(mnt, *argv) if inside else run_c(*argv)) / 1e9

        def persist(path: str, inside: bool, n: int = 100000) -> float:
            argv = (exe, "persist", path, str(size), str(n))
            return n / float(in_exec(mnt, *argv) if inside else run_c(*argv))

        plan = {}
        for op in ("read", "write", "warm"):
            plan[f"direct_2M_{op}_GBps"] = functools.partial(touch, op, "/dev/dax0.0", True)
            plan[f"hugetmpfs_{op}_GBps"] = functools.partial(touch, op, huge_ref, False)
            plan[f"direct_4K_{op}_GBps"] = functools.partial(touch, op, "/dev/dax1.0", True)
            plan[f"tmpfs_{op}_GBps"] = functools.partial(touch, op, plain_ref, False)
        plan["persist_direct_ops"] = functools.partial(persist, "/dev/dax0.0", True)
        plan["persist_tmpfs_ops"] = functools.partial(persist, plain_ref, False, 2000)
        plan["remap_direct_us"] = lambda: float(in_exec(mnt, exe, "remap", "/dev/dax0.0", "20000"))
        plan["remap_hugetmpfs_us"] = lambda: float(run_c(exe, "remap", huge_ref, "20000"))
        out.update(samples_of(plan, runs))
    out.update(samples_of({"disable_mapped_ms": lambda: disable_with_mapper(mnt, ctl, revoke, False),
                           "disable_mapped_stopped_ms": lambda: disable_with_mapper(mnt, ctl, revoke, True)}, runs))
    ctl("disable-device dax1.0\ndestroy-device dax1.0\ndestroy-region 1")
    return out


def disable_with_mapper(mnt: str, ctl: "Control", revoke: str, stop: bool) -> float:
    proc = subprocess.Popen([*DAXFUSE, "exec", "-m", mnt, "--", revoke, "/dev/dax0.0", "spin"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert "ready\n" in proc.stdout
        if stop:
            os.kill(proc.pid, signal.SIGSTOP)
        elapsed = timed(lambda: ctl("disable-device dax0.0"))
        ctl("enable-device dax0.0")
        return elapsed * 1000
    finally:
        proc.kill()
        proc.wait()


def placement(targets: dict[str, Target], runs: int) -> dict:
    """Cold sequential reads with each daemon's threads and the reader pinned
    to one CPU, then to two. Unpinned, that is the scheduler's choice from
    run to run: on one CPU the daemon's work and the reader's copies take
    turns, on two they overlap."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return {}

    def pinned(target: Target, daemon_cpu: int, reader_cpu: int) -> float:
        subprocess.run(["taskset", "-a", "-p", "-c", str(daemon_cpu), str(target.pid)], check=True,
                       capture_output=True)
        os.sched_setaffinity(0, {reader_cpu})
        try:
            return target.seq(False, False)["seq_read_GBps"]
        finally:
            os.sched_setaffinity(0, cpus)
            subprocess.run(["taskset", "-a", "-p", "-c", ",".join(map(str, cpus)), str(target.pid)], check=True,
                           capture_output=True)

    return {name: samples_of({"seq_read_one_cpu_GBps": lambda t=t: pinned(t, cpus[0], cpus[0]),
                              "seq_read_two_cpus_GBps": lambda t=t: pinned(t, cpus[0], cpus[1])}, runs)
            for name, t in targets.items()}


def idle_after_run(pid: int, target: Target) -> dict:
    """Seconds from the data-path run's end until the idle daemon has dropped
    its mappings of the memory file (it checks every UNMAP_IDLE seconds, so
    within twice that), its RSS then, and a cold sequential read that maps
    the memory file again."""
    start = time.monotonic()
    while rss(pid)["RssShmem"] >= 1 and time.monotonic() - start < 3 * UNMAP_IDLE:
        time.sleep(0.1)
    out = {"idle_unmap_s": time.monotonic() - start}
    idle = rss(pid)
    out |= {f"daemon_{key}_after_run_MiB": idle[key] for key in ("VmRSS", "RssShmem")}
    return out | {"seq_read_after_idle_GBps": target.seq(False, False)["seq_read_GBps"]}


def rss(pid: int) -> dict:
    with open(f"/proc/{pid}/status") as f:
        status = dict(line.split(":", 1) for line in f)
    return {key: int(status[key].split()[0]) / 1024 for key in ("VmRSS", "RssAnon", "RssFile", "RssShmem")}


ROWS = [  # key, label, unit, target (daxfuse against the C libfuse daemon, in the same run)
    ("seq_read_GBps", "sequential read 1M (cold)", "GB/s", ">= 1.0x C"),
    ("seq_read_direct_GBps", "sequential read 1M O_DIRECT", "GB/s", ">= 1.0x C"),
    ("seq_write_GBps", "sequential write 1M", "GB/s", ">= 1.0x C"),
    ("seq_write_direct_GBps", "sequential write 1M O_DIRECT", "GB/s", ">= 1.0x C"),
    ("rand_read_4k_qd1_iops", "random read 4K QD1 (cold)", "IOPS", ">= 1.0x C"),
    ("mmap_first_touch_read_GBps", "mmap first-touch read faults", "GB/s", ">= 1.0x C"),
    ("mmap_first_touch_write_GBps", "mmap first-touch write faults", "GB/s", ">= 1.0x C"),
    ("mmap_warm_read_GBps", "mmap warm read", "GB/s", ">= 1.0x C"),
]
CONTROL_ROWS = [
    ("disable_ms", "disable, no dirty pages", "ms", "<= 10"),
    ("disable_dirty_256M_ms", "disable, 256 MiB dirty mapped", "ms", ""),
    ("create_destroy_1000_ms", "create+destroy, 1000 devices", "ms", "<= 2"),
    ("create_destroy_1000_durable_ms", "create+destroy, 1000 devices, durable layout record on /var/tmp", "ms", ""),
    ("layout_record_1000_KiB", "layout record, 1000 devices", "KiB", ""),
    ("layout_read_1000_ms", "control layout read, 1000 devices", "ms", "<= 2"),
    ("cli_list_1000_ms", "`daxfuse list`, 1000 devices (process)", "ms", ""),
    ("idle_unmap_s", "idle daemon drops its mappings after", "s", ""),
    ("seq_read_after_idle_GBps", "sequential read 1M (cold) just after, one run", "GB/s", ""),
    ("daemon_VmRSS_after_run_MiB", "daemon RSS, idle after the data-path run", "MiB", "<= 100"),
    ("daemon_VmRSS_MiB", "daemon RSS, 16 GiB memory file", "MiB", "<= 100"),
    ("daemon_RssAnon_MiB", "daemon anonymous RSS", "MiB", ""),
    ("daemon_RssShmem_MiB", "daemon RSS of mapped memory file", "MiB", ""),
    ("sparse_16G_byte_per_64M_MiB", "RAM for a byte stored every 64 MiB of a 16 GiB device", "MiB", ""),
    ("disable_sparse_16G_ms", "disable of that 16 GiB device, its window moved back", "ms", ""),
    ("sysfs_cold_stat_100_us", "stat of a sysfs attribute not looked up yet, 100 devices", "us", ""),
    ("sysfs_cold_stat_10000_us", "the same, 10,000 devices", "us", "as at 100"),
    ("daxctl_list_1000_cold_s", "`daxctl list -D` inside exec, 1,000 devices, first", "s", ""),
    ("daxctl_list_1000_s", "`daxctl list -D` inside exec, 1,000 devices, again", "s", "<= 1"),
    ("ls_region_4000_s", "`ls -l` of a region's sysfs directory, 4,000 devices", "s", "<= 2"),
    ("batch_1000_at_10000_s", "a 1,000-device create batch, 10,000 devices there", "s", "<= 1"),
]

CXL_ROWS = [
    ("cxl_region_ms", "RAM region of the device size (at most 1 GiB), one memdev: made, up as a kmem dax device", "ms",
     "<= 50 at 1 GiB"),
    ("cxl_region_x2_ms", "the same, 2-way across two host bridges", "ms", "<= 50 at 1 GiB"),
    ("cxl_touch_write_GBps", "first-touch writes of its device in devdax mode (2M), inside exec", "GB/s",
     "as dax0.0"),
    ("dax_touch_write_GBps", "first-touch writes of dax0.0 (2M, the same size) of that mount", "GB/s", ""),
]


PERSONALITY_ROWS = [  # key with personality, key without, label, unit, target
    ("stat_device_personality_ns", "stat_device_plain_ns", "stat() of a device", "ns", "< +1000"),
    ("stat_other_personality_ns", "stat_other_plain_ns", "stat() of another file", "ns", "< +1000"),
    ("stat_devnull_exec_ns", "stat_devnull_host_ns", "stat() of /dev/null, inside exec / on the host", "ns", ""),
    ("touch_read_exec_GBps", "touch_read_plain_GBps", "first-touch read faults, FUSE mappings (C loop)", "GB/s",
     "no cost"),
    ("touch_write_exec_GBps", "touch_write_plain_GBps", "first-touch write faults, FUSE mappings (C loop)", "GB/s",
     "no cost"),
]
DIRECT_ROWS = [  # daxfuse key, reference key, label, unit, target
    ("direct_2M_read_GBps", "hugetmpfs_read_GBps", "first-touch reads, 2M device / huge-page tmpfs", "GB/s", ">= 0.8x"),
    ("direct_2M_write_GBps", "hugetmpfs_write_GBps", "first-touch writes, 2M device / huge-page tmpfs", "GB/s",
     ">= 0.8x"),
    ("direct_2M_warm_GBps", "hugetmpfs_warm_GBps", "warm reads, 2M device / huge-page tmpfs", "GB/s", ""),
    ("direct_4K_read_GBps", "tmpfs_read_GBps", "first-touch reads, 4K device / tmpfs", "GB/s", ">= 0.8x"),
    ("direct_4K_write_GBps", "tmpfs_write_GBps", "first-touch writes, 4K device / tmpfs", "GB/s", ">= 0.8x"),
    ("direct_4K_warm_GBps", "tmpfs_warm_GBps", "warm reads, 4K device / tmpfs", "GB/s", ""),
    ("persist_direct_ops", "persist_tmpfs_ops", "libpmem2 64-byte store + persist", "ops/s", ">= 0.5x"),
    ("remap_direct_us", "remap_hugetmpfs_us", "mmap + store + munmap of 2 MiB, 2M device / huge-page tmpfs", "us",
     "<= 50 us"),
]


def table(result: dict) -> str:
    lines = ["| measure | daxfuse | tmpfs | ratio | C libfuse | ratio | bare pyfuse3 | ratio | target |",
             "|---|---|---|---|---|---|---|---|---|"]
    for key, label, unit, target in ROWS:
        d, t, c, py = (result[name][key] for name in ("daxfuse", "tmpfs", "c_libfuse", "pyfuse3"))
        fmt = "{:,.0f}" if unit == "IOPS" else "{:.2f}"
        lines.append(f"| {label} ({unit}) | {fmt.format(d)} | {fmt.format(t)} | {d / t:.2f}x | {fmt.format(c)} | "
                     f"{d / c:.2f}x | {fmt.format(py)} | {d / py:.2f}x | {target} |")
    if result["placement"]:
        lines += ["", "| sequential read 1M (cold), pinned (GB/s) | daxfuse | C libfuse | ratio |", "|---|---|---|---|"]
        for key, label in (("seq_read_one_cpu_GBps", "daemon and reader on one CPU"),
                           ("seq_read_two_cpus_GBps", "daemon and reader on two CPUs")):
            d, c = (result["placement"][name][key] for name in ("daxfuse", "c_libfuse"))
            lines.append(f"| {label} | {d:.2f} | {c:.2f} | {d / c:.2f}x |")
    lines += ["", "| the personality (inside daxfuse exec) | with | without | ratio | target |", "|---|---|---|---|---|"]
    for with_key, without_key, label, unit, target in PERSONALITY_ROWS:
        w, wo = result["personality"][with_key], result["personality"][without_key]
        lines.append(f"| {label} ({unit}) | {w:.2f} | {wo:.2f} | {w / wo:.2f}x | {target} |")
    lines += ["", "| direct mappings (inside daxfuse exec) | daxfuse | reference | ratio | target |",
              "|---|---|---|---|---|"]
    for key, ref_key, label, unit, target in DIRECT_ROWS:
        d, r = result["direct"][key], result["direct"][ref_key]
        fmt = "{:,.0f}" if unit == "ops/s" else "{:.2f}"
        lines.append(f"| {label} ({unit}) | {fmt.format(d)} | {fmt.format(r)} | {d / r:.2f}x | {target} |")
    size = result["machine"]["size"]
    for key, label in (("disable_mapped_ms", f"disable, a mapper storing nonstop, {size} in its window (ms)"),
                       ("disable_mapped_stopped_ms", f"disable, a stopped mapper, {size} in its window (ms)")):
        lines.append(f"| {label} | {result['direct'][key]:.1f} | | | |")
    lines += ["", "| control plane and memory | daxfuse | target |", "|---|---|---|"]
    for key, label, unit, target in CONTROL_ROWS:
        if key in result["control"]:
            value = result["control"][key]
            lines.append(f"| {label} ({unit}) | {value:.2f} | {target} |" if unit == "s" else
                         f"| {label} ({unit}) | {value:.1f} | {target} |")
    lines += ["", "| CXL (the sysfs writes of cxl create-region) | daxfuse | target |", "|---|---|---|"]
    for key, label, unit, target in CXL_ROWS:
        lines.append(f"| {label} ({unit}) | {result['cxl'][key]:.2f} | {target} |")
    return "\n".join(lines)


def baseline(mnt: str, argv: list[str]):
    """A baseline daemon (argv: its command, FILE and MOUNTPOINT last) serving
    FILE as MOUNTPOINT/data, until the context ends: (that path, its pid)."""
    os.mkdir(mnt)
    daemon = subprocess.Popen(argv)
    try:
        data = os.path.join(mnt, "data")
        deadline = time.monotonic() + 10
        while not os.path.exists(data):
            if time.monotonic() > deadline or daemon.poll() is not None:
                raise RuntimeError(f"the baseline {argv[0]} did not mount")
            time.sleep(0.05)
        yield data, daemon.pid
    finally:
        subprocess.run(["fusermount3", "-u", mnt], check=False)
        daemon.wait(10)


@contextlib.contextmanager
def c_libfuse(work: str, ref: str):
    """scripts/bench_cfuse.c: a minimal single-threaded C libfuse daemon with
    default settings."""
    exe = os.path.join(work, "bench_cfuse")
    flags = subprocess.run(["pkg-config", "fuse3", "--cflags", "--libs"], check=True,
                           capture_output=True, text=True).stdout.split()
    subprocess.run(["gcc", "-O2", "-o", exe, os.path.join(os.path.dirname(__file__), "bench_cfuse.c"), *flags],
                   check=True)
    yield from baseline(os.path.join(work, "cmnt"), [exe, ref, os.path.join(work, "cmnt")])


@contextlib.contextmanager
def bare_pyfuse3(work: str, ref: str):
    """scripts/bench_pyfuse3.py: the same daemon in pyfuse3 and trio."""
    mnt = os.path.join(work, "pymnt")
    yield from baseline(mnt, [sys.executable, os.path.join(os.path.dirname(__file__), "bench_pyfuse3.py"), ref, mnt])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--size", default="1G", help="device size (default 1G)")
    p.add_argument("--runs", type=int, default=5, help="runs per measurement; the median is kept")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = p.parse_args()
    size = parse_size(args.size)
    with tempfile.TemporaryDirectory(prefix="daxfuse-bench-") as work:
        mnt = os.path.join(work, "mnt")
        ref = os.path.join("/dev/shm", f"daxfuse-bench-ref-{os.getpid()}")
        os.mkdir(mnt)
        subprocess.run([*DAXFUSE, "mount", mnt, "--size", str(size), "--nr-dax", "2048"], check=True,
                       capture_output=True)
        try:
            pid = daemon_pid(mnt)
            dev = os.path.join(mnt, "dax", "dax0.0")
            data = os.urandom(64 * MiB)
            for path in (dev, ref):
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
                for off in range(0, size, len(data)):
                    os.pwrite(fd, data[:size - off], off)
                os.fsync(fd)
                os.close(fd)
            with c_libfuse(work, ref) as cfuse, bare_pyfuse3(work, ref) as pyfuse:
                targets = {"daxfuse": Target(dev, size, pid), "tmpfs": Target(ref, size),
                           "c_libfuse": Target(cfuse[0], size, cfuse[1]), "pyfuse3": Target(pyfuse[0], size)}
                result = interleaved(targets, args.runs)
                result["placement"] = placement({k: targets[k] for k in ("daxfuse", "c_libfuse")}, args.runs)
            idle = idle_after_run(pid, targets["daxfuse"])
            result["machine"] = {"cpus": os.cpu_count(), "kernel": platform.release(),
                                 "python": platform.python_version(), "size": format_size(size),
                                 "runs": args.runs}
            result["personality"] = personality(work, mnt, size, args.runs)
            result["direct"] = direct(work, mnt, Control(mnt), size, ref, args.runs)
            result["control"] = idle | control_plane(work, mnt, pid, size)
            result["control"].update(durable_layout(work))
            result["control"].update(scale(work, args.runs))
            result["cxl"] = cxl(work, size, args.runs)
        finally:
            if os.path.exists(ref):
                os.unlink(ref)
            subprocess.run([*DAXFUSE, "umount", mnt], check=False)
    m = result["machine"]
    print(f"{m['cpus']} CPUs, Linux {m['kernel']}, Python {m['python']}, device {m['size']}, "
          f"median of {m['runs']} runs")
    print(table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
