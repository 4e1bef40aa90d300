"""The torture harness: figures, daemons under a time bound, and the
layout's invariants, shared by the workloads in this folder (fuzz.py,
concurrency.py, crash.py) and run by scripts/torture.py."""
import collections
import contextlib
import errno
import os
import signal
import subprocess
import sys
import threading
import time

from daxfuse.dax import ALIGNS
from daxfuse.dax.device import alloc_is_aligned
from daxfuse import client
from daxfuse.client import mountinfo
from daxfuse.testing import DaxMount

MiB = 1 << 20
PAGE = 4096
TIMEOUT = 30.0  # no operation may take longer
MAX_VIOLATIONS = 50  # a workload stops once it found this many


def ename(err: int) -> str:
    return errno.errorcode.get(err, str(err)) if err else "success"


def shown(data: bytes, limit: int = 100) -> str:
    return repr(data[:limit]) + (f"... ({len(data)} bytes)" if len(data) > limit else "")


class Stats:
    """A run's figures: inputs tried, operations done, errors by errno and by
    signal, the circumstances of the errors, and the violations."""

    FIGURES = ("inputs", "ops", "errnos", "signals", "circumstances")

    def __init__(self) -> None:
        for name in self.FIGURES:
            setattr(self, name, collections.Counter())
        self.violations: list[str] = []

    def violation(self, text: str) -> None:
        self.violations.append(text)
        print(f"torture: VIOLATION {text}", file=sys.stderr, flush=True)

    def error(self, key: str, err: int) -> None:
        self.errnos[f"{key} {ename(err)}"] += 1

    def to_json(self) -> dict:
        return {name: dict(sorted(getattr(self, name).items())) for name in self.FIGURES} | {
            "violations": self.violations}

    def summary(self) -> str:
        titles = ("inputs tried", "operations done", "errors by errno", "errors by signal",
                  "circumstances")
        lines = []
        for title, name in zip(titles, self.FIGURES):
            counter = getattr(self, name)
            lines.append(f"{title}: {sum(counter.values()):,}")
            lines += [f"  {key:<72} {n:>10,}" for key, n in sorted(counter.items())]
        lines.append(f"violations: {len(self.violations)}")
        lines += [f"  {v}" for v in self.violations]
        return "\n".join(lines)


# --- daemons -----------------------------------------------------------------------------------


def proc_state(pid: int) -> str:
    """The state letter in /proc/PID/stat (D: uninterruptible sleep); '' once reaped."""
    fields = client.proc_stat(pid)
    return fields[0] if fields else ""


def stack(task: str) -> str:
    """A task's state and kernel stack (/proc/PID/task/TID), in one line."""
    try:
        state = proc_state(task)
        with open(f"/proc/{task}/stack") as f:
            frames = [line.split()[1].split("+")[0] for line in f]
        return f"{task} {state}: {' < '.join(frames[:10])}"
    except (OSError, IndexError):
        return f"{task}: gone"


class Hung(Exception):
    """An operation outlived TIMEOUT; the mount was forced off to free it."""


class Daemon(DaxMount):
    """daxfuse.testing's foreground daemon on a fresh mount point, named for
    the figures. Every operation the harness makes on the mount runs under
    bounded(): one that outlives TIMEOUT is a violation, and umount -f frees
    its caller."""

    def __init__(self, workdir: str, name: str, stats: Stats, *args: str) -> None:
        self.name, self.stats, self.hung = name, stats, False
        os.mkdir(os.path.join(workdir, name))
        super().__init__(os.path.join(workdir, name), *args)

    def alive(self) -> bool:
        return self.proc.poll() is None

    @contextlib.contextmanager
    def bounded(self, what: str):
        timer = threading.Timer(TIMEOUT, self.hang, (what, f"{os.getpid()}/task/{threading.get_native_id()}"))
        timer.daemon = True
        timer.start()
        try:
            yield
        except OSError:
            if not self.hung:
                raise
        finally:
            timer.cancel()
        if self.hung:
            raise Hung(what)

    def hang(self, what: str, task: str) -> None:
        """A violation, with the kernel stacks of the tasks that hang
        (PID/task/TID...) and of the daemon's threads; then free every
        client of the mount."""
        if not self.hung:
            self.hung = True
            with contextlib.suppress(OSError):
                task += "".join(f" {self.proc.pid}/task/{t}" for t in os.listdir(f"/proc/{self.proc.pid}/task")
                                if t != str(self.proc.pid))
            self.stats.violation(f"{self.name}: {what} did not return within {TIMEOUT:.0f} s; kernel stacks: "
                                 + "; ".join(map(stack, task.split())))
            self.force_unmount()

    def force_unmount(self) -> None:
        subprocess.run(["umount", "-f", self.mountpoint], capture_output=True)
        if mountinfo.mounted(self.mountpoint):
            subprocess.run(["fusermount3", "-u", "-z", self.mountpoint], capture_output=True)

    def write(self, rel: str, data: bytes) -> tuple[int, str]:
        """data in one write(2) on a fresh handle of the file at rel: 0 or the
        errno, and for the control file the result read on the same handle."""
        control = rel == "control"
        with self.bounded(f"write of {shown(data, 60)} to {rel}"):
            try:
                fd = os.open(self.path(rel), os.O_RDWR if control else os.O_WRONLY)
            except OSError as e:
                return e.errno, ""
            try:
                try:
                    os.write(fd, data)
                    err = 0
                except OSError as e:
                    err = e.errno
                return err, os.pread(fd, 4096, 0).decode(errors="replace") if control else ""
            finally:
                os.close(fd)

    def control(self, text: str) -> list[str]:
        """Apply a batch that must succeed; the names its result reports."""
        with self.bounded(f"control batch {shown(text.encode(), 60)}"):
            try:
                return super().control(text).split()[1:]
            except client.ControlError as e:
                raise client.ControlError(e.errno, f"{self.name}: {text!r}: {e.strerror}") from None

    def layout(self) -> list:
        with self.bounded("layout read"):
            return super().layout()

    def wait_unmounted(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while mountinfo.mounted(self.mountpoint):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def finish(self) -> None:
        """SIGTERM: the daemon exits 0 within TIMEOUT, unmounted, and its log has no Traceback."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(TIMEOUT)
            if rc != 0:
                self.stats.violation(f"{self.name}: exited {rc} on SIGTERM; log: {self.log()[-2000:]}")
            if not self.wait_unmounted():
                self.stats.violation(f"{self.name}: still mounted after the daemon exited")
        except subprocess.TimeoutExpired:
            self.stats.violation(f"{self.name}: still running {TIMEOUT:.0f} s after SIGTERM")
        for failure in self.failures():
            self.stats.violation(f"{self.name}: in the daemon's log: {failure[:3000]}")
        self.close()

    def close(self) -> None:
        """Leave nothing behind: no mount, no process."""
        self.kill()
        if not self.wait_unmounted():
            self.force_unmount()


# --- the layout's invariants -------------------------------------------------------------------


def overlaps(spans: list[tuple[int, int, str]]) -> list[str]:
    """[start, end) spans that share bytes."""
    spans = sorted(spans)
    return [f"{a[2]} [{a[0]:#x}, {a[1]:#x}) overlaps {b[2]} [{b[0]:#x}, {b[1]:#x})"
            for a, b in zip(spans, spans[1:]) if b[0] < a[1]]


def layout_violations(layout: list) -> list[str]:
    """What is wrong with a layout read from the control file: every range
    inside its region and a whole number of aligns long (a mapping's start
    need not be aligned), none shared, each size a whole number of 2 MiB
    steps or aligns (alloc_is_aligned), the sizes adding up."""
    out, regions, ranges, minors = [], [], [], collections.Counter()
    for r in layout:
        where, end = f"region {r['id']}", r["start"] + r["size"]
        regions.append((r["start"], end, where))
        if r["align"] not in ALIGNS or r["size"] <= 0 or r["size"] % r["align"] or r["start"] % r["align"]:
            out.append(f"{where}: start {r['start']:#x} size {r['size']:#x} align {r['align']:#x}")
        for d in r["devices"]:
            name, offset = d["name"], 0
            minors[d["minor"]] += 1
            if name != f"dax{r['id']}.{d['id']}" or d["state"] not in ("enabled", "disabled"):
                out.append(f"{where}: device {name} id {d['id']} state {d['state']}")
            if d["align"] not in ALIGNS or not alloc_is_aligned(d["size"], d["align"]):
                out.append(f"{name}: size {d['size']:#x} is not a whole number of steps of align {d['align']:#x}")
            if d["state"] == "enabled" and d["size"] <= 0:
                out.append(f"{name}: enabled with size 0")
            for x in d["ranges"]:
                start, stop = x["start"], x["end"] + 1
                ranges.append((start, stop, name))
                if stop <= start or (stop - start) % d["align"]:
                    out.append(f"{name}: range [{start:#x}, {stop:#x}) not a multiple of {d['align']:#x} long")
                if not r["start"] <= start < stop <= end:
                    out.append(f"{name}: range [{start:#x}, {stop:#x}) outside {where} [{r['start']:#x}, {end:#x})")
                if x["page_offset"] != offset:
                    out.append(f"{name}: range at {start:#x} has page_offset {x['page_offset']:#x}, not {offset:#x}")
                offset += stop - start
            if offset != d["size"]:
                out.append(f"{name}: ranges add up to {offset:#x}, size is {d['size']:#x}")
        used = sum(d["size"] for d in r["devices"])
        if r["available_size"] != r["size"] - used:
            out.append(f"{where}: available_size {r['available_size']:#x}, size {r['size']:#x} - used {used:#x}")
    out += [f"minor {m} used {n} times" for m, n in minors.items() if n > 1]
    return out + overlaps(regions) + overlaps(ranges)


def view_violations(d: Daemon, layout: list) -> list[str]:
    """The other faces of the model agree with the layout: dax/, the sysfs
    device list and attributes, the device files' sizes."""
    names = sorted(dev["name"] for r in layout for dev in r["devices"])
    out = []
    with d.bounded("a look at dax/ and sys/"):
        for rel in ("dax", "sys/bus/dax/devices"):
            if sorted(os.listdir(d.path(rel))) != names:
                out.append(f"{rel} lists {sorted(os.listdir(d.path(rel)))}, the layout {names}")
        for r in layout:
            base = d.path("sys", "devices", "platform", f"daxfuse.{r['id']}")
            with open(f"{base}/dax_region/available_size") as f:
                if int(f.read()) != r["available_size"]:
                    out.append(f"region {r['id']}: sysfs available_size differs from the layout's")
            for dev in r["devices"]:
                with open(f"{base}/{dev['name']}/size") as f:
                    sizes = int(f.read()), os.stat(d.path("dax", dev["name"])).st_size
                if sizes != (dev["size"],) * 2:
                    out.append(f"{dev['name']}: sysfs size, st_size {sizes}, the layout {dev['size']}")
    return out
