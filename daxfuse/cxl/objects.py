"""The CXL bus's objects, as drivers/cxl/cxl.h has them: ports with their
downstream ports (dports) and HDM decoders, memdevs and regions. Plain
state: every rule about changing it is in bus.py.

Where the objects sit (platform device paths, under /sys/devices/platform)
is fixed by the topology; what is enabled, allocated and committed is not.
"""
from dataclasses import dataclass, field

from .topology import LSA_SIZE

ROOT, SWITCH, ENDPOINT = "root", "switch", "endpoint"  # a port's kind (a host bridge's port is a switch port)
MODES = ("ram", "pmem")  # of a decoder's DPA, and of a region


@dataclass(eq=False)
class Dport:
    id: int
    device: tuple[str, ...]  # its platform device's path below devices/platform
    child: "Port | Memdev" = field(repr=False)  # what hangs off it: a switch's or bridge's port, or (a switch dport) a memdev


@dataclass(eq=False)
class Decoder:
    port: "Port" = field(repr=False)
    id: int = 0
    start: int = 0  # HPA, as an offset in the memory file (the views add phys_base)
    size: int = 0  # HPA size: 0 until it decodes a region
    ways: int = 1
    granularity: int = 256
    targets: list[int] = field(default_factory=list)  # dport ids, in interleave order
    region: "Region | None" = field(default=None, repr=False)
    committed: bool = False
    # a root decoder's window: what it may hold
    ram: bool = False
    pmem: bool = False
    node: int = -1  # the NUMA node its memory comes online in (phys_to_target_node)
    # an endpoint decoder's device physical address allocation
    mode: str = "none"
    dpa_start: int = 0
    dpa_size: int = 0

    @property
    def name(self) -> str:
        return f"decoder{self.port.id}.{self.id}"

    @property
    def kind(self) -> str:
        return self.port.kind


@dataclass(eq=False)
class Port:
    id: int
    kind: str
    uport: tuple[str, ...]  # the upstream device: a platform device, or (an endpoint) its memdev's
    parent: "Port | None" = field(default=None, repr=False)
    parent_dport: Dport | None = field(default=None, repr=False)
    dports: dict[int, Dport] = field(default_factory=dict, repr=False)
    decoders: list[Decoder] = field(default_factory=list, repr=False)
    enabled: bool = True  # bound to cxl_port (a host bridge's port; the others come and go)

    @property
    def name(self) -> str:
        return {ROOT: "root", SWITCH: "port", ENDPOINT: "endpoint"}[self.kind] + str(self.id)

    @property
    def depth(self) -> int:
        return 0 if self.parent is None else self.parent.depth + 1

    @property
    def committed(self) -> int:
        """decoders_committed: they commit in id order, and reset in reverse."""
        return sum(d.committed for d in self.decoders)

    def path(self) -> list["Port"]:
        """The ports from the root down to this one."""
        return ([] if self.parent is None else self.parent.path()) + [self]


@dataclass(eq=False)
class Memdev:
    id: int
    ram: int
    pmem: int
    device: tuple[str, ...]  # its platform device (cxl_mem.N)
    dport: Dport | None = field(default=None, repr=False)  # the switch or root port it hangs off
    endpoint: Port | None = field(default=None, repr=False)  # its endpoint port: the topology's, shown while enabled
    enabled: bool = True  # bound to cxl_mem
    lsa: bytearray = field(default_factory=lambda: bytearray(LSA_SIZE), repr=False)
    poison: list[tuple[int, int]] = field(default_factory=list)  # (DPA, length) injected through debugfs

    @property
    def name(self) -> str:
        return f"mem{self.id}"

    @property
    def serial(self) -> int:
        return self.id

    def partition(self, mode: str) -> tuple[int, int]:
        """(start, size) of a partition in DPA: ram first, then pmem."""
        return (0, self.ram) if mode == "ram" else (self.ram, self.pmem)


@dataclass(eq=False)
class Region:
    id: int
    root: Decoder = field(repr=False)
    mode: str
    uuid: str = ""  # a pmem region's, written by the user
    granularity: int = 0
    ways: int = 0
    start: int = 0  # HPA offset, once sized
    size: int = 0
    targets: list[Decoder | None] = field(default_factory=list, repr=False)  # endpoint decoders by position
    committed: bool = False
    bound: bool = False  # bound to cxl_region: its dax region (the same id) exists

    @property
    def name(self) -> str:
        return f"region{self.id}"

    @property
    def active(self) -> bool:
        """Every position has its endpoint decoder (CXL_CONFIG_ACTIVE): the
        ports' decoders are set up."""
        return bool(self.ways) and len(self.targets) == self.ways and None not in self.targets
