"""A sysfs-compatible view of the bus: the tree the kernel's device-dax shows
under /sys, close enough that an unmodified daxctl drives it.

Reads render the bus's state; writes parse as the kernel does (base 0,
trailing newline and NUL accepted) into bus operations, so the rules stay in
the bus and the control file and this view are two faces of one model.
"""
import errno
import functools
import re
import string

from .errors import DaxError, shown
from .dax import DaxBus, DevDax
from .nodes import Attr, Dir, Link, Node
from .units import U64_MAX, bounded_int, parse_index

DAX_MAJOR = 252
REGION_DIR = "daxfuse.{}"
# Device files are regular files (st_rdev 0:0 to stat), so daxctl's check of
# /sys/dev/char/0:0/subsystem must lead to the dax bus too.
RDEV_ZERO = "0:0"


def _text(data: str) -> str:
    return data.replace("\0", "").strip()


# kstrtoull(buf, 0): an optional '+', then 0x hex, 0 octal or decimal
_KSTRTOULL = re.compile(r"\+?(?:0[xX]([0-9a-fA-F]+)|(0[0-7]*)|([1-9][0-9]*))", re.ASCII)


def _number(data: str, err: int | None = None) -> int:
    """kstrtoull: EINVAL when malformed, ERANGE past u64; or err for both,
    where the kernel's store maps every failure to one errno."""
    m = _KSTRTOULL.fullmatch(_text(data))
    if not m:
        raise DaxError(err or errno.EINVAL, f"invalid number {shown(_text(data))}")
    hexa, octal, decimal = m.groups()
    value = bounded_int(*((hexa, 16) if hexa else (octal, 8) if octal else (decimal, 10)), U64_MAX)
    if value is None:
        raise DaxError(err or errno.ERANGE, f"number {shown(_text(data))} is past 2^64 - 1")
    return value


def _ro(show) -> Attr:
    return Attr(0o444, show=show)


class SysfsView:
    def __init__(self, bus: DaxBus) -> None:
        self.bus = bus

    def _region_path(self, region_id: int, up: int) -> str:
        return "../" * up + f"devices/platform/{REGION_DIR.format(region_id)}"

    def _devices(self) -> list[DevDax]:
        return sorted(self.bus.devices(), key=lambda d: (d.region.id, d.id))

    def resolve(self, path: tuple[str, ...]) -> Node | None:
        match path:
            case ():
                return Dir(lambda: ["bus", "devices", "dev", "module"])
            case ("bus",):
                return Dir(lambda: ["dax"])
            case ("bus", "dax"):
                return Dir(lambda: ["devices", "drivers"])
            case ("bus", "dax", "devices"):
                return Dir(lambda: [d.name for d in self._devices()])
            case ("bus", "dax", "devices", name):
                dev = self.bus.find_device(name)
                return dev and Link(f"{self._region_path(dev.region.id, 3)}/{name}")
            case ("bus", "dax", "drivers"):
                return Dir(lambda: ["device_dax"])
            case ("bus", "dax", "drivers", "device_dax"):
                return Dir(lambda: ["bind", "unbind", "new_id", "remove_id"]
                           + [d.name for d in self._devices() if d.enabled])
            case ("bus", "dax", "drivers", "device_dax", leaf):
                return self._driver(leaf)
            case ("devices",):
                return Dir(lambda: ["platform", "virtual"])
            case ("devices", "platform"):
                return Dir(lambda: [REGION_DIR.format(r) for r in sorted(self.bus.regions)])
            case ("devices", "platform", region, *rest):
                return self._region(region, rest)
            case ("devices", "virtual"):
                return Dir(lambda: ["daxfuse"])
            case ("devices", "virtual", "daxfuse"):
                return Dir(lambda: ["subsystem"])
            case ("devices", "virtual", "daxfuse", "subsystem"):
                return Link("../../../bus/dax")
            case ("dev",):
                return Dir(lambda: ["char"])
            case ("dev", "char"):
                return Dir(lambda: [RDEV_ZERO] + [f"{DAX_MAJOR}:{d.dax_dev.minor}" for d in self._devices()])
            case ("dev", "char", devt):
                return self._devt(devt)
            case ("module",):
                return Dir(lambda: ["device_dax"])
            case ("module", "device_dax"):
                return Dir(lambda: ["initstate"])
            case ("module", "device_dax", "initstate"):
                return _ro(lambda: "live\n")
        return None

    def changed(self, path: tuple[str, ...]) -> int | None:
        """Last change of the device or region path belongs to; of the
        device set for the bus's listings; None for static nodes."""
        match path:
            case ("devices", "platform", region, "dax_region", *_):
                found = self.bus.regions.get(parse_index(region.removeprefix("daxfuse.")))
                return found and found.changed
            case ("devices", "platform", _, name, *_) | ("bus", "dax", "devices", name) \
                    | ("bus", "dax", "drivers", "device_dax", name) if (dev := self.bus.find_device(name)):
                return dev.changed
            case ("bus", "dax", *_) | ("devices", "platform", *_) | ("dev", "char", *_):
                return self.bus.changed
        return None

    def _devt(self, devt: str) -> Node | None:
        if devt == RDEV_ZERO:
            return Link("../../devices/virtual/daxfuse")
        for dev in self.bus.devices():
            if devt == f"{DAX_MAJOR}:{dev.dax_dev.minor}":
                return Link(f"{self._region_path(dev.region.id, 2)}/{dev.name}")
        return None

    def _driver(self, leaf: str) -> Node | None:
        ops = {"bind": self.bus.enable_device, "unbind": self.bus.disable_device,
               "new_id": self.bus.device, "remove_id": self.bus.device}
        if leaf in ops:
            op = ops[leaf]
            return Attr(0o200, store=lambda data: [functools.partial(op, _text(data))])
        dev = self.bus.find_device(leaf)
        if dev is not None and dev.enabled:
            return Link(f"{self._region_path(dev.region.id, 4)}/{leaf}")
        return None

    def _region(self, dirname: str, rest: list[str]) -> Node | None:
        prefix, _, rid = dirname.rpartition(".")
        region = self.bus.regions.get(parse_index(rid)) if prefix == "daxfuse" else None
        if region is None:
            return None
        match rest:
            case []:
                return Dir(lambda: ["dax_region"] + [d.name for d in sorted(
                    region.devices.values(), key=lambda d: d.id)])
            case ["dax_region"]:
                return Dir(lambda: ["id", "size", "align", "available_size", "create", "seed", "delete"])
            case ["dax_region", leaf]:
                return self._region_attr(region, leaf)
            case [name, *dev_rest] if name.startswith(f"dax{region.id}."):
                dev = region.devices.get(parse_index(name.partition(".")[2]))
                return dev and self._device(dev, dev_rest)
        return None

    def _region_attr(self, region, leaf: str) -> Node | None:
        bus = self.bus
        match leaf:
            case "id":
                return _ro(lambda: f"{region.id}\n")
            case "size":
                return _ro(lambda: f"{region.size}\n")
            case "align":
                return Attr(0o400, show=lambda: f"{region.align}\n")
            case "available_size":
                return _ro(lambda: f"{region.available_size}\n")
            case "create":
                def create(data: str) -> list:
                    if _number(data) != 1:
                        raise DaxError(errno.EINVAL, "write 1 to create a device")
                    return [functools.partial(bus.create_seed, region.id)]
                return Attr(0o644, show=lambda: f"{region.youngest.name if region.youngest else ''}\n",
                            store=create)
            case "seed":
                return _ro(lambda: f"{region.seed.name if region.seed else ''}\n")
            case "delete":
                return Attr(0o200, store=lambda data: [
                    functools.partial(bus.delete_device, region.id, _text(data))])
        return None

    def _device(self, dev: DevDax, rest: list[str]) -> Node | None:
        bus, name = self.bus, dev.name
        match rest:
            case []:
                return Dir(lambda: ["size", "align", "mapping", "resource", "target_node", "numa_node",
                                    "modalias", "dev", "uevent", "subsystem"]
                           + [f"mapping{i}" for i in range(len(dev.ranges))]
                           + (["driver"] if dev.enabled else []))
            case ["size"]:
                return Attr(0o644, show=lambda: f"{dev.size}\n",
                            store=lambda data: [functools.partial(bus.resize_device, name, _number(data))])
            case ["align"]:
                return Attr(0o644, show=lambda: f"{dev.align}\n",
                            store=lambda data: [functools.partial(bus.set_align, name,
                                                                  _number(data, errno.ENXIO))])
            case ["mapping"]:
                return Attr(0o200, store=lambda data: [functools.partial(bus.set_mapping, name,
                                                                         *self._range(data))])
            case ["resource"]:
                return Attr(0o400, show=lambda: f"{(dev.ranges[0].start if dev.ranges else dev.region.res.start):#x}\n")
            case ["target_node"] | ["numa_node"]:
                return _ro(lambda: "0\n")
            case ["modalias"]:
                return _ro(lambda: "dax:t0\n")
            case ["dev"]:
                return _ro(lambda: f"{DAX_MAJOR}:{dev.dax_dev.minor}\n")
            case ["uevent"]:
                return Attr(0o644, show=lambda: (
                    f"MAJOR={DAX_MAJOR}\nMINOR={dev.dax_dev.minor}\nDEVNAME={name}\n"
                    + ("DRIVER=device_dax\n" if dev.enabled else "") + "MODALIAS=dax:t0\n"),
                    store=lambda data: [])
            case ["subsystem"]:
                return Link("../../../../bus/dax")
            case ["driver"] if dev.enabled:
                return Link("../../../../bus/dax/drivers/device_dax")
            case [mapping, *leaf] if mapping.startswith("mapping") and parse_index(mapping[7:]) is not None:
                return self._mapping(dev, parse_index(mapping[7:]), leaf)
        return None

    def _mapping(self, dev: DevDax, i: int, leaf: list[str]) -> Node | None:
        if i >= len(dev.ranges):
            return None
        fields = {"start": lambda: dev.ranges[i].start, "end": lambda: dev.ranges[i].end - 1,
                  "page_offset": lambda: dev.page_offsets()[i] // 4096}
        match leaf:
            case []:
                return Dir(lambda: list(fields))
            case [field] if field in fields:
                get = fields[field]
                return Attr(0o400, show=lambda: f"{get():#x}\n")
        return None

    @staticmethod
    def _range(data: str) -> tuple[int, int]:
        """sscanf("%llx-%llx"): hex, each with an optional 0x."""
        def hexa(x: str) -> int | None:
            x = x[2:] if x[:2] in ("0x", "0X") else x
            return bounded_int(x, 16, U64_MAX) if x and all(c in string.hexdigits for c in x) else None
        start, _, end = _text(data).partition("-")
        bounds = hexa(start), hexa(end)
        if None in bounds:
            raise DaxError(errno.EINVAL, f"mapping must be START-END in hex, not {shown(_text(data))}")
        return bounds
