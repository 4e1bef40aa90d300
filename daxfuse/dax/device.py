"""Regions, dev_dax devices and their ranges: state and address translation
(the kernel's drivers/dax/dax-private.h: struct dax_region, struct dev_dax,
struct dev_dax_range).

Ranges are half-open [start, end) in memory-file offsets ("physical
addresses"). The lifecycle rules that change them live in bus.py.
"""
import time
from bisect import bisect_right
from dataclasses import dataclass

import trio

from ..core import DaxDevice
from ..core.minors import Ida
from ..core.units import ID_MAX
from ..memory import Window
from .drivers import DEVICE_TYPE

ALIGNS = (4 << 10, 2 << 20, 1 << 30)  # what a region or device may be aligned to
DEFAULT_ALIGN = 2 << 20
DEFAULT_SIZE = 1 << 30  # of region 0 of a new mount


# memremap_compat_align(): SUBSECTION_SIZE on x86_64, the finest step in
# which device memory is mapped, whatever a device's align
MEMREMAP_COMPAT_ALIGN = 2 << 20


# The DIMM's label storage area (namespace labels, kept with the layout):
# nfit_test's size, which ndctl's tests assume
LABEL_SIZE = 128 << 10


def is_aligned(value: int, align: int) -> bool:
    """IS_ALIGNED, the one test of a size or start against an align."""
    return value % align == 0


def alloc_granule(align: int) -> int:
    """The step a device of align grows by: max(align, memremap_compat_align()),
    so a 4K-aligned device still grows in 2 MiB steps."""
    return max(align, MEMREMAP_COMPAT_ALIGN)


def alloc_is_aligned(size: int, align: int) -> bool:
    """bus.c's alloc_is_aligned(): a device's size, a step of it (resize,
    mapping) and each of its ranges under a new align are whole steps."""
    return is_aligned(size, alloc_granule(align))


def valid_id(value: int) -> bool:
    """A uid or gid a device may be given: 0 to ID_MAX (not -1, which chown
    takes as "unchanged")."""
    return 0 <= value <= ID_MAX


NUMA_NO_NODE = -1
MAX_NUMNODES = 1 << 10  # x86_64's CONFIG_NODES_SHIFT


def valid_node(node: int) -> bool:
    """A NUMA node a region may name: NUMA_NO_NODE or 0 to MAX_NUMNODES - 1."""
    return NUMA_NO_NODE <= node < MAX_NUMNODES


def valid_mode(mode: int) -> bool:
    """Permission bits only: no setuid, setgid or sticky bit on a device."""
    return 0 <= mode <= 0o777


@dataclass(frozen=True)
class Access:
    """Who may open a device: the owner, group and mode that udev rules give
    /dev/daxR.I on a real machine (the kernel itself makes it root's, 0600)."""
    uid: int = 0
    gid: int = 0
    mode: int = 0o600

    def may_write(self, uid: int, gids: set[int]) -> bool:
        """Whether a process of uid (in groups gids) may open the device for
        writing, now or after a chmod: root, the owner (who may chmod it),
        else the mode's bits for its group or for others."""
        if uid in (0, self.uid):
            return True
        return bool(self.mode & (0o020 if self.gid in gids else 0o002))


@dataclass(frozen=True)
class Range:
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start

    def aligned(self, align: int) -> bool:
        return is_aligned(self.start, align) and is_aligned(self.size, align)


class DaxRegion:
    def __init__(self, id_: int, res: Range, align: int, target_node: int = 0, numa_node: int = 0,
                 type_: str = DEVICE_TYPE) -> None:
        self.id = id_
        self.res = res
        self.align = align
        self.type = type_  # what its devices bind by default: device_dax, or kmem (hmem and CXL RAM regions)
        # where its memory would be onlined (the node hmem and CXL regions
        # get), and the node closest to it (its parent device's): either
        # NUMA_NO_NODE, which hides target_node, as on the kernel
        self.target_node = target_node
        self.numa_node = numa_node
        # whether its provider is bound (an nd or CXL region's driver): while
        # it is not, its devices are down and none comes up or changes shape,
        # as the kernel's dax region is gone; its layout and data stay
        self.enabled = True
        self.devices: dict[int, DevDax] = {}
        self.ida = Ida()
        # sysfs "seed": the first device created while no seed was set,
        # until it is bound; "youngest": the last device created.
        self.seed: DevDax | None = None
        self.youngest: DevDax | None = None
        self.changed = time.time_ns()  # of its devices or available size: what stat reports
        # What no device holds: holes in address order, apart (the kernel's
        # resource tree under the region), kept as devices take and give
        # ranges, so that no change costs more as the region has more devices.
        self.free: list[Range] = [res]
        self.available_size = res.size

    @property
    def size(self) -> int:
        return self.res.size

    @property
    def on_dimm(self) -> bool:
        """The emulated NVDIMM maps it (a pmem region, on the nd bus); an
        hmem or CXL RAM region (type kmem) is not the DIMM's."""
        return self.type == DEVICE_TYPE

    def take(self, r: Range) -> None:
        """r, which must lie in one hole, is a device's now."""
        i = bisect_right(self.free, r.start, key=lambda hole: hole.start) - 1
        hole = self.free[i]
        assert i >= 0 and hole.start <= r.start and r.end <= hole.end, f"{r} is not free in region {self.id}"
        self.free[i:i + 1] = [h for h in (Range(hole.start, r.start), Range(r.end, hole.end)) if h.size]
        self.available_size -= r.size

    def give(self, r: Range) -> None:
        """r is free again (merged with the holes beside it)."""
        i = bisect_right(self.free, r.start, key=lambda hole: hole.start)
        start, end, lo, hi = r.start, r.end, i, i
        if lo > 0 and self.free[lo - 1].end == start:
            lo -= 1
            start = self.free[lo].start
        if hi < len(self.free) and self.free[hi].start == end:
            end = self.free[hi].end
            hi += 1
        self.free[lo:hi] = [Range(start, end)]
        self.available_size += r.size


class Dimm:
    """The NVDIMM every region maps: its driver binding, which regions
    need to come up, and its label storage area (namespace labels)."""

    def __init__(self) -> None:
        self.enabled = True
        self.label_area = bytearray(LABEL_SIZE)
        self.changed = time.time_ns()


class DevDax:
    """A device carved from a region: an ordered list of ranges."""

    def __init__(self, region: DaxRegion, id_: int, align: int) -> None:
        self.region = region
        self.id = id_
        self.align = align
        self.ranges: list[Range] = []
        self.driver: str | None = None  # the dax driver it is bound to (drivers.py)
        self.dax_dev: DaxDevice | None = None
        self.access = Access()
        self.memmap_on_memory = False  # for kmem: the memory map on the memory it hot-adds
        self.hotplug_state = "unplugged"  # for kmem: its `state`, the online type it last plugged its memory as
        self.window: Window | None = None  # its memory in a file of its own, while mapped directly
        self.moving: trio.Event | None = None  # set once a window has opened or closed: I/O waits for it
        self._starts: list[int] = [0]  # device offset of each range, plus the size
        self.changed = time.time_ns()  # created, resized, realigned, enabled or disabled

    @property
    def name(self) -> str:
        return f"dax{self.region.id}.{self.id}"

    @property
    def enabled(self) -> bool:
        """Bound to a driver: its shape is fixed (bus.c answers EBUSY)."""
        return self.driver is not None

    @property
    def size(self) -> int:
        return self._starts[-1]

    def set_ranges(self, ranges: list[Range]) -> None:
        """Hold ranges from now on, in this order (the region's free space follows)."""
        for r in self.ranges:
            self.region.give(r)
        for r in ranges:
            self.region.take(r)
        self.ranges = ranges
        starts = [0]
        for r in ranges:
            starts.append(starts[-1] + r.size)
        self._starts = starts

    def page_offsets(self) -> list[int]:
        """Device offset at which each range starts."""
        return self._starts[:-1]

    def segments(self, offset: int, length: int):
        """Yield (physical start, length) pieces of [offset, offset + length),
        clipped to the device size."""
        end = min(offset + length, self.size)
        i = bisect_right(self._starts, offset) - 1
        while offset < end:
            r = self.ranges[i]
            phys = r.start + offset - self._starts[i]
            n = min(end, self._starts[i + 1]) - offset
            yield phys, n
            offset += n
            i += 1
