"""The CXL bus where libcxl walks it (cxl list, create-region, disable-memdev...):
/sys/bus/cxl with a link to every device and the cxl_port, cxl_mem and
cxl_region drivers, and the devices themselves nested as the kernel's
dev->parent makes them, since libcxl builds every path through its parent's:

    devices/platform/cxl_acpi.0/root0/port1/port4/endpoint9/decoder9.0
    devices/platform/cxl_acpi.0/root0/decoder0.1/region1/dax_region1 -> the dax region
    devices/platform/cxl_host_bridge.0/cxl_root_port.0/cxl_switch_uport.0/cxl_switch_dport.0/cxl_mem.0/mem0

A memdev's path lies under each downstream port's on its way, which is how
libcxl matches memdevs to ports. Attributes print as drivers/cxl/core's
*_show and parse as their stores; the rules are the CXL bus's (cxl/bus.py).
No `modalias` anywhere: libkmod would try to load the host's modules on bind.
"""
import errno
import functools

from ..core.devt import CXL_MEM_MAJOR
from ..core.errors import DaxError, shown
from ..core.units import parse_index
from ..cxl import ENDPOINT, ROOT, CxlBus, Decoder, Memdev, Port, Region
from ..cxl.bus import PLATFORM_ROOT
from ..cxl.topology import LSA_SIZE
from ..dax import DaxBus
from ..memory import phys_base
from .nodes import WRITER, Attr, Link, Node, table
from .tracefs import TraceFs, poison_event
from .sysfs_text import kstrtobool, number, streq, text

PLATFORM = ("devices", "platform")
BUS = ("bus", "cxl")
PLATFORM_DRIVER = ("bus", "platform", "drivers", "cxl_acpi")
DEBUGFS = ("kernel", "debug", "cxl")
PAYLOAD_MAX = 4096
FIRMWARE_VERSION = "daxfuse fw 1"
QOS_CLASS = 42  # cxl_test's, for every window and partition
NO_RESOURCE = (1 << 64) - 1  # what a resource not yet set shows (-1ULL)
SOURCE_INJECTED, OVERFLOW = 3, 2  # a poison record's source (CXL 3.1 table 8-140) and its overflow flag
_DECODER_TYPES = {ROOT: "cxl_decoder_root", "switch": "cxl_decoder_switch", ENDPOINT: "cxl_decoder_endpoint"}


def rel(here: tuple[str, ...], there: tuple[str, ...]) -> str:
    """A link in directory here to there (both paths under /sys)."""
    common = 0
    while common < min(len(here), len(there)) and here[common] == there[common]:
        common += 1
    return "/".join([".."] * (len(here) - common) + list(there[common:])) or "."


def _ro(show) -> Attr:
    return Attr(0o444, show=show)


def _value(value: str) -> Attr:
    return Attr(0o444, show=lambda: f"{value}\n")


def _hex(value: int) -> str:
    return f"{value:#x}"


def _op(method, *args, parse=text):
    return lambda data: [functools.partial(method, *args, parse(data))]


class CxlView:
    """What SysfsView mounts for the CXL bus, and dev/cxl."""

    def __init__(self, cxl: CxlBus, bus: DaxBus, tracefs: TraceFs) -> None:
        self.cxl, self.bus, self.tracefs = cxl, bus, tracefs
        self._listed: tuple = (None, {})  # (bus generation, _devices())
        # each platform device's children, for the nested platform directories
        self._platform: dict[tuple[str, ...], list[str]] = {}
        devices = [d.device for p in cxl.ports.values() for d in p.dports.values()] + \
                  [m.device for m in cxl.memdevs.values()] + [PLATFORM_ROOT]
        for device in devices:
            for i in range(len(device)):
                children = self._platform.setdefault(device[:i], [])
                if device[i] not in children:
                    children.append(device[i])
        self._dports = {d.device for p in cxl.ports.values() for d in p.dports.values()}

    # --- paths ---------------------------------------------------------------------------------
    def port_dir(self, port: Port) -> tuple[str, ...]:
        return PLATFORM + PLATFORM_ROOT + (port.name,) if port.parent is None else self.port_dir(port.parent) + (port.name,)

    def decoder_dir(self, d: Decoder) -> tuple[str, ...]:
        return self.port_dir(d.port) + (d.name,)

    def region_dir(self, r: Region) -> tuple[str, ...]:
        return self.decoder_dir(r.root) + (r.name,)

    @staticmethod
    def memdev_dir(m: Memdev) -> tuple[str, ...]:
        return PLATFORM + m.device + (m.name,)

    def _ports(self) -> list[Port]:
        return [p for p in self.cxl.ports.values() if self.cxl.present(p)]

    def _devices(self) -> dict[str, tuple[str, ...]]:
        """Every device on the bus, by name, to its directory (once a batch:
        each lookup in /sys/bus/cxl/devices asks)."""
        if self._listed[0] != self.bus.generation:
            self._listed = (self.bus.generation, self._list_devices())
        return self._listed[1]

    def _list_devices(self) -> dict[str, tuple[str, ...]]:
        found = {p.name: self.port_dir(p) for p in self._ports()}
        found.update((d.name, self.decoder_dir(d)) for p in self._ports() for d in p.decoders)
        found.update((m.name, self.memdev_dir(m)) for m in self.cxl.memdevs.values())
        found.update((r.name, self.region_dir(r)) for r in self.cxl.regions.values())
        return found

    # --- bus/cxl ---------------------------------------------------------------------------------
    def bus_cxl(self) -> Node:
        return table({"devices": self._bus_devices,
                      "drivers": lambda: table({name: functools.partial(self._driver, name) for name in self._drivers()})})

    def _bus_devices(self) -> Node:
        here = BUS + ("devices",)
        return table({}, lambda: list(self._devices()),
                     lambda name: (path := self._devices().get(name)) and Link(rel(here, path)))

    def _drivers(self) -> dict:
        """Each driver: (its devices by name, bind, unbind)."""
        cxl = self.cxl
        return {
            "cxl_port": ({p.name: p for p in self._ports() if p.kind != ROOT and p.enabled},
                         cxl.enable_port, cxl.disable_port),
            "cxl_mem": ({m.name: m for m in cxl.memdevs.values() if m.enabled}, cxl.enable_memdev, cxl.disable_memdev),
            "cxl_region": ({r.name: r for r in cxl.regions.values() if r.bound}, cxl.bind_region, cxl.unbind_region),
        }

    def _driver(self, name: str) -> Node:
        here = BUS + ("drivers", name)

        def bind(data: str) -> list:
            """bind_store: ENODEV for a device this driver does not take."""
            device = streq(data)
            if not self._takes(name, device):
                raise DaxError(errno.ENODEV, f"{name} does not take {shown(device)}")
            return [functools.partial(self._drivers()[name][1], device)]

        def unbind(data: str) -> list:
            device = streq(data)
            if device not in self._drivers()[name][0]:
                raise DaxError(errno.ENODEV, f"{shown(device)} is not bound to {name}")
            return [functools.partial(self._drivers()[name][2], device)]

        def device(dev: str) -> Node | None:
            return Link(rel(here, self._devices()[dev])) if dev in self._drivers()[name][0] else None
        return table({"bind": lambda: Attr(0o200, store=bind), "unbind": lambda: Attr(0o200, store=unbind)},
                     lambda: list(self._drivers()[name][0]), device)

    def platform_drivers(self) -> Node:
        """/sys/bus/platform/drivers/cxl_acpi, beside the host's platform drivers."""
        def bind(data: str) -> list:
            if streq(data) != PLATFORM_ROOT[0]:
                raise DaxError(errno.ENODEV, f"cxl_acpi does not take {shown(streq(data))}")
            return [self.cxl.enable_bus]

        def unbind(data: str) -> list:
            if streq(data) != PLATFORM_ROOT[0] or not self.cxl.enabled:
                raise DaxError(errno.ENODEV, f"{shown(streq(data))} is not bound to cxl_acpi")
            return [self.cxl.disable_bus]
        here = PLATFORM_DRIVER
        return table({"cxl_acpi": lambda: table({
            "bind": lambda: Attr(0o200, store=bind), "unbind": lambda: Attr(0o200, store=unbind),
            PLATFORM_ROOT[0]: lambda: self.cxl.enabled and Link(rel(here, PLATFORM + PLATFORM_ROOT)) or None})})

    def _takes(self, driver: str, device: str) -> bool:
        if driver == "cxl_port":
            return any(p.name == device and p.kind != ROOT for p in self._ports())
        if driver == "cxl_mem":
            return any(m.name == device for m in self.cxl.memdevs.values())
        return any(r.name == device for r in self.cxl.regions.values())

    def _driver_link(self, here: tuple[str, ...], driver: str, bound: bool) -> Node | None:
        return Link(rel(here, BUS + ("drivers", driver))) if bound else None

    def _common(self, here: tuple[str, ...], devtype: str) -> dict:
        return {"devtype": lambda: _value(devtype), "subsystem": lambda: Link(rel(here, BUS)),
                "uevent": lambda: Attr(0o644, show=lambda: f"DEVTYPE={devtype}\n", store=lambda data: [])}

    # --- the platform devices ------------------------------------------------------------------------
    def platform_names(self) -> list[str]:
        return list(self._platform[()])

    def platform(self, device: tuple[str, ...]) -> Node | None:
        """The platform device at device (a path below devices/platform), with its children."""
        memdev = next((m for m in self.cxl.memdevs.values() if m.device == device), None)
        if device not in self._platform and device != PLATFORM_ROOT and memdev is None:
            return None
        here = PLATFORM + device
        root = device == PLATFORM_ROOT
        names = list(self._platform.get(device, [])) + ([memdev.name] if memdev else [])

        def child(name: str) -> Node | None:
            if memdev and name == memdev.name:
                return self._memdev(memdev)
            if root and name == "root0":
                return self.cxl.enabled and self._port(self.cxl.root) or None
            return self.platform(device + (name,)) if name in self._platform.get(device, []) else None
        attrs = {"subsystem": lambda: Link(rel(here, ("bus", "platform")))}
        if root:  # cxl_acpi's: unbinding it takes the whole bus (cxl disable-bus)
            attrs["driver"] = lambda: self.cxl.enabled and Link(rel(here, PLATFORM_DRIVER)) or None
            names += ["root0"] if self.cxl.enabled else []
        if device in self._dports:  # its physical node is itself, as cxl_test's host bridges' (the JSON's alias)
            attrs["physical_node"] = lambda: Link(".")
        return table(attrs, lambda: names, child)

    # --- ports ------------------------------------------------------------------------------------------
    def _port(self, port: Port) -> Node:
        here = self.port_dir(port)
        attrs = {
            **self._common(here, "cxl_port"),
            "uport": lambda: Link(rel(here, PLATFORM + port.uport)),
            "parent_dport": lambda: port.parent_dport and Link(rel(here, PLATFORM + port.parent_dport.device)),
            "decoders_committed": lambda: _ro(lambda: f"{port.committed}\n"),
            "driver": lambda: self._driver_link(here, "cxl_port", port.kind != ROOT and port.enabled),
        }
        dports = {f"dport{d.id}": d for d in port.dports.values()}
        decoders = {d.name: d for d in port.decoders}

        def children() -> dict[str, Port]:
            return {p.name: p for p in self._ports() if p.parent is port}

        def names() -> list[str]:
            return list(dports) + list(decoders) + list(children())

        def child(name: str) -> Node | None:
            if name in dports:
                return Link(rel(here, PLATFORM + dports[name].device))
            if name in decoders:
                return self._decoder(decoders[name])
            found = children().get(name)
            return found and self._port(found)
        return table(attrs, names, child)

    # --- decoders ---------------------------------------------------------------------------------------
    def _decoder(self, d: Decoder) -> Node:
        here = self.decoder_dir(d)
        cxl = self.cxl
        attrs = {
            **self._common(here, _DECODER_TYPES[d.kind]),
            # 0400, as the kernel's: an address is root's to read
            "start": lambda: Attr(0o400, show=lambda: f"{_hex(phys_base() + d.start) if d.size else '0x0'}\n"),
            "size": lambda: _ro(lambda: f"{_hex(d.size)}\n"),
            "interleave_ways": lambda: _ro(lambda: f"{d.ways}\n"),
            "interleave_granularity": lambda: _ro(lambda: f"{d.granularity}\n"),
            "locked": lambda: _value("0"),
        }
        if d.kind != ENDPOINT:
            attrs["target_list"] = lambda: _ro(lambda: ",".join(map(str, d.targets[:d.ways])) + "\n")
        if d.kind != ROOT:
            attrs["target_type"] = lambda: _value("expander")
            attrs["region"] = lambda: _ro(lambda: f"{d.region.name if d.region else ''}\n")
        if d.kind == ENDPOINT:
            attrs.update({
                "mode": lambda: Attr(0o644, show=lambda: f"{d.mode}\n", store=_op(cxl.set_mode, d.name, parse=streq)),
                "dpa_resource": lambda: Attr(0o400, show=lambda: f"{_hex(d.dpa_start if d.dpa_size else NO_RESOURCE)}\n"),
                "dpa_size": lambda: Attr(0o644, show=lambda: f"0x{d.dpa_size:016x}\n",
                                         store=_op(cxl.set_dpa_size, d.name, parse=number)),
            })
        if d.kind != ROOT:
            return table(attrs)
        attrs.update({
            "cap_pmem": lambda: _value(str(int(d.pmem))), "cap_ram": lambda: _value(str(int(d.ram))),
            "cap_type2": lambda: _value("0"), "cap_type3": lambda: _value("1"),
            "qos_class": lambda: _value(str(QOS_CLASS)),
            "create_ram_region": lambda: d.ram and self._create(d, "ram") or None,
            "create_pmem_region": lambda: d.pmem and self._create(d, "pmem") or None,
            "delete_region": lambda: Attr(0o200, store=_op(cxl.delete_region, d.name, parse=streq)),
        })

        def regions() -> dict[str, Region]:
            return {r.name: r for r in cxl.regions.values() if r.root is d}
        return table(attrs, lambda: list(regions()), lambda name: (r := regions().get(name)) and self._region(r))

    def _create(self, d: Decoder, mode: str) -> Attr:
        return Attr(0o644, show=lambda: f"region{self.cxl.next_region_id()}\n",
                    store=_op(self.cxl.create_region, d.name, mode, parse=streq))

    # --- regions ------------------------------------------------------------------------------------------
    def _region(self, r: Region) -> Node:
        here = self.region_dir(r)
        cxl = self.cxl
        uuid = Attr(0o644, show=lambda: f"{r.uuid}\n", store=_op(cxl.set_uuid, r.name)) if r.mode == "pmem" \
            else _value("")  # a RAM region has none (kernels before 6.3 hid it: cxl-cli then lost the region)
        attrs = {
            **self._common(here, "cxl_region"),
            "uuid": lambda: uuid,
            "size": lambda: Attr(0o644, show=lambda: f"{_hex(r.size)}\n", store=_op(cxl.set_size, r.name, parse=number)),
            "resource": lambda: Attr(0o400, show=lambda: f"{_hex(phys_base() + r.start if r.size else NO_RESOURCE)}\n"),
            "interleave_ways": lambda: Attr(0o644, show=lambda: f"{r.ways}\n",
                                            store=_op(cxl.set_ways, r.name, parse=number)),
            "interleave_granularity": lambda: Attr(0o644, show=lambda: f"{r.granularity}\n",
                                                   store=_op(cxl.set_granularity, r.name, parse=number)),
            "commit": lambda: Attr(0o644, show=lambda: f"{int(r.committed)}\n",
                                   store=_op(cxl.set_commit, r.name, parse=kstrtobool)),
            "mode": lambda: _value(r.mode),
            "driver": lambda: self._driver_link(here, "cxl_region", r.bound),
            f"dax_region{r.id}": lambda: r.bound and r.id in self.bus.regions and Link(
                rel(here, PLATFORM + (f"daxfuse.{r.id}",))) or None,
        }

        def target(name: str) -> Node | None:
            position = parse_index(name[6:]) if name.startswith("target") else None
            if position is None or position >= r.ways:
                return None
            return Attr(0o644, show=lambda: f"{r.targets[position].name if r.targets[position] else ''}\n",
                        store=_op(cxl.set_target, r.name, position, parse=streq))
        return table(attrs, lambda: [f"target{i}" for i in range(r.ways)], target)

    # --- memdevs ------------------------------------------------------------------------------------------
    def _memdev(self, m: Memdev) -> Node:
        here = self.memdev_dir(m)

        def partition(size: int) -> Node:
            return table({"size": lambda: _value(_hex(size)), "qos_class": lambda: _value(str(QOS_CLASS))})
        return table({
            **self._common(here, "cxl_memdev"),
            "dev": lambda: _value(f"{CXL_MEM_MAJOR}:{m.id}"),
            "ram": lambda: partition(m.ram),
            "pmem": lambda: partition(m.pmem),
            "serial": lambda: _value(_hex(m.serial)),
            "numa_node": lambda: _value("0"),
            "firmware_version": lambda: _value(FIRMWARE_VERSION),
            "payload_max": lambda: _value(str(PAYLOAD_MAX)),
            "label_storage_size": lambda: _value(str(LSA_SIZE)),
            "security": lambda: table({"state": lambda: _value("disabled")}),
            # the firmware upload class device, idle: no update is taken (GET_FW_INFO has the one slot)
            "firmware": lambda: table({m.name: lambda: table({"status": lambda: _value("idle"),
                                                              "remaining_size": lambda: _value("0"),
                                                              "error": lambda: _value("")})}),
            "driver": lambda: self._driver_link(here, "cxl_mem", m.enabled),
            # cxl_mem's: the poison list, traced as cxl_poison events of the writer's pid
            "trigger_poison_list": lambda: m.enabled and Attr(0o200, store=functools.partial(self._trigger, m)) or None,
        })

    def _trigger(self, m: Memdev, data: str) -> list:
        """cxl_trigger_poison_list: each record of the memdev's poison list as a cxl_poison event."""
        if not kstrtobool(data):
            return []
        self.tracefs.emit([poison_event(WRITER.get(), m.name, m.device[-1], m.serial, p.region.name if p.region else "",
                                        phys_base() + p.hpa if p.hpa is not None else NO_RESOURCE, p.dpa, p.length,
                                        SOURCE_INJECTED, OVERFLOW if p.overflow else 0)
                           for p in self.cxl.poison_list(m)])
        return []

    # --- debugfs: /sys/kernel/debug/cxl ------------------------------------------------------------------
    def debugfs(self) -> Node:
        """cxl/memN of each bound memdev (cxl_mem_probe): its DPA resource
        tree (dpamem), and poison injection, as cxl-cli 84+ uses it."""
        def memdev(name: str) -> Node | None:
            m = next((m for m in self.cxl.memdevs.values() if m.name == name and m.enabled), None)
            if m is None:
                return None
            return table({"dpamem": lambda: _ro(functools.partial(self._dpamem, m)),
                          "inject_poison": lambda: Attr(0o200, store=_op(self.cxl.inject_poison, m.name, parse=number)),
                          "clear_poison": lambda: Attr(0o200, store=_op(self.cxl.clear_poison, m.name, parse=number))})
        return table({}, lambda: [m.name for m in self.cxl.memdevs.values() if m.enabled], memdev)

    @staticmethod
    def _dpamem(m: Memdev) -> str:
        """__cxl_dpa_debug: the DPA resource tree, two spaces a level."""
        def line(depth: int, start: int, size: int, name: str) -> str:
            return f"{'  ' * depth}{start:08x}-{start + size - 1:08x} : {name}\n"
        out = line(0, 0, m.ram + m.pmem, "dpa")
        for mode in ("ram", "pmem"):
            start, size = m.partition(mode)
            if size:
                out += line(1, start, size, mode)
                out += "".join(line(2, d.dpa_start, d.dpa_size, d.name) for d in m.endpoint.decoders
                               if d.dpa_size and d.mode == mode)
        return out

    def devts(self) -> dict:
        """/sys/dev/char entries of the memdevs."""
        return {f"{CXL_MEM_MAJOR}:{m.id}": functools.partial(lambda m: Link(rel(("dev", "char"), self.memdev_dir(m))), m)
                for m in self.cxl.memdevs.values()}

    # --- what a change makes stale --------------------------------------------------------------------
    def places(self, subject) -> list[tuple[tuple[str, ...], str]]:
        """Every entry a change to subject (a region, port or memdev) may add or remove."""
        devices = BUS + ("devices",)
        if type(subject) is Region:
            here = self.region_dir(subject)
            return [(self.decoder_dir(subject.root), subject.name), (devices, subject.name),
                    (BUS + ("drivers", "cxl_region"), subject.name), (here, "driver"), (here, f"dax_region{subject.id}"),
                    *((here, f"target{i}") for i in range(16))]
        if type(subject) is Port:
            here = self.port_dir(subject)
            root = [(PLATFORM + PLATFORM_ROOT, "driver"), (PLATFORM_DRIVER, PLATFORM_ROOT[0])] \
                if subject.kind == ROOT else []
            return [(here[:-1], subject.name), (devices, subject.name), (here, "driver"), *root,
                    (BUS + ("drivers", "cxl_port"), subject.name), *((devices, d.name) for d in subject.decoders)]
        if type(subject) is Memdev:  # cxl_mem's: its driver link, its debugfs, its trigger
            return [(self.memdev_dir(subject), "driver"), (BUS + ("drivers", "cxl_mem"), subject.name),
                    (DEBUGFS, subject.name), (self.memdev_dir(subject), "trigger_poison_list")]
        return []
