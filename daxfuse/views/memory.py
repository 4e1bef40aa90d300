"""Memory hotplug where tools look (drivers/base/memory.c, drivers/base/node.c),
laid over the host's: /sys/devices/system/memory with the blocks kmem
hot-added (dax/hotplug.py) and the policy it onlines them by, and
/sys/devices/system/node with the nodes those blocks are on, whether the
host has the node too (its meminfo then counts both) or not (a CPU-less node
of its own, as a CXL or hmem target node is). Also /sys/bus/memory/devices.
"""
import errno
import functools
import os
import re

from ..dax import DaxBus, DevDax
from ..dax import hotplug
from ..dax.hotplug import MemoryBlock
from ..core.units import parse_index
from ..memory import HOST_NODES, host_nodes, phys_base
from .nodes import Attr, Link, Node, table
from .sysfs_text import kstrtobool, number, streq

NODE_LISTS = ("online", "possible", "has_memory", "has_normal_memory")
FAR = 20  # the distance an emulated node is given to every other (SLIT's "remote")
_MEMINFO = re.compile(r"Node \d+ (?P<field>\S+)(?P<pad>\s+\d+) kB")  # the number keeps its column


def _static(node: Node):
    return lambda: node


def _ro(show) -> Attr:
    return Attr(0o444, show=show)


def node_list(nodes) -> str:
    """A node list as the kernel prints one (%*pbl): "0-2,5"."""
    spans, out = [], []
    for n in sorted(set(nodes)):
        if spans and spans[-1][1] == n - 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    for a, b in spans:
        out.append(f"{a}" if a == b else f"{a}-{b}")
    return ",".join(out)


def _host_text(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


class MemoryView:
    def __init__(self, bus: DaxBus) -> None:
        self.bus = bus

    # --- /sys/devices/system/memory ---------------------------------------------------------------
    def memory_dir(self) -> Node:
        bus = self.bus
        attrs = {
            "auto_online_blocks": _static(Attr(0o644, show=lambda: f"{bus.auto_online}\n",
                                               store=lambda data: [functools.partial(bus.set_auto_online,
                                                                                     streq(data))])),
            **{f"{kind}_offline_page": _static(Attr(0o200, store=functools.partial(self._offline_page, kind)))
               for kind in ("hard", "soft")},
        }
        return table(attrs, lambda: [f"memory{i}" for i in sorted(bus.blocks)], self._block_named)

    def _block_named(self, name: str) -> Node | None:
        index = parse_index(name.removeprefix("memory")) if name.startswith("memory") else None
        block = self.bus.blocks.get(index) if index is not None else None
        return block and self._block(block)

    def _block(self, block: MemoryBlock) -> Node:
        bus, index = self.bus, block.index
        return table({
            "phys_index": _static(_ro(lambda: f"{index:08x}\n")),
            "state": _static(Attr(0o644, show=lambda: "online\n" if block.online else "offline\n",
                                  store=lambda data: [functools.partial(bus.set_block_state, index, streq(data))])),
            "online": _static(Attr(0o644, show=lambda: f"{int(block.online)}\n",
                                   store=lambda data: [functools.partial(bus.set_block_online, index,
                                                                         kstrtobool(data))])),
            "valid_zones": _static(_ro(lambda: f"{hotplug.valid_zones(block, bus.node_zones(block.node))}\n")),
            "removable": _static(_ro(lambda: "1\n")),
            "phys_device": _static(_ro(lambda: "0\n")),
            f"node{block.node}": _static(Link(f"../../node/node{block.node}")),
            "subsystem": _static(Link("../../../../bus/memory")),
            "uevent": _static(Attr(0o644, show=lambda: "", store=lambda data: [])),
        })

    def _offline_page(self, kind: str, data: str) -> list:
        """{hard,soft}_offline_page: a physical address (the page it lies
        in); kstrtoull's failures are EINVAL, as the kernel's store answers."""
        return [functools.partial(self.bus.offline_page, number(data, err=errno.EINVAL) - phys_base(),
                                  kind == "hard")]

    def bus_memory(self) -> Node:
        """/sys/bus/memory/devices: a link per emulated block, beside the host's."""
        def link(name: str) -> Node | None:
            return self._block_named(name) and Link(f"../../../devices/system/memory/{name}")
        return table({"devices": lambda: table({}, lambda: [f"memory{i}" for i in sorted(self.bus.blocks)], link)})

    # --- /sys/devices/system/node ------------------------------------------------------------------
    def _nodes(self) -> dict[int, list[MemoryBlock]]:
        """The nodes of emulated blocks, with their blocks."""
        nodes: dict[int, list[MemoryBlock]] = {}
        for block in sorted(self.bus.blocks.values(), key=lambda b: b.index):
            nodes.setdefault(block.node, []).append(block)
        return nodes

    def node_dir(self) -> Node:
        lists = {name: _static(_ro(functools.partial(self._node_list, name))) for name in NODE_LISTS}
        return table(lists, lambda: [f"node{n}" for n in self._nodes()], self._node_named)

    def _node_list(self, name: str) -> str:
        host = _host_text(os.path.join(HOST_NODES, name)).strip()
        nodes = {int(x) for part in host.split(",") if part
                 for x in range(int(part.split("-")[0]), int(part.split("-")[-1]) + 1)}
        for node, blocks in self._nodes().items():
            zones = {b.zone for b in blocks if b.online}
            if name in ("online", "possible") or (name == "has_memory" and zones) \
                    or (name == "has_normal_memory" and hotplug.NORMAL in zones):
                nodes.add(node)
        return f"{node_list(nodes)}\n"

    def _node_named(self, name: str) -> Node | None:
        """A node of emulated blocks, or a host node (its distances count
        the emulated nodes, its meminfo the emulated memory it has)."""
        node = parse_index(name.removeprefix("node")) if name.startswith("node") else None
        hosts = host_nodes()
        if node is None or node not in self._nodes() and node not in hosts:
            return None
        own = node not in hosts  # a node of its own: CPU-less, all its files emulated
        attrs = {
            "meminfo": _static(_ro(functools.partial(self._meminfo, node))),
            "distance": _static(_ro(functools.partial(self._distance, node))),
        }
        if own:
            attrs |= {"cpulist": _static(_ro(lambda: "\n")),
                      "cpumap": _static(_ro(self._empty_cpumap)),
                      "subsystem": _static(Link("../../../../bus/node"))}
        return table(attrs, lambda: [f"memory{b.index}" for b in self._nodes().get(node, [])],
                     lambda name: self._block_named(name) and Link(f"../../memory/{name}"))

    def _meminfo(self, node: int) -> str:
        """The host's lines for its own node (a host node's, zeroed, for one
        of ours), with the online emulated memory added to MemTotal and MemFree."""
        host = _host_text(os.path.join(HOST_NODES, f"node{node}", "meminfo"))
        own = not host
        if own:
            host = _host_text(os.path.join(HOST_NODES, f"node{(host_nodes() or [0])[0]}", "meminfo")) \
                or "Node 0 MemTotal:              0 kB\nNode 0 MemFree:               0 kB\n"
        online = sum(self.bus.block_size for b in self._nodes().get(node, []) if b.online) >> 10
        out = []
        for line in host.splitlines():
            m = _MEMINFO.fullmatch(line)
            if m:
                value = (0 if own else int(m["pad"])) + (online if m["field"] in ("MemTotal:", "MemFree:") else 0)
                line = f"Node {node} {m['field']}{value:>{len(m['pad'])}} kB"
            out.append(line)
        return "\n".join(out) + "\n"

    def _distance(self, node: int) -> str:
        """SLIT distances: the host's among its nodes, FAR to and from ours."""
        hosts = host_nodes()
        every = sorted(set(hosts) | set(self._nodes()))
        host_row = _host_text(os.path.join(HOST_NODES, f"node{node}", "distance")).split() \
            if node in hosts else []
        row = []
        for other in every:
            if node in hosts and other in hosts and hosts.index(other) < len(host_row):
                row.append(host_row[hosts.index(other)])
            else:
                row.append("10" if other == node else str(FAR))
        return " ".join(row) + "\n"

    @staticmethod
    def _empty_cpumap() -> str:
        width = len(_host_text(os.path.join(HOST_NODES, f"node{(host_nodes() or [0])[0]}", "cpumap")).strip()) or 1
        return "0" * width + "\n"

    # --- what a device's binding makes stale -------------------------------------------------------
    def places(self, dev: DevDax) -> list[tuple[tuple[str, ...], str]]:
        node = dev.region.target_node
        blocks = [f"memory{i}" for i in self.bus.device_blocks(dev)]
        return [*((("devices", "system", "memory"), b) for b in blocks),
                *((("devices", "system", "node", f"node{node}"), b) for b in blocks),
                *((("bus", "memory", "devices"), b) for b in blocks),
                (("devices", "system", "node"), f"node{node}")]

    def listings(self) -> list[tuple[str, ...]]:
        return [("devices", "system", "memory"), ("devices", "system", "node"), ("bus", "memory", "devices"),
                *(("devices", "system", "node", f"node{n}") for n in self._nodes())]
