"""A sysfs-compatible view of the bus: the tree the kernel's device-dax shows
under /sys, close enough that an unmodified daxctl drives it.

Every directory is one table, name -> node, that drives both its listing and
its lookups (as the kernel's dev_dax_attributes[]). Reads render the bus's
state; writes parse as the kernel does (base 0, trailing newline and NUL
accepted) into bus operations, so the rules stay in the bus and the control
file and this view are two faces of one model.
"""
import errno
import functools
import string

from ..dax import DaxBus, DaxRegion, DevDax, Dimm
from ..dax.drivers import DRIVERS, KMEM
from ..core.devt import DAX_MAJOR
from ..core.errors import DaxError, shown
from ..cxl import CxlBus
from .cxl import CxlView
from .tracefs import TraceFs
from .memory import MemoryView
from .sysfs_text import kstrtobool, number, streq, text
from .ndbus import BUS_DIR, NdBusView
from .nodes import Attr, Dir, Link, Node, group, table
from ..core.units import U64_MAX, bounded_int, parse_index
from ..memory import phys_base

REGION_DIR = "daxfuse.{}"
# Without the personality, device files are regular files (st_rdev 0:0 to
# stat), so daxctl's check of /sys/dev/char/0:0/subsystem must lead to the
# dax bus too.
RDEV_ZERO = "0:0"


@functools.lru_cache(maxsize=1 << 16)
def kernfs_name_hash(name: str) -> int:
    """fs/kernfs/dir.c's kernfs_name_hash() for a name without a namespace:
    full_name_hash() as include/linux/stringhash.h spells it on 64 bits,
    kept within 2 .. INT_MAX - 1."""
    h = 0
    for c in name.encode("utf-8", "surrogateescape"):
        h = ((h + (c << 4) + (c >> 4)) * 11) & 0xFFFFFFFFFFFFFFFF
    h = ((h * 0x61C8864680B583EB) & 0xFFFFFFFFFFFFFFFF) >> 32  # end_name_hash: hash_long(h, 32)
    h &= 0x7FFFFFFF
    return min(max(h, 2), 0x7FFFFFFE)


def kernfs_order(names) -> list[str]:
    """Names in the order a sysfs directory lists them: kernfs keeps its
    children in an rbtree by (hash, name), and readdir walks it in order.
    daxctl acts on devices in that order (destroy-device all, for one)."""
    return sorted(names, key=lambda name: (kernfs_name_hash(name), name))


def _range(data: str) -> tuple[int, int]:
    """sscanf("%llx-%llx"): hex, each with an optional 0x."""
    def hexa(x: str) -> int | None:
        x = x[2:] if x[:2] in ("0x", "0X") else x
        return bounded_int(x, 16, U64_MAX) if x and all(c in string.hexdigits for c in x) else None
    start, _, end = text(data).partition("-")
    bounds = hexa(start), hexa(end)
    if None in bounds:
        raise DaxError(errno.EINVAL, f"mapping must be START-END in hex, not {shown(text(data))}")
    return bounds


def _ro(show) -> Attr:
    return Attr(0o444, show=show)


_MODALIAS = _ro(lambda: "dax:t0\n")
_SUBSYSTEM = Link("../../../../bus/dax")


def _static(node: Node):
    return lambda: node


def _op(method, *args, parse=text):
    """A store that turns what was written into one bus operation."""
    return lambda data: [functools.partial(method, *args, parse(data))]


class SysfsView:
    def __init__(self, bus: DaxBus) -> None:
        self.bus = bus
        self._dev_dax_attrs = self._dev_dax_attributes()
        self.nd = NdBusView(bus, REGION_DIR.format)
        self.memory = MemoryView(bus)
        cxl = next((b for b in bus.beside if type(b) is CxlBus), None)
        self.tracefs = cxl and TraceFs()  # where the CXL bus's trace events go
        self.cxl = cxl and CxlView(cxl, bus, self.tracefs)
        self.root = table({
            "bus": _static(table({
                "dax": _static(table({
                    "devices": lambda: Dir(self._device_names, self._bus_device),
                    "drivers": _static(table({name: functools.partial(self._driver_dir, name) for name in DRIVERS})),
                })),
                "nd": self.nd.bus_nd,
                "cxl": lambda: self.cxl and self.cxl.bus_cxl(),
                "memory": self.memory.bus_memory,
                "platform": _static(table({"devices": lambda: Dir(self._platform_names, self._platform_link),
                                           "drivers": lambda: self.cxl and self.cxl.platform_drivers()})),
            })),
            "class": _static(table({"nd": self.nd.class_nd})),
            "devices": _static(table({
                "platform": lambda: Dir(self._platform_names, self._platform),
                "system": _static(table({"memory": self.memory.memory_dir, "node": self.memory.node_dir})),
                "virtual": _static(table({"daxfuse": _static(table({
                    "subsystem": _static(Link("../../../bus/dax"))}))})),
            })),
            "dev": _static(table({"char": lambda: Dir(self._devt_names, self._devt)})),
            # the CXL bus's debugfs and trace events, where exec's mount table has a debugfs and a
            # tracefs (preload/mounts.c)
            "kernel": _static(table({"debug": _static(table({"cxl": lambda: self.cxl and self.cxl.debugfs()})),
                                     "tracing": lambda: self.tracefs and self.tracefs.root()})),
            "module": _static(table({driver.module: functools.partial(self._module, driver.name)
                                     for driver in DRIVERS.values()})),
        })

    # --- the bus's lists ------------------------------------------------------------------------
    def _devices(self) -> list[DevDax]:
        return sorted(self.bus.devices(), key=lambda d: (d.region.id, d.id))

    def _device_names(self) -> list[str]:
        return [d.name for d in self._devices()]

    def _region_path(self, region_id: int, up: int) -> str:
        return "../" * up + f"devices/platform/{REGION_DIR.format(region_id)}"

    def _bus_device(self, name: str) -> Node | None:
        dev = self.bus.find_device(name)
        return dev and Link(f"{self._region_path(dev.region.id, 3)}/{name}")

    def _driver_dir(self, driver: str) -> Node:
        """/sys/bus/dax/drivers/DRIVER: bind, unbind, new_id, remove_id, its
        module, and a link to each device bound to it."""
        bus = self.bus
        attrs = {"bind": _static(Attr(0o200, store=_op(bus.bind, driver, parse=streq))),
                 "unbind": _static(Attr(0o200, store=_op(bus.unbind, driver, parse=streq))),
                 "new_id": _static(Attr(0o200, store=_op(bus.new_id, driver, parse=streq))),
                 "remove_id": _static(Attr(0o200, store=_op(bus.remove_id, driver, parse=streq))),
                 "module": _static(Link(f"../../../../module/{DRIVERS[driver].module}"))}

        def device(name: str) -> Node | None:
            dev = self.bus.find_device(name)
            return Link(f"{self._region_path(dev.region.id, 4)}/{name}") if dev and dev.driver == driver else None
        return table(attrs, lambda: [d.name for d in self._devices() if d.driver == driver], device)

    def _module(self, driver: str) -> Node:
        return table({"initstate": _static(_ro(lambda: "live\n")),
                      "drivers": _static(table({f"dax:{driver}": _static(Link(f"../../../bus/dax/drivers/{driver}"))}))})

    def _platform_names(self) -> list[str]:
        return [REGION_DIR.format(r) for r in sorted(self.bus.regions)] + [BUS_DIR] + \
            (self.cxl.platform_names() if self.cxl else [])

    def _platform(self, name: str) -> Node | None:
        if name == BUS_DIR:
            return self.nd.platform_dir()
        return self._region(name) or (self.cxl and self.cxl.platform((name,)))

    def _platform_link(self, name: str) -> Node | None:
        """/sys/bus/platform/devices/NAME, where ndctl's tests look a platform device up."""
        return Link(f"../../../devices/platform/{name}") if name in self._platform_names() else None

    def _bus_devts(self) -> dict:
        """/sys/dev/char entries of the buses' character devices other than dax devices."""
        return {**self.nd.devts(), **(self.cxl.devts() if self.cxl else {})}

    def _devt_names(self) -> list[str]:
        return [RDEV_ZERO, *self._bus_devts()] + [f"{DAX_MAJOR}:{d.dax_dev.minor}" for d in self._devices()]

    def _devt(self, devt: str) -> Node | None:
        if devt == RDEV_ZERO:
            return Link("../../devices/virtual/daxfuse")
        if devt in self._bus_devts():
            return self._bus_devts()[devt]()
        dev = self._devt_device(devt)
        return dev and Link(f"{self._region_path(dev.region.id, 2)}/{dev.name}")

    def _devt_device(self, devt: str) -> DevDax | None:
        major, _, minor = devt.partition(":")
        return self.bus.device_of_minor(parse_index(minor)) if major == str(DAX_MAJOR) else None

    # --- a region: dax_region/ and its devices ------------------------------------------------
    def _region(self, dirname: str) -> Node | None:
        prefix, _, rid = dirname.rpartition(".")
        region = self.bus.regions.get(parse_index(rid)) if prefix == "daxfuse" else None
        if region is None:
            return None

        def device(name: str) -> Node | None:
            dev = self.bus.find_device(name)
            return self._device(dev) if dev is not None and dev.region is region else None
        return table({"dax_region": lambda: table(self._region_attrs(region))},
                     lambda: [d.name for d in sorted(region.devices.values(), key=lambda d: d.id)], device)

    def _region_attrs(self, region: DaxRegion) -> dict:
        bus = self.bus

        def create(data: str) -> list:
            if number(data) != 1:
                raise DaxError(errno.EINVAL, "write 1 to create a device")
            return [functools.partial(bus.create_seed, region.id)]

        return {
            "id": _static(_ro(lambda: f"{region.id}\n")),
            "size": _static(_ro(lambda: f"{region.size}\n")),
            "align": _static(Attr(0o400, show=lambda: f"{region.align}\n")),
            "available_size": _static(_ro(lambda: f"{region.available_size}\n")),
            "create": _static(Attr(0o644, show=lambda: f"{region.youngest.name if region.youngest else ''}\n",
                                   store=create)),
            "seed": _static(_ro(lambda: f"{region.seed.name if region.seed else ''}\n")),
            "delete": _static(Attr(0o200, store=_op(bus.delete_device, region.id))),
        }

    # --- a device: dev_dax_attributes[] -------------------------------------------------------
    def _dev_dax_attributes(self) -> dict:
        """Each attribute's maker, from a device: made once, so that a
        lookup builds the one node it finds."""
        bus = self.bus
        return {
            "size": lambda dev: Attr(0o644, show=lambda: f"{dev.size}\n",
                                     store=_op(bus.resize_device, dev.name, parse=number)),
            "align": lambda dev: Attr(0o644, show=lambda: f"{dev.align}\n",
                                      store=_op(bus.set_align, dev.name,
                                                parse=functools.partial(number, err=errno.ENXIO))),
            "mapping": lambda dev: Attr(0o200, store=lambda data: [
                functools.partial(bus.set_mapping, dev.name, *(a - phys_base() for a in _range(data)))]),
            "resource": lambda dev: Attr(0o400, show=lambda: (
                f"{phys_base() + (dev.ranges[0] if dev.ranges else dev.region.res).start:#x}\n")),
            # hidden while negative (dev_dax_visible), as daxctl expects
            "target_node": lambda dev: (None if dev.region.target_node < 0
                                        else _ro(lambda: f"{dev.region.target_node}\n")),
            "numa_node": lambda dev: _ro(lambda: f"{dev.region.numa_node}\n"),
            "memmap_on_memory": lambda dev: Attr(0o644, show=lambda: f"{int(dev.memmap_on_memory)}\n",
                                                 store=_op(bus.set_memmap_on_memory, dev.name, parse=kstrtobool)),
            # kmem's (Linux 7.3): the memory plugged as one, or "unplugged"
            "state": lambda dev: dev.driver == KMEM.name and Attr(0o644, show=lambda: f"{dev.hotplug_state}\n",
                                                                 store=_op(bus.set_hotplug_state, dev.name,
                                                                           parse=streq)) or None,
            "modalias": lambda dev: _MODALIAS,
            "dev": lambda dev: _ro(lambda: f"{DAX_MAJOR}:{dev.dax_dev.minor}\n"),
            "uevent": lambda dev: Attr(0o644, show=lambda: (
                f"MAJOR={DAX_MAJOR}\nMINOR={dev.dax_dev.minor}\nDEVNAME={dev.name}\n"
                + (f"DRIVER={dev.driver}\n" if dev.driver else "") + "MODALIAS=dax:t0\n"),
                store=lambda data: []),
            "subsystem": lambda dev: _SUBSYSTEM,
            "driver": lambda dev: dev.driver and Link(f"../../../../bus/dax/drivers/{dev.driver}"),
        }

    def _device(self, dev: DevDax) -> Node:
        def mapping(name: str) -> Node | None:
            index = parse_index(name.removeprefix("mapping")) if name.startswith("mapping") else None
            return None if index is None else self._mapping(dev, index)
        return group(self._dev_dax_attrs, (dev,), lambda: [f"mapping{i}" for i in range(len(dev.ranges))], mapping)

    @staticmethod
    def _mapping(dev: DevDax, i: int) -> Node | None:
        if i >= len(dev.ranges):
            return None
        fields = {"start": lambda: phys_base() + dev.ranges[i].start, "end": lambda: phys_base() + dev.ranges[i].end - 1,
                  "page_offset": lambda: dev.page_offsets()[i] // 4096}
        return table({field: _static(Attr(0o400, show=lambda get=get: f"{get():#x}\n"))
                      for field, get in fields.items()})

    # --- what a change makes stale ----------------------------------------------------------
    def places(self, subject: DevDax | DaxRegion | Dimm) -> list[tuple[tuple[str, ...], str]]:
        """(directory, name) of every entry that shows subject, or holds
        what a change to it changes (its region's dax_region/): the
        kernel's cached entries that a change to subject makes stale."""
        if type(subject) is Dimm:
            return self.nd.places(subject)
        if type(subject) not in (DevDax, DaxRegion):
            return self.cxl.places(subject) if self.cxl else []
        if type(subject) is DaxRegion:
            return [(("devices", "platform"), REGION_DIR.format(subject.id)),
                    (("bus", "platform", "devices"), REGION_DIR.format(subject.id)), *self.nd.places(subject)]
        region_dir = ("devices", "platform", REGION_DIR.format(subject.region.id))
        return [(("bus", "dax", "devices"), subject.name),
                *((("bus", "dax", "drivers", driver), subject.name) for driver in DRIVERS),
                (region_dir, subject.name), (region_dir + (subject.name,), "driver"), (region_dir, "dax_region"),
                (("dev", "char"), f"{DAX_MAJOR}:{subject.dax_dev.minor}"), *self.nd.places(subject),
                *self.memory.places(subject)]

    def listings(self) -> list[tuple[str, ...]]:
        """The directories that list devices or regions."""
        return [("bus", "dax", "devices"), *(("bus", "dax", "drivers", driver) for driver in DRIVERS),
                ("devices", "platform"),
                ("bus", "platform", "devices"), ("dev", "char"), *(("devices", "platform", REGION_DIR.format(r)) for r in self.bus.regions),
                *self.nd.listings(), *self.memory.listings()]

    def changed(self, path: tuple[str, ...]) -> int | None:
        """When what path shows last changed: the bus's last change for a
        listing, its device's or region's for what shows one; None for
        what never changes (the mount's time)."""
        match path:
            case ("devices", "platform", name, *rest) if name == BUS_DIR:
                return self.nd.changed(tuple(rest))
            case ("bus", "dax", "devices") | ("bus", "dax", "drivers", _) | ("devices", "platform") \
                    | ("bus", "platform", "devices") | ("dev", "char") | ("devices", "platform", _):
                return self.bus.changed
            case ("devices", "platform", region, "dax_region", *_):
                found = self.bus.regions.get(parse_index(region.removeprefix("daxfuse.")))
                return found and found.changed
            case ("devices", "platform", _, name, *_) | ("bus", "dax", "devices", name) \
                    | ("bus", "dax", "drivers", _, name) if (dev := self.bus.find_device(name)):
                return dev.changed
            case ("dev", "char", devt) if (dev := self._devt_device(devt)):
                return dev.changed
        return None
