"""The dax bus: regions and devices, and every rule about their lifecycle
(the kernel's drivers/dax/bus.c).

Each operation validates completely before it mutates, and records how to
undo itself and which side effects (kill_dax, notifying front ends) to run.
`apply` runs a batch of operations under one lock: all of them take effect
or, on the first error, none does; the side effects run only after the whole
batch succeeded, in order.
"""
import contextlib
import errno
import functools
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import trio

from ..core import DaxCore
from ..core.errors import DaxError, shown
from ..memory import MemoryFile, Window, memmap_on_memory_supported, memory_block_size, phys_base
from ..core.units import ID_MAX, INT_MAX, format_size, parse_index, size_text
from .badblocks import SECTOR, Badblocks, sectors
from .device import (ALIGNS, DEFAULT_ALIGN, LABEL_SIZE, MAX_NUMNODES, Access, DaxRegion, DevDax, Dimm,
                     Range,
                     alloc_granule, alloc_is_aligned, is_aligned, valid_id, valid_mode, valid_node)
from .drivers import DEVICE_TYPE, DRIVERS, KMEM, KMEM_TYPE, DaxDriver
from .events import Event, Listener
from . import hotplug
from .hotplug import MemoryBlock

log = logging.getLogger(__name__)

PAGE_SIZE = 4096


def _check_align(align: int) -> None:
    if align not in ALIGNS:
        raise DaxError(errno.EINVAL, f"align {size_text(align)} is not one of "
                                     f"{', '.join(format_size(a) for a in ALIGNS)}")


def _check_id(value: int, what: str) -> int:
    if not valid_id(value):
        raise DaxError(errno.EINVAL, f"{what} {value} is out of range (0 to {ID_MAX})")
    return value


def _check_mode(mode: int) -> int:
    if not valid_mode(mode):
        raise DaxError(errno.EINVAL, f"mode {mode:#o} is not within 0777")
    return mode


def _check_granule(size: int, align: int, what: str) -> None:
    if size < 0:
        raise DaxError(errno.EINVAL, f"{what} {size} is negative")
    if not alloc_is_aligned(size, align):
        raise DaxError(errno.EINVAL, f"{what} {size_text(size)} is not a multiple of "
                                     f"{size_text(alloc_granule(align))} (the larger of the align "
                                     f"and the kernel's memremap_compat_align)")


def _enabled(name: str) -> DaxError:
    """What a change that needs a disabled device answers for an enabled one
    (bus.c's -EBUSY while a driver is bound)."""
    return DaxError(errno.EBUSY, f"{name} is enabled; disable it first")


def _live(region: DaxRegion) -> DaxRegion:
    """region, if its provider is bound: a disabled one's devices neither
    come up nor change shape (the kernel's dax region is gone)."""
    if not region.enabled:
        raise DaxError(errno.ENXIO, f"region {region.id} is disabled; enable it first "
                                    f"(ndctl enable-region region{region.id})")
    return region


def _check_multiple(size: int, align: int, what: str) -> None:
    if size < 0:
        raise DaxError(errno.EINVAL, f"{what} {size} is negative")
    if not is_aligned(size, align):
        raise DaxError(errno.EINVAL, f"{what} {size_text(size)} is not a multiple of align {size_text(align)}")


def _holes(busy: list[Range], within: Range) -> list[Range]:
    """Free ranges of `within` between the address-sorted `busy` ranges."""
    holes, cursor = [], within.start
    for r in busy:
        if r.start > cursor:
            holes.append(Range(cursor, r.start))
        cursor = max(cursor, r.end)
    if cursor < within.end:
        holes.append(Range(cursor, within.end))
    return holes


def _align_in(r: Range, align: int) -> Range | None:
    start = -(-r.start // align) * align
    end = r.end - r.end % align
    return Range(start, end) if end > start else None


@dataclass
class _Txn:
    undo: list[Callable[[], None]] = field(default_factory=list)
    effects: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    durable: bool = False  # answered only once its record is written: it changes the layout


class DaxBus:
    def __init__(self, core: DaxCore, memory: MemoryFile, store=None, access: Access = Access()) -> None:
        self.core = core
        self.memory = memory
        self.store = store  # where the layout persists (a LayoutStore), or None
        self.access = access  # what a new device is given (the mount's --owner, --group, --mode)
        self.badblocks = Badblocks()  # poisoned sectors of the memory file
        self.injected = Badblocks()   # the errors injected through ARS (ndctl inject-error --status)
        self.scrubs = 0  # address range scrubs done (nfit/scrub)
        self.poisoning = 0  # injections writing cached pages back: writes then do not clear poison
        self.regions: dict[int, DaxRegion] = {}
        self._by_minor: dict[int, DevDax] = {}  # the devices there are, by their dax_device's minor
        self.listeners: list[Listener] = []
        self._lock = trio.Lock()
        self._closing = False
        self._txn: _Txn | None = None
        self.generation = 0  # changes whenever the layout may have changed
        self.changed = time.time_ns()  # of the last batch applied
        self.dirty_shutdown = 0  # daemons that died serving this memory: the DIMM's unsafe-shutdown count
        self.dimm = Dimm()
        self.driver_ids: dict[str, set[str]] = {name: set() for name in DRIVERS}  # each driver's new_id list
        self.block_size = memory_block_size()
        self.blocks: dict[int, MemoryBlock] = {}  # memory blocks kmem hot-added, by phys_index
        self.auto_online = hotplug.OFFLINE  # auto_online_blocks: how kmem onlines what it adds
        # buses beside this one that make its regions (CXL): each holds
        # address windows and region ids (windows(), held_ids()), and keeps
        # its state in the layout under its name (snapshot(), restore())
        self.beside: list = []

    # --- transactions ------------------------------------------------------------
    async def apply(self, ops: list[Callable[[], object]]) -> list[object]:
        """Run ops (bound calls of the methods below) all or nothing."""
        self._check_open()
        async with self._lock:
            self._check_open()  # queued behind the batch a shutdown waited for
            txn = self._txn = _Txn()
            try:
                results = [op() for op in ops]
            except BaseException:
                for undo in reversed(txn.undo):
                    undo()
                raise
            finally:
                self._txn = None
                self.generation += 1
            try:  # acknowledged only once its record is durable
                await self.persist()
            except DaxError as e:
                if txn.durable:
                    for undo in reversed(txn.undo):
                        undo()
                    self.generation += 1
                    raise
                log.warning("%s (the next change that is recorded records this one too)", e)
            try:
                for effect in txn.effects:
                    await effect()
            finally:
                self.changed = time.time_ns()
                await self.notify(Event.APPLIED, None)()
            return results

    async def persist(self) -> None:
        """Make the layout as it is now durable, where it persists."""
        if self.store is not None:
            record = self.store.snapshot(self)
            await trio.to_thread.run_sync(self.store.save, record)

    def record(self, undo: Callable[[], None], *effects: Callable[[], Awaitable[None]],
                durable: bool = True) -> None:
        """What an operation changed: how to undo it, what to do once the
        batch is committed. durable=False: it may be answered even when its
        record cannot be written (binding and unbinding, which the kernel
        never refuses for want of room, and which lose no data)."""
        assert self._txn is not None, "bus operations run inside DaxBus.apply()"
        self._txn.undo.append(undo)
        self._txn.effects.extend(effects)
        self._txn.durable |= durable

    def notify(self, event: Event, subject: DevDax | DaxRegion | Dimm | None) -> Callable[[], Awaitable[None]]:
        async def effect() -> None:
            if not event.quiet and subject is not None:
                subject.changed = time.time_ns()
                if type(subject) is DevDax:
                    subject.region.changed = subject.changed
            for listener in self.listeners:
                try:
                    await listener(event, subject)
                except Exception:
                    log.exception("listener failed on %s %s", event.value, getattr(subject, "name", subject))
        return effect

    @property
    def closing(self) -> bool:
        return self._closing

    def _check_open(self) -> None:
        if self._closing:
            raise DaxError(errno.ESHUTDOWN, "daxfuse is shutting down: the layout is final")

    @contextlib.asynccontextmanager
    async def closed(self):
        """Refuse new batches, wait for the running one, and hold the bus
        for the shutdown: a running batch's side effects are never cut
        short (a disable waiting on writeback would hang its clients), and
        batches queued behind it fail at once instead of delaying it."""
        self._closing = True
        async with self._lock:
            yield

    # --- lookups -----------------------------------------------------------------------
    def region(self, id_: int) -> DaxRegion:
        try:
            return self.regions[id_]
        except KeyError:
            raise DaxError(errno.ENXIO, f"no region {id_}") from None

    def device(self, name: str) -> DevDax:
        dev = self.find_device(name)
        if dev is None:
            raise DaxError(errno.ENXIO, f"no device {shown(name)}")
        return dev

    def find_device(self, name: str) -> DevDax | None:
        """The device named daxR.I, or None: the one parser of device names."""
        region_id, dot, dev_id = name.removeprefix("dax").partition(".")
        region = self.regions.get(parse_index(region_id)) if name.startswith("dax") and dot else None
        return region and region.devices.get(parse_index(dev_id))

    def devices(self):
        for region in self.regions.values():
            yield from region.devices.values()

    def device_of_minor(self, minor: int) -> DevDax | None:
        """The device whose dax_device has minor, if there is one (/sys/dev/char)."""
        return self._by_minor.get(minor)

    # --- regions -------------------------------------------------------------------
    def create_region(self, size: int, align: int = DEFAULT_ALIGN, id_: int | None = None,
                      target_node: int = 0, numa_node: int = 0, type_: str = DEVICE_TYPE,
                      start: int | None = None) -> DaxRegion:
        """A region; one of type kmem (as hmem and CXL RAM regions are) binds
        its devices to kmem by default and starts on a memory block. A bus
        beside (CXL) places its own at start, in an address window it holds;
        others are placed clear of those windows, under ids no bus beside holds."""
        _check_align(align)
        if type_ not in (DEVICE_TYPE, KMEM_TYPE):
            raise DaxError(errno.EINVAL, f"region type {shown(type_)} is not {DEVICE_TYPE} or {KMEM_TYPE}")
        for node, what in ((target_node, "target_node"), (numa_node, "numa_node")):
            if not valid_node(node):
                raise DaxError(errno.EINVAL, f"{what} {node} is not -1 or a node below {MAX_NUMNODES}")
        if size <= 0:
            raise DaxError(errno.EINVAL, "region size must be positive")
        _check_multiple(size, align, "region size")
        held = self._held_ids()
        if id_ is not None and (id_ in self.regions or (start is None and id_ in held)):
            raise DaxError(errno.EEXIST, f"region {id_} exists")
        if id_ is not None and not 0 <= id_ <= INT_MAX:
            raise DaxError(errno.EINVAL, f"invalid region id {id_}")
        if start is None:
            start = self._place(size, max(align, self.block_size) if type_ == KMEM_TYPE else align)
        elif any(r.res.start < start + size and start < r.res.end for r in self.regions.values()):
            raise DaxError(errno.EBUSY, f"{start:#x}-{start + size - 1:#x} is another region's")
        needed = size + sum(r.size for r in self.regions.values())
        if needed > self.memory.room():
            raise DaxError(errno.ENOSPC, f"the memory file {self.memory.name} has room for "
                                         f"{size_text(self.memory.room())}, regions would need {size_text(needed)}; "
                                         f"use a smaller size or --memory-file on a larger filesystem")
        if id_ is None:
            id_ = next(i for i in itertools.count() if i not in self.regions and i not in held)
        region = DaxRegion(id_, Range(start, start + size), align, target_node, numa_node, type_)
        self.memory.ensure(region.res.end)
        self.regions[region.id] = region
        self.record(lambda: self.regions.pop(region.id), self.notify(Event.REGION_ADDED, region))
        self._new_device(region, align)  # born with its seed daxR.0, as a kernel region
        return region

    def _place(self, size: int, align: int) -> int:
        """The lowest start aligned to align where size fits clear of every
        region and every window a bus beside holds."""
        busy = sorted([r.res for r in self.regions.values()] + [w for s in self.beside for w in s.windows()],
                      key=lambda r: r.start)
        # the window ends far enough past every region for the last hole to fit
        window = Range(0, max([0] + [r.end for r in busy]) + size + 2 * align)
        return next(fit.start for hole in _holes(busy, window) if (fit := _align_in(hole, align)) and fit.size >= size)

    def _held_ids(self) -> set[int]:
        """Region ids the buses beside hold (one memregion ida): a dax region
        under one of them is theirs, and no other region takes one."""
        return {id_ for s in self.beside for id_ in s.held_ids()}

    def destroy_region(self, id_: int, beside: bool = False) -> None:
        """Only a region whose devices are all unconfigured (size 0): they go
        with it. One a bus beside holds (a CXL region's) is that bus's to
        destroy (beside), as the kernel's dax region goes with its driver alone."""
        region = self.region(id_)
        if id_ in self._held_ids() and not beside:
            raise DaxError(errno.EBUSY, f"region {id_} is a CXL region's: unbind region{id_} from cxl_region instead")
        busy = [d for d in region.devices.values() if d.size]
        if busy:
            names = ", ".join(f"{d.name} ({size_text(d.size)})" for d in busy)
            raise DaxError(errno.EBUSY, f"region {id_} still has devices: {names}")
        for dev in list(region.devices.values()):
            self.destroy_device(dev.name)
        del self.regions[id_]
        self.record(lambda: self.regions.__setitem__(id_, region), self.notify(Event.REGION_REMOVED, region))

    # --- devices --------------------------------------------------------------------------
    def create_device(self, region_id: int, size: int | None = None, align: int | None = None,
                      uid: int | None = None, gid: int | None = None, mode: int | None = None) -> DevDax:
        """The control file's create-device, as daxctl create-device: the
        region's seed is configured when it has one (daxR.0 of a new region),
        else a new device is made; enabled when its size is > 0. The default
        size is all that is available (to the seed: its own size too);
        owner, group and mode not given are the mount's."""
        region = _live(self.region(region_id))
        align = region.align if align is None else align
        _check_align(align)
        if size is None:  # a seed sized before keeps what it has, and may grow
            room = region.available_size + (region.seed.size if region.seed else 0)
            size = room - room % alloc_granule(align)
        _check_granule(size, align, "size")
        dev = region.seed or self._new_device(region, align)
        if dev.align != align:
            self.set_align(dev.name, align)
        if (uid, gid, mode) != (None, None, None):
            self.set_access(dev.name, uid, gid, mode)
        if size != dev.size:  # a seed sized before takes the size asked for, 0 too
            self.resize_device(dev.name, size)
        if size:
            self.enable_device(dev.name)
        return dev

    def _new_device(self, region: DaxRegion, align: int) -> DevDax:
        """A size-0, disabled device at the lowest free id: the region's seed
        unless it has one (the kernel tracks one unconfigured seed)."""
        dev = DevDax(region, -1, align)
        dev.access = self.access
        dev.dax_dev = self.core.alloc_dax(dev)  # may fail: nothing claimed yet
        dev.id = region.ida.get()
        region.devices[dev.id] = dev
        self._by_minor[dev.dax_dev.minor] = dev
        self._set_seeds(region, region.seed or dev, dev)
        self.record(lambda: self._unpublish(dev), self.notify(Event.ADDED, dev))
        return dev

    def _set_seeds(self, region: DaxRegion, seed: DevDax | None, youngest: DevDax | None) -> None:
        """Set the region's seed and youngest (sysfs `seed` and `create`), undone with the batch."""
        old = region.seed, region.youngest
        region.seed, region.youngest = seed, youngest

        def undo() -> None:
            region.seed, region.youngest = old
        self.record(undo)

    def _unpublish(self, dev: DevDax) -> None:
        del dev.region.devices[dev.id]
        del self._by_minor[dev.dax_dev.minor]
        dev.region.ida.remove(dev.id)
        self.core.put_dax(dev.dax_dev)

    def destroy_device(self, name: str) -> None:
        dev = self.device(name)
        if dev.enabled:
            raise _enabled(name)
        region = dev.region
        del region.devices[dev.id]
        del self._by_minor[dev.dax_dev.minor]
        for r in dev.ranges:  # free for the next device; dev keeps its size for those who hold it
            region.give(r)
        self._set_seeds(region, None if region.seed is dev else region.seed,
                        None if region.youngest is dev else region.youngest)

        def undo() -> None:
            region.devices[dev.id] = dev
            self._by_minor[dev.dax_dev.minor] = dev
            for r in dev.ranges:
                region.take(r)

        async def release() -> None:
            dev.region.ida.remove(dev.id)
            self.core.put_dax(dev.dax_dev)

        self.record(undo, self.notify(Event.REMOVED, dev), release)

    def create_seed(self, region_id: int) -> DevDax:
        """sysfs `create`: a new size-0 disabled device; ENOSPC on a full region."""
        region = _live(self.region(region_id))
        if not region.available_size:
            raise DaxError(errno.ENOSPC, f"region {region_id} has no space left for a new device")
        return self._new_device(region, region.align)

    def delete_device(self, region_id: int, name: str) -> None:
        """sysfs `delete`: only a disabled, size-0 device other than id 0."""
        dev = self.device(name)
        if dev.region is not self.region(region_id):
            raise DaxError(errno.ENXIO, f"{name} is not in region {region_id}")
        if dev.enabled or dev.size:
            raise DaxError(errno.EBUSY, f"{name} must be disabled and of size 0 to be deleted")
        if dev.id == 0:
            raise DaxError(errno.EBUSY, f"{name}: device id 0 stays while its region exists")
        self.destroy_device(name)

    def set_mapping(self, name: str, start: int, end: int) -> None:
        """sysfs `mapping`: add exactly [start, end] (inclusive) as a new
        range, as 6.18's mapping_store: its length must be a multiple of the
        align (ENXIO), its start need not be; a range that is not free in the
        region is ENOMEM (__request_region fails); an empty one does nothing."""
        dev = self.device(name)
        if dev.enabled:
            raise _enabled(name)
        _live(dev.region)
        r = Range(start, end + 1)
        if r.size < 0 or not alloc_is_aligned(r.size, dev.align):
            raise DaxError(errno.ENXIO, f"mapping {start:#x}-{end:#x} is not a multiple of "
                                        f"{size_text(alloc_granule(dev.align))} long")
        if not r.size:
            return
        if not any(h.start <= r.start and r.end <= h.end for h in dev.region.free):
            raise DaxError(errno.ENOMEM, f"{start:#x}-{end:#x} is not free in region {dev.region.id}")
        old = dev.ranges
        dev.set_ranges(old + [r])
        self.record(lambda: dev.set_ranges(old), self.notify(Event.RESIZED, dev))

    def resize_device(self, name: str, size: int) -> None:
        dev = self.device(name)
        _check_granule(size, dev.align, "size")  # the value first, then the state: as the kernel
        if dev.enabled:
            raise _enabled(name)
        _live(dev.region)
        if size < dev.size:
            ranges = self._plan_shrink(dev.ranges, size)
        elif not alloc_is_aligned(size - dev.size, dev.align):  # only a device an older daxfuse recorded
            raise DaxError(errno.ENXIO, f"{name} would grow by {size_text(size - dev.size)}, not a whole number "
                                        f"of {size_text(alloc_granule(dev.align))} steps; "
                                        f"shrink it to 0 first")
        else:
            ranges = self._plan_grow(dev.region, dev.ranges, size - dev.size, dev.align)
        old = dev.ranges
        dev.set_ranges(ranges)
        self.record(lambda: dev.set_ranges(old), self.notify(Event.RESIZED, dev))

    def set_align(self, name: str, align: int) -> None:
        dev = self.device(name)
        _check_align(align)
        if dev.enabled:
            raise _enabled(name)
        _live(dev.region)
        for r in dev.ranges:  # dev_dax_validate_align: each range's length, not its start
            if not alloc_is_aligned(r.size, align):
                raise DaxError(errno.EINVAL, f"{name} range {r.start:#x}-{r.end - 1:#x} is not a multiple of "
                                             f"{size_text(alloc_granule(align))} long")
        old = dev.align
        dev.align = align
        self.record(lambda: setattr(dev, "align", old), self.notify(Event.REALIGNED, dev))

    def set_access(self, name: str, uid: int | None = None, gid: int | None = None,
                   mode: int | None = None) -> None:
        """Owner, group and mode, as chown and chmod (or a udev rule) set them;
        what is not given stays. They stay for the device's life."""
        dev = self.device(name)
        old = dev.access
        new = Access(old.uid if uid is None else _check_id(uid, "uid"),
                     old.gid if gid is None else _check_id(gid, "gid"),
                     old.mode if mode is None else _check_mode(mode))
        dev.access = new
        self.record(lambda: setattr(dev, "access", old), self.notify(Event.ACCESS, dev))

    def set_memmap_on_memory(self, name: str, value: bool) -> None:
        """bus.c's memmap_on_memory_store: EOPNOTSUPP to turn it on where the
        host cannot place a memory map on hot-added memory."""
        dev = self.device(name)
        if value != dev.memmap_on_memory and dev.driver == KMEM.name:
            raise DaxError(errno.EBUSY, f"{name} is bound to kmem: its memory map is placed already")
        if value and not memmap_on_memory_supported():
            raise DaxError(errno.EOPNOTSUPP, "memmap_on_memory is not available here "
                                             "(memory_hotplug.memmap_on_memory is off)")
        old = dev.memmap_on_memory
        dev.memmap_on_memory = value
        self.record(lambda: setattr(dev, "memmap_on_memory", old), self.notify(Event.CONFIGURED, dev))

    def disable_device(self, name: str) -> None:
        """Unbind it from its driver (device_release_driver): the dax_device
        dies and mappings are revoked; kmem's memory must be offline first
        (EBUSY, where the kernel would leave it hot-added until a reboot)."""
        dev = self.device(name)
        if not dev.enabled:
            return
        driver = dev.driver
        if driver == KMEM.name:
            self._unplug(dev)
        dev.driver = None

        async def kill() -> None:
            await self.core.kill_dax(dev.dax_dev)

        async def revoke() -> None:
            await self._close_window(dev)

        self.record(lambda: setattr(dev, "driver", driver),
                     self.notify(Event.DISABLING, dev), kill, revoke, self.notify(Event.DISABLED, dev), durable=False)

    def enable_device(self, name: str) -> None:
        """Bind it to the first driver that matches it (device_attach):
        ENODEV when none does."""
        dev = self.device(name)
        if dev.enabled:
            return
        driver = next((d for d in DRIVERS.values() if self._matches(dev, d)), None)
        if driver is None:
            raise DaxError(errno.ENODEV, f"no dax driver takes {name}")
        self._probe(dev, driver)

    def bind(self, driver_name: str, name: str) -> None:
        """A driver's bind file: ENODEV unless it matches the device (or
        there is none), then EBUSY for a bound one."""
        dev, driver = self.find_device(name), DRIVERS[driver_name]
        if dev is None or not self._matches(dev, driver):
            raise DaxError(errno.ENODEV, f"{driver.name} does not take {shown(name)} (new_id first)")
        if dev.enabled:
            raise DaxError(errno.EBUSY, f"{name} is bound to {dev.driver}")
        self._probe(dev, driver)

    def unbind(self, driver_name: str, name: str) -> None:
        """A driver's unbind file: ENODEV unless the device is bound to it."""
        dev = self.find_device(name)
        if dev is None or dev.driver != driver_name:
            raise DaxError(errno.ENODEV, f"{shown(name)} is not bound to {driver_name}")
        self.disable_device(name)

    def new_id(self, driver_name: str, name: str) -> None:
        """do_id_store(ID_ADD): the driver takes the device by name from now
        on, then attaches to every unbound device it matches (driver_attach,
        whose probe failures are not the writer's)."""
        ids = self._id_list(driver_name, name)
        if name not in ids:
            ids.add(name)
            self.record(lambda: ids.discard(name), durable=False)
        driver = DRIVERS[driver_name]
        for dev in sorted(self.devices(), key=lambda d: (d.region.id, d.id)):
            if not dev.enabled and dev.size and dev.region.enabled and self._matches(dev, driver):
                with contextlib.suppress(DaxError):
                    self._probe(dev, driver)

    def remove_id(self, driver_name: str, name: str) -> None:
        ids = self._id_list(driver_name, name)
        if name in ids:
            ids.discard(name)
            self.record(lambda: ids.add(name), durable=False)

    def _id_list(self, driver_name: str, name: str) -> set[str]:
        """A driver's id list, for a name new_id and remove_id take ("daxR.I": EINVAL else)."""
        region, dot, dev_id = name.removeprefix("dax").partition(".")
        if not (name.startswith("dax") and dot and parse_index(region) is not None and parse_index(dev_id) is not None):
            raise DaxError(errno.EINVAL, f"{shown(name)} is no dax device name (daxR.I)")
        return self.driver_ids[driver_name]

    def _matches(self, dev: DevDax, driver: DaxDriver) -> bool:
        """dax_bus_match: the driver's id list names it, or its type is the region's."""
        return dev.name in self.driver_ids[driver.name] or driver.type == dev.region.type

    def _probe(self, dev: DevDax, driver: DaxDriver) -> None:
        """Bind dev, unbound, to driver, as the driver's probe does."""
        if not dev.size:
            raise DaxError(errno.ENXIO, f"{dev.name} has size 0; give it a size before enabling")
        _live(dev.region)
        if driver is KMEM:
            self._hotplug(dev)
        dev.driver = driver.name
        region = dev.region
        if region.seed is dev:
            self._set_seeds(region, None, region.youngest)
        effects = [self._run(dev)] if driver.runs else []
        self.record(lambda: setattr(dev, "driver", None), *effects, self.notify(Event.ENABLED, dev),
                     durable=False)

    # --- kmem's memory blocks (dax/hotplug.py) --------------------------------------------------
    def device_blocks(self, dev: DevDax) -> list[int]:
        """The phys_index of each whole memory block in dev's ranges."""
        base = phys_base()
        return [i for r in dev.ranges for i in hotplug.block_range(base + r.start, base + r.end, self.block_size)]

    def node_zones(self, node: int) -> set[str]:
        return {b.zone for b in self.blocks.values() if b.node == node and b.online}

    def _hotplug(self, dev: DevDax, online_type: str | None = None) -> None:
        """dev_dax_kmem_probe: each whole block of its ranges added on its
        region's target node, onlined as online_type says (auto_online_blocks
        unless given)."""
        online_type = self.auto_online if online_type is None else online_type
        node = dev.region.target_node
        if node < 0:
            raise DaxError(errno.EINVAL, f"{dev.name}: rejecting a DAX region with no target node")
        indices = self.device_blocks(dev)
        if not indices:
            raise DaxError(errno.EINVAL, f"{dev.name}: rejecting a DAX region without any memory after "
                                         f"alignment to {size_text(self.block_size)} blocks")
        for index in indices:
            block = self.blocks[index] = MemoryBlock(index, node)
            if online_type != hotplug.OFFLINE:
                block.zone = hotplug.zone_for(block, online_type, self.node_zones(node))
        old = dev.hotplug_state
        dev.hotplug_state = online_type

        def undo() -> None:
            for i in indices:
                self.blocks.pop(i)
            dev.hotplug_state = old
        self.record(undo)

    def set_hotplug_state(self, name: str, state: str) -> None:
        """A kmem device's `state` (Linux 7.3): "unplugged" offlines and
        removes all its memory at once (EBUSY, and nothing changed, if a
        block will not go); an online type adds it all back so, only from
        "unplugged" (EBUSY else); its own state again changes nothing."""
        dev = self.device(name)
        if dev.driver != KMEM.name:
            raise DaxError(errno.ENOENT, f"{name} is not bound to kmem: it has no state")
        if state not in (hotplug.UNPLUGGED, *hotplug.ONLINE_TYPES) or state == hotplug.OFFLINE:
            raise DaxError(errno.EINVAL, f"{shown(state)} is not unplugged, online, online_kernel or online_movable")
        if state == dev.hotplug_state:
            return
        if state == hotplug.UNPLUGGED:
            for index in self.device_blocks(dev):
                if index in self.blocks and self.blocks[index].online:
                    self._set_zone(self.blocks[index], None)
            self._unplug(dev)
            old = dev.hotplug_state
            dev.hotplug_state = hotplug.UNPLUGGED
            self.record(lambda: setattr(dev, "hotplug_state", old))
        elif dev.hotplug_state != hotplug.UNPLUGGED:
            raise DaxError(errno.EBUSY, f"{name}'s memory is plugged ({dev.hotplug_state}): unplug it first")
        else:
            self._hotplug(dev, state)
        self.record(lambda: None, self.notify(Event.CONFIGURED, dev))  # its blocks and node came or went

    def _unplug(self, dev: DevDax) -> None:
        """dev_dax_kmem_remove, which needs every block offline."""
        blocks = {i: self.blocks[i] for i in self.device_blocks(dev) if i in self.blocks}
        online = [f"memory{i}" for i, b in blocks.items() if b.online]
        if online:
            raise DaxError(errno.EBUSY, f"{dev.name}'s memory is online ({', '.join(online)}): offline it first")
        for i in blocks:
            del self.blocks[i]
        self.record(lambda: self.blocks.update(blocks))

    def memory_block(self, index: int) -> MemoryBlock:
        try:
            return self.blocks[index]
        except KeyError:
            raise DaxError(errno.ENOENT, f"no memory block {index} was hot-added here") from None

    def set_block_state(self, index: int, online_type: str) -> None:
        """memoryN/state: online it as online_type says, or offline it.
        EINVAL for a block in that state already (device_online's 1), EBUSY
        for one that cannot go offline."""
        block = self.memory_block(index)
        hotplug.check_online_type(online_type)
        if (online_type == hotplug.OFFLINE) != block.online:
            raise DaxError(errno.EINVAL, f"memory{index} is {'online' if block.online else 'offline'} already")
        self._set_zone(block, None if online_type == hotplug.OFFLINE
                       else hotplug.zone_for(block, online_type, self.node_zones(block.node)))

    def set_block_online(self, index: int, online: bool) -> None:
        """memoryN/online: 1 onlines it ("online"), 0 offlines it; a block in
        that state already is left as it is."""
        block = self.memory_block(index)
        if online != block.online:
            self._set_zone(block, hotplug.zone_for(block, hotplug.ONLINE, self.node_zones(block.node))
                           if online else None)

    def _set_zone(self, block: MemoryBlock, zone: str | None) -> None:
        if zone is None and block.pinned:
            raise DaxError(errno.EBUSY, f"memory{block.index} holds pages that cannot move: offline failed")
        old = block.zone
        block.zone = zone
        self.record(lambda: setattr(block, "zone", old), durable=False)

    def pin_block(self, index: int) -> None:
        """A fault to script: a block whose pages cannot move, so offlining it fails with EBUSY."""
        self._pin(index, True)

    def unpin_block(self, index: int) -> None:
        self._pin(index, False)

    def _pin(self, index: int, pinned: bool) -> None:
        block = self.memory_block(index)
        old = block.pinned
        block.pinned = pinned
        self.record(lambda: setattr(block, "pinned", old), durable=False)

    def set_auto_online(self, online_type: str) -> None:
        """auto_online_blocks: how kmem onlines the blocks it adds from now on."""
        old, self.auto_online = self.auto_online, hotplug.check_online_type(online_type)
        self.record(lambda: setattr(self, "auto_online", old), durable=False)

    def disable_region(self, id_: int) -> None:
        """The region's provider unbound (ndctl disable-region, a namespace's
        region going away): each of its devices disabled, mappings revoked.
        Its layout and data stay for enable_region."""
        region = self.region(id_)
        if not region.enabled:
            return
        for dev in sorted(region.devices.values(), key=lambda d: d.id):
            self.disable_device(dev.name)
        region.enabled = False
        self.record(lambda: setattr(region, "enabled", True), self.notify(Event.REGION_DISABLED, region),
                     durable=False)

    def enable_region(self, id_: int) -> None:
        """The provider bound again: every device with a size comes up, as
        the kernel's namespaces and their dax devices are probed afresh."""
        region = self.region(id_)
        if region.enabled:
            return
        if not self.dimm.enabled:
            raise DaxError(errno.ENXIO, f"region {id_} maps a disabled DIMM; enable it first "
                                        f"(ndctl enable-dimm nmem0)")
        region.enabled = True
        self.record(lambda: setattr(region, "enabled", False), self.notify(Event.REGION_ENABLED, region),
                     durable=False)
        for dev in sorted(region.devices.values(), key=lambda d: d.id):
            if dev.size:
                self.enable_device(dev.name)

    def _run(self, dev: DevDax) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            self.core.run_dax(dev.dax_dev, dev)
        return run

    def deep_flush(self) -> None:
        """nd region deep_flush: everything stored so far made durable in the
        memory file. Front ends first write back what they hold ("flush"
        listeners: dirty mapped pages), then the file is msynced."""
        devices = [d for d in self.devices() if d.enabled]

        async def sync() -> None:
            windows = [d.window for d in devices if d.window is not None]
            await trio.to_thread.run_sync(lambda: [w.flush() for w in windows] and None)
            await trio.to_thread.run_sync(self.memory.flush, 0, self.memory.size)

        self.record(lambda: None, *[self.notify(Event.FLUSH, d) for d in devices], sync)

    # --- windows: a device's memory in a file of its own (memory/window.py) ---------------------------
    async def window(self, dev: DevDax) -> Window:
        """dev's window, opened first when it has none: ENXIO once dev is
        disabled or gone, EOPNOTSUPP where this memory can have none. It
        closes again when dev is disabled (revoked: every mapping of it in
        any process faults), when media errors change in it, and at a
        clean shutdown."""
        if not self.memory.windows:
            raise DaxError(errno.EOPNOTSUPP, f"the memory file {self.memory.name} cannot have windows")
        async with self._lock:
            self._check_open()
            if not dev.enabled or self.find_device(dev.name) is not dev:
                raise DaxError(errno.ENXIO, f"{dev.name} is disabled")
            if dev.window is None:
                await self._moving(dev, functools.partial(self._open_window, dev))
                await self.notify(Event.WINDOW, dev)()
            return dev.window

    async def _open_window(self, dev: DevDax) -> None:
        extents = [(r.start, r.size) for r in dev.ranges]
        window = await trio.to_thread.run_sync(self.memory.open_window, extents, dev.name)
        dev.window = window
        if window.path is not None:
            try:
                await self.persist()  # the record names it before the memory file's copy goes
            except DaxError:
                dev.window = None
                window.close()
                raise
        await trio.to_thread.run_sync(window.release_source)

    async def _close_window(self, dev: DevDax) -> None:
        """Move dev's window back into the memory file, if it has one."""
        window = dev.window
        if window is None:
            return

        async def capture() -> None:
            await trio.to_thread.run_sync(window.capture)
            dev.window = None
        await self._moving(dev, capture)
        window.close()
        if window.path is not None:
            try:
                await self.persist()  # a record that still names it is right too: nothing to move back
            except DaxError as e:
                log.warning("%s: %s", dev.name, e)
        await self.notify(Event.WINDOW, dev)()

    async def _moving(self, dev: DevDax, work: Callable[[], Awaitable[None]]) -> None:
        """Run work while dev's I/O waits (DaxFile._enter), once the I/O
        that began before has ended."""
        dev.moving = trio.Event()
        try:
            await self.core.srcu.synchronize()
            await work()
        finally:
            moved, dev.moving = dev.moving, None
            moved.set()

    def start_serving(self) -> bool:
        """A daemon serves this memory from now on (its store marks it
        running). Whether the last one died serving it: an unsafe shutdown,
        which the DIMM's count records with the layout's next write."""
        if self.store is None or not self.store.begin(self.memory.fileno()):
            return False
        self.dirty_shutdown += 1
        return True

    async def stop_serving(self) -> None:
        """A clean stop, once clients' dirty pages are written back: every
        window moves back, as the devices go, and the store marks the stop
        clean (every store is in the memory file). Inside closed()."""
        for dev in list(self.devices()):
            await self._close_window(dev)
        if self.store is not None:
            await trio.to_thread.run_sync(self.store.end)

    # --- a recorded layout taken in (layout.restore: before serving, no batch) ----------------------
    def adopt_region(self, id_: int, res: Range, align: int, nodes: tuple[int, int], type_: str, enabled: bool,
                     devices: list[tuple[int, int, Access, list[Range], str | None, bool, str]],
                     seed: int | None, youngest: int | None) -> DaxRegion:
        """The region as recorded, with its (target, NUMA) nodes, its type,
        whether it is enabled, and its devices ((id, align, access, ranges,
        driver, memmap_on_memory, hotplug_state) each) under their ids and fresh minors.
        kmem's blocks come back with adopt_memory."""
        region = DaxRegion(id_, res, align, *nodes, type_=type_)
        region.enabled = enabled
        self.memory.ensure(res.end)
        self.regions[id_] = region
        for dev_id, dev_align, access, ranges, driver, memmap_on_memory, hotplug_state in devices:
            dev = DevDax(region, dev_id, dev_align)
            dev.access = access
            dev.memmap_on_memory, dev.hotplug_state = memmap_on_memory, hotplug_state
            dev.dax_dev = self.core.alloc_dax(dev)
            region.ida.claim(dev_id)
            dev.set_ranges(ranges)
            region.devices[dev_id] = dev
            self._by_minor[dev.dax_dev.minor] = dev
            dev.driver = driver
            if driver is not None and DRIVERS[driver].runs:
                self.core.run_dax(dev.dax_dev, dev)
        region.seed, region.youngest = region.devices.get(seed), region.devices.get(youngest)
        self.generation += 1
        return region

    def adopt_memory(self, blocks: list[MemoryBlock], auto_online: str) -> None:
        """kmem's blocks as recorded (their zones and pins), and auto_online_blocks."""
        self.blocks = {b.index: b for b in blocks}
        self.auto_online = auto_online
        self.generation += 1

    def adopt_media(self, badblocks: Badblocks, injected: Badblocks, dirty_shutdown: int, labels: bytes) -> None:
        """The media as recorded: its poison, what was injected, the DIMM's
        unsafe-shutdown count and its label area."""
        self.badblocks, self.injected, self.dirty_shutdown = badblocks, injected, dirty_shutdown
        self.dimm.label_area[:len(labels)] = labels
        self.generation += 1

    # --- the DIMM's label storage area ---------------------------------------------------------
    @property
    def dimm_busy(self) -> bool:
        """An enabled region maps the DIMM: the kernel owns its labels then (nvdimm->busy)."""
        return any(r.enabled and r.on_dimm for r in self.regions.values())

    def disable_dimm(self) -> None:
        """The DIMM's driver unbound (ndctl disable-dimm, and zero-labels
        around its write): only while no enabled region maps it."""
        if self.dimm_busy:
            raise DaxError(errno.EBUSY, "the DIMM is in use by enabled regions: disable them first")
        self._set_dimm(False)

    def enable_dimm(self) -> None:
        self._set_dimm(True)

    def _set_dimm(self, enabled: bool) -> None:
        dimm, old = self.dimm, self.dimm.enabled
        dimm.enabled = enabled
        self.record(lambda: setattr(dimm, "enabled", old),
                     self.notify(Event.DIMM_ENABLED if enabled else Event.DIMM_DISABLED, dimm), durable=False)

    def check_labels(self, offset: int, length: int) -> None:
        """[offset, offset + length) lies in the label area (ND_CMD_*_CONFIG_DATA's bounds)."""
        if offset < 0 or length < 0 or offset + length > LABEL_SIZE:
            raise DaxError(errno.EINVAL, f"labels {offset}+{length} are outside the label area "
                                         f"({LABEL_SIZE} bytes)")

    def write_labels(self, offset: int, data: bytes) -> None:
        """ND_CMD_SET_CONFIG_DATA: EBUSY while a region is enabled (the
        kernel's nd_cmd_clear_to_send), as ndctl write-labels expects."""
        self.check_labels(offset, len(data))
        if self.dimm_busy:
            raise DaxError(errno.EBUSY, "the DIMM's labels are in use by enabled regions: "
                                        "disable them first (ndctl disable-region all)")
        area = self.dimm.label_area
        old = bytes(area[offset:offset + len(data)])
        area[offset:offset + len(data)] = data
        self.record(lambda: area.__setitem__(slice(offset, offset + len(old)), old))

    # --- memory failure and soft offlining of device pages ---------------------------------------
    def region_at(self, address: int) -> DaxRegion | None:
        """The region holding memory-file address, if one does."""
        return next((r for r in self.regions.values() if r.res.start <= address < r.res.end), None)

    def offline_page(self, address: int, hard: bool) -> None:
        """/sys/devices/system/memory/{hard,soft}_offline_page on an emulated
        page: hard is memory_failure(), which poisons it for its mappers to
        meet (MADV_HWPOISON's path); soft fails with EIO for device memory,
        which is never online memory (soft_offline_page: pfn_to_online_page),
        and succeeds for a page of a block kmem onlined (its data migrates).
        Any other address is the host's, which daxfuse never offlines."""
        page = address - address % PAGE_SIZE
        if self.region_at(page) is None:
            raise DaxError(errno.EOPNOTSUPP, f"{address:#x} is no emulated memory: the host's memory is not "
                                             f"daxfuse's to offline")
        block = self.blocks.get((phys_base() + page) // self.block_size)
        if hard:
            self._change_media([sectors(page, PAGE_SIZE)], poison=True, injected=False)
        elif block is None or not block.online:
            raise DaxError(errno.EIO, f"{address:#x} is device memory, which cannot be soft-offlined")

    # --- media errors ---------------------------------------------------------------------------
    def _device_sectors(self, dev: DevDax, block: int, count: int) -> list[tuple[int, int]]:
        """The memory file's sectors of 512-byte blocks [block, block + count) of dev."""
        blocks = dev.size // SECTOR
        if block < 0 or count < 1 or block + count > blocks:
            raise DaxError(errno.EINVAL, f"blocks {block}-{block + count - 1} are not within {dev.name} "
                                         f"({blocks} blocks of 512 bytes)")
        return [sectors(phys, n) for phys, n in dev.segments(block * SECTOR, count * SECTOR)]

    def _region_sectors(self, start: int, length: int) -> list[tuple[int, int]]:
        """The sectors of a physical range, which must lie in a region (ARS)."""
        if length <= 0 or not any(r.res.start <= start and start + length <= r.res.end for r in self.regions.values()):
            raise DaxError(errno.EINVAL, f"{start:#x}-{start + length - 1:#x} is not within a region")
        return [sectors(start, length)]

    def _change_media(self, pieces: list[tuple[int, int]], poison: bool, injected: bool) -> None:
        old = Badblocks(self.badblocks.ranges()), Badblocks(self.injected.ranges())
        for start, count in pieces:
            for media, wanted in ((self.badblocks, True), (self.injected, injected)):
                if wanted:
                    (media.add if poison else media.remove)(start, count)
        touched = [d for d in self.devices() if any(
            r.start < (s + c) * SECTOR and s * SECTOR < r.end for r in d.ranges for s, c in pieces)]

        def undo() -> None:
            self.badblocks, self.injected = old
        notifies = [self.notify(Event.POISONED if poison else Event.CLEARED, d) for d in touched]

        async def effect() -> None:
            """Direct mappings of the devices go (mappers map them again,
            around the poison); dropping the cached pages writes dirty ones
            back first, over the fresh poison: those stores predate it and
            must not clear it."""
            for dev in touched:
                await self._close_window(dev)
            self.poisoning += poison
            try:
                for notify in notifies:
                    await notify()
            finally:
                self.poisoning -= poison
        self.record(undo, effect)

    def inject_error(self, name: str, block: int, count: int = 1) -> None:
        """Poison 512-byte blocks of a device (ndctl inject-error, nfit_test's)."""
        self._change_media(self._device_sectors(self.device(name), block, count), poison=True, injected=True)

    def clear_error(self, name: str, block: int, count: int = 1) -> None:
        self._change_media(self._device_sectors(self.device(name), block, count), poison=False, injected=True)

    def inject_physical(self, start: int, length: int) -> None:
        """ARS error injection at a physical range: poisoned at once, as a scrub would find it."""
        self._change_media(self._region_sectors(start, length), poison=True, injected=True)

    def uninject_physical(self, start: int, length: int) -> None:
        """Out of the injection list; the poison stays, as the kernel's badblocks do."""
        pieces = self._region_sectors(start, length)
        old = Badblocks(self.injected.ranges())
        for s, c in pieces:
            self.injected.remove(s, c)
        self.record(lambda: setattr(self, "injected", old))

    def clear_physical(self, start: int, length: int) -> None:
        """ND_IOCTL_CLEAR_ERROR: the poison of a physical range cleared."""
        self._change_media(self._region_sectors(start, length), poison=False, injected=True)

    def clear_written(self, pieces: list[tuple[int, int]]) -> None:
        """The pmem driver's clear-on-write: sectors a write covered whole are
        clean again (DaxFile.write checked that it covered them whole)."""
        self._change_media(pieces, poison=False, injected=True)

    def start_scrub(self) -> None:
        """nfit/scrub: a scrub, done at once (injected errors are poisoned as they are injected)."""
        self.scrubs += 1
        self.record(lambda: setattr(self, "scrubs", self.scrubs - 1))

    def device_badblocks(self, dev: DevDax) -> list[tuple[int, int]]:
        """dev's poisoned 512-byte blocks: (first block, count), device-relative."""
        out = []
        for r, offset in zip(dev.ranges, dev.page_offsets()):
            for s, c in self.badblocks.within(r.start // SECTOR, r.size // SECTOR):
                out.append(((s * SECTOR - r.start + offset) // SECTOR, c))
        return sorted(out)

    # --- range planning (pure) ---------------------------------------------------------------
    @staticmethod
    def _plan_shrink(ranges: list[Range], size: int) -> list[Range]:
        """Trim from the end, as the kernel's dev_dax_shrink."""
        kept, total = [], 0
        for r in ranges:
            if total >= size:
                break
            take = min(r.size, size - total)
            kept.append(Range(r.start, r.start + take))
            total += take
        return kept

    @staticmethod
    def _plan_grow(region: DaxRegion, ranges: list[Range], to_alloc: int, align: int) -> list[Range]:
        """First fit over the region's holes in address order; a hole right
        after the device's last range extends it (dev_dax_resize)."""
        if to_alloc > region.available_size:
            raise DaxError(errno.ENOSPC, f"region {region.id} has {size_text(region.available_size)} "
                                         f"available, {size_text(to_alloc)} asked")
        ranges = list(ranges)
        for hole in region.free:
            if not to_alloc:
                break
            fit = _align_in(hole, align)
            if fit is None:
                continue
            n = min(fit.size, to_alloc)
            if ranges and ranges[-1].end == fit.start:
                ranges[-1] = Range(ranges[-1].start, fit.start + n)
            else:
                ranges.append(Range(fit.start, fit.start + n))
            to_alloc -= n
        if to_alloc:
            raise DaxError(errno.ENOSPC, f"region {region.id} has no room aligned to {size_text(align)} left")
        return ranges

    # --- description ---------------------------------------------------------------------------
    def layout(self) -> list[dict]:
        """Regions, devices, ranges and states as plain data."""
        return [{
            "id": region.id, "start": region.res.start, "resource": phys_base() + region.res.start,
            "size": region.size, "target_node": region.target_node, "numa_node": region.numa_node,
            "align": region.align, "available_size": region.available_size,
            "state": "enabled" if region.enabled else "disabled",
            "devices": [{
                "name": dev.name, "id": dev.id, "size": dev.size, "align": dev.align,
                "state": "enabled" if dev.enabled else "disabled", "driver": dev.driver,
                "memory_blocks": [{"index": i, "zone": self.blocks[i].zone}
                                  for i in self.device_blocks(dev) if i in self.blocks],
                "minor": dev.dax_dev.minor,
                "uid": dev.access.uid, "gid": dev.access.gid, "mode": f"{dev.access.mode:04o}",
                "ranges": [{"start": r.start, "end": r.end - 1, "page_offset": off}
                           for r, off in zip(dev.ranges, dev.page_offsets())],
                "badblocks": [{"offset": b, "length": n} for b, n in self.device_badblocks(dev)],
            } for dev in sorted(region.devices.values(), key=lambda d: d.id)],
        } for region in sorted(self.regions.values(), key=lambda r: r.id)]
