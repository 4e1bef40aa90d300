"""scripts/torture: the long-run torture harness. Each workload mounts fresh
daemons of its own and drives them through their public faces only: the
control file, the sysfs view and the device files.

- fuzz: seeded control-file and sysfs input, valid and near misses of the
  grammar; after each write the layout's invariants hold, and a write that
  failed changed nothing.
- concurrency: worker processes write and check tagged records through
  pread, pwrite, O_DIRECT and mmap while a churner disables, resizes,
  destroys and re-creates their devices: no read returns another device's
  records or an older generation's, and no operation hangs.
- crash: SIGKILL with clients attached (no stale mount, no client in D
  state, errors rather than hangs), then SIGTERM during I/O and during a
  disable of a dirty mapping (exit 0, the stores in the memory file).

  scripts/torture [--minutes N] [--seed S] [--workload fuzz|concurrency|crash|all] [--json FILE]

Prints its figures at the end and exits 1 on any violation.
"""
import argparse
import collections
import contextlib
import ctypes
import errno
import functools
import inspect
import json
import mmap
import multiprocessing
import os
import random
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import numpy as np

from daxfuse.dax import ALIGNS
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
    inside its region and aligned, none shared, the sizes adding up."""
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
            if d["align"] not in ALIGNS or d["size"] % d["align"]:
                out.append(f"{name}: size {d['size']:#x} is not a multiple of align {d['align']:#x}")
            if d["state"] == "enabled" and d["size"] <= 0:
                out.append(f"{name}: enabled with size 0")
            for x in d["ranges"]:
                start, stop = x["start"], x["end"] + 1
                ranges.append((start, stop, name))
                if stop <= start or start % d["align"] or (stop - start) % d["align"]:
                    out.append(f"{name}: range [{start:#x}, {stop:#x}) not {d['align']:#x}-aligned")
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


# --- fuzz -------------------------------------------------------------------------------------

CONTROL_ERRNOS = {0, errno.EINVAL, errno.ENOSPC, errno.EBUSY, errno.ENXIO, errno.EEXIST}
SYSFS_ERRNOS = CONTROL_ERRNOS | {errno.ERANGE, errno.ENOENT}
HUGE_SYSFS = {errno.ERANGE, errno.EINVAL, errno.ENXIO}  # as the kernel's stores
CONTROL_MAX = 1044480  # the largest control write applied whole; past it E2BIG
BAD_VALUES = ["", "-1", "0x", "x10", "1.5M", "4Q", "1e3", "0b1", "4097", "3M", "+4K", "4K4", "K", "0o7",
              "18446744073709551616", "0x10000000000000000", "17179869184T", "\u0661\u0662", "4\u00a0K"]
ODD_SPACES = ["\t", "  ", "\r", "\v", "\f", "\x1c", "\x85", "\u00a0", "\u2028", "\u3000", " \n "]
UNKNOWN = ["create-regions", "Create-region", "create_region", "destroy", "enable", "rm", "resize-device2",
           "disable-devices", "create-region=1", "\u0441reate-region"]
NON_UTF8 = [b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\x80", b"\xf5\x80\x80\x80", b"\xe2\x82"]
DEVICE_ATTRS = ("size", "align", "mapping", "uevent")
REGION_ATTRS = ("create", "delete")
DRIVER_ATTRS = ("bind", "unbind", "new_id", "remove_id")


def huge(rng: random.Random) -> str:
    """A number of thousands of digits."""
    n = rng.randint(1000, 6000)
    return rng.choice(["9" * n, "0x" + "f" * n, "1" + "0" * n])


def spell(rng: random.Random, n: int) -> str:
    """n in one of the spellings the control grammar takes."""
    forms = [str(n), hex(n), "00" + str(n), f"{n}B"]
    for shift, s in ((10, "K"), (20, "M"), (30, "G")):
        if n and n % (1 << shift) == 0:
            m = n >> shift
            forms += [f"{m}{s}", f"{m}{s.lower()}", f"{m}{s}iB", f"{m:#x}{s}"]
    return rng.choice(forms)


def valid_line(rng: random.Random, layout: list) -> str:
    """A command naming what exists, with values of the right form; the bus
    may still refuse it (EBUSY, ENOSPC, EEXIST)."""
    devices = [d for r in layout for d in r["devices"]]
    commands = ["create-region"] * 2 + ["create-device"] * 4 + ["destroy-region"] * (len(layout) > 0)
    commands += ["resize-device", "disable-device", "enable-device", "destroy-device"] * 2 * (len(devices) > 0)
    command = rng.choice(commands)
    if command == "create-region":
        align = rng.choice(ALIGNS[:2] * 4 + ALIGNS[2:])
        words = [f"size={spell(rng, align * rng.randint(1, 4 if align == ALIGNS[2] else 32))}"]
        if align != ALIGNS[1] or rng.random() < 0.3:
            words.append(f"align={spell(rng, align)}")
        if rng.random() < 0.5:
            words.append(f"id={rng.randrange(8)}")
    elif command == "destroy-region":
        words = [str(rng.choice(layout)["id"])]
    elif command == "create-device":
        region = rng.choice(layout) if layout and rng.random() < 0.9 else {"id": rng.randrange(8), "align": ALIGNS[1]}
        words = [f"region={region['id']}"]
        if rng.random() < 0.8:
            words.append(f"size={spell(rng, region['align'] * rng.randint(0, 8))}")
        if rng.random() < 0.2:
            words.append(f"align={spell(rng, rng.choice(ALIGNS[:2]))}")
    else:
        device = rng.choice(devices)
        words = [device["name"]]
        if command == "resize-device":
            words.append(f"size={spell(rng, device['align'] * rng.randint(0, 16))}")
    head, keyed = ([], words) if command.startswith("create-") else (words[:1], words[1:])
    return " ".join([command] + head + rng.sample(keyed, len(keyed)))  # keys in any order


def near_miss(rng: random.Random, line: str) -> tuple[bytes, bool]:
    """line with one thing wrong, and whether the parser must refuse it
    (EINVAL before anything runs, whatever else the batch holds)."""
    words = line.split(" ")
    keyed = [i for i, w in enumerate(words) if "=" in w]
    numbers = keyed + ([1] if words[0] == "destroy-region" else [])
    how = rng.choice(["huge", "bad value", "space", "nul", "non-utf8", "unknown command", "unknown key",
                      "twice", "missing", "upper key", "cut"])
    if how == "huge" and numbers:
        i = rng.choice(numbers)
        words[i] = words[i].partition("=")[0] + "=" + huge(rng) if "=" in words[i] else huge(rng)
        return " ".join(words).encode(), True
    if how == "bad value" and numbers:
        i = rng.choice(numbers)
        value = rng.choice(BAD_VALUES + ["0" * rng.randint(1000, 5000) + "1"])  # long, yet small
        words[i] = (words[i].partition("=")[0] + "=" if "=" in words[i] else "") + value
        return " ".join(words).encode(), False
    if how == "non-utf8":
        data = line.encode()
        i = rng.randrange(len(data) + 1)
        return data[:i] + rng.choice(NON_UTF8) + data[i:], True
    if how == "unknown command":
        return " ".join([rng.choice(UNKNOWN)] + words[1:]).encode(), True
    if how == "twice" and keyed:
        return " ".join(words + [words[rng.choice(keyed)]]).encode(), True
    if how == "missing" and words[0] == "create-region":
        return " ".join(w for w in words if not w.startswith("size=")).encode(), True
    if how == "upper key" and keyed:
        i = rng.choice(keyed)
        words[i] = words[i].partition("=")[0].upper() + "=" + words[i].partition("=")[2]
        return " ".join(words).encode(), True
    if how == "space":
        return rng.choice(ODD_SPACES).join(words).encode(), False
    if how == "nul":
        i = rng.randrange(len(line) + 1)
        return (line[:i] + "\0" + line[i:]).encode(), False
    if how == "cut":
        return line[:rng.randrange(1, len(line) + 1)].encode(), False
    return (line + rng.choice([" sise=4K", " name=x", " =", " size", " region=0=1"])).encode(), True


def control_input(rng: random.Random, layout: list) -> tuple[bytes, set[int]]:
    """A control write and the errnos it may end with (0: success)."""
    r = rng.random()
    if r < 0.01:  # past the largest write applied whole: refused whole
        line = valid_line(rng, layout).encode() + b"\n"
        size = CONTROL_MAX + rng.choice([1, 4096, MiB])
        return b"#" * (size - len(line) - 1) + b"\n" + line, {errno.E2BIG}
    if r < 0.02:  # the largest write applied whole
        line = valid_line(rng, layout).encode() + b"\n"
        return b"#" * (CONTROL_MAX - len(line) - 1) + b"\n" + line, CONTROL_ERRNOS
    lines, must_fail = [], False
    for _ in range(1 if rng.random() < 0.6 else rng.randint(2, 8)):
        line = valid_line(rng, layout)
        if rng.random() < 0.5:
            data, refused = near_miss(rng, line)
            lines.append(data)
            must_fail |= refused
        else:
            lines.append(line.encode())
    data = rng.choice([b"\n", b"\n", b"\r\n", b"\n\n", b"\n# a comment\n"]).join(lines)
    data += rng.choice([b"", b"\n", b" # trailing\n", b"\n\n"])
    return data, {errno.EINVAL} if must_fail else CONTROL_ERRNOS


def holes(region: dict) -> list[tuple[int, int]]:
    """The [start, end) spans of a region no device range covers."""
    busy = sorted((x["start"], x["end"] + 1) for d in region["devices"] for x in d["ranges"])
    out, cursor = [], region["start"]
    for start, end in busy + [(region["start"] + region["size"],) * 2]:
        if start > cursor:
            out.append((cursor, start))
        cursor = max(cursor, end)
    return out


def sysfs_value(rng: random.Random, attr: str, region: dict | None, device: dict | None,
                names: list[str]) -> str:
    """A value of the right form for attr (the store may still refuse it)."""
    align = device["align"] if device else ALIGNS[0]
    if attr == "size":
        n = align * rng.randint(0, 16)
        return rng.choice([str(n), hex(n), oct(n).replace("0o", "0"), f"+{n}"])
    if attr == "align":
        return str(rng.choice(ALIGNS + (8192,)))
    if attr == "mapping":
        spans = [(s, e) for s, e in holes(region) if e - s >= align] if region else []
        start, end = rng.choice(spans) if spans else (0, align)
        start = -(-start // align) * align
        end = start + align * rng.randint(1, max(1, (end - start) // align))
        text = f"{start:x}-{end - 1:x}"
        return rng.choice([text, f"{start:#x}-{end - 1:#x}", f"{start:x}-{end:x}"])
    if attr == "create":
        return rng.choice(["1", "1", "0", "2", "01", "0x1"])
    if attr == "uevent":
        return rng.choice(["add", "change", "remove", "online", ""])
    return rng.choice(names) if names else "dax0.0"


def sysfs_input(rng: random.Random, layout: list) -> tuple[str, bytes, set[int], str]:
    """A write to one of the writable sysfs attributes: (path in the mount,
    data, the errnos it may end with, the attribute)."""
    pairs = [(r, d) for r in layout for d in r["devices"]]
    names = [d["name"] for _, d in pairs]
    attr = rng.choice(DEVICE_ATTRS + REGION_ATTRS + DRIVER_ATTRS)
    region = device = None
    if attr in DEVICE_ATTRS:
        if pairs and rng.random() < 0.95:
            region, device = rng.choice(pairs)
        name = device["name"] if device else f"dax{rng.randrange(9)}.{rng.randrange(9)}"
        path = f"sys/bus/dax/devices/{name}/{attr}"
    elif attr in REGION_ATTRS:
        region = rng.choice(layout) if layout and rng.random() < 0.95 else None
        path = f"sys/devices/platform/daxfuse.{region['id'] if region else rng.randrange(9)}/dax_region/{attr}"
        names = [d["name"] for d in region["devices"]] if region and rng.random() < 0.8 else names
    else:
        path = f"sys/bus/dax/drivers/device_dax/{attr}"
    value, allowed = sysfs_value(rng, attr, region, device, names), SYSFS_ERRNOS
    how = rng.random()
    if how < 0.1:
        value, allowed = huge(rng) + rng.choice(["", "-0x1", "\n"]), HUGE_SYSFS | {errno.ENOENT}
    elif how < 0.15:
        value = rng.choice(["abc", "-1", "0x", " ", "1-2-3", "\t5", "0x-1", "dax", "dax0.", "dax.0", "dax00.0"])
    elif how < 0.2:
        i = rng.randrange(len(value) + 1)
        value = value[:i] + "\0" + value[i:]
    data = (value + rng.choice(["", "\n", "\n", "\0", "\n\0"])).encode()
    if attr == "uevent":  # stores nothing: any text is taken
        allowed = {0, errno.ENOENT}
    if rng.random() < 0.05:
        i = rng.randrange(min(len(data), 64) + 1)
        data, allowed = data[:i] + rng.choice(NON_UTF8) + data[i:], {errno.EINVAL, errno.ENOENT}
    return path, data, allowed, attr


def reset_batch(layout: list) -> bytes:
    """A valid batch back to region 0 alone: it must succeed."""
    devices = [d for r in layout for d in r["devices"]]
    lines = [f"disable-device {d['name']}" for d in devices if d["state"] == "enabled"]
    lines += [f"destroy-device {d['name']}" for d in devices]
    lines += [f"destroy-region {r['id']}" for r in layout if r["id"] != 0]
    return "\n".join(lines).encode()


def result_violation(err: int, result: str) -> str | None:
    """The control file's result line agrees with the write's outcome."""
    want = "ok" if not err else f"error {ename(err)}: "
    if not result.startswith(want) or result.count("\n") != 1 or len(result) > 1024:
        return f"result {result[:200]!r} after {ename(err)}"
    return None


def fuzz(stats: Stats, seconds: float, rng: random.Random, workdir: str) -> None:
    """Seeded input to the control file and every writable sysfs attribute;
    after each write the layout's invariants, a failed write changed nothing,
    the result line says what happened, and (every 25 inputs) dax/ and sys/
    agree with the layout."""
    d = Daemon(workdir, "fuzz", stats, "--size", "256M", "--nr-dax", "64")
    end, n, first = time.monotonic() + seconds, 0, len(stats.violations)
    try:
        before = d.layout()
        while time.monotonic() < end and len(stats.violations) - first < MAX_VIOLATIONS:
            n += 1
            if n % 250 == 0 or sum(len(r["devices"]) for r in before) > 48:
                rel, data, allowed, label = "control", reset_batch(before), {0}, "control reset"
            elif rng.random() < 0.55:
                rel, label = "control", "control"
                data, allowed = control_input(rng, before)
            else:
                rel, data, allowed, attr = sysfs_input(rng, before)
                label = f"sysfs {attr}"
            if not data:
                continue
            err, result = d.write(rel, data)
            stats.inputs[f"fuzz {label}"] += 1
            if err:
                stats.error(f"fuzz {label}", err)
            if not d.alive():
                stats.violation(f"fuzz: the daemon died ({d.proc.returncode}) after {shown(data)} to {rel}")
                break
            after = d.layout()
            what = f"fuzz: {shown(data)} to {rel}"
            if err not in allowed:
                stats.violation(f"{what}: {ename(err)}, expected one of {sorted(map(ename, allowed))}")
            if err and after != before:
                stats.violation(f"{what}: failed ({ename(err)}) but changed the layout")
            problem = result_violation(err, result) if rel == "control" else None
            for v in ([problem] if problem else []) + layout_violations(after):
                stats.violation(f"{what}: {v}")
            if n % 25 == 0:
                for v in view_violations(d, after):
                    stats.violation(f"fuzz: after {shown(data)} to {rel}: {v}")
            before = after
        d.finish()
    except Hung:
        pass
    finally:
        d.close()


# --- concurrency --------------------------------------------------------------------------------

NSLOTS, NWORKERS = 4, 4
SLOT_REGION = (0, 0, 1, 1)  # region 0: 256M align 2M (the mount's); region 1: 160M align 4K
REGION_ALIGN = {0: ALIGNS[1], 1: ALIGNS[0]}
IO_KINDS = ("pread", "pwrite", "direct-read", "direct-write", "mmap-load", "mmap-store", "msync")
KINDS = ("open", "close") + IO_KINDS
MAPPED = {"mmap-load", "mmap-store", "msync"}
IO_SIZES = (PAGE, 4 * PAGE, 16 * PAGE, 64 * PAGE, MiB)
STEPS = ("idle", "disable", "enable", "unbind", "bind", "resize", "recreate", "failing batch", "zero-fill")
MAGIC = 0xDAF0CE55
# A record: four 8-byte words: MAGIC << 32 | slot + 1 (the device's identity),
# generation, block number + 1, serial of the write; 128 of them make a 4 KiB
# block. Copies tear at 8-byte words or coarser (a read beside a write was
# seen half zero, half record), so every word is checked on its own: none is
# zero in a whole record.
RECORD = struct.Struct("<4Q")


class Slot(ctypes.Structure):
    """One device the workers use, as the churner publishes it: seq is even
    while it is published (enabled, holding only its own records of gen, or
    zeros), odd while it changes; closed: no new operations at all."""
    _fields_ = [("seq", ctypes.c_int64), ("gen", ctypes.c_int64), ("size", ctypes.c_int64),
                ("closed", ctypes.c_int64), ("name", ctypes.c_char * 32)]


class WorkerState(ctypes.Structure):
    """What a worker is doing: slot + 1 (0: nothing), the slot's seq when it
    began, since when (monotonic; the watchdog's heartbeat), which kind; and
    its operations so far, kept across respawns."""
    _fields_ = [("slot", ctypes.c_int64), ("seq", ctypes.c_int64), ("since", ctypes.c_double),
                ("kind", ctypes.c_int64), ("ops", ctypes.c_int64 * len(KINDS))]


class Board(ctypes.Structure):
    _fields_ = [("slots", Slot * NSLOTS), ("workers", WorkerState * NWORKERS), ("step", ctypes.c_int64)]


def tagged(slot: int, gen: int, block: int, count: int, serial: int) -> bytes:
    return b"".join(RECORD.pack(MAGIC << 32 | slot + 1, gen, block + i + 1, serial) * (PAGE // RECORD.size)
                    for i in range(count))


def wrong_records(data, offset: int, slot: int, gen: int) -> str | None:
    """None when every word of the records read at offset from slot's
    device is zero or what this slot, generation and block would write (the
    serial word aside); else what the wrong ones are."""
    words = np.frombuffer(data, "<u8", len(data) // RECORD.size * 4).reshape(-1, 4)
    block = (offset + RECORD.size * np.arange(len(words))) // PAGE + 1
    expected = np.stack([np.full(len(words), MAGIC << 32 | slot + 1, np.uint64),
                         np.full(len(words), gen, np.uint64), block.astype(np.uint64)], axis=1)
    bad = ((words[:, :3] != 0) & (words[:, :3] != expected)).any(axis=1)
    if not bad.any():
        return None
    i = int(np.argmax(bad))
    identity, found_gen, found_block, serial = (int(w) for w in words[i])
    why = ("not a record" if identity and identity >> 32 != MAGIC
           else "another device's record" if identity and identity != MAGIC << 32 | slot + 1
           else "an older generation's record" if found_gen and found_gen < gen
           else "a newer generation's record" if found_gen and found_gen > gen else "a record of another block")
    return (f"{int(bad.sum())} wrong records, the first at device offset {offset + RECORD.size * i:#x}: "
            f"{why} (words {identity:#x} {found_gen} {found_block} {serial:#x}); "
            f"expected slot {slot}, gen {gen}, block {int(block[i]) - 1}")


class WrongSize(Exception):
    """A device file's st_size is not the size its device was published with."""


class Files:
    """A worker's handles on one slot's device as published at seq: buffered,
    O_DIRECT, and a MAP_SHARED mapping of the whole device."""

    def __init__(self, path: str, seq: int, size: int) -> None:
        self.seq, self.size, self.fds, self.map = seq, size, [], None
        try:
            self.fds = [os.open(path, os.O_RDWR)]
            self.fds.append(os.open(path, os.O_RDWR | os.O_DIRECT))
            st_size = os.fstat(self.fds[0]).st_size
            if st_size != size:
                raise WrongSize(f"st_size {st_size:#x} of {path}, published with size {size:#x}")
            self.map = mmap.mmap(self.fds[0], size, mmap.MAP_SHARED)
        except BaseException:
            self.close()
            raise

    def close(self) -> int:
        """Close everything; the first errno a close reported (a writeback
        error of the device's last change), or 0."""
        if self.map is not None:
            self.map.close()
        err = 0
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError as e:
                err = err or e.errno
        return err


def operate(kind: str, f: Files, rng: random.Random, slot: int, gen: int, serial: int, buf: mmap.mmap):
    """One operation: (offset, bytes asked, bytes done, what it read or None)."""
    n = min(rng.choice(IO_SIZES), f.size)
    off = rng.randrange(0, f.size - n + 1, PAGE)
    view = memoryview(buf)[:n]
    if kind == "pread":
        data = os.pread(f.fds[0], n, off)
        return off, n, len(data), data
    if kind == "direct-read":
        got = os.preadv(f.fds[1], [view], off)
        return off, n, got, view[:got]
    if kind == "mmap-load":
        return off, n, n, f.map[off:off + n]
    if kind == "msync":
        f.map.flush(off, n)
        return off, n, n, None
    data = tagged(slot, gen, off // PAGE, n // PAGE, serial)
    if kind == "pwrite":
        return off, n, os.pwrite(f.fds[0], data, off), None
    if kind == "direct-write":
        view[:] = data
        return off, n, os.pwritev(f.fds[1], [view], off), None
    f.map[off:off + n] = data
    return off, n, n, None


def worker(index: int, seed: int, mountpoint: str, board: Board, lock, events, stop) -> None:
    """A worker process: operations of random kinds on random slots, each
    read checked record by record. A published slot is used through handles
    opened at its seq; a changing one (not yet closed) only through the
    handles it still has, so that disables land on operations in flight.
    Reports errnos and violations to the parent; dies of SIGBUS when a
    mapping is revoked under it, as a device-dax client would."""
    rng = random.Random(seed)
    me = board.workers[index]
    files: dict[int, Files] = {}
    buf = mmap.mmap(-1, max(IO_SIZES))  # page-aligned, as O_DIRECT wants
    serial = index << 48 | seed & 0xFFFFFFFF
    try:
        while not stop.is_set():
            s = rng.randrange(NSLOTS)
            f = files.get(s)
            with lock:
                slot = board.slots[s]
                seq, gen, size, name = slot.seq, slot.gen, slot.size, slot.name.decode()
                usable = seq % 2 == 0 or (not slot.closed and f is not None and f.seq == seq - 1)
                if usable:
                    me.slot, me.seq, me.since = s + 1, seq, time.monotonic()
            if not usable:
                time.sleep(0.001)
                continue
            kind = rng.choice(IO_KINDS if seq % 2 == 0 or rng.random() < 0.1 else IO_KINDS[:4])
            step, serial, err, problem, always = board.step, serial + 1, 0, None, True
            try:
                if seq % 2 == 0 and (f is None or f.seq != seq):
                    if f is not None:
                        del files[s]
                        me.kind = KINDS.index("close")
                        me.ops[me.kind] += 1
                        closed = f.close()
                        if closed:  # the old handles' report of the change: never a violation
                            events.put(("errno", "close", closed, "changed", STEPS[step], name))
                    me.kind = KINDS.index("open")
                    me.ops[me.kind] += 1
                    f = files[s] = Files(os.path.join(mountpoint, "dax", name), seq, size)
                me.kind = KINDS.index(kind)
                me.ops[me.kind] += 1
                off, asked, done, data = operate(kind, f, rng, s, gen, serial, buf)
                problem = wrong_records(data, off, s, gen) if data is not None else None
                if problem is None and done != asked:  # fine while the device shrinks
                    problem, always = f"short: {done} of {asked} bytes at {off:#x}", False
            except OSError as e:
                err = e.errno
            except WrongSize as e:  # likewise
                problem, always = str(e), False
            with lock:
                stable = seq % 2 == 0 and board.slots[s].seq == seq
                me.slot, me.since = 0, 0.0
            if err:
                events.put(("errno", KINDS[me.kind], err, "published" if stable else "changing", STEPS[step], name))
            if problem and (always or stable):
                events.put(("violation", f"worker {index}: {kind} of {name} (slot {s}, gen {gen}, "
                                         f"{'published' if stable else 'changing'}): {problem}"))
    except Exception:
        events.put(("violation", f"worker {index} failed: {traceback.format_exc()}"))
        sys.exit(1)


class Churner:
    """The lifecycle under the workers. A change marks its slots changing (seq
    odd: workers go on only with the handles they have, so the change lands
    on operations in flight), then closes them to new operations and waits
    for the running ones; one that may change a device's ranges (resize,
    re-create) zero-fills the device through pwrite and only then publishes
    it with a new generation: a new device over old ranges legitimately sees
    old bytes (pmem)."""

    def __init__(self, d: Daemon, board: Board, lock, rng: random.Random, stats: Stats) -> None:
        self.d, self.board, self.lock, self.rng, self.stats = d, board, lock, rng, stats
        self.gen = 0
        self.zeros = bytes(MiB)

    def step(self, name: str) -> None:
        self.board.step = STEPS.index(name)

    def control(self, text: str, step: str) -> list[str]:
        self.step(step)  # until the next step: "disable" covers the time the device is off
        return self.d.control(text)

    def new_size(self, s: int) -> int:
        return self.rng.randrange(16 * MiB, 64 * MiB + 1, REGION_ALIGN[SLOT_REGION[s]])

    def setup(self) -> None:
        self.d.control("create-region size=160M align=4K id=1")
        sizes = {s: self.new_size(s) for s in range(NSLOTS)}
        names = self.control("\n".join(f"create-device region={SLOT_REGION[s]} size={sizes[s]}"
                                       for s in range(NSLOTS)), "recreate")
        self.mark(range(NSLOTS))
        self.publish(range(NSLOTS), dict(zip(range(NSLOTS), names)), sizes)

    def name(self, s: int) -> str:
        return self.board.slots[s].name.decode()

    def mark(self, slots) -> None:
        with self.lock:
            for s in slots:
                self.board.slots[s].seq += 1

    def publish(self, slots, names: dict | None = None, sizes: dict | None = None) -> None:
        """Make slots usable again, once no operation runs on them: with new
        names or sizes, zero-filled under a new generation. A writeback error
        of the change (dirty pages past a new end: ENOSPC; dirtied again
        between a disable's writeback and its kill: ENXIO; left when the last
        writable handle went: EIO) is reported to the first fsync after it
        (errseq), and as EIO or ENOSPC to the first O_DIRECT I/O or close
        (the mapping's AS_EIO flag): the churner takes it, not a worker."""
        with self.lock:
            for s in slots:
                self.board.slots[s].closed = 1
        while any(w.slot - 1 in slots for w in self.board.workers):
            if self.d.hung:
                raise Hung("barrier")
            time.sleep(0.001)
        names = names or {s: self.name(s) for s in slots}
        self.gen += bool(sizes)
        for s in slots:
            self.make_ready(names[s], sizes and sizes[s])
        with self.lock:
            for s in slots:
                slot = self.board.slots[s]
                slot.name, slot.closed = names[s].encode(), 0
                if sizes:
                    slot.size, slot.gen = sizes[s], self.gen
                slot.seq += 1
        self.step("idle")

    def make_ready(self, name: str, zero_fill: int | None) -> None:
        """Zero-fill the first zero_fill bytes of a device through pwrite
        (any failure is a violation), then take the change's writeback error
        with an fsync and a close (either may report it; counted)."""
        if zero_fill:
            self.step("zero-fill")
        with self.d.bounded(f"settling {name}"):
            fd = os.open(self.d.path("dax", name), os.O_WRONLY)
            try:
                for off in range(0, zero_fill or 0, MiB):
                    n = min(MiB, zero_fill - off)
                    if os.pwrite(fd, self.zeros[:n], off) != n:
                        raise OSError(errno.EIO, f"short zero-fill of {name} at {off:#x}")
                try:
                    os.fsync(fd)
                except OSError as e:
                    self.stats.error("concurrency churner fsync before publishing", e.errno)
            finally:
                try:
                    os.close(fd)
                except OSError as e:
                    self.stats.error("concurrency churner close before publishing", e.errno)

    def pause(self) -> None:
        time.sleep(self.rng.uniform(0, 0.05))

    def cycle(self, slots: list[int]) -> None:
        """Disable and enable again, through the control file or sysfs: the
        ranges and data stay, so does the generation."""
        self.mark(slots)
        if len(slots) == 1 and self.rng.random() < 0.4:
            for attr in ("unbind", "bind"):
                self.step(attr)
                err, _ = self.d.write(f"sys/bus/dax/drivers/device_dax/{attr}", self.name(slots[0]).encode())
                if err:
                    raise OSError(err, f"{attr} {self.name(slots[0])}")
                self.pause()
        else:
            self.control("\n".join(f"disable-device {self.name(s)}" for s in slots), "disable")
            self.pause()
            self.control("\n".join(f"enable-device {self.name(s)}" for s in slots), "enable")
        self.publish(slots)

    def resize(self, slots: list[int]) -> None:
        """disable, resize, enable: in one batch, or the disable first."""
        self.mark(slots)
        sizes = {s: self.new_size(s) for s in slots}
        disable = [f"disable-device {self.name(s)}" for s in slots]
        rest = [f"resize-device {self.name(s)} size={sizes[s]}" for s in slots]
        rest += [f"enable-device {self.name(s)}" for s in slots]
        if self.rng.random() < 0.5:
            self.control("\n".join(disable), "disable")
            self.pause()
            disable = []
        self.control("\n".join(disable + rest), "resize")
        self.publish(slots, sizes=sizes)

    def recreate(self, slots: list[int]) -> None:
        """disable, destroy and create anew over whatever ranges are free, in one batch."""
        self.mark(slots)
        sizes = {s: self.new_size(s) for s in slots}
        lines = [f"disable-device {self.name(s)}" for s in slots]
        lines += [f"destroy-device {self.name(s)}" for s in slots]
        lines += [f"create-device region={SLOT_REGION[s]} size={sizes[s]}" for s in slots]
        names = self.control("\n".join(lines), "recreate")[-len(slots):]
        self.publish(slots, dict(zip(slots, names)), sizes)

    def failing_batch(self, slots: list[int]) -> None:
        """A batch that fails whole leaves its device as it was: published
        and in use throughout, so a worker's error on it is a violation."""
        s = slots[0]
        name, size, region = self.name(s), self.board.slots[s].size, SLOT_REGION[s]
        text, want = self.rng.choice([
            (f"disable-device {name}\nresize-device {name} size={size + REGION_ALIGN[region] // 2}", errno.EINVAL),
            (f"disable-device {name}\ndestroy-device {name}\ncreate-device region={region} size=1T", errno.ENOSPC),
            (f"disable-device {name}\nenable-device {name}\nfrobnicate-device {name}", errno.EINVAL),
        ])
        before = self.d.layout()
        self.step("failing batch")
        err, result = self.d.write("control", text.encode())
        self.step("idle")
        if err != want:
            self.stats.violation(f"churner: {text!r} ended {ename(err)} ({result.strip()}), not {ename(want)}")
        if self.d.layout() != before:
            self.stats.violation(f"churner: {text!r} failed but changed the layout")

    def run(self, stop: threading.Event) -> None:
        actions = [self.cycle] * 3 + [self.resize] * 3 + [self.recreate] * 2 + [self.failing_batch] * 2
        try:
            while not stop.is_set():
                action = self.rng.choice(actions)
                action(self.rng.sample(range(NSLOTS), self.rng.choice((1, 1, 2))))
                self.stats.ops[f"concurrency churner {action.__name__}"] += 1
                time.sleep(self.rng.uniform(0, 0.2))
        except Hung:
            pass
        except Exception:
            if not stop.is_set():  # else the run is being torn down under it
                self.stats.violation(f"churner failed: {traceback.format_exc()}")


def verify_devices(d: Daemon, board: Board, stats: Stats) -> None:
    """After the run: every published device is in the layout as published
    and holds only its own records of its generation, or zeros."""
    layout = d.layout()
    for v in layout_violations(layout):
        stats.violation(f"concurrency: final layout: {v}")
    devices = {dev["name"]: dev for r in layout for dev in r["devices"]}
    buf = mmap.mmap(-1, MiB)
    for s, slot in enumerate(board.slots):
        name = slot.name.decode()
        dev = devices.get(name, {})
        if slot.seq % 2:
            continue
        if (dev.get("state"), dev.get("size")) != ("enabled", slot.size):
            stats.violation(f"concurrency: slot {s} published {name} of {slot.size:#x}, the layout has {dev}")
            continue
        with d.bounded(f"final read of {name}"):
            fd = os.open(d.path("dax", name), os.O_RDONLY | os.O_DIRECT)
            try:
                for off in range(0, slot.size, MiB):
                    n = min(MiB, slot.size - off)
                    got = os.preadv(fd, [memoryview(buf)[:n]], off)
                    problem = wrong_records(memoryview(buf)[:got], off, s, slot.gen) or (
                        f"short: {got} of {n} bytes at {off:#x}" if got != n else None)
                    if problem:
                        stats.violation(f"concurrency: final read of {name} (slot {s}): {problem}")
                        break
            finally:
                os.close(fd)


class Workers:
    """The worker processes and the board they share with the churner:
    spawned from a fork server (cheap respawns), reaped and respawned when
    they die, watched for operations that hang."""

    def __init__(self, d: Daemon, rng: random.Random, stats: Stats) -> None:
        self.ctx = multiprocessing.get_context("forkserver")
        self.ctx.set_forkserver_preload([__name__, "numpy"])
        self.d, self.rng, self.stats = d, rng, stats
        self.board = self.ctx.RawValue(Board)
        self.lock, self.events, self.stop = self.ctx.Lock(), self.ctx.SimpleQueue(), self.ctx.Event()
        self.procs = []

    def start(self) -> None:
        self.procs = [self.spawn(i) for i in range(NWORKERS)]

    def spawn(self, i: int):
        p = self.ctx.Process(target=worker, daemon=True, args=(
            i, self.rng.randrange(1 << 32), self.d.mountpoint, self.board, self.lock, self.events, self.stop))
        p.start()
        return p

    def tend(self) -> None:
        """Respawn the dead, take their reports, and bound every operation."""
        for i, p in enumerate(self.procs):
            if p.exitcode is not None:
                self.reap(i, p.exitcode)
                self.procs[i] = self.spawn(i)
        self.drain()
        now = time.monotonic()
        for i, w in enumerate(self.board.workers):
            since, kind, slot = w.since, KINDS[w.kind], self.board.slots[w.slot - 1].name.decode()
            if since and now - since > TIMEOUT and not self.d.hung:
                self.d.hang(f"worker {i}'s {kind} on {slot} (churner in {STEPS[self.board.step]})",
                            f"{self.procs[i].pid}/task/{self.procs[i].pid}")

    def reap(self, i: int, code: int) -> None:
        """A dead worker: counted by signal; SIGBUS is expected only through
        a mapping of a device that changed."""
        w = self.board.workers[i]
        kind = KINDS[w.kind]
        if code < 0:
            name = signal.Signals(-code).name
            self.stats.signals[f"concurrency worker {name} in {kind}"] += 1
            with self.lock:
                stable = w.slot and w.seq % 2 == 0 and self.board.slots[w.slot - 1].seq == w.seq
            if name != "SIGBUS" or kind not in MAPPED or stable:
                self.stats.violation(f"concurrency: worker {i} died of {name} in {kind}"
                                     + (" on a device that did not change" if stable else ""))
        elif code:
            self.stats.signals[f"concurrency worker exit {code}"] += 1
        with self.lock:
            w.slot, w.since = 0, 0.0

    def drain(self) -> None:
        while not self.events.empty():
            message = self.events.get()
            if message[0] == "violation":
                self.stats.violation(f"concurrency: {message[1]}")
                continue
            _, kind, err, state, step, name = message
            self.stats.error(f"concurrency {kind}", err)
            self.stats.circumstances[f"concurrency {ename(err)} {kind}, {state} device, churner: {step}"] += 1
            if state == "published" and not self.d.hung:
                self.stats.violation(f"concurrency: {kind} of {name} failed {ename(err)} while it was "
                                     f"published and nothing changed")

    def close(self) -> None:
        self.stop.set()
        for p in self.procs:
            p.join(10)
        if any(p.is_alive() for p in self.procs):
            self.d.force_unmount()  # frees a worker stuck in the mount
        for p in self.procs:
            p.kill()
            p.join(TIMEOUT)
        self.drain()
        for i, name in enumerate(KINDS):
            self.stats.ops[f"concurrency {name}"] += sum(w.ops[i] for w in self.board.workers)


def concurrency(stats: Stats, seconds: float, rng: random.Random, workdir: str) -> None:
    """NWORKERS worker processes against the churner on NSLOTS devices of
    16-64 MiB in two regions; then every device is read back whole."""
    d = Daemon(workdir, "concurrency", stats, "--size", "256M", "--no-default-device")
    workers, first, stop = None, len(stats.violations), threading.Event()
    try:
        workers = Workers(d, rng, stats)
        board = workers.board
        churner = Churner(d, board, workers.lock, rng, stats)
        churner.setup()
        workers.start()
        thread = threading.Thread(target=churner.run, args=(stop,), daemon=True)
        thread.start()
        end = time.monotonic() + seconds
        while (time.monotonic() < end and thread.is_alive() and not d.hung and d.alive()
               and len(stats.violations) - first < MAX_VIOLATIONS):
            workers.tend()
            time.sleep(0.05)
        stop.set()
        thread.join(TIMEOUT * 2)
        workers.close()
        workers = None
        if not d.alive():
            stats.violation(f"concurrency: the daemon died ({d.proc.returncode}): {d.log()[-2000:]}")
        elif not d.hung:
            verify_devices(d, board, stats)
            d.finish()
    except Hung:
        pass
    finally:
        stop.set()
        if workers is not None:
            workers.close()
        d.close()


# --- crash -------------------------------------------------------------------------------------


def stored_page(page: int) -> bytes:
    """What the crash clients store in a page: its number, so that a page
    that lands in the wrong place shows."""
    return struct.pack("<QQ", 0x73746F726564, page) * 256


# One client program, by mode: store (mmap stores of stored_page over pages
# FIRST to LAST, never msynced, then again), pwrite (the same through
# pwrite), read (O_DIRECT preads), blocked (reads once told to on stdin),
# control (one control write). It prints "ready", then an errno name or the
# control result's first word.
CLIENT = """
import errno, mmap, os, random, struct, sys
STORED_PAGE
path, mode = sys.argv[1], sys.argv[2]
try:
    if mode == "control":
        fd = os.open(path, os.O_RDWR)
        print("ready", flush=True)
        os.write(fd, sys.argv[3].encode())
        print(os.pread(fd, 4096, 0).decode().split()[0], flush=True)
        sys.exit(0)
    fd = os.open(path, os.O_RDWR | (os.O_DIRECT if mode in ("read", "blocked") else 0))
    size = os.fstat(fd).st_size
    if mode in ("read", "blocked"):
        buf = mmap.mmap(-1, 1 << 16)
        print("ready", flush=True)
        if mode == "blocked":
            sys.stdin.readline()
        while True:
            os.preadv(fd, [buf], random.randrange(0, size, 1 << 16))
    m = mmap.mmap(fd, size, mmap.MAP_SHARED) if mode == "store" else None
    pages = range(int(sys.argv[3]), int(sys.argv[4]))
    ready = False
    while True:
        for page in pages:
            if m is not None:
                m[page * 4096:(page + 1) * 4096] = stored_page(page)
            else:
                os.pwrite(fd, stored_page(page), page * 4096)
        if not ready:
            print("ready", flush=True)
            ready = True
except OSError as e:
    print(errno.errorcode.get(e.errno, e.errno), flush=True)
    sys.exit(3)
"""


def start_client(*args: str) -> subprocess.Popen:
    code = CLIENT.replace("STORED_PAGE", inspect.getsource(stored_page))
    return subprocess.Popen([sys.executable, "-c", code, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_ready(p: subprocess.Popen, what: str) -> None:
    if not select.select([p.stdout], [], [], TIMEOUT)[0] or p.stdout.readline() != "ready\n":
        p.kill()
        raise RuntimeError(f"{what} did not get ready (exit {p.wait()}): {p.stderr.read()[-2000:]}")


def end_clients(clients: dict) -> None:
    """SIGKILL the clients still running, and reap them."""
    for p in clients.values():
        if p.poll() is None:
            p.kill()
            p.wait(TIMEOUT)


def settle(stats: Stats, where: str, clients: dict, must_end: set) -> dict:
    """After the daemon is gone: the clients that wait on it end with an
    error within TIMEOUT / 2, and every other one ends on SIGKILL (a client
    in D state that survives it is the hang of issue 10); each outcome (an errno
    or the control result's first word, a signal, or "ran on") is counted
    and returned."""
    deadline = time.monotonic() + TIMEOUT / 2
    for name in must_end:
        with contextlib.suppress(subprocess.TimeoutExpired):
            clients[name].wait(max(0.0, deadline - time.monotonic()))
    outcomes = {}
    for name, p in clients.items():
        if p.poll() is None:
            states = {proc_state(p.pid) for _ in range(10) if time.sleep(0.05) is None}
            where_it_sleeps = stack(f"{p.pid}/task/{p.pid}")
            if name in must_end:
                stats.violation(f"{where}: the {name} still runs {TIMEOUT / 2:.0f} s after the daemon "
                                f"ended (states {''.join(sorted(states))}); {where_it_sleeps}")
            p.kill()
            try:
                p.wait(TIMEOUT)
            except subprocess.TimeoutExpired:  # the hang of issue 10: D state that SIGKILL cannot end
                stats.violation(f"{where}: the {name} survives SIGKILL after the daemon ended; {where_it_sleeps}")
            if states == {"D"}:  # a killable sleep (TASK_KILLABLE shows as D): counted, with where
                stats.circumstances[f"crash: the {name} slept in D after the daemon ended: {where_it_sleeps}"] += 1
            outcomes[name] = "ran on"
        elif p.returncode < 0:
            outcomes[name] = signal.Signals(-p.returncode).name
        else:
            words = p.stdout.read().split()
            outcomes[name] = words[-1] if words else f"exit {p.returncode}"
        target = stats.signals if outcomes[name].startswith("SIG") else stats.errnos
        target[f"crash {name} {outcomes[name]}"] += 1
    return outcomes


KILL_POINTS = ("during I/O", "during a disable", "during a batch", "while the daemon is stopped")


def kill_round(stats: Stats, rng: random.Random, workdir: str, n: int, point: str) -> None:
    """SIGKILL at a random moment of point, with a mmap dirtier, a reader and a
    client blocked in a read attached: no stale mount (auto_unmount), no
    client in D state, errors rather than hangs."""
    d = Daemon(workdir, f"kill{n}", stats, "--size", "64M")
    dev, clients = d.path("dax", "dax0.0"), {}
    try:
        clients = {"dirtier": start_client(dev, "store", "0", str(64 * MiB // PAGE)),
                   "reader": start_client(dev, "read"), "blocked reader": start_client(dev, "blocked")}
        for name, p in clients.items():
            wait_ready(p, f"{d.name}: the {name}")
        if point == "during a disable":
            clients["disabler"] = start_client(d.path("control"), "control", "disable-device dax0.0")
        elif point == "during a batch":
            clients["batcher"] = start_client(d.path("control"), "control", "create-device region=0 size=0\n" * 200)
        for name in clients.keys() & {"disabler", "batcher"}:
            wait_ready(clients[name], f"{d.name}: the {name}")
        if point == "while the daemon is stopped":
            d.proc.send_signal(signal.SIGSTOP)
        clients["blocked reader"].stdin.write("go\n")
        clients["blocked reader"].stdin.flush()
        time.sleep(rng.uniform(0.01, 0.2) if point == "during a disable" else rng.uniform(0.05, 0.5))
        d.proc.kill()
        stats.ops[f"crash SIGKILL {point}"] += 1
        try:
            d.proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:  # stuck in the kernel: abort the connection
            d.hang(f"the daemon's exit after SIGKILL {point}", " ".join(
                f"{p.pid}/task/{p.pid}" for p in [d.proc, *clients.values()]))
            d.proc.wait(TIMEOUT)
        if not d.wait_unmounted():
            stats.violation(f"{d.name}: still mounted 10 s after SIGKILL {point}")
        settle(stats, f"{d.name}: SIGKILL {point}", clients, {"reader", "blocked reader"} | (
            clients.keys() & {"disabler", "batcher"}))
    finally:
        end_clients(clients)
        d.close()


def physical(ranges: list, offset: int) -> int:
    """Where a device offset is in the memory file."""
    return next(x["start"] + offset - x["page_offset"] for x in ranges
                if x["page_offset"] <= offset <= x["page_offset"] + x["end"] - x["start"])


def term_round(stats: Stats, rng: random.Random, workdir: str, n: int, disable: bool) -> None:
    """SIGTERM during I/O (mmap stores, pwrites, O_DIRECT reads) or during a
    disable of a dirty mapping: the daemon exits 0, a disable it was running
    is answered, and every store made before the signal (mmap stores never
    msynced included) is in the memory file."""
    size = 256 * MiB if disable else 64 * MiB
    name = f"term-{'disable' if disable else 'io'}{n}"
    memory = os.path.join(workdir, f"{name}.memory")
    d = Daemon(workdir, name, stats, "--size", str(size), "--memory-file", memory)
    dev, pages, clients = d.path("dax", "dax0.0"), size // PAGE, {}
    try:
        if disable:
            clients = {"storer": start_client(dev, "store", "0", str(pages))}
        else:
            clients = {"storer": start_client(dev, "store", "0", str(pages // 2)),
                       "pwriter": start_client(dev, "pwrite", str(pages // 2), str(pages)), "reader": start_client(dev, "read")}
        for who, p in clients.items():
            wait_ready(p, f"{name}: the {who}")
        ranges = d.layout()[0]["devices"][0]["ranges"]
        if disable:
            clients["disabler"] = start_client(d.path("control"), "control", "disable-device dax0.0")
            wait_ready(clients["disabler"], f"{name}: the disabler")
        time.sleep(rng.uniform(0.05, 0.3))
        d.proc.send_signal(signal.SIGTERM)
        stats.ops[f"crash SIGTERM {'during a disable' if disable else 'during I/O'}"] += 1
        d.finish()
        outcomes = settle(stats, f"{name}: SIGTERM", clients, clients.keys() & {"reader", "pwriter", "disabler"})
        if disable and outcomes["disabler"] not in ("ok", "ESHUTDOWN"):
            stats.violation(f"{name}: the disable running at SIGTERM ended {outcomes['disabler']}")
        if d.proc.returncode != 0:
            return
        with open(memory, "rb") as f:
            data = f.read()
        lost = [p for p in range(pages) if data[(x := physical(ranges, p * PAGE)):x + PAGE] != stored_page(p)]
        if lost:
            stats.violation(f"{name}: {len(lost)} of {pages} pages stored before SIGTERM are not in the "
                            f"memory file (the first: page {lost[0]})")
    finally:
        end_clients(clients)
        d.close()


def crash(stats: Stats, seconds: float, rng: random.Random, workdir: str) -> None:
    """Rounds of a SIGKILL at each point, a SIGTERM during I/O and one during
    a disable; at least one round, more while time remains."""
    end = time.monotonic() + seconds
    rounds = [functools.partial(kill_round, point=point) for point in KILL_POINTS] + [
        functools.partial(term_round, disable=False), functools.partial(term_round, disable=True)]
    for n in range(1 << 30):
        if n and n % len(rounds) == 0 and time.monotonic() >= end:
            break
        rounds[n % len(rounds)](stats, rng, workdir, n)


# --- the run -----------------------------------------------------------------------------------

WORKLOADS = {"fuzz": fuzz, "concurrency": concurrency, "crash": crash}
SHARES = {"fuzz": 0.3, "concurrency": 0.45, "crash": 0.25}  # of the run's time


def run(workloads: list[str], seconds: float, seed: int, workdir: str) -> Stats:
    """The workloads in turn, for about seconds in all; each seeded on its own."""
    stats = Stats()
    total = sum(SHARES[w] for w in workloads)
    for w in workloads:
        share = seconds * SHARES[w] / total
        print(f"torture: {w} for {share:.0f} s", file=sys.stderr, flush=True)
        try:
            WORKLOADS[w](stats, share, random.Random(f"{seed}-{w}"), workdir)
        except Exception:
            stats.violation(f"{w} failed: {traceback.format_exc()}")
    return stats


def left_mounted(workdir: str) -> list[str]:
    return [m.point for m in mountinfo.mounts() if m.point.startswith(workdir + "/")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=1.0, help="about how long in all (default 1)")
    parser.add_argument("--seed", type=int, help="of every random choice (default: a random one, printed)")
    parser.add_argument("--workload", choices=[*WORKLOADS, "all"], default="all")
    parser.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    args = parser.parse_args(argv)
    seed = random.randrange(1 << 32) if args.seed is None else args.seed
    workloads = list(WORKLOADS) if args.workload == "all" else [args.workload]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: unmount, stop what runs
    workdir = tempfile.mkdtemp(prefix="daxfuse-torture-")
    start = time.monotonic()
    try:
        stats = run(workloads, args.minutes * 60, seed, workdir)
    finally:
        leftovers = left_mounted(workdir)
        if leftovers:
            print(f"torture: left mounted: {leftovers}; {workdir} kept", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"torture: seed {seed}, workloads {' '.join(workloads)}, "
          f"{(time.monotonic() - start) / 60:.1f} min, {os.uname().release}, {os.cpu_count()} CPUs")
    print(stats.summary())
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"seed": seed, "workloads": workloads, "minutes": args.minutes} | stats.to_json(), f, indent=1)
    return 1 if stats.violations or leftovers else 0


if __name__ == "__main__":
    sys.exit(main())
