"""A window: a device's memory in a file of its own, while processes map it
directly (the personality's mappings, see daxfuse/daemon/direct.py).

The memory file holds every device, so it is never handed to a process: a
window is. It holds exactly one device's memory, at the device's offsets,
moved there from the memory file when it opens (the memory file's copy is
punched out). Closing it moves the data back and truncates the file to
nothing, and the kernel then zaps every mapping of it in every process
(children of raw forks, fds kept through /proc/self/fd, static binaries
alike): the next access raises SIGBUS. No process has to cooperate.

The move back must lose no store that a mapper made before the truncate
reached its page: the pages are taken into a pipe by reference (splice),
then truncated, and only then copied into the memory file, so a store that
lands between the two is in a page the pipe holds. A store into a hole
(no page yet) would allocate a page the truncate then frees: so that none
can, a window on a tmpfs of its own is frozen first (tmpfs.Tmpfs.freeze:
a store into a hole raises SIGBUS), and a window beside a memory file of the
user's, which cannot be frozen, has a page faulted in over each hole before
they are taken (it costs what the device is large, a step at a time; such a
window is the slower kind).

That second kind is a named file (PATH.window.NAME) on the memory file's
own filesystem, so that what is stored in it survives a daemon killed
meanwhile: the layout record names it, and the next mount moves it back
(recover()). Its data is first copied back whole, then taken as above, so
that a daemon killed amid the move leaves every byte in one file or the other.
"""
import ctypes
import errno
import fcntl
import itertools
import mmap
import os
import time

import numpy as np

from ..core.errors import DaxError
from .tmpfs import Tmpfs

_PAGE = 4096
STEP = 16 << 20  # what a move back takes at once: a multiple of tmpfs's huge pages, which a truncate must not split
_serials = itertools.count(1)
_F_SETPIPE_SZ = 1031
_FALLOC_FL_KEEP_SIZE, _FALLOC_FL_PUNCH_HOLE = 1, 2
_MADV_POPULATE_READ = 22  # Linux 5.14
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
_libc.syscall.restype = ctypes.c_long
_CACHESTAT = 451  # x86_64


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    if _libc.fallocate(fd, mode, offset, length):
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def punch(fd: int, offset: int, length: int) -> None:
    """Free [offset, offset + length) of fd's file: a hole, reading zeros."""
    fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length)


def data_extents(fd: int, start: int, end: int):
    """(offset, length) of what the file holds in [start, end) (SEEK_DATA)."""
    offset = start
    while offset < end:
        try:
            data = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:  # no data past offset
                return
            raise
        if data >= end:
            return
        offset = min(os.lseek(fd, data, os.SEEK_HOLE), end)
        yield data, offset - data


def cached_pages(fd: int, offset: int, length: int) -> int:
    """Pages of [offset, offset + length) in the file's page cache, up to
    date or not (cachestat, Linux 6.5). A tmpfs page a fault is still
    zeroing is there, where SEEK_DATA sees a hole."""
    span = (ctypes.c_uint64 * 2)(offset, length)
    stat = (ctypes.c_uint64 * 5)()
    if _libc.syscall(_CACHESTAT, fd, ctypes.byref(span), ctypes.byref(stat), 0) < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return stat[0]


def settled_extents(fd: int, start: int, end: int) -> list[tuple[int, int]]:
    """data_extents of [start, end) once every page in the file's cache there
    is up to date: none a fault is still making, which a scan would take
    for a hole (of a frozen tmpfs, where no new one can come)."""
    deadline = time.monotonic() + 1
    while True:
        pieces = list(data_extents(fd, start, end))
        if sum(n for _, n in pieces) // _PAGE >= cached_pages(fd, start, end - start) or time.monotonic() > deadline:
            return pieces


def copy(src: int, src_offset: int, dst: int, dst_offset: int, length: int) -> None:
    """A kernel copy between two files (copy_file_range cannot cross tmpfs instances)."""
    os.lseek(dst, dst_offset, os.SEEK_SET)
    while length:
        n = os.sendfile(dst, src, src_offset, length)
        if not n:
            raise OSError(errno.EIO, "short copy")
        src_offset, length = src_offset + n, length - n


class Pipes:
    """Pipes holding STEP bytes of pages by reference (a page a slot),
    filled and drained in order."""

    def __init__(self) -> None:
        self.pipes, self.room = [], []
        while sum(self.room) < STEP:
            r, w = os.pipe2(os.O_CLOEXEC)
            self.pipes.append((r, w))
            try:
                self.room.append(fcntl.fcntl(w, _F_SETPIPE_SZ, 1 << 20))  # pipe-max-size, unless root raised it
            except OSError:
                self.room.append(64 << 10)
        self.held = [0] * len(self.pipes)

    def fill(self, src: int, offset: int, length: int) -> None:
        """Take [offset, offset + length) of src's pages (page-aligned)."""
        i = 0
        while length:
            while self.held[i] == self.room[i]:
                i += 1
            n = os.splice(src, self.pipes[i][1], min(length, self.room[i] - self.held[i]), offset)
            if not n:
                raise OSError(errno.EIO, "short splice")
            self.held[i] += n
            offset, length = offset + n, length - n

    def drain(self, length: int, dst: int | None = None, offset: int | None = None) -> bytes | None:
        """The next length bytes taken: into dst at offset, or returned."""
        parts, i = [], 0
        while length:
            while not self.held[i]:
                i += 1
            want = min(length, self.held[i])
            if dst is None:
                part = os.read(self.pipes[i][0], want)
                parts.append(part)
                n = len(part)
            else:
                n = os.splice(self.pipes[i][0], dst, want, None, offset)
                offset += n
            self.held[i] -= n
            length -= n
        return None if dst is not None else b"".join(parts)

    def close(self) -> None:
        for r, w in self.pipes:
            os.close(r)
            os.close(w)


class Window:
    def __init__(self, memory, extents: list[tuple[int, int]], fd: int, tmpfs: Tmpfs | None,
                 path: str | None) -> None:
        self.memory = memory
        self.extents = extents  # (physical start, length) in device order
        self.size = sum(n for _, n in extents)
        self.fd = fd
        self.tmpfs = tmpfs  # frozen when taken; None: a named file beside the memory file
        self.path = path
        self.serial = next(_serials)  # never reused: names this window to the processes that map it

    # --- the device's data, at device offsets -----------------------------------------------------
    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self.fd, length, offset)

    def write(self, offset: int, data) -> None:
        view = memoryview(data)
        try:
            while view:
                n = os.pwrite(self.fd, view, offset)
                view, offset = view[n:], offset + n
        except OSError as e:
            raise DaxError(e.errno, f"window {self.path or ''}: {e.strerror}") from None

    def flush(self) -> None:
        if self.path is not None:
            os.fdatasync(self.fd)

    def reopen(self, writable: bool) -> int:
        """A new open file of it, read-only or read-write, to hand a process."""
        return os.open(f"/proc/self/fd/{self.fd}", (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC)

    def physical(self, offset: int, length: int):
        """(physical start, length) pieces of device range [offset, offset + length)."""
        base = 0
        for phys, n in self.extents:
            lo, hi = max(offset, base), min(offset + length, base + n)
            if lo < hi:
                yield phys + lo - base, hi - lo
            base += n

    # --- opening and closing ---------------------------------------------------------------------
    def fill(self) -> None:
        """Move the extents' data from the memory file in (at open)."""
        base = 0
        for phys, n in self.extents:
            for start, length in data_extents(self.memory.fileno(), phys, phys + n):
                copy(self.memory.fileno(), start, self.fd, base + start - phys, length)
            base += n
        if self.path is not None:
            os.fsync(self.fd)  # whole before the record names it and the memory file's copy goes

    def release_source(self) -> None:
        """The memory file's copy goes, once the window holds the data for good."""
        for phys, n in self.extents:
            self.memory.punch(phys, n)

    def capture(self) -> None:
        """Move the data back into the memory file and truncate the file to
        nothing: every mapping of it, in any process, faults from now on.
        A step at a time from the end: take() then cut() then put()."""
        if self.path is not None:  # every byte in one file or the other, whenever the daemon dies
            for offset, length in data_extents(self.fd, 0, self.size):
                for at in range(offset, offset + length, STEP):
                    self._drain(at, os.pread(self.fd, min(STEP, offset + length - at), at))
        pipes = Pipes()
        try:
            end = self.size
            while end > 0:
                start = (end - 1) // STEP * STEP  # on a huge page's boundary, which a truncate must not split
                pieces = self.take(start, end, pipes)
                self.cut(start)
                self.put(pieces, pipes)
                end = start
        finally:
            pipes.close()
        if self.path is not None:
            os.fdatasync(self.memory.fileno())

    def take(self, start: int, end: int, pipes: "Pipes") -> list[tuple[int, int]]:
        """Take the pages of [start, end) into pipes by reference, once no
        store can go where none is taken: a frozen tmpfs adds no page, and
        a named window has a page everywhere first (faulted in for reading:
        the page cache's own, up to date, which splice takes, where
        fallocate's tmpfs pages would be holes to it). The pieces taken."""
        if self.tmpfs is not None:
            self.tmpfs.freeze(self.fd)
            pieces = settled_extents(self.fd, start, end)
        else:
            with mmap.mmap(self.fd, end - start, offset=start, prot=mmap.PROT_READ) as view:
                view.madvise(_MADV_POPULATE_READ)
            pieces = [(start, end - start)]
        for offset, length in pieces:
            pipes.fill(self.fd, offset, length)
        return pieces

    def cut(self, start: int) -> None:
        """The mappings of everything from start on die here."""
        os.ftruncate(self.fd, start)

    def put(self, pieces: list[tuple[int, int]], pipes: "Pipes") -> None:
        """What take() took, into the memory file."""
        for offset, length in pieces:
            if self.tmpfs is None:
                self._drain(offset, pipes.drain(length))
                continue
            for phys, n in self.physical(offset, length):
                pipes.drain(n, self.memory.fileno(), phys)
                self.memory.mark(phys, phys + n)

    def _drain(self, offset: int, data: bytes) -> None:
        """Put the device's bytes at offset into the memory file: runs of
        zero pages as holes, the rest written."""
        pages = np.frombuffer(data, dtype=np.uint64, count=len(data) // _PAGE * (_PAGE // 8)).reshape(-1, _PAGE // 8)
        kinds = pages.any(axis=1).tolist() + [True] * bool(len(data) % _PAGE)
        lo = 0
        for hi in range(1, len(kinds) + 1):
            if hi < len(kinds) and kinds[hi] == kinds[lo]:
                continue
            first, last = lo * _PAGE, min(hi * _PAGE, len(data))
            cursor = first
            for phys, n in self.physical(offset + first, last - first):
                if kinds[lo]:
                    self.memory.write(phys, data[cursor:cursor + n])
                else:
                    self.memory.punch(phys, n)
                cursor += n
            lo = hi

    def close(self) -> None:
        os.close(self.fd)
        if self.tmpfs is not None:
            self.tmpfs.close()
        if self.path is not None:
            remove(self.path)


def remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
