"""dax_device instances: a minor, an inode number and SRCU-guarded liveness.

Mirrors drivers/dax/super.c after the seed refactor, narrowed to what the
services on top use: alloc_dax / get_dax / put_dax / kill_dax / run_dax /
dax_alive / read_lock (dax_read_lock), and a minor allocator bounded by nr_dax. A minor
(hence its inode number) is released only when the last reference is put, so
a front end that holds a reference for every kernel-side use never sees an
inode number reused under it.
"""
import errno
from contextlib import contextmanager

from .devt import DAX_INO_BASE
from .errors import DaxError
from .minors import Ida
from .srcu import Srcu

NR_DAX = 256  # dax minors, alive or still referenced, unless the mount says otherwise (--nr-dax)


class DaxDevice:
    """Anchor object for dax services (the kernel's struct dax_device)."""

    __slots__ = ("minor", "serial", "ino", "private", "alive", "refs")

    def __init__(self, minor: int, serial: int, private) -> None:
        self.minor = minor
        self.serial = serial  # never reused, where the minor is: tells two devices of one minor apart
        self.ino = DAX_INO_BASE + minor
        self.private = private
        self.alive = False
        self.refs = 1

    def __repr__(self) -> str:
        state = "alive" if self.alive else "dead"
        return f"<DaxDevice minor={self.minor} {state} refs={self.refs}>"


class DaxCore:
    def __init__(self, nr_dax: int = NR_DAX) -> None:
        if nr_dax < 1:
            raise DaxError(errno.EINVAL, f"nr_dax must be at least 1, not {nr_dax}")
        self.nr_dax = nr_dax
        self.srcu = Srcu()
        self._minors = Ida(nr_dax)
        self._count = 0
        self._serials = 0

    # --- read side -------------------------------------------------------
    def read_lock(self) -> int:
        return self.srcu.read_lock()

    def read_unlock(self, idx: int) -> None:
        self.srcu.read_unlock(idx)

    @contextmanager
    def read_locked(self):
        idx = self.srcu.read_lock()
        try:
            yield
        finally:
            self.srcu.read_unlock(idx)

    def dax_alive(self, dax_dev: DaxDevice) -> bool:
        assert self.srcu.held(), "dax_alive() outside dax_read_lock()"
        return dax_dev.alive

    # --- lifetime ----------------------------------------------------------
    def alloc_dax(self, private) -> DaxDevice:
        """A new dax_device, born dead: nothing may use it before run_dax (as
        bus.c's __devm_create_dev_dax kills what alloc_dax returns until a
        driver binds), so publishing it is never a race."""
        minor = self._minors.get()
        if minor is None:
            raise DaxError(errno.ENOSPC, f"no free dax minor (nr_dax={self.nr_dax})")
        self._count += 1
        self._serials += 1
        return DaxDevice(minor, self._serials, private)

    def get_dax(self, dax_dev: DaxDevice) -> DaxDevice:
        assert dax_dev.refs > 0, f"get_dax() on released {dax_dev!r}"
        dax_dev.refs += 1
        return dax_dev

    def put_dax(self, dax_dev: DaxDevice) -> None:
        """Drop a reference; the last one releases the minor and inode number."""
        assert dax_dev.refs > 0, f"put_dax() on released {dax_dev!r}"
        assert dax_dev.refs > 1 or not dax_dev.alive, "kill_dax() must be called before the final put_dax()"
        dax_dev.refs -= 1
        if not dax_dev.refs:
            self._count -= 1
            self._minors.remove(dax_dev.minor)

    async def kill_dax(self, dax_dev: DaxDevice) -> None:
        """No new operations once this returns: readers that may have seen
        the device alive have finished, later ones see it dead."""
        dax_dev.alive = False
        await self.srcu.synchronize()
        dax_dev.private = None

    def run_dax(self, dax_dev: DaxDevice, private) -> None:
        """Make a device live: first enable, or again after disable."""
        dax_dev.private = private
        dax_dev.alive = True

    def __len__(self) -> int:
        """dax devices allocated and not yet released."""
        return self._count
