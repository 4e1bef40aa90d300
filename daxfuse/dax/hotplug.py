"""Memory hotplug as the kmem driver makes it (drivers/dax/kmem.c,
mm/memory_hotplug.c, drivers/base/memory.c), emulated: the blocks of a
kmem-bound device, their states and zones, and the auto-online policy. No
memory reaches the host kernel; what daxctl and libnuma read and write
behaves as on the kernel.

A block is a memory_block_size_bytes() slice of the emulated physical
address space (phys_index = address / block size), above the host's own
blocks (memory.phys_base). kmem hot-adds the whole blocks inside each range
of a device, onlined at once as auto_online_blocks says.
"""
import errno
from dataclasses import dataclass

from ..core.errors import DaxError

# auto_online_blocks and the memoryN/state writes (mhp_online_type_from_str)
OFFLINE, ONLINE, ONLINE_KERNEL, ONLINE_MOVABLE = "offline", "online", "online_kernel", "online_movable"
ONLINE_TYPES = (OFFLINE, ONLINE, ONLINE_KERNEL, ONLINE_MOVABLE)
UNPLUGGED = "unplugged"  # a kmem device's state (Linux 7.3) with its memory removed
NORMAL, MOVABLE = "Normal", "Movable"


@dataclass
class MemoryBlock:
    index: int              # phys_index
    node: int
    zone: str | None = None  # None while offline
    pinned: bool = False     # holds pages it cannot migrate: offlining fails (EBUSY)

    @property
    def online(self) -> bool:
        return self.zone is not None


def block_range(start: int, end: int, block_size: int) -> range:
    """The indices of the whole blocks in [start, end) (physical): what kmem
    adds of a range, its ends aligned inward."""
    return range(-(-start // block_size), end // block_size)


def check_online_type(text: str) -> str:
    if text not in ONLINE_TYPES:
        raise DaxError(errno.EINVAL, f"{text!r} is not one of {', '.join(ONLINE_TYPES)}")
    return text


def zone_for(block: MemoryBlock, online_type: str, node_zones: set[str]) -> str:
    """The zone onlining block as online_type puts it in (zone_for_pfn_range):
    "online" takes the zone the node's online memory is in if that is one,
    else Normal (default_kernel_zone_for_pfn)."""
    if online_type == ONLINE_KERNEL:
        return NORMAL
    if online_type == ONLINE_MOVABLE:
        return MOVABLE
    return MOVABLE if node_zones == {MOVABLE} else NORMAL


def valid_zones(block: MemoryBlock, node_zones: set[str]) -> str:
    """memoryN/valid_zones: an online block's zone; for an offline one the
    zone "online" would take first, then the other it could take."""
    if block.online:
        return block.zone
    default = zone_for(block, ONLINE, node_zones)
    return " ".join([default] + [z for z in (NORMAL, MOVABLE) if z != default])
