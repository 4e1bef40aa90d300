"""The NVDIMM bus view under the devices: what libndctl walks, so that ndctl
and PMDK's devdax path (bus -> region -> namespace -> nd dax -> daxctl
region -> device, matched by st_rdev) find each emulated device.

One emulated bus (provider daxfuse, an NFIT bus: nfit/revision turns that
on) with one DIMM, nmem0, that every region maps; each dax region R is nd
regionR, and each device of it with a size is namespaceR.I in devdax mode
whose nd dax device daxR.I holds its dax_region/ and the device-dax
instance.

The drivers bind and unbind as ndctl drives them: nd_region's unbind of
regionR disables the region (DaxBus.disable_region: its namespaces go,
its devices are down), its bind enables it again; dax_pmem's unbind of an
nd dax device disables the device (ndctl disable-namespace), nd_pmem's bind
of its namespace or dax_pmem's of it enables it (enable-namespace). The
nd dax device is bound while its device is enabled. The instance itself stays under its dynamic dax region
(platform/daxfuse.R, where daxctl creates and destroys devices): the nd dax
device holds a link to it. Under the kernel's dax_pmem it would hold the
instance itself, but every device would then be a static dax region of its
own and `daxctl create-device` could not run. What libndctl requires, and
what it silently drops, is in the README's "The NVDIMM bus".
"""
import errno
import functools
import uuid

from ..dax import ALIGNS, DaxBus, DaxRegion, DevDax, Dimm
from ..dax.badblocks import SECTOR
from ..core.devt import NDCTL_MAJOR, NMEM_MAJOR
from ..core.errors import DaxError, shown
from .nodes import Attr, Link, Node, group, table
from .sysfs_text import streq, text
from ..core.units import parse_count, parse_index
from ..memory import phys_base

BUS_DIR = "daxfuse-nvdimm"
BUS = f"devices/platform/{BUS_DIR}/ndbus0"
_NDBUS = tuple(BUS.split("/"))
NDCTL_DEVT = f"{NDCTL_MAJOR}:0"
NMEM_DEVT = f"{NMEM_MAJOR}:0"
DIMM_ID = "dafe-00-0000-00000000"  # nfit/id: stable, as libpmemobj's shutdown state wants
PERSISTENCE_DOMAIN = "memory_controller"  # ADR; what it promises here: README, "NVDIMM bus"
SUPPORTED_ALIGNMENTS = "".join(f"{align} " for align in ALIGNS)  # space-terminated, as the kernel
_UUIDS = uuid.UUID("5e7a2a58-2f0d-4c2b-9a57-0cda7f05e000")  # namespace for the name-derived uuids


def _ro(value: str) -> Node:
    return Attr(0o444, show=lambda: value)


def _val(show) -> Node:
    return Attr(0o444, show=show)


def _static(node: Node):
    return lambda: node


def _up(path: str, levels: int) -> str:
    return "../" * levels + path


def _uuid(kind: str, dev: DevDax) -> str:
    return str(uuid.uuid5(_UUIDS, f"{kind}/{dev.name}/{dev.dax_dev.minor}"))


_ONE, _ZERO = _ro("1\n"), _ro("0\n")
_REGION_MODALIAS, _NSTYPE = _ro("nd:t2\n"), _ro("5\n")
_PERSISTENCE_DOMAIN = _ro(f"{PERSISTENCE_DOMAIN}\n")
_ND_REGION_DRIVER = Link("../../../../../bus/nd/drivers/nd_region")
_ND_REGION_SUBSYSTEM = Link("../../../../../bus/nd")
_NVDIMM_DRIVER = Link("../../../../../bus/nd/drivers/nvdimm")
_DAX_PMEM_DRIVER = Link("../../../../../../bus/nd/drivers/dax_pmem")
_DEVICE_DRIVERS = ("nd_pmem", "dax_pmem")  # of a namespace, and of its nd dax device
_DRIVERS = ("nvdimm", "nd_region", *_DEVICE_DRIVERS)


def _claim(dev: DevDax, data: str) -> list:
    """An nd dax device's `namespace`: ndctl disable-namespace clears it
    once the device is down (EBUSY before, as the kernel's); the claim
    follows the device here, so clearing it or naming its own namespace
    changes nothing, and any other name is ENODEV."""
    name = text(data)
    if dev.enabled:
        raise DaxError(errno.EBUSY, f"{dev.name} is bound: unbind it first")
    if name not in ("", f"namespace{dev.region.id}.{dev.id}"):
        raise DaxError(errno.ENODEV, f"{dev.name} holds no namespace {shown(name)}")
    return []


class NdBusView:
    """The nd bus and the links to it, for SysfsView to mount."""

    def __init__(self, bus: DaxBus, region_dir) -> None:
        self.bus = bus
        self._region_dir = region_dir  # platform/ name of dax region R
        self._nd_region_attrs = self._nd_region_attributes()

    # --- what SysfsView mounts -------------------------------------------------------
    def platform_dir(self) -> Node:
        def region(name: str) -> Node | None:
            found = self._region_named(name)
            return found and self._region(found)
        return table({"ndbus0": lambda: table(self._bus_attrs(),
                                              lambda: [f"region{r.id}" for r in self._regions()], region)})

    def class_nd(self) -> Node:
        return table({"ndctl0": _static(Link(f"../../{BUS}/ndctl0"))})

    def bus_nd(self) -> Node:
        return table({
            "devices": self._bus_devices,
            "drivers": _static(table({driver: functools.partial(self._driver, driver) for driver in _DRIVERS})),
        })

    # --- the drivers ---------------------------------------------------------------------------
    def _driver(self, driver: str) -> Node:
        return table({"bind": _static(Attr(0o200, store=functools.partial(self._bind, driver))),
                      "unbind": _static(Attr(0o200, store=functools.partial(self._unbind, driver)))})

    def _driven(self, driver: str, name: str):
        """(bound, bind, unbind) of the device called name that driver
        drives, as bus operations (None: what the kernel would not do), or
        None when driver matches no such device (bind_store's ENODEV)."""
        bus = self.bus
        if driver == "nd_region" and (region := self._region_named(name)):
            return (region.enabled, functools.partial(bus.enable_region, region.id),
                    functools.partial(bus.disable_region, region.id))
        if driver == "nvdimm":
            return (bus.dimm.enabled, bus.enable_dimm, bus.disable_dimm) if name == "nmem0" else None
        dev = self._namespaced_named(name)
        if dev is None or driver not in _DEVICE_DRIVERS or name.startswith("namespace") != (driver == "nd_pmem"):
            return None
        # a namespace is claimed by its nd dax device, never bound itself
        return (dev.enabled, functools.partial(bus.enable_device, dev.name),
                functools.partial(bus.disable_device, dev.name) if driver == "dax_pmem" else None)

    def _bind(self, driver: str, data: str) -> list:
        name = streq(data)
        found = self._driven(driver, name)
        if found is None:
            raise DaxError(errno.ENODEV, f"{driver} drives no device {shown(name)}")
        if found[0]:
            raise DaxError(errno.EBUSY, f"{name} is bound already")
        return [found[1]]

    def _unbind(self, driver: str, data: str) -> list:
        name = streq(data)
        found = self._driven(driver, name)
        if found is None or not found[0] or found[2] is None:
            raise DaxError(errno.ENODEV, f"{shown(name)} is not bound to {driver}")
        return [found[2]]

    def devts(self) -> dict:
        """/sys/dev/char entries of the bus's character devices."""
        return {NDCTL_DEVT: _static(Link(f"../../{BUS}/ndctl0")),
                NMEM_DEVT: _static(Link(f"../../{BUS}/nmem0"))}

    # --- what a change makes stale (SysfsView.places, listings, changed) ---------------------
    def places(self, subject: DevDax | DaxRegion | Dimm) -> list[tuple[tuple[str, ...], str]]:
        if type(subject) is Dimm:
            return [(_NDBUS + ("nmem0",), "driver")]
        if type(subject) is DaxRegion:  # enabled or disabled, its namespaces come or go with it
            return [(("bus", "nd", "devices"), f"region{subject.id}"), (_NDBUS, f"region{subject.id}"),
                    (_NDBUS + (f"region{subject.id}",), "driver"),
                    *(place for dev in subject.devices.values() if dev.size for place in self._namespace_places(dev))]
        region = _NDBUS + (f"region{subject.region.id}",)
        return [*self._namespace_places(subject), (region + (subject.name,), "driver"),
                *((region, name) for name in self._nd_region_attrs)]  # they show the region's changes

    @staticmethod
    def _namespace_places(dev: DevDax) -> list[tuple[tuple[str, ...], str]]:
        """The entries of dev's namespace and nd dax device."""
        namespace, region = f"namespace{dev.region.id}.{dev.id}", _NDBUS + (f"region{dev.region.id}",)
        return [(("bus", "nd", "devices"), namespace), (("bus", "nd", "devices"), dev.name),
                (region, namespace), (region, dev.name)]

    def listings(self) -> list[tuple[str, ...]]:
        return [("bus", "nd", "devices"), _NDBUS, *(_NDBUS + (f"region{r.id}",) for r in self._regions())]

    def changed(self, path: tuple[str, ...]) -> int | None:
        """SysfsView.changed for a path below platform/daxfuse-nvdimm."""
        match path:
            case ("ndbus0",):
                return self.bus.changed
            case ("ndbus0", name):
                return self.bus.changed if self._region_named(name) else None
            case ("ndbus0", region, name, *_) if (found := self._region_named(region)):
                dev = self._namespaced_named(name)
                if dev is not None:
                    return dev.changed if dev.region is found else None
                return found.changed if len(path) == 3 else None
        return None

    # --- the bus ---------------------------------------------------------------------------
    def _regions(self) -> list[DaxRegion]:
        return [self.bus.regions[r] for r in sorted(self.bus.regions) if self.bus.regions[r].on_dimm]

    def _bus_devices(self) -> Node:
        def names():
            for region in self._regions():
                yield f"region{region.id}"
                for dev in self._namespaced(region):
                    yield from (f"namespace{dev.region.id}.{dev.id}", dev.name)

        def child(name: str) -> Node | None:
            region = self._region_named(name)
            if region is not None:
                return Link(f"../../../{BUS}/region{region.id}")
            dev = self._namespaced_named(name)
            return dev and Link(f"../../../{BUS}/region{dev.region.id}/{name}")
        return table({"ndbus0": _static(Link(f"../../../{BUS}")), "nmem0": _static(Link(f"../../../{BUS}/nmem0"))},
                     names, child)

    def _region_named(self, name: str) -> DaxRegion | None:
        """regionR's region."""
        region = self.bus.regions.get(parse_index(name.removeprefix("region"))) if name.startswith("region") else None
        return region if region is not None and region.on_dimm else None

    def _namespaced_named(self, name: str) -> DevDax | None:
        """The device with a size whose namespaceR.I or nd dax daxR.I is name."""
        dev = self.bus.find_device(name.replace("namespace", "dax", 1) if name.startswith("namespace") else name)
        return dev if dev is not None and dev.size and dev.region.enabled and dev.region.on_dimm else None

    def _bus_attrs(self) -> dict:
        attrs = {
            "provider": _static(_ro("daxfuse\n")),
            # space-terminated: libndctl drops a last name without its space
            "commands": _static(_ro("ars_cap ars_start ars_status clear_error \n")),
            "wait_probe": _static(_ro("0\n")),
            "nfit": _static(table({
                "revision": _static(_ro("1\n")),
                "dsm_mask": _static(_ro("0x39e\n")),
                # ndctl counts scrubs here ("+": one running); writing 1 starts one
                "scrub": _static(Attr(0o644, show=lambda: f"{self.bus.scrubs}\n",
                                      store=lambda data: [self.bus.start_scrub])),
            })),
            "ndctl0": _static(table({
                "dev": _static(_ro(f"{NDCTL_DEVT}\n")),
                "device": _static(Link("..")),
                "subsystem": _static(Link("../../../../../class/nd")),
            })),
            "nmem0": lambda: table(self._dimm_attrs()),
            "subsystem": _static(Link("../../../../bus/nd")),
        }
        return attrs

    def _dimm_attrs(self) -> dict:
        nfit = {"handle": "0x1", "phys_id": "0x10", "id": DIMM_ID, "serial": "0x0", "vendor": "0xdafe",
                "device": "0x0", "rev_id": "0x0", "family": "0", "dsm_mask": "0x0", "flags": "",
                "formats": "1", "format": "0x101"}
        nfit_table = {name: _static(_ro(f"{value}\n")) for name, value in nfit.items()}
        bus = self.bus
        nfit_table["dirty_shutdown"] = lambda: _val(lambda: f"{self.bus.dirty_shutdown}\n")
        return {
            "dev": _static(_ro(f"{NMEM_DEVT}\n")),
            # no "smart": ndctl list -H would then need the SMART ioctl
            "commands": _static(_ro("flags get_size get_data set_data cmd_call \n")),
            "modalias": _static(_ro("nd:t1\n")),
            "flags": _static(_ro("\n")),
            "security": _static(_ro("disabled\n")),
            # whether the kernel owns its labels (an enabled region maps it): ndctl writes them only when idle
            "state": _static(_val(lambda: "active\n" if bus.dimm_busy else "idle\n")),
            "nfit": _static(table(nfit_table)),
            "driver": lambda: _NVDIMM_DRIVER if bus.dimm.enabled else None,
            "subsystem": _static(Link("../../../../../bus/nd")),
        }

    # --- a region ----------------------------------------------------------------------------
    @staticmethod
    def _namespaced(region: DaxRegion) -> list[DevDax]:
        """The devices that have a namespace: those with a size, while their region is enabled."""
        if not region.enabled:
            return []
        return [d for d in sorted(region.devices.values(), key=lambda d: d.id) if d.size]

    def _nd_region_attributes(self) -> dict:
        """Each nd region attribute's maker, from a region: made once, so
        that a lookup builds the one node it finds."""
        bus = self.bus
        return {
            "size": lambda region: _val(lambda: f"{region.size}\n"),
            "mappings": lambda region: _ONE,
            # decimal: libndctl parses "%llu", and hex reads as 0
            "mapping0": lambda region: _val(lambda: f"nmem0,{region.res.start},{region.size},0\n"),
            "read_only": lambda region: _ZERO,
            "modalias": lambda region: _REGION_MODALIAS,
            "nstype": lambda region: _NSTYPE,
            "set_cookie": lambda region: _ro(f"{uuid.uuid5(_UUIDS, f'region{region.id}').int >> 64:#x}\n"),
            "resource": lambda region: _val(lambda: f"{phys_base() + region.res.start:#x}\n"),
            "align": lambda region: _val(lambda: f"{region.align}\n"),
            "numa_node": lambda region: _ro(f"{region.numa_node}\n"),
            "target_node": lambda region: _ro(f"{region.target_node}\n"),
            "available_size": lambda region: _val(lambda: f"{region.available_size}\n"),
            "max_available_extent": lambda region: _val(lambda: f"{region.available_size}\n"),
            "persistence_domain": lambda region: _PERSISTENCE_DOMAIN,
            "deep_flush": lambda region: Attr(0o644, show=lambda: "1\n", store=lambda data: [bus.deep_flush]),
            # "<sector> <count>" lines from the region's start; none: a 0-byte file, as libndctl expects.
            # Writing "SECTOR COUNT" poisons, "-SECTOR COUNT" clears.
            "badblocks": lambda region: Attr(0o644, show=lambda: "".join(
                f"{s - region.res.start // SECTOR} {c}\n"
                for s, c in bus.badblocks.within(region.res.start // SECTOR, region.size // SECTOR)),
                store=functools.partial(self._badblocks_store, region)),
            "driver": lambda region: _ND_REGION_DRIVER if region.enabled else None,
            "subsystem": lambda region: _ND_REGION_SUBSYSTEM,
        }

    def _region(self, region: DaxRegion) -> Node:
        def names():
            for dev in self._namespaced(region):
                yield from (f"namespace{region.id}.{dev.id}", dev.name)

        def child(name: str) -> Node | None:
            dev = self._namespaced_named(name)
            if dev is None or dev.region is not region:
                return None
            return self._namespace(dev) if name.startswith("namespace") else self._nd_dax(dev)
        return group(self._nd_region_attrs, (region,), names, child)

    def _badblocks_store(self, region: DaxRegion, data: str) -> list:
        words = data.replace("\0", "").split()
        if len(words) != 2:
            raise DaxError(errno.EINVAL, "write SECTOR COUNT to poison, -SECTOR COUNT to clear")
        clear = words[0].startswith("-")
        sector, count = parse_count(words[0].removeprefix("-")), parse_count(words[1])
        op = self.bus.clear_physical if clear else self.bus.inject_physical
        return [functools.partial(op, region.res.start + sector * SECTOR, count * SECTOR)]

    def _namespace(self, dev: DevDax) -> Node | None:
        if not dev.size:
            return None
        return table({
            "nstype": _static(_ro("5\n")),
            "size": _static(_val(lambda: f"{dev.size}\n")),
            "resource": _static(_val(lambda: f"{phys_base() + dev.ranges[0].start:#x}\n")),
            "force_raw": _static(_ro("0\n")),
            "modalias": _static(_ro("nd:t5\n")),
            "alt_name": _static(_ro("\n")),
            "uuid": _static(_ro(f"{_uuid('namespace', dev)}\n")),
            "mode": _static(_ro("dax\n")),
            "holder": _static(_ro(f"{dev.name}\n")),  # the one link from a namespace to its nd dax
            "holder_class": _static(_ro("dax\n")),
            "numa_node": _static(_ro(f"{dev.region.numa_node}\n")),
            "target_node": _static(_ro(f"{dev.region.target_node}\n")),
            "sector_size": _static(_ro("\n")),
            "subsystem": _static(Link("../../../../../../bus/nd")),
        })

    def _nd_dax(self, dev: DevDax) -> Node | None:
        """The nd dax device: libpmem2 takes a device's size, align and
        resource from here, not from the device-dax instance."""
        if not dev.size:
            return None
        region = dev.region
        return table({
            "modalias": _static(_ro("nd:t7\n")),
            "uuid": _static(_ro(f"{_uuid('dax', dev)}\n")),
            "mode": _static(_ro("pmem\n")),
            "namespace": _static(Attr(0o644, show=lambda: f"namespace{region.id}.{dev.id}\n",
                                      store=functools.partial(_claim, dev))),
            "align": _static(_val(lambda: f"{dev.align}\n")),
            "size": _static(_val(lambda: f"{dev.size}\n")),
            "resource": _static(_val(lambda: f"{phys_base() + dev.ranges[0].start:#x}\n")),
            "supported_alignments": _static(_ro(f"{SUPPORTED_ALIGNMENTS}\n")),
            "numa_node": _static(_ro(f"{region.numa_node}\n")),
            "dax_region": _static(table({
                "id": _static(_ro(f"{region.id}\n")),
                "size": _static(_val(lambda: f"{dev.size}\n")),
                "align": _static(_val(lambda: f"{dev.align}\n")),
                "available_size": _static(_ro("0\n")),
            })),
            dev.name: _static(Link(_up(f"{self._region_dir(region.id)}/{dev.name}", 4))),
            "driver": lambda: _DAX_PMEM_DRIVER if dev.enabled else None,
            "subsystem": _static(Link("../../../../../../bus/nd")),
        })
