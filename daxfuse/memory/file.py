"""The memory file: the emulated physical memory behind every region.

A sparse file mapped MAP_SHARED with numpy. Offsets in it play the role of
physical addresses, which front ends show moved up by phys_base(): above
the host's own memory, as the kernel would place hot-added memory. By default it is an unlinked file, gone with the daemon:
on a tmpfs of the daemon's own mounted with huge=always and attached to no
path (2M- and 1G-aligned devices then get huge-page mappings, as the
kernel's PMD faults, and the daemon's own mapping costs a fault per 2 MiB,
not per page), else in /dev/shm. A user-given path is kept, so its
contents persist across mounts (pmem semantics), and locked, so two daemons
never share it. The file only grows: resources are carved out of it.
"""
import errno
import fcntl
import functools
import glob
import mmap
import os
import tempfile

import numpy as np

from ..core.errors import DaxError
from ..core import files
from . import tmpfs
from .window import Window, punch, remove

_PAGE = mmap.PAGESIZE
_GIB = 1 << 30
_HOST_MEMORY = "/sys/devices/system/memory"
HOST_NODES = "/sys/devices/system/node"


@functools.cache
def phys_base() -> int:
    """The emulated physical address of the memory file's offset 0: the
    first GiB boundary above the host's memory blocks (what `daxfuse exec`
    shows beside the emulated ones), else above its RAM; never below 4 GiB
    (the 32-bit hole). GiB-aligned, so each align keeps its alignment."""
    try:
        with open(f"{_HOST_MEMORY}/block_size_bytes") as f:
            block = int(f.read(), 16)
        blocks = [int(n[6:]) for n in os.listdir(_HOST_MEMORY) if n.startswith("memory") and n[6:].isdigit()]
        end = (max(blocks) + 1) * block
    except (OSError, ValueError):
        end = os.sysconf("SC_PHYS_PAGES") * _PAGE
    return max(4 * _GIB, -(-end // _GIB) * _GIB)


def memory_block_size() -> int:
    """The host's memory block size (block_size_bytes), which exec's /sys
    shows for the emulated blocks too; 128 MiB, x86_64's, without one."""
    try:
        with open(f"{_HOST_MEMORY}/block_size_bytes") as f:
            return int(f.read(), 16)
    except (OSError, ValueError):
        return 128 << 20


def host_nodes() -> list[int]:
    """The host's NUMA nodes; emulated nodes (kmem's, CXL windows') are numbered past them."""
    try:
        return sorted(int(n[4:]) for n in os.listdir(HOST_NODES) if n.startswith("node") and n[4:].isdigit())
    except OSError:
        return []


def memmap_on_memory_supported() -> bool:
    """Whether the host could place a hot-added block's memory map on the
    block itself (memory_hotplug.memmap_on_memory), which a kmem device's
    memmap_on_memory asks for."""
    try:
        with open("/sys/module/memory_hotplug/parameters/memmap_on_memory") as f:
            return f.read().strip() not in ("", "N", "0")
    except OSError:
        return False


class MemoryFile:
    def __init__(self, path: str | None = None) -> None:
        self.path = path  # None: unlinked, gone with the daemon
        self.created = False  # path did not exist before: a failed mount removes it again
        self._mounter = self._tmpfs = None
        if path is None:
            self._mounter = tmpfs.mounter()
            self.name = "on a huge-page tmpfs of its own (unlinked)"
            if self._mounter is not None:
                shm = os.statvfs("/dev/shm")
                self._tmpfs = self._mounter.mount(shm.f_blocks * shm.f_frsize)
                fd = self._tmpfs.create()
            else:
                # Unlinked at once: nothing is left in /dev/shm however the daemon ends.
                fd, tmp = tempfile.mkstemp(prefix="daxfuse-mem-", dir="/dev/shm")
                os.unlink(tmp)
                self.name = "in /dev/shm (unlinked)"
        else:
            self.name = path
            self.created = not os.path.lexists(path)
            try:
                fd = files.open_file(path, os.O_RDWR, create=True)
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

    # --- windows --------------------------------------------------------------------------
    @property
    def windows(self) -> bool:
        """Whether devices can be given windows (window.py): on tmpfs
        instances of the daemon's own, or beside a memory file of the
        user's; not for a memory file in /dev/shm, where no window could be
        frozen and none would outlive the daemon either."""
        return self._mounter is not None or self.path is not None

    def window_path(self, name: str) -> str | None:
        """Where the window named name lives: beside a memory file of the user's."""
        return None if self.path is None else f"{self.path}.window.{name}"

    def open_window(self, extents: list[tuple[int, int]], name: str) -> Window:
        """A new window holding the data of extents (physical start, length),
        in that order. The memory file keeps its copy until the caller calls
        release_source() on it (once a named window is recorded)."""
        size = sum(n for _, n in extents)
        path = self.window_path(name)
        instance = None
        if path is None:
            instance = self._mounter.mount(size)
            fd = instance.create()
        else:
            fd = files.create_file(path)
        window = Window(self, extents, fd, instance, path)
        try:
            os.ftruncate(fd, size)
            window.fill()
        except BaseException:
            window.close()
            raise
        return window

    def recover(self, extents: list[tuple[int, int]], name: str) -> None:
        """Move back a named window that a daemon which died left open
        (what its processes still map of it then faults)."""
        path = self.window_path(name)
        try:
            fd = files.open_file(path, os.O_RDWR)
        except FileNotFoundError:
            return  # it was moved back and removed, and the record not yet rewritten
        window = Window(self, extents, fd, None, path)
        try:
            window.capture()
        finally:
            window.close()

    def remove_stale_windows(self) -> None:
        """Remove named windows that no record names: a daemon died after
        making one and before recording it, so its data is here still."""
        if self.path is not None:
            for stale in glob.glob(glob.escape(self.path) + ".window.dax*"):
                remove(stale)

    def punch(self, start: int, length: int) -> None:
        """[start, start + length) becomes a hole: the data is elsewhere now."""
        punch(self._fd, start, length)
        lo, hi = -(-start // _PAGE), (start + length) // _PAGE
        self._present[lo:hi] = bytes(max(0, hi - lo))

    def fileno(self) -> int:
        return self._fd

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
            self.mark(data, offset)

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

    def mark(self, start: int, end: int) -> None:
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
                self.mark(start, start + n)
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
        if self._tmpfs is not None:
            self._tmpfs.close()
        if self._mounter is not None:
            self._mounter.close()
