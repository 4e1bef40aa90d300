"""dax_device instances: a minor, an inode number and SRCU-guarded liveness.

Mirrors drivers/dax/super.c after the seed refactor: alloc_dax / put_dax /
kill_dax / dax_alive / dax_read_lock, a minor allocator bounded by nr_dax,
and lookups by minor, inode and host. A minor (hence its inode number) is
released only when the last reference is put, so a front end that holds a
reference for every kernel-side use never sees an inode number reused under it.
"""
import errno
from contextlib import contextmanager

from ..errors import DaxError
from .minors import Ida
from .srcu import Srcu

# Inode numbers of dax devices start here; front ends number their own
# nodes below it.
DAX_INO_BASE = 1 << 20


class DaxDevice:
    """Anchor object for dax services (the kernel's struct dax_device)."""

    __slots__ = ("minor", "ino", "host", "private", "alive", "refs")

    def __init__(self, minor: int, private, host: str | None) -> None:
        self.minor = minor
        self.ino = DAX_INO_BASE + minor
        self.host = host
        self.private = private
        self.alive = True
        self.refs = 1

    def __repr__(self) -> str:
        state = "alive" if self.alive else "dead"
        return f"<DaxDevice minor={self.minor} {state} refs={self.refs}>"


class DaxCore:
    def __init__(self, nr_dax: int = 256) -> None:
        if nr_dax < 1:
            raise DaxError(errno.EINVAL, f"nr_dax must be at least 1, not {nr_dax}")
        self.nr_dax = nr_dax
        self.srcu = Srcu()
        self._minors = Ida(nr_dax)
        self._by_minor: dict[int, DaxDevice] = {}
        self._by_host: dict[str, DaxDevice] = {}

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
    def alloc_dax(self, private, host: str | None = None) -> DaxDevice:
        if host is not None and host in self._by_host:
            raise DaxError(errno.EEXIST, f"dax host {host!r} is already registered")
        minor = self._minors.get()
        if minor is None:
            raise DaxError(errno.ENOSPC, f"no free dax minor (nr_dax={self.nr_dax})")
        dax_dev = DaxDevice(minor, private, host)
        self._by_minor[minor] = dax_dev
        if host is not None:
            self._by_host[host] = dax_dev
        return dax_dev

    def get_dax(self, dax_dev: DaxDevice) -> DaxDevice:
        assert dax_dev.refs > 0, f"get_dax() on released {dax_dev!r}"
        dax_dev.refs += 1
        return dax_dev

    def put_dax(self, dax_dev: DaxDevice) -> None:
        """Drop a reference; the last one releases the minor and inode number."""
        assert dax_dev.refs > 0, f"put_dax() on released {dax_dev!r}"
        assert dax_dev.refs > 1 or not dax_dev.alive, "kill_dax() must be called before the final put_dax()"
        dax_dev.refs -= 1
        if dax_dev.refs:
            return
        del self._by_minor[dax_dev.minor]
        if dax_dev.host is not None:
            del self._by_host[dax_dev.host]
        self._minors.remove(dax_dev.minor)

    async def kill_dax(self, dax_dev: DaxDevice) -> None:
        """No new operations once this returns: readers that may have seen
        the device alive have finished, later ones see it dead."""
        dax_dev.alive = False
        await self.srcu.synchronize()
        dax_dev.private = None

    def run_dax(self, dax_dev: DaxDevice, private) -> None:
        """Make a killed device live again (re-enable after disable)."""
        dax_dev.private = private
        dax_dev.alive = True

    # --- lookups -------------------------------------------------------------
    def by_minor(self, minor: int) -> DaxDevice | None:
        return self._by_minor.get(minor)

    def by_inode(self, ino: int) -> DaxDevice | None:
        return self._by_minor.get(ino - DAX_INO_BASE)

    def dax_get_by_host(self, host: str) -> DaxDevice | None:
        """A referenced, live device registered under host, or None."""
        with self.read_locked():
            dax_dev = self._by_host.get(host)
            if dax_dev is None or not self.dax_alive(dax_dev):
                return None
            return self.get_dax(dax_dev)

    def __len__(self) -> int:
        return len(self._by_minor)
