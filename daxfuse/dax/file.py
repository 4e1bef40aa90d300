"""An open dev_dax: the kernel's dax_fops for a front end that has no mmap hook.

Every operation runs under the dax read lock and checks liveness first, so a
kill_dax that returned means no operation is still touching the device and
every later one fails with ENXIO. Page-fault fills and writeback reach us as
read and write; mmap itself is never seen (a FUSE limitation).
"""
import errno

import trio

from ..core import DaxCore, DaxDevice, DaxError
from ..memory import MemoryFile


def _dead(dax_dev: DaxDevice) -> DaxError:
    return DaxError(errno.ENXIO, f"dax minor {dax_dev.minor} is disabled or destroyed")


class DaxFile:
    __slots__ = ("core", "memory", "dax_dev")

    def __init__(self, core: DaxCore, memory: MemoryFile, dax_dev: DaxDevice) -> None:
        with core.read_locked():
            if not core.dax_alive(dax_dev):
                raise _dead(dax_dev)
            core.get_dax(dax_dev)
        self.core = core
        self.memory = memory
        self.dax_dev = dax_dev

    def read(self, offset: int, size: int):
        """Bytes at offset; empty at or past the end. A single range is served
        as the memory file gives it (a zero-copy view where allocated)."""
        core = self.core
        idx = core.read_lock()
        try:
            if not core.dax_alive(self.dax_dev):
                raise _dead(self.dax_dev)
            pieces = [self.memory.read(p, n) for p, n in self.dax_dev.private.segments(offset, size)]
        finally:
            core.read_unlock(idx)
        if len(pieces) == 1:
            return pieces[0]
        return b"".join(pieces)

    def write(self, offset: int, data) -> int:
        """Write what fits; ENOSPC at or past the end, as a block device."""
        core = self.core
        idx = core.read_lock()
        try:
            if not core.dax_alive(self.dax_dev):
                raise _dead(self.dax_dev)
            dev = self.dax_dev.private
            if offset >= dev.size and data:
                raise DaxError(errno.ENOSPC, f"write at {offset:#x} is past the end of {dev.name} ({dev.size:#x})")
            done = 0
            for phys, n in dev.segments(offset, len(data)):
                self.memory.write(phys, data[done:done + n])
                done += n
            return done
        finally:
            core.read_unlock(idx)

    async def fsync(self) -> None:
        """msync the device's ranges; the read side is held across the wait."""
        core = self.core
        idx = core.read_lock()
        try:
            if not core.dax_alive(self.dax_dev):
                raise _dead(self.dax_dev)
            ranges = list(self.dax_dev.private.ranges)
            await trio.to_thread.run_sync(
                lambda: [self.memory.flush(r.start, r.size) for r in ranges])
        finally:
            core.read_unlock(idx)

    def release(self) -> None:
        self.core.put_dax(self.dax_dev)
