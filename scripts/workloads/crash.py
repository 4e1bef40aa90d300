"""crash: SIGKILL with clients attached (no stale mount, no client in D
state, errors rather than hangs), then SIGTERM during I/O and during a
disable of a dirty mapping (exit 0, the stores in the memory file)."""
import contextlib
import functools
import inspect
import os
import random
import select
import signal
import struct
import subprocess
import sys
import time

from .harness import MiB, PAGE, TIMEOUT, Daemon, Stats, stack, proc_state


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
