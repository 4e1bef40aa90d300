"""What a process may be granted of a device's memory, to map it directly
(the personality's mappings; the socket it asks through is daxfuse/daemon/direct.py).
The rules, as the kernel's open and mmap of a device-dax apply them, and the
window's own (memory/window.py):

- the device must be enabled: ENXIO, as check_vma()'s dax_alive()
  (DaxBus.window refuses a disabled one, under the bus lock);
- its driver's character device must map: fsdev_dax's has no mmap (ENODEV);
- a writable mapping needs the device opened for writing: EACCES, as
  mmap's VM_MAYWRITE;
- a window is a file of the daemon's user, which whoever holds it can open
  again read-write if they are that user or root (through /proc/PID/fd):
  a read-only mapping gets one only where the process may write the device
  anyway (Access.may_write); it maps through FUSE instead, where the
  kernel checks every open;
- where the memory can have no windows, every mapping goes through FUSE.
"""
import errno
from dataclasses import dataclass

from ..core.errors import DaxError
from ..memory import Window
from .badblocks import SECTOR
from .bus import DaxBus
from .device import DevDax
from .drivers import DRIVERS


@dataclass(frozen=True)
class Peer:
    """A process asking, as the kernel names it."""
    pid: int
    uid: int
    gids: frozenset[int]


async def grant(bus: DaxBus, dev: DevDax, peer: Peer, write: bool, opened_for_write: bool) -> Window | None:
    """dev's window for peer to map, or None: through FUSE."""
    if dev.driver is not None and not DRIVERS[dev.driver].maps and dev.dax_dev.alive:
        raise DaxError(errno.ENODEV, f"{dev.name} is bound to {dev.driver}, whose device does not map")
    if write and not opened_for_write:
        raise DaxError(errno.EACCES, f"{dev.name} was opened read-only")
    if not bus.memory.windows or not (write or dev.access.may_write(peer.uid, peer.gids)):
        return None
    return await bus.window(dev)


def poison(bus: DaxBus, dev: DevDax) -> list[tuple[int, int]]:
    """dev's poisoned ranges, in bytes from its start, as a mapping must avoid them."""
    return [(block * SECTOR, count * SECTOR) for block, count in bus.device_badblocks(dev)]
