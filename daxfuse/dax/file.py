"""An open dev_dax (the kernel's drivers/dax/device.c: dax_fops, for a front
end that has no mmap hook).

Every operation runs under the dax read lock and checks liveness first, so a
kill_dax that returned means no operation is still touching the device and
every later one fails with ENXIO. Page-fault fills and writeback reach us as
read and write; mmap itself is never seen (a FUSE limitation).
"""
import errno
import functools

import trio

from ..core import DaxDevice
from ..core.errors import DaxError
from .badblocks import sectors, whole_sectors
from .bus import DaxBus


class DaxFile:
    __slots__ = ("bus", "core", "memory", "dax_dev")

    def __init__(self, bus: "DaxBus", dax_dev: DaxDevice) -> None:
        self.bus = bus
        self.core = core = bus.core
        self.memory = bus.memory
        self.dax_dev = dax_dev
        idx = self._enter_now()
        try:
            core.get_dax(dax_dev)
        finally:
            core.read_unlock(idx)

    def _enter_now(self) -> int:
        """Take the read lock and check liveness; the caller unlocks. Plain
        calls, not read_locked(): a generator-based context manager would
        add about a microsecond to every request."""
        idx = self.core.read_lock()
        if not self.core.dax_alive(self.dax_dev):
            self.core.read_unlock(idx)
            raise DaxError(errno.ENXIO, f"dax minor {self.dax_dev.minor} is disabled or destroyed")
        return idx

    async def _enter(self) -> int:
        """_enter_now, once the device's memory is not on the move between
        the memory file and a window (DaxBus.window)."""
        while True:
            idx = self._enter_now()
            moving = self.dax_dev.private.moving
            if moving is None:
                return idx
            self.core.read_unlock(idx)
            await moving.wait()

    async def read(self, offset: int, size: int):
        """Bytes at offset; empty at or past the end. A single range is served
        as the memory file gives it (a zero-copy view where allocated). A
        poisoned sector fails the whole read with EIO, as on pmem."""
        idx = await self._enter()
        try:
            dev = self.dax_dev.private
            segments = list(dev.segments(offset, size))
            if self.bus.badblocks and any(self.bus.badblocks.overlaps(*sectors(p, n)) for p, n in segments):
                raise DaxError(errno.EIO, f"a media error in {dev.name} at {offset:#x}")
            if dev.window is not None:
                return dev.window.read(offset, sum(n for _, n in segments))
            pieces = [self.memory.read(p, n) for p, n in segments]
        finally:
            self.core.read_unlock(idx)
        if len(pieces) == 1:
            return pieces[0]
        return b"".join(pieces)

    async def write(self, offset: int, data) -> int:
        """Write what fits; ENOSPC at or past the end, as a block device. A
        write that covers whole poisoned sectors clears them (the pmem
        driver's clear-on-write), as a change of the bus: it is answered
        once that change is recorded."""
        idx = await self._enter()
        try:
            dev = self.dax_dev.private
            if offset >= dev.size and data:
                raise DaxError(errno.ENOSPC, f"write at {offset:#x} is past the end of {dev.name} ({dev.size:#x})")
            segments = list(dev.segments(offset, len(data)))
            poisoned = self._poisoned(segments) if self.bus.badblocks and not self.bus.poisoning else []
            done = sum(n for _, n in segments)
            if dev.window is not None:
                dev.window.write(offset, data[:done])
            else:
                done = 0
                for phys, n in segments:
                    self.memory.write(phys, data[done:done + n])
                    done += n
        finally:
            self.core.read_unlock(idx)
        if poisoned:  # outside the read lock: a disable queued on the bus waits for its readers
            await self.bus.apply([functools.partial(self.bus.clear_written, poisoned)])
        return done

    def _poisoned(self, segments) -> list[tuple[int, int]]:
        """The poisoned sectors a write over segments covers, which it clears;
        EIO for a write over part of a poisoned sector."""
        bad, covered = self.bus.badblocks, []
        for phys, n in segments:
            whole_first, whole_count = whole_sectors(phys, n)
            for s, c in bad.within(*sectors(phys, n)):
                if s < whole_first or s + c > whole_first + whole_count:
                    raise DaxError(errno.EIO, f"a write over part of a poisoned sector ({s})")
                covered.append((s, c))
        return covered

    async def fsync(self) -> None:
        """msync the device's ranges; the read side is held across the wait."""
        idx = await self._enter()
        try:
            dev = self.dax_dev.private
            ranges, window = list(dev.ranges), dev.window
            await trio.to_thread.run_sync(
                lambda: window.flush() if window else [self.memory.flush(r.start, r.size) for r in ranges])
        finally:
            self.core.read_unlock(idx)

    def release(self) -> None:
        self.core.put_dax(self.dax_dev)
