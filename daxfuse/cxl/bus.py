"""The CXL bus: ports, memdevs, HDM decoders and regions, and every rule
about assembling a region (drivers/cxl/core/{port,hdm,region}.c), beside
the dax bus, which its RAM regions become dax regions of (drivers/dax/cxl.c).

Each operation runs inside DaxBus.apply, validates before it changes
anything, and fails with the kernel's errno: a batch with a dax operation
and a CXL one is all or nothing too. Undo restores what every object held
before the operation (a checkpoint: the bus is tens of objects).

Addresses: each root decoder's window (CFMWS) is a range of the memory
file that the dax bus keeps its own regions clear of, so a region's HPA is
where its memory lives, and its dax region lies exactly there. A region's
memory is linear in the window: interleaving routes nothing (the memory
file is one device).
"""
import dataclasses
import errno
import itertools

from ..core.errors import DaxError, shown
from ..core.packing import pack, unpack
from ..core.units import parse_index, size_text
from ..dax import DaxBus, Event, Range
from ..dax.badblocks import SECTOR
from ..dax.drivers import DEVICE_TYPE, KMEM_TYPE
from .objects import ENDPOINT, MODES, ROOT, SWITCH, Decoder, Dport, Memdev, Port, Region
from .topology import (DECODERS_PER_PORT, GRANULARITIES, GRANULE, LSA_SIZE, MAX_DPORT_WAYS, WAYS, Topology)

REGION_ALIGN = 2 << 20  # a CXL dax region's (drivers/dax/cxl.c)
POISON_UNIT = 64  # CXL media poison is tracked per 64 bytes; daxfuse's media errors per 512-byte sector
MAX_POISON = 1024  # records a poison list holds before it overflows


@dataclasses.dataclass(frozen=True)
class Poison:
    """A poison list record: where (DPA), how long, and where a bound region maps it."""
    dpa: int
    length: int
    region: Region | None
    hpa: int | None
    overflow: bool = False
PLATFORM_ROOT = ("cxl_acpi.0",)


def _pow2(n: int) -> bool:
    return n > 0 and not n & (n - 1)


def _busy(what: str) -> DaxError:
    return DaxError(errno.EBUSY, what)


class CxlBus:
    NAME = "cxl"

    def __init__(self, dax: DaxBus, topology: Topology, first_node: int) -> None:
        self.dax = dax
        self.topology = topology
        self.ports: dict[int, Port] = {}
        self.memdevs: dict[int, Memdev] = {}
        self.regions: dict[int, Region] = {}
        self._build(topology, first_node)
        self.placed = False  # windows given addresses (place_windows, or a restored record)
        self.enabled = True  # the root's platform device bound to cxl_acpi: the whole tree is there
        self._present: tuple = (None, set())  # (bindings, port ids): present()'s cache
        dax.beside.append(self)

    # --- the topology ---------------------------------------------------------------------------
    def _build(self, topology: Topology, first_node: int) -> None:
        """Ports numbered as the kernel enumerates them: root, host bridges,
        switches, then endpoints; memdevs in the order they hang."""
        port_ids, mem_ids = itertools.count(), itertools.count()
        root = self._port(next(port_ids), ROOT, PLATFORM_ROOT, None, None)
        root_port_ids, switch_dport_ids = itertools.count(), itertools.count()
        below: list[tuple[Port, Dport, list]] = []  # (port, dport, memdevs) of each root port, for the next level
        for b, root_ports in enumerate(topology.host_bridges):
            bridge = (f"cxl_host_bridge.{b}",)
            root.dports[b] = dport = Dport(b, bridge, None)
            hb = dport.child = self._port(next(port_ids), SWITCH, bridge, root, dport)
            for i, spec in enumerate(root_ports):
                rp = Dport(i, bridge + (f"cxl_root_port.{next(root_port_ids)}",), None)
                hb.dports[i] = rp
                below.append((hb, rp, spec))
        endpoints = []
        for hb, rp, spec in below:
            if not spec.switch:
                endpoints.append((rp, spec.memdevs[0]))
                continue
            uport = rp.device + (f"cxl_switch_uport.{rp.device[-1].rpartition('.')[2]}",)
            switch = rp.child = self._port(next(port_ids), SWITCH, uport, hb, rp)
            for i, memdev in enumerate(spec.memdevs):
                switch.dports[i] = dp = Dport(i, uport + (f"cxl_switch_dport.{next(switch_dport_ids)}",), None)
                endpoints.append((dp, memdev))
        for dport, spec in endpoints:
            mid = next(mem_ids)
            memdev = Memdev(mid, spec.ram, spec.pmem, dport.device + (f"cxl_mem.{mid}",), dport)
            dport.child = memdev
            parent = self._parent_of(dport)
            memdev.endpoint = self._port(next(port_ids), ENDPOINT, memdev.device + (memdev.name,), parent, dport)
            self.memdevs[mid] = memdev
        for i, window in enumerate(topology.windows):
            d = Decoder(root, i, size=window.size, ways=len(window.targets), granularity=window.granularity,
                        targets=list(window.targets), ram=window.ram, pmem=window.pmem,
                        node=first_node + i if window.ram else -1, committed=True)
            root.decoders.append(d)

    def _port(self, id_: int, kind: str, uport: tuple[str, ...], parent: Port | None, dport: Dport | None) -> Port:
        port = self.ports[id_] = Port(id_, kind, uport, parent, dport)
        if kind != ROOT:
            port.decoders = [Decoder(port, i, targets=[0]) for i in range(DECODERS_PER_PORT)]
        return port

    def _parent_of(self, dport: Dport) -> Port:
        return next(p for p in self.ports.values() if any(d is dport for d in p.dports.values()))

    @property
    def root(self) -> Port:
        return self.ports[0]

    def windows(self) -> list[Range]:
        """The root decoders' windows, which the dax bus keeps its own regions out of."""
        return [Range(d.start, d.start + d.size) for d in self.root.decoders] if self.placed else []

    def held_ids(self) -> set[int]:
        """The ids of its regions, bound or not: their dax regions are its own."""
        return set(self.regions)

    def place_windows(self) -> None:
        """Give each window its addresses: above every region there is now,
        each aligned to its size's power of 2 (at most 1 GiB), as firmware
        lays CFMWS out. Once, for a layout that has none, before it serves."""
        self._checkpoint()
        end = max([0] + [r.res.end for r in self.dax.regions.values()])
        for d in self.root.decoders:
            align = min(1 << 30, 1 << (d.size.bit_length() - 1))
            d.start = -(-end // align) * align
            end = d.start + d.size
        self.placed = True

    # --- lookups --------------------------------------------------------------------------------
    def present(self, port: Port) -> bool:
        """Whether a port is registered: the root and host bridges' always;
        a switch's while an enabled memdev is below it (cxl_detach_ep
        removes it with the last); an endpoint's while its memdev is enabled."""
        return port.id in self._present_ports()

    def _present_ports(self) -> set[int]:
        """The ids of the ports present, worked out once for each state of the bindings."""
        key = (self.enabled, tuple(m.enabled for m in self.memdevs.values()))
        if self._present[0] != key:
            ids = {p.id for p in self.ports.values() if p.kind == ROOT or p.parent is self.root} if self.enabled else set()
            if self.enabled:
                ids.update(p.id for m in self.memdevs.values() if m.enabled for p in m.endpoint.path())
            self._present = (key, ids)
        return self._present[1]

    def memdev_of(self, endpoint: Port) -> Memdev:
        return next(m for m in self.memdevs.values() if m.endpoint is endpoint)

    def decoder(self, name: str) -> Decoder:
        """decoderP.D of a registered port: ENODEV else, as a name no device has."""
        port_id, dot, dec_id = name.removeprefix("decoder").partition(".")
        port = self.ports.get(parse_index(port_id)) if name.startswith("decoder") and dot else None
        index = parse_index(dec_id)
        if port is None or not self.present(port) or index is None or index >= len(port.decoders):
            raise DaxError(errno.ENODEV, f"no decoder {shown(name)}")
        return port.decoders[index]

    def region(self, name: str) -> Region:
        found = self.regions.get(parse_index(name[6:])) if name.startswith("region") else None
        if found is None:
            raise DaxError(errno.ENODEV, f"no region {shown(name)}")
        return found

    def memdev(self, name: str) -> Memdev:
        found = self.memdevs.get(parse_index(name[3:])) if name.startswith("mem") else None
        if found is None:
            raise DaxError(errno.ENODEV, f"no memdev {shown(name)}")
        return found

    def next_region_id(self) -> int:
        """What a root decoder's create_*_region shows: the lowest id free in
        the memregion ida, which nd and dax regions share."""
        return next(i for i in itertools.count() if i not in self.regions and i not in self.dax.regions)

    def hdm_end(self, memdev: Memdev) -> int:
        """The id of the last endpoint decoder with DPA, -1 for none (DPA is allocated in decoder order)."""
        return max([d.id for d in memdev.endpoint.decoders if d.dpa_size] + [-1])

    def free_dpa(self, memdev: Memdev, mode: str) -> tuple[int, int]:
        """(start, size) of what is left of a partition: allocations go up from its start, in decoder order."""
        start, size = memdev.partition(mode)
        used = max([start] + [d.dpa_start + d.dpa_size for d in memdev.endpoint.decoders if d.dpa_size])
        return used, max(0, start + size - used)

    # --- transactions ---------------------------------------------------------------------------
    def _checkpoint(self, *subjects) -> None:
        """Record how to put every object back as it is now, and that
        subjects (what the operation changes) change."""
        objects = [self, *self.ports.values(), *self.memdevs.values(), *self.regions.values(),
                   *(d for p in self.ports.values() for d in p.decoders)]
        saved = [(o, {k: v.copy() if type(v) in (list, dict) else v for k, v in vars(o).items()}) for o in objects]

        def undo() -> None:
            for o, state in saved:
                o.__dict__.clear()
                o.__dict__.update(state)
        self.dax.record(undo, *(self.dax.notify(Event.CXL, s) for s in subjects))

    # --- regions: create_*_region, delete_region (a root decoder's) -----------------------------
    def create_region(self, root_name: str, mode: str, name: str) -> Region:
        root = self.decoder(root_name)
        if root.kind != ROOT or mode not in MODES or not getattr(root, mode):
            raise DaxError(errno.EOPNOTSUPP, f"{root_name} cannot hold {mode} regions")
        if name != f"region{self.next_region_id()}":
            raise _busy(f"{shown(name)} is not the next region, region{self.next_region_id()}")
        region = Region(self.next_region_id(), root, mode)
        self._checkpoint(region)
        self.regions[region.id] = region
        return region

    def delete_region(self, root_name: str, name: str) -> None:
        root, region = self.decoder(root_name), self.region(name)
        if region.root is not root:
            raise DaxError(errno.ENODEV, f"{name} is not under {root_name}")
        self._tear_down(region, [i for i, d in enumerate(region.targets) if d is not None])
        del self.regions[region.id]

    # --- a region's attributes ------------------------------------------------------------------
    def _unsized(self, region: Region) -> None:
        if region.size:
            raise _busy(f"{region.name} has a size: set it to 0 first")

    def set_granularity(self, name: str, value: int) -> None:
        region = self.region(name)
        root = region.root
        if value not in GRANULARITIES:
            raise DaxError(errno.EINVAL, f"interleave granularity {value} is not a power of 2 from 256 to 16384")
        if root.ways > 1 and value != root.granularity:
            raise DaxError(errno.EINVAL, f"{root.name} interleaves {root.ways} ways at {root.granularity}: "
                                         f"a region under it has that granularity")
        self._unsized(region)
        self._checkpoint(region)
        region.granularity = value

    def set_ways(self, name: str, value: int) -> None:
        region = self.region(name)
        root = region.root
        if value not in WAYS or value % root.ways or not _pow2(value // root.ways):
            raise DaxError(errno.EINVAL, f"{value} ways: a region under {root.name} ({root.ways} ways) interleaves "
                                         f"a power of 2 times {root.ways} ways, up to 16")
        self._unsized(region)
        self._checkpoint(region)
        region.ways = value
        region.targets = [None] * value

    def set_uuid(self, name: str, value: str) -> None:
        region = self.region(name)
        if region.mode != "pmem":
            raise DaxError(errno.EACCES, f"{name} is a ram region: its uuid is not set")
        if len(value) != 36 or value.strip("-0") == "" or not all(c in "0123456789abcdefABCDEF-" for c in value):
            raise DaxError(errno.EINVAL, f"{shown(value)} is not a uuid")
        if region.size or region.committed:
            raise _busy(f"{name} is sized: its uuid is set")
        if any(r.uuid.lower() == value.lower() for r in self.regions.values() if r is not region):
            raise _busy(f"uuid {value} is another region's")
        self._checkpoint(region)
        region.uuid = value.lower()

    def set_size(self, name: str, size: int) -> None:
        """alloc_hpa / free_hpa: the first gap of the window that fits, in 256M steps."""
        region = self.region(name)
        if region.active:
            raise _busy(f"{name} has all its targets: its size is fixed")
        if not size:
            self._checkpoint(region)
            region.start = region.size = 0
            return
        if not region.ways or not region.granularity or (region.mode == "pmem" and not region.uuid):
            raise DaxError(errno.ENXIO, f"{name}: set interleave_ways, interleave_granularity"
                                        f"{' and uuid' if region.mode == 'pmem' else ''} first")
        if size % (GRANULE * region.ways):
            raise DaxError(errno.EINVAL, f"size {size:#x} is not a multiple of 256M times {region.ways} ways")
        if region.size:
            if region.size == size:
                return
            raise _busy(f"{name} has {size_text(region.size)}: set 0 first")
        root = region.root
        taken = sorted((r.start, r.start + r.size) for r in self.regions.values() if r.root is root and r.size)
        cursor, start = root.start, None
        for lo, hi in taken + [(root.start + root.size, None)]:
            if lo - cursor >= size:
                start = cursor
                break
            cursor = max(cursor, hi or cursor)
        if start is None:
            raise DaxError(errno.ERANGE, f"{root.name} has no free {size_text(size)} left")
        self._checkpoint(region)
        region.start, region.size = start, size

    def set_target(self, name: str, position: int, decoder_name: str) -> None:
        """targetN: attach an endpoint decoder (cxl_region_attach), or detach with ""."""
        region = self.region(name)
        if position >= region.ways:
            raise DaxError(errno.ENXIO, f"{name} has {region.ways} positions")
        if not decoder_name:
            self._detach(region, position)
            return
        d = self.decoder(decoder_name)
        if d.kind != ENDPOINT:
            raise DaxError(errno.EINVAL, f"{decoder_name} is not an endpoint decoder")
        if region.active or region.committed:
            raise _busy(f"{name} has all its targets")
        if d.mode != region.mode:
            raise DaxError(errno.EINVAL, f"{decoder_name} decodes {d.mode}, {name} is {region.mode}")
        if not region.size:
            raise DaxError(errno.ENXIO, f"{name} has no size yet")
        if d.region is not None:
            raise _busy(f"{decoder_name} is in {d.region.name}")
        if not d.dpa_size:
            raise DaxError(errno.ENXIO, f"{decoder_name} has no DPA")
        if d.dpa_size * region.ways != region.size:
            raise DaxError(errno.EINVAL, f"{decoder_name} holds {size_text(d.dpa_size)}; {name} needs "
                                         f"{size_text(region.size // region.ways)} from each of {region.ways}")
        if region.targets[position] is not None:
            raise _busy(f"position {position} of {name} is {region.targets[position].name}'s")
        memdev = self.memdev_of(d.port)
        if any(t is not None and self.memdev_of(t.port) is memdev for t in region.targets):
            raise _busy(f"{memdev.name} is in {name} already")
        root = region.root
        bridge = memdev.endpoint.path()[1]
        if root.targets[position % root.ways] != bridge.parent_dport.id:
            raise DaxError(errno.ENXIO, f"position {position} of {name} is behind host bridge "
                                        f"{root.targets[position % root.ways]}, {memdev.name} is not")
        self._checkpoint(region, d)
        region.targets[position] = d
        d.region = region
        if region.active:
            self._activate(region)

    def _detach(self, region: Region, position: int) -> None:
        if region.committed:
            raise _busy(f"{region.name} is committed: reset it first")
        d = region.targets[position]
        if d is None:
            return
        self._checkpoint(region, d)
        self._deactivate(region)
        region.targets[position] = None
        d.region = None

    def _routes(self, region: Region) -> dict[Port, tuple[list[Dport], int]]:
        """cxl_port_setup_targets for each switch port the region passes
        through: the dports it interleaves across, in order, and the ways of
        all above it (D), where position p goes to dport (p / D) % ways.
        ENXIO for a layout no decoder could route."""
        by_port: dict[Port, dict[int, Dport]] = {}
        for position, d in enumerate(region.targets):
            for port, child in zip(d.port.path()[1:-1], d.port.path()[2:]):
                by_port.setdefault(port, {})[position] = child.parent_dport
        routes: dict[Port, tuple[list[Dport], int]] = {}
        for port in sorted(by_port, key=lambda p: p.depth):
            dports = list(dict.fromkeys(by_port[port].values()))
            ways = len(dports)
            if not _pow2(ways) or ways > MAX_DPORT_WAYS:
                raise DaxError(errno.ENXIO, f"{port.name} would interleave {ways} ways")
            above = region.root.ways
            for ancestor in port.path()[1:-1]:
                above *= len(routes[ancestor][0])
            for position, dport in by_port[port].items():
                if dports[(position // above) % ways] is not dport:
                    raise DaxError(errno.ENXIO, f"position {position} of {region.name} cannot reach "
                                                f"{port.name}'s dport {dport.id} in interleave order")
            routes[port] = dports, above
        return routes

    def _activate(self, region: Region, chosen: list[Decoder] | None = None) -> None:
        """The last target arrived: every port on the way gets a free
        decoder (or the one chosen, a restored layout's) that routes the region."""
        routes = self._routes(region)
        taken = []
        for port in routes:
            free = next((d for d in port.decoders if d.region is None and not d.committed and
                         (chosen is None or d in chosen)), None)
            if free is None:
                raise _busy(f"{port.name} has no free decoder")
            if any(d.region is not None and d.start > region.start for d in port.decoders):
                raise _busy(f"{port.name} decodes a region above {region.name}: regions attach in HPA order")
            taken.append((port, free))
        for port, d in taken:
            dports, above = routes[port]
            d.region, d.ways, d.granularity = region, len(dports), region.granularity * above
            d.targets = [dp.id for dp in dports]
            d.start, d.size = region.start, region.size
        for d in region.targets:
            d.ways, d.granularity, d.start, d.size = region.ways, region.granularity, region.start, region.size

    def _deactivate(self, region: Region) -> None:
        for port in self.ports.values():
            for d in port.decoders:
                if d.region is region and port.kind == SWITCH:
                    d.region, d.start, d.size, d.ways, d.granularity, d.targets = None, 0, 0, 1, 256, [0]
        for d in region.targets:
            if d is not None:
                d.start, d.size, d.ways, d.granularity = 0, 0, 1, 256

    def decoders_of(self, region: Region) -> list[Decoder]:
        """The region's decoders below the root, endpoints first (commit order: bottom up)."""
        return sorted((d for p in self.ports.values() if p.kind != ROOT for d in p.decoders if d.region is region),
                      key=lambda d: -d.port.depth)

    def set_commit(self, name: str, commit: bool) -> None:
        region = self.region(name)
        if commit == region.committed:
            return
        decoders = self.decoders_of(region)
        if commit:
            if not region.active:
                raise DaxError(errno.ENXIO, f"{name} is missing targets")
            for d in decoders:
                if d.id != d.port.committed:
                    raise _busy(f"{d.name} would commit out of order: {d.port.name} has {d.port.committed} committed")
            self._checkpoint(region, *decoders)
            for d in decoders:
                d.committed = True
            region.committed = True
            return
        if region.bound:
            self._unbind_region(region)
        self._checkpoint(region, *decoders)
        self._reset(region)

    def _reset(self, region: Region) -> None:
        """Decode reset, top down; each port's last committed first."""
        for d in reversed(self.decoders_of(region)):
            if d.id != d.port.committed - 1:
                raise _busy(f"{d.name} would reset out of order: {d.port.name}'s decoder{d.port.id}."
                            f"{d.port.committed - 1} first")
            d.committed = False
        region.committed = False

    # --- an endpoint decoder's DPA ---------------------------------------------------------------
    def _endpoint_decoder(self, name: str) -> Decoder:
        d = self.decoder(name)
        if d.kind != ENDPOINT:
            raise DaxError(errno.EINVAL, f"{name} is not an endpoint decoder")
        return d

    def set_mode(self, name: str, mode: str) -> None:
        d = self._endpoint_decoder(name)
        if mode not in MODES:
            raise DaxError(errno.EINVAL, f"mode {shown(mode)} is not ram or pmem")
        if d.committed or d.region is not None:
            raise _busy(f"{name} is in {d.region.name if d.region else 'use'}")
        if d.dpa_size:
            raise _busy(f"{name} holds DPA: free it (dpa_size 0) first")
        if not self.memdev_of(d.port).partition(mode)[1]:
            raise DaxError(errno.ENXIO, f"{self.memdev_of(d.port).name} has no {mode} capacity")
        self._checkpoint(d)
        d.mode = mode

    def set_dpa_size(self, name: str, size: int) -> None:
        d = self._endpoint_decoder(name)
        memdev = self.memdev_of(d.port)
        if size % GRANULE:
            raise DaxError(errno.EINVAL, f"DPA size {size:#x} is not a multiple of 256M")
        if d.committed or d.region is not None:
            raise _busy(f"{name} is in {d.region.name if d.region else 'use'}")
        if size == d.dpa_size:
            return
        if not size:
            if d.id != self.hdm_end(memdev):
                raise _busy(f"{name} is not {memdev.name}'s last allocation: free those after it first")
            self._checkpoint(d)
            d.dpa_start = d.dpa_size = 0
            return
        if d.dpa_size:
            raise _busy(f"{name} holds {size_text(d.dpa_size)}: free it first")
        if d.id != self.hdm_end(memdev) + 1:
            raise _busy(f"{name} is out of order: {memdev.name} allocates decoder{d.port.id}."
                        f"{self.hdm_end(memdev) + 1} next")
        if d.mode not in MODES:
            raise _busy(f"{name} has no mode (ram or pmem) yet")
        start, room = self.free_dpa(memdev, d.mode)
        if size > room:
            raise DaxError(errno.ENOSPC, f"{memdev.name} has {size_text(room)} of {d.mode} left, not {size_text(size)}")
        self._checkpoint(d)
        d.dpa_start, d.dpa_size = start, size

    # --- drivers: cxl_region, cxl_mem, cxl_port ----------------------------------------------------
    def bind_region(self, name: str) -> None:
        """cxl_region_probe: a committed RAM region becomes dax region N
        whose one device binds kmem; a PMEM one a dax region of devdax type
        (the nd region the kernel would make), its namespace not yet made."""
        region = self.region(name)
        if region.bound:
            raise _busy(f"{name} is bound")
        if not region.committed:
            raise DaxError(errno.ENXIO, f"{name} is not committed")
        self._checkpoint(region)
        region.bound = True
        ram = region.mode == "ram"
        self.dax.create_region(region.size, REGION_ALIGN, region.id, region.root.node if ram else -1, -1,
                               KMEM_TYPE if ram else DEVICE_TYPE, start=region.start)
        for d in region.targets:  # the poison of the DPA it maps is now its memory's
            memdev = self.memdev_of(d.port)
            mapped = [p for p in memdev.poison if d.dpa_start <= p[0] < d.dpa_start + d.dpa_size]
            if mapped:
                self._checkpoint(memdev)
                memdev.poison = [p for p in memdev.poison if p not in mapped]
                for dpa, _ in mapped:
                    hpa = self.dpa_to_hpa(memdev, dpa)
                    self.dax.inject_physical(hpa - hpa % SECTOR, SECTOR)
        if ram:
            self.dax.create_device(region.id)

    def unbind_region(self, name: str) -> None:
        region = self.region(name)
        if not region.bound:
            raise DaxError(errno.ENODEV, f"{name} is not bound")
        self._unbind_region(region)

    def _unbind_region(self, region: Region) -> None:
        """Its dax region goes, devices first: EBUSY while kmem has memory of
        it online. Its media errors go back to the memdevs' DPA, where they are."""
        self._checkpoint(region, *(self.memdev_of(d.port) for d in region.targets))
        dax_region = self.dax.region(region.id)
        for dev in sorted(dax_region.devices.values(), key=lambda d: d.id):
            self.dax.disable_device(dev.name)
            if dev.size:
                self.dax.resize_device(dev.name, 0)
        for d in region.targets:
            memdev = self.memdev_of(d.port)
            memdev.poison = sorted(set(memdev.poison) | {(p.dpa, p.length) for p in self._mapped_poison(d, 1 << 20)})
        if self.dax.badblocks.within(region.start // SECTOR, region.size // SECTOR):
            self.dax.clear_physical(region.start, region.size)
        self.dax.destroy_region(region.id, beside=True)
        region.bound = False

    def _kill_regions(self, memdevs: list[Memdev]) -> None:
        """cxl_decoder_kill_region for every region with a target on memdevs: unbound, reset, that target detached."""
        for region in list(self.regions.values()):
            lost = [i for i, d in enumerate(region.targets) if d is not None and self.memdev_of(d.port) in memdevs]
            if lost:
                self._tear_down(region, lost)

    def _tear_down(self, region: Region, positions: list[int]) -> None:
        """cxl_region_detach of the targets at positions: the region unbound, reset, its ports' decoders freed."""
        if region.bound:
            self._unbind_region(region)
        self._checkpoint(region)
        if region.committed:
            self._reset(region)
        self._deactivate(region)
        for i in positions:
            region.targets[i].region = None
            region.targets[i] = None

    def disable_memdev(self, name: str) -> None:
        """cxl_mem unbound: its endpoint and decoders go (their DPA with them), and its regions lose it."""
        memdev = self.memdev(name)
        if not memdev.enabled:
            raise DaxError(errno.ENODEV, f"{name} is not bound")
        self._kill_regions([memdev])
        self._checkpoint(memdev, *self._chain(memdev))
        self._unbind_memdev(memdev)

    @staticmethod
    def _unbind_memdev(memdev: Memdev) -> None:
        """Unbound from cxl_mem: its endpoint's decoders go, and their DPA with them."""
        memdev.enabled = False
        for d in memdev.endpoint.decoders:
            d.mode, d.dpa_start, d.dpa_size = "none", 0, 0

    def _chain(self, memdev: Memdev) -> list[Port]:
        return memdev.endpoint.path()[1:]

    def enable_memdev(self, name: str) -> None:
        """cxl_mem bound: its endpoint comes back, and the switch ports above it (ENXIO under a disabled port)."""
        memdev = self.memdev(name)
        if memdev.enabled:
            raise _busy(f"{name} is bound")
        off = next((p for p in memdev.endpoint.path() if not p.enabled and self.present(p)), None)
        if off is not None:
            raise DaxError(errno.ENXIO, f"{off.name} is disabled: enable it first")
        self._checkpoint(memdev, *self._chain(memdev))
        memdev.enabled = True
        for port in self._chain(memdev):
            port.enabled = True

    def disable_port(self, name: str) -> None:
        """cxl_port unbound: every memdev below goes with its regions, and
        the switch ports with them; a host bridge's port stays, disabled."""
        port = self._port_named(name)
        if port.kind == ROOT or not port.enabled:
            raise DaxError(errno.ENODEV, f"{name} is not bound to cxl_port")
        below = [m for m in self.memdevs.values() if m.enabled and port in m.endpoint.path()]
        self._kill_regions(below)
        self._checkpoint(port, *below, *{p for m in below for p in self._chain(m)})
        for m in below:
            self._unbind_memdev(m)
        port.enabled = False

    def enable_port(self, name: str) -> None:
        port = self._port_named(name)
        if port.kind == ROOT or port.enabled:
            raise DaxError(errno.ENODEV if port.kind == ROOT else errno.EBUSY, f"{name} is bound already")
        self._checkpoint(port)
        port.enabled = True

    def disable_bus(self) -> None:
        """cxl_acpi unbound (cxl disable-bus): everything below root0 goes,
        its regions deleted with their root decoders, every memdev without
        its endpoint (a host bridge's disabled port included)."""
        if not self.enabled:
            raise DaxError(errno.ENODEV, "cxl_acpi.0 is not bound")
        for region in list(self.regions.values()):
            self._tear_down(region, [i for i, d in enumerate(region.targets) if d is not None])
            del self.regions[region.id]
        self._checkpoint(*self.ports.values(), *self.memdevs.values())
        for m in self.memdevs.values():
            self._unbind_memdev(m)
        self.enabled = False

    def enable_bus(self) -> None:
        """cxl_acpi bound again: the tree is enumerated afresh, every memdev probed."""
        if self.enabled:
            raise _busy("cxl_acpi.0 is bound")
        self._checkpoint(*self.ports.values(), *self.memdevs.values())
        self.enabled = True
        for port in self.ports.values():
            port.enabled = True
        for m in self.memdevs.values():
            m.enabled = True

    def _port_named(self, name: str) -> Port:
        port = next((p for p in self.ports.values() if p.name == name and self.present(p)), None)
        if port is None:
            raise DaxError(errno.ENODEV, f"no port {shown(name)}")
        return port

    # --- a memdev's label storage area and poison --------------------------------------------------
    @staticmethod
    def check_lsa(offset: int, length: int) -> None:
        """A span of a memdev's label storage area: EINVAL past its end."""
        if offset + length > LSA_SIZE:
            raise DaxError(errno.EINVAL, f"{offset:#x}+{length:#x} is past the {LSA_SIZE}-byte label storage area")

    def write_lsa(self, name: str, offset: int, data: bytes) -> None:
        memdev = self.memdev(name)
        self.check_lsa(offset, len(data))
        old = bytes(memdev.lsa[offset:offset + len(data)])
        memdev.lsa[offset:offset + len(data)] = data
        self.dax.record(lambda: memdev.lsa.__setitem__(slice(offset, offset + len(data)), old))

    def dpa_to_hpa(self, memdev: Memdev, dpa: int) -> int | None:
        """cxl_dpa_to_hpa: where a bound region maps a memdev's DPA, its
        decoder's share interleaved by position and granularity; None where none does."""
        for d in memdev.endpoint.decoders:
            region = d.region
            if region is None or not region.bound or not d.dpa_start <= dpa < d.dpa_start + d.dpa_size:
                continue
            offset, g = dpa - d.dpa_start, region.granularity
            return region.start + ((offset // g) * region.ways + region.targets.index(d)) * g + offset % g
        return None

    def poison_list(self, memdev: Memdev) -> list[Poison]:
        """What GET_POISON_LIST would answer, as cxl_trigger_poison_list
        traces it: the media errors of memory a bound region maps there (in
        DPA, each piece of a 512-byte sector the interleave puts on this
        memdev), and what was injected at a DPA no bound region maps; at most
        MAX_POISON records, the last flagged overflow."""
        found: list[Poison] = []
        for d in memdev.endpoint.decoders:
            if d.region is not None and d.region.bound and d.dpa_size:
                found += self._mapped_poison(d, MAX_POISON + 1 - len(found))
        found += [Poison(dpa, length, None, None) for dpa, length in memdev.poison]
        if len(found) > MAX_POISON:
            return found[:MAX_POISON - 1] + [dataclasses.replace(found[MAX_POISON - 1], overflow=True)]
        return found

    def _mapped_poison(self, d: Decoder, most: int) -> list[Poison]:
        """The media errors of the memory a bound region maps through endpoint
        decoder d, in d's DPA (each piece of a 512-byte sector the interleave
        puts there, one record a run), at most most of them."""
        region, found = d.region, []
        g, ways, position = region.granularity, region.ways, region.targets.index(d)
        step = min(g, SECTOR)
        for sector, count in self.dax.badblocks.within(region.start // SECTOR, region.size // SECTOR):
            for hpa in range(sector * SECTOR, (sector + count) * SECTOR, step):
                offset = hpa - region.start
                if (offset // g) % ways != position:
                    continue
                if len(found) >= most:
                    return found
                dpa = d.dpa_start + (offset // g // ways) * g + offset % g
                if found and found[-1].dpa + found[-1].length == dpa:
                    found[-1] = dataclasses.replace(found[-1], length=found[-1].length + step)
                else:
                    found.append(Poison(dpa, step, region, hpa))
        return found

    def _poison_dpa(self, name: str, dpa: int) -> Memdev:
        """cxl_validate_poison_dpa: a 64-byte aligned DPA of an enabled memdev's capacity."""
        memdev = self.memdev(name)
        if not memdev.enabled:
            raise DaxError(errno.ENXIO, f"{name} is not bound")
        if dpa % POISON_UNIT or dpa >= memdev.ram + memdev.pmem:
            raise DaxError(errno.EINVAL, f"DPA {dpa:#x} is not {POISON_UNIT}-byte aligned within {name}'s "
                                         f"{size_text(memdev.ram + memdev.pmem)}")
        return memdev

    def inject_poison(self, name: str, dpa: int) -> None:
        """debugfs inject_poison: the 64 bytes at dpa are poisoned. Where a
        bound region maps them, its memory is (a media error, which the
        region hands back to the memdev when it is unbound); else the
        memdev's own list holds them (until a region maps them)."""
        memdev = self._poison_dpa(name, dpa)
        hpa = self.dpa_to_hpa(memdev, dpa)
        self._checkpoint(memdev)
        if hpa is not None:
            self.dax.inject_physical(hpa - hpa % SECTOR, SECTOR)
        else:
            memdev.poison = sorted(set(memdev.poison) | {(dpa, POISON_UNIT)})

    def clear_poison(self, name: str, dpa: int) -> None:
        """debugfs clear_poison: the memory a bound region maps there clean, or off the memdev's list."""
        memdev = self._poison_dpa(name, dpa)
        hpa = self.dpa_to_hpa(memdev, dpa)
        self._checkpoint(memdev)
        if hpa is not None:
            self.dax.clear_physical(hpa - hpa % SECTOR, SECTOR)
        else:
            memdev.poison = [p for p in memdev.poison if p[0] != dpa]

    # --- the layout record --------------------------------------------------------------------------
    def snapshot(self) -> dict:
        return {
            "bus": self.enabled,
            "windows": [d.start for d in self.root.decoders],
            "bridges": [d.child.enabled for d in self.root.dports.values()],
            "memdevs": [{"enabled": m.enabled, "lsa": pack(m.lsa), "poison": [list(p) for p in m.poison],
                         "decoders": [[d.id, d.mode, d.dpa_start, d.dpa_size] for d in m.endpoint.decoders
                                      if d.mode != "none"]}
                        for m in self.memdevs.values()],
            "regions": [{"id": r.id, "root": r.root.id, "mode": r.mode, "uuid": r.uuid,
                         "granularity": r.granularity, "ways": r.ways, "start": r.start, "size": r.size,
                         "targets": [d and d.name for d in r.targets], "committed": r.committed, "bound": r.bound,
                         "decoders": [d.name for d in self.decoders_of(r) if d.kind == SWITCH]}
                        for r in sorted(self.regions.values(), key=lambda r: r.id)],
        }

    def restore(self, record: dict) -> None:
        """The state a record holds, on this mount's topology: EINVAL if it
        does not fit it (another topology) or does not make sense."""
        try:
            self._restore(record)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, DaxError) as e:
            raise DaxError(errno.EINVAL, f"the layout's CXL part does not fit this topology: {e}") from None

    def _restore(self, record: dict) -> None:
        windows, bridges, memdevs = record["windows"], record["bridges"], record["memdevs"]
        if len(windows) != len(self.root.decoders) or len(bridges) != len(self.root.dports) \
                or len(memdevs) != len(self.memdevs):
            raise ValueError("another number of windows, host bridges or memdevs")
        self.enabled = bool(record.get("bus", True))
        for d, start in zip(self.root.decoders, windows):
            d.start = _whole(start)
        for dport, enabled in zip(self.root.dports.values(), bridges):
            dport.child.enabled = bool(enabled)
        for m, r in zip(self.memdevs.values(), memdevs):
            m.enabled = bool(r["enabled"])
            m.poison = [(_whole(dpa), _whole(length)) for dpa, length in r.get("poison", [])]
            lsa = unpack(r["lsa"], LSA_SIZE)
            m.lsa[:len(lsa)] = lsa
            for id_, mode, start, size in r["decoders"]:
                d = m.endpoint.decoders[id_]
                if mode not in MODES or start + size > sum(m.partition(mode)):
                    raise ValueError(f"{d.name}'s DPA")
                d.mode, d.dpa_start, d.dpa_size = mode, _whole(start), _whole(size)
        for r in record["regions"]:
            region = self.regions[_whole(r["id"])] = Region(r["id"], self.root.decoders[r["root"]], r["mode"],
                                                           str(r["uuid"]), r["granularity"], r["ways"],
                                                           _whole(r["start"]), _whole(r["size"]))
            region.targets = [name and self.decoder(name) for name in r["targets"]]
            for d in region.targets:
                if d is not None:
                    d.region = region
        # the ports' decoders as they were: regions set up in HPA order, as each port requires
        for r in sorted(record["regions"], key=lambda r: r["start"]):
            region = self.regions[r["id"]]
            if region.active:
                self._activate(region, [self.decoder(name) for name in r["decoders"]])
            if r["committed"]:
                for d in self.decoders_of(region):
                    d.committed = True
                region.committed = True
            region.bound = bool(r["bound"])
            if region.bound != (region.id in self.dax.regions):
                raise ValueError(f"{region.name} and dax region {region.id} disagree")
        self.placed = True


def _whole(value) -> int:
    if type(value) is not int or value < 0:
        raise ValueError(f"{value!r} is not a whole number")
    return value
