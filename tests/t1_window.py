"""Windows (daxfuse/memory/window.py): a device's memory in a file of its
own, moved out of the memory file and back without losing a store, and
taken from every process that maps it by a truncate. No mount: real files,
real mappings in child processes."""
import faulthandler
import mmap
import os
import signal
import struct
import subprocess
import sys
import textwrap

import pytest

from daxfuse.memory import MemoryFile
from daxfuse.memory.tmpfs import mounter
from daxfuse.memory.window import Pipes

M = 1 << 20

# A mapper in a child process: maps the window (its fd), then stores into
# page after page, writing how many it stored to stdout's pipe after each
# one retired; a fault ends it (SIGBUS).
MAPPER = textwrap.dedent("""
    import mmap, os, random, struct, sys
    fd, size, stride = map(int, sys.argv[1:])
    m = mmap.mmap(fd, size)
    places = list(range(0, size - 8, stride))
    random.shuffle(places)  # holes everywhere, while the window moves back
    os.write(1, b"r")
    n = 0
    while True:
        for at in places:
            n += 1
            m[at:at + 8] = struct.pack("<Q", n)
            os.write(1, struct.pack("<Q", at))
""")


@pytest.fixture(params=["tmpfs", "named", "named-in-shm"])
def memory(request, tmp_path):
    """A memory file: the daemon's own (windows on tmpfs instances), or one
    of the user's (named windows beside it) on a disk and in /dev/shm."""
    if request.param == "tmpfs" and mounter() is None:
        pytest.skip("no tmpfs of the daemon's own here")
    path = {"tmpfs": None, "named": str(tmp_path / "memory"),
            "named-in-shm": f"/dev/shm/daxfuse-test-{os.getpid()}-{tmp_path.name}"}[request.param]
    m = MemoryFile(path)
    m.ensure(64 * M)
    yield m
    m.close()
    if path and path.startswith("/dev/shm/"):
        os.unlink(path)


def test_data_moves_in_and_back_out_whole_and_holes_stay_holes(memory):
    memory.write(4 * M, b"first range")
    memory.write(20 * M + 4096, b"second range")
    extents = [(20 * M, 8 * M), (4 * M, 4 * M)]  # device order differs from address order
    window = memory.open_window(extents, "dax0.0")
    window.release_source()
    assert window.read(4096, 12) == b"second range" and window.read(8 * M, 11) == b"first range"
    assert os.pread(memory.fileno(), 11, 4 * M) == bytes(11), "the memory file's copy went"
    window.write(9 * M, b"through the window")
    window.capture()
    window.close()
    assert os.pread(memory.fileno(), 12, 20 * M + 4096) == b"second range"
    assert os.pread(memory.fileno(), 18, 5 * M) == b"through the window"
    assert os.fstat(memory.fileno()).st_blocks * 512 <= 8 * M, "holes stayed holes (a huge page or so each)"


def mapper(window, stride: int) -> subprocess.Popen:
    fd = window.reopen(True)
    try:
        proc = subprocess.Popen([sys.executable, "-c", MAPPER, str(fd), str(window.size), str(stride)],
                                stdout=subprocess.PIPE, pass_fds=[fd])
    finally:
        os.close(fd)
    assert proc.stdout.read(1) == b"r"
    proc.first = proc.stdout.read(8 * 4)  # it runs: 4 stores retired
    return proc


def stored(proc) -> dict[int, int]:
    """offset -> the last value the mapper stored there, of the stores that retired."""
    data, last = proc.first + proc.stdout.read(), {}
    for i, (at,) in enumerate(struct.iter_unpack("<Q", data[:len(data) // 8 * 8])):
        last[at] = i + 1
    return last


@pytest.mark.parametrize("stride", [4096, 2 * M + 4096], ids=["pages", "into-holes"])
def test_no_store_that_retired_before_the_truncate_is_lost(memory, stride):
    """Lost on purpose, ten times: a mapper stores nonstop, into pages the
    window has and into holes it has not yet, while the window moves back.
    Every store it saw retire is in the memory file, and its next store
    faulted. (A page that a fault is still zeroing is a hole to SEEK_DATA:
    taken for one, a store into it was lost, in about half the runs.)"""
    for round_ in range(10):
        window = memory.open_window([(8 * M, 48 * M)], "dax0.0")
        window.release_source()
        proc = mapper(window, stride)
        window.capture()
        window.close()
        last = stored(proc)  # until it ends: a full pipe would stop it short of its fault
        assert proc.wait(10) == -signal.SIGBUS
        for at, n in last.items():
            assert struct.unpack("<Q", os.pread(memory.fileno(), 8, 8 * M + at))[0] == n, \
                f"round {round_}: the store at {at:#x}"


STORE = textwrap.dedent("""
    import mmap, sys
    fd, at = map(int, sys.argv[1:])
    m = mmap.mmap(fd, at + 4096, offset=0)
    m[at:at + 5] = b"late!"
""")


def test_a_store_into_a_hole_after_its_pages_were_taken_lands_nowhere_unseen(memory):
    """Lost on purpose: between taking a step's pages and cutting them off,
    a process stores into what was a hole. In a frozen tmpfs that store
    faults (it could only have gone to a page the cut frees); in a named
    window the hole was allocated before the take, so the store is in a
    page taken, and comes back."""
    window = memory.open_window([(8 * M, 16 * M)], "dax0.0")
    window.release_source()
    window.write(0, b"data")
    pipes = Pipes()
    try:
        pieces = window.take(0, window.size, pipes)
        fd = window.reopen(True)
        store = subprocess.run([sys.executable, "-c", STORE, str(fd), str(5 * M)], pass_fds=[fd])
        os.close(fd)
        window.cut(0)
        window.put(pieces, pipes)
    finally:
        pipes.close()
        window.close()
    if window.tmpfs is not None:
        assert store.returncode == -signal.SIGBUS, "the frozen tmpfs took a new page"
    else:
        assert store.returncode == 0 and os.pread(memory.fileno(), 5, 13 * M) == b"late!"
    assert os.pread(memory.fileno(), 4, 8 * M) == b"data"


def test_a_named_window_left_open_by_a_daemon_that_died_moves_back(tmp_path):
    """A window beside a memory file of the user's is a file of its own: a
    daemon killed with it open leaves it, and the next one moves it back,
    taking it from the processes that still map it."""
    path = str(tmp_path / "memory")
    m = MemoryFile(path)
    m.ensure(16 * M)
    m.write(2 * M, b"before")
    window = m.open_window([(2 * M, 4 * M)], "dax0.0")
    window.release_source()
    proc = mapper(window, 4096)
    os.close(window.fd)  # the daemon is gone: nothing moved back
    m.close()
    assert os.path.exists(path + ".window.dax0.0")
    again = MemoryFile(path)
    again.recover([(2 * M, 4 * M)], "dax0.0")
    last = stored(proc)
    assert proc.wait(10) == -signal.SIGBUS
    assert not os.path.exists(path + ".window.dax0.0")
    for at, n in last.items():
        assert struct.unpack("<Q", os.pread(again.fileno(), 8, 2 * M + at))[0] == n
    again.close()


def test_a_window_reaches_its_device_alone(memory):
    memory.write(0, b"another device")
    memory.write(8 * M, b"this device")
    window = memory.open_window([(8 * M, 2 * M)], "dax0.1")
    fd = window.reopen(False)
    try:
        assert os.fstat(fd).st_size == 2 * M
        assert os.pread(fd, 11, 0) == b"this device" and os.pread(fd, 4096, 2 * M) == b""
        with pytest.raises(OSError):
            os.write(fd, b"x")
    finally:
        os.close(fd)
        window.capture()
        window.close()


def test_a_frozen_tmpfs_takes_no_new_page():
    """A store into a hole of a frozen instance faults; into a page it has, lands."""
    m = mounter()
    if m is None:
        pytest.skip("no tmpfs of the daemon's own here")
    instance = m.mount(8 * M)
    fd = instance.create()
    os.ftruncate(fd, 8 * M)
    view = mmap.mmap(fd, 8 * M)
    view[0] = 1
    instance.freeze(fd)
    view[1] = 2
    child = os.fork()
    if child == 0:
        faulthandler.disable()  # the SIGBUS is expected: no traceback
        view[4 * M] = 3
        os._exit(0)
    assert os.waitpid(child, 0)[1] == signal.SIGBUS
    view.close()
    os.close(fd)
    instance.close()
