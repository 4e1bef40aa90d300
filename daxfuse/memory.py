"""The memory file: the emulated physical memory behind every region.

A sparse file mapped MAP_SHARED with numpy. Offsets in it play the role of
physical addresses. By default it is an unlinked file, gone with the daemon:
on a tmpfs of the daemon's own mounted with huge=always and attached to no
path (2M- and 1G-aligned devices then get huge-page mappings, as the
kernel's PMD faults, and the daemon's own mapping costs a fault per 2 MiB,
not per page), else in /dev/shm. A user-given path is kept, so its
contents persist across mounts (pmem semantics), and locked, so two daemons
never share it. The file only grows: resources are carved out of it.
"""
import ctypes
import errno
import fcntl
import mmap
import os
import socket
import subprocess
import sys
import tempfile

import numpy as np

from .errors import DaxError

_PAGE = mmap.PAGESIZE
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_FSOPEN, _FSCONFIG, _FSMOUNT = 430, 431, 432  # x86_64: the new mount API
_FSCONFIG_SET_STRING, _FSCONFIG_CMD_CREATE = 1, 6
_CLOEXEC = 1


def _syscall(*args) -> int:
    r = _libc.syscall(*args)
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r


def _huge_tmpfs_file() -> int | None:
    """An unlinked file on a tmpfs mounted with huge=always: made here as
    root, else by a child in a user and mount namespace of its own (where
    the user may mount a tmpfs) and passed back; None where neither may."""
    fd = _mount_huge_tmpfs_file()
    return fd if fd is not None or os.geteuid() == 0 else _huge_tmpfs_file_from_user_namespace()


def _huge_tmpfs_file_from_user_namespace() -> int | None:
    ours, theirs = socket.socketpair()
    top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # where this daxfuse is imported from
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [top, os.environ.get("PYTHONPATH")]))}
    with ours, theirs:
        try:
            subprocess.run(["unshare", "--user", "--map-root-user", "--mount", sys.executable, "-c",
                            f"import daxfuse.memory as m; m.send_huge_tmpfs_file({theirs.fileno()})"],
                           pass_fds=[theirs.fileno()], env=env, check=True, capture_output=True, timeout=30)
            _, fds, _, _ = socket.recv_fds(ours, 1, 1)
        except (OSError, subprocess.SubprocessError):
            return None
    return fds[0] if fds else None


def send_huge_tmpfs_file(sock_fd: int) -> None:
    """The child's side: the file, over the socket at sock_fd."""
    fd = _mount_huge_tmpfs_file()
    if fd is None:
        sys.exit("daxfuse: no tmpfs in a user namespace either")
    socket.send_fds(socket.socket(fileno=sock_fd), [b"m"], [fd])


def _mount_huge_tmpfs_file() -> int | None:
    """An unlinked file on a tmpfs mounted with huge=always and attached to
    no path (fsopen/fsmount: nothing to unmount, gone with its last file),
    as large as /dev/shm; None where mounting is not allowed."""
    shm = os.statvfs("/dev/shm")
    try:
        fsfd = _syscall(_FSOPEN, b"tmpfs", _CLOEXEC)
    except OSError:
        return None
    try:
        for key, value in ((b"huge", b"always"), (b"size", str(shm.f_blocks * shm.f_frsize).encode())):
            _syscall(_FSCONFIG, fsfd, _FSCONFIG_SET_STRING, key, value, 0)
        _syscall(_FSCONFIG, fsfd, _FSCONFIG_CMD_CREATE, None, None, 0)
        mntfd = _syscall(_FSMOUNT, fsfd, _CLOEXEC, 0)
    except OSError:
        return None
    finally:
        os.close(fsfd)
    try:
        fd = os.open("memory", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600, dir_fd=mntfd)
        os.unlink("memory", dir_fd=mntfd)
        return fd
    finally:
        os.close(mntfd)


class MemoryFile:
    def __init__(self, path: str | None = None) -> None:
        self.path = path  # None: unlinked, gone with the daemon
        if path is None:
            fd = _huge_tmpfs_file()
            self.name = "on a huge-page tmpfs of its own (unlinked)"
            if fd is None:
                # Unlinked at once: nothing is left in /dev/shm however the daemon ends.
                fd, tmp = tempfile.mkstemp(prefix="daxfuse-mem-", dir="/dev/shm")
                os.unlink(tmp)
                self.name = "in /dev/shm (unlinked)"
        else:
            self.name = path
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as e:
                raise DaxError(e.errno, f"cannot open memory file {path}: {e.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise DaxError(errno.EBUSY, f"memory file {path} is in use by another daxfuse") from None
        self._fd = fd
        self._mm: mmap.mmap | None = None
        self._map: np.ndarray | None = None
        self.accesses = 0  # views and writes so far: lets the daemon see idleness
        # Pages known to hold data: written through write(), or data already
        # in the file. A page missing here is read through the file, which
        # is right either way; only a page marked here is read in place.
        self._present = bytearray()  # one byte per page: a C-level find() checks a range
        self._remap(os.fstat(fd).st_size)
        self._mark_data()

    def fileno(self) -> int:
        return self._fd

    def reopen(self, writable: bool) -> int:
        """A new fd of the file, read-only or read-write, to hand a client."""
        return os.open(f"/proc/self/fd/{self._fd}", (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC)

    @property
    def size(self) -> int:
        return 0 if self._map is None else len(self._map)

    def _remap(self, size: int) -> None:
        # Views handed out earlier keep the old mapping alive; both map the
        # same file MAP_SHARED, so they stay coherent.
        if size:
            self._mm = mmap.mmap(self._fd, size, mmap.MAP_SHARED)
            self._map = np.frombuffer(self._mm, dtype=np.uint8)
            self._present.extend(bytes(-(-size // _PAGE) - len(self._present)))

    def _mark_data(self) -> None:
        """Mark the data a persistent file already holds (SEEK_DATA/SEEK_HOLE)."""
        offset = 0
        while offset < self.size:
            try:
                data = os.lseek(self._fd, offset, os.SEEK_DATA)
            except OSError:  # ENXIO: no data past offset
                return
            offset = os.lseek(self._fd, data, os.SEEK_HOLE)
            self._mark(data, offset)

    def room(self) -> int:
        """Bytes the file can hold: what it holds now plus its filesystem's
        free space. Regions past that could never be written in full (a
        container's 64 MiB /dev/shm under a 1 GiB region)."""
        st, vfs = os.fstat(self._fd), os.fstatvfs(self._fd)
        return st.st_blocks * 512 + vfs.f_bavail * vfs.f_frsize

    def ensure(self, size: int) -> None:
        """Grow the file (sparsely) so that [0, size) is backed."""
        if size > self.size:
            os.ftruncate(self._fd, size)
            self._remap(size)

    def _mark(self, start: int, end: int) -> None:
        lo, hi = start // _PAGE, -(-end // _PAGE)
        self._present[lo:hi] = b"\1" * (hi - lo)

    def read(self, start: int, length: int):
        """The bytes of [start, start + length): a zero-copy view of the
        mapping where the file holds data; where it may have holes, a copy
        read through the file, which reads zeros without allocating (through
        the mapping a hole allocates memory, and in a full tmpfs fails the
        reply, which would hang the client)."""
        self.accesses += 1
        if self._present.find(0, start // _PAGE, -(-(start + length) // _PAGE)) < 0:
            return self._map[start:start + length]
        return os.pread(self._fd, length, start)

    def write(self, start: int, data) -> None:
        """Through the file, not the mapping: a full filesystem (tmpfs holes
        allocate on first write) then fails the write instead of killing this
        daemon with SIGBUS."""
        self.accesses += 1
        view = memoryview(data)
        try:
            while view:
                n = os.pwrite(self._fd, view, start)
                self._mark(start, start + n)
                view, start = view[n:], start + n
        except OSError as e:
            raise DaxError(e.errno, f"memory file: {e.strerror}") from None

    def flush(self, start: int, length: int) -> None:
        """msync [start, start + length) to the file (page-aligned outward)."""
        if self._map is None or not length:
            return
        lo = start - start % _PAGE
        self._mm.flush(lo, start + length - lo)

    def unmap_pages(self) -> None:
        """Drop this process's page-table entries to the file. The pages stay
        in the file (tmpfs or page cache, dirty ones marked so), but stop
        counting in the daemon's RSS; the next access maps them again."""
        if self._mm is not None:
            self._mm.madvise(mmap.MADV_DONTNEED)

    def close(self) -> None:
        self._map = self._mm = None
        os.close(self._fd)
