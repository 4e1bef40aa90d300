"""concurrency: worker processes write and check tagged records through
pread, pwrite, O_DIRECT and mmap while a churner disables, resizes,
destroys and re-creates their devices: no read returns another device's
records or an older generation's, and no operation hangs."""
import ctypes
import errno
import mmap
import multiprocessing
import os
import random
import signal
import struct
import sys
import threading
import time
import traceback

import numpy as np

from daxfuse.dax import ALIGNS
from daxfuse.dax.device import alloc_granule

from .harness import MiB, PAGE, TIMEOUT, MAX_VIOLATIONS, Daemon, Hung, Stats, ename, layout_violations


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
        return self.rng.randrange(16 * MiB, 64 * MiB + 1, alloc_granule(REGION_ALIGN[SLOT_REGION[s]]))

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
