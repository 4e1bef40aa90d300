"""What a mount's CXL bus is made of: host bridges, root ports, switches,
memdevs and the root decoders' windows (CFMWS), read from a JSON file or the
default, which is shaped as the kernel's cxl_test (tools/testing/cxl):

    {"host_bridges": [{"root_ports": [{"switch": [{}, {}]}, {"memdev": {"ram": "512M"}}]}],
     "memdev": {"ram": "1G", "pmem": "1G"},
     "windows": [{"size": "1G", "targets": [0], "type": "ram", "granularity": 4096}]}

A root port holds a switch (a list of memdevs, one per downstream port) or
one memdev; a memdev given as {} takes "memdev"'s sizes. A window's targets
are host bridges by index (their order is the interleave), its type "ram",
"pmem" or both ("ram+pmem"). Every size is a multiple of 256 MiB (the CXL
partition and HPA granule).
"""
import errno
import json
from dataclasses import dataclass

from ..core.errors import DaxError
from ..core.units import parse_size

GRANULE = 256 << 20  # DPA partitions, HPA windows and interleave set sizes come in these
GRANULARITIES = tuple(256 << i for i in range(7))  # interleave granularity: 256 B to 16 KiB
WAYS = (1, 2, 4, 8, 16, 3, 6, 12)  # interleave ways a region may have (ways_to_eiw)
MAX_DPORT_WAYS = 8  # a switch or host bridge decoder interleaves across at most this many dports
DECODERS_PER_PORT = 8  # cxl_test's HDM decoder count, for every port and endpoint
LSA_SIZE = 128 << 10  # label storage area of each memdev
# Bounds a topology file is held to: each memdev keeps its label area in the daemon's memory,
# and every window is a range of the memory file's address space.
MAX_BRIDGES, MAX_MEMDEVS, MAX_WINDOWS = 16, 256, 16
MAX_CAPACITY = 1 << 40  # of a memdev's partition, and of a window


@dataclass(frozen=True)
class MemdevSpec:
    ram: int
    pmem: int


@dataclass(frozen=True)
class RootPortSpec:
    """Below a root port: a switch with a memdev per downstream port, or one memdev."""
    memdevs: tuple[MemdevSpec, ...]
    switch: bool


@dataclass(frozen=True)
class WindowSpec:
    size: int
    targets: tuple[int, ...]  # host bridge indexes, in interleave order
    ram: bool
    pmem: bool
    granularity: int


@dataclass(frozen=True)
class Topology:
    host_bridges: tuple[tuple[RootPortSpec, ...], ...]
    windows: tuple[WindowSpec, ...]


def _bad(what: str) -> DaxError:
    return DaxError(errno.EINVAL, f"CXL topology: {what}")


def _size(value, what: str, zero: bool = True) -> int:
    try:
        size = parse_size(str(value)) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    except DaxError:
        size = None
    if size is None or size % GRANULE or (not zero and not size) or size > MAX_CAPACITY:
        raise _bad(f"{what} {value!r} is not a {'positive ' if not zero else ''}multiple of 256M up to 1T")
    return size


def _memdev(spec, default: MemdevSpec, empty: bool = False) -> MemdevSpec:
    """A memdev's sizes, those it does not give default's; empty: may have no capacity (the default)."""
    if not isinstance(spec, dict) or set(spec) - {"ram", "pmem"}:
        raise _bad(f"a memdev is {{\"ram\": SIZE, \"pmem\": SIZE}}, not {spec!r}")
    memdev = MemdevSpec(_size(spec.get("ram", default.ram), "ram"), _size(spec.get("pmem", default.pmem), "pmem"))
    if not empty and not memdev.ram + memdev.pmem:
        raise _bad("a memdev with no capacity")
    return memdev


def _root_port(spec, default: MemdevSpec) -> RootPortSpec:
    if isinstance(spec, dict) and set(spec) == {"switch"} and isinstance(spec["switch"], list) \
            and 0 < len(spec["switch"]) <= MAX_DPORT_WAYS:
        return RootPortSpec(tuple(_memdev(m, default) for m in spec["switch"]), True)
    if isinstance(spec, dict) and set(spec) == {"memdev"}:
        return RootPortSpec((_memdev(spec["memdev"], default),), False)
    raise _bad(f"a root port is {{\"switch\": [1 to {MAX_DPORT_WAYS} memdevs]}} or {{\"memdev\": ...}}, not {spec!r}")


def _window(spec, bridges: int) -> WindowSpec:
    if not isinstance(spec, dict) or set(spec) - {"size", "targets", "type", "granularity"}:
        raise _bad(f"a window is {{\"size\", \"targets\", \"type\", \"granularity\"}}, not {spec!r}")
    targets = spec.get("targets")
    if not isinstance(targets, list) or len(targets) not in WAYS or len(set(targets)) != len(targets) \
            or not all(type(t) is int and 0 <= t < bridges for t in targets):
        raise _bad(f"window targets {targets!r}: distinct host bridge indexes, as many as a region may interleave")
    kinds = spec.get("type", "ram")
    if kinds not in ("ram", "pmem", "ram+pmem"):
        raise _bad(f"window type {kinds!r} is not ram, pmem or ram+pmem")
    granularity = spec.get("granularity", 4096)
    if type(granularity) is not int or granularity not in GRANULARITIES:
        raise _bad(f"window granularity {granularity!r} is not a power of 2 from 256 to 16384")
    size = _size(spec.get("size"), "window size", zero=False)
    if size % (GRANULE * len(targets)):
        raise _bad(f"window size {spec.get('size')!r} is not a multiple of 256M times its {len(targets)} targets")
    return WindowSpec(size, tuple(targets), "ram" in kinds, "pmem" in kinds, granularity)


def parse(text: str) -> Topology:
    """A topology from its JSON; EINVAL, saying where, for one that is not one."""
    try:
        spec = json.loads(text)
    except ValueError as e:
        raise _bad(f"not JSON ({e})") from None
    if not isinstance(spec, dict) or set(spec) - {"host_bridges", "memdev", "windows"}:
        raise _bad("the top level is {\"host_bridges\", \"memdev\", \"windows\"}")
    default = _memdev(spec.get("memdev", {"ram": "1G", "pmem": "1G"}), MemdevSpec(0, 0), empty=True)
    bridges = spec.get("host_bridges")
    if not isinstance(bridges, list) or not 0 < len(bridges) <= MAX_BRIDGES or not all(
            isinstance(b, dict) and set(b) == {"root_ports"} and isinstance(b["root_ports"], list)
            and 0 < len(b["root_ports"]) <= MAX_DPORT_WAYS for b in bridges):
        raise _bad(f"host_bridges is a list of 1 to {MAX_BRIDGES} {{\"root_ports\": [1 to {MAX_DPORT_WAYS} root ports]}}")
    host_bridges = tuple(tuple(_root_port(p, default) for p in b["root_ports"]) for b in bridges)
    if sum(len(p.memdevs) for b in host_bridges for p in b) > MAX_MEMDEVS:
        raise _bad(f"more than {MAX_MEMDEVS} memdevs")
    windows = spec.get("windows")
    if not isinstance(windows, list) or not 0 < len(windows) <= MAX_WINDOWS:
        raise _bad(f"windows is a list of 1 to {MAX_WINDOWS} windows")
    return Topology(host_bridges, tuple(_window(w, len(host_bridges)) for w in windows))


DEFAULT_TEXT = json.dumps({
    "host_bridges": [
        {"root_ports": [{"switch": [{}, {}]}, {"switch": [{}, {}]}]},
        {"root_ports": [{"switch": [{}, {}]}, {"switch": [{}, {}]}]},
        {"root_ports": [{"switch": [{}, {}]}]},
    ],
    "memdev": {"ram": "1G", "pmem": "1G"},
    "windows": [
        {"size": "1G", "targets": [0], "type": "ram"},
        {"size": "2G", "targets": [0, 1], "type": "ram"},
        {"size": "1G", "targets": [0], "type": "pmem"},
        {"size": "2G", "targets": [0, 1], "type": "pmem"},
        {"size": "1G", "targets": [2], "type": "pmem"},
    ],
})
DEFAULT = parse(DEFAULT_TEXT)
