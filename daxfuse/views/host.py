"""The host's /sys under the emulated one: one /sys, as `daxfuse exec` shows
it, where numactl, libnuma, hwloc and ndctl's tests find the host's CPUs,
nodes, memory blocks, hugepages and modules beside the emulated devices.

The emulated tree is laid over the host's. Where both have a directory,
the two are merged if the emulated one only adds to a host directory
(MERGED: bus/, devices/platform/, dev/char/, module/...); any other
emulated directory (bus/dax, bus/nd, a platform device) replaces the
host's whole, so a host's own dax or nd devices never mix with the
emulator's. Host nodes are passed through live.
"""
import os
import stat

from .nodes import Dir, HostFile, Link, Node

HOST_SYS = "/sys"
MERGED = {(), ("bus",), ("bus", "memory"), ("bus", "memory", "devices"), ("bus", "platform"),
          ("bus", "platform", "devices"), ("bus", "platform", "drivers"), ("class",), ("dev",), ("dev", "char"), ("devices",), ("devices", "platform"),
          ("devices", "system"), ("devices", "system", "memory"), ("devices", "system", "node"),
          ("devices", "virtual"), ("module",), ("kernel",), ("kernel", "debug")}
NODES = ("devices", "system", "node")  # each node directory merges too: a host node gains emulated memory


def overlay(emulated: Dir, host: str = HOST_SYS, path: tuple[str, ...] = ()) -> Dir:
    """emulated, at path in /sys, over the host's directory host."""
    if path not in MERGED and path[:-1] != NODES:
        return emulated

    def names() -> list[str]:
        mine = list(emulated.names())
        try:
            theirs = os.listdir(host)
        except OSError:
            theirs = []
        shown = set(mine)
        return mine + [name for name in theirs if name not in shown]

    def child(name: str) -> Node | None:
        node = emulated.child(name)
        if type(node) is Dir:
            return overlay(node, os.path.join(host, name), path + (name,))
        return node if node is not None else host_node(os.path.join(host, name))
    return Dir(names, child)


def host_node(path: str) -> Node | None:
    """The host's node at path, or None."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if stat.S_ISDIR(st.st_mode):
        return Dir(lambda: _listing(path), lambda name: host_node(os.path.join(path, name)), host=True)
    if stat.S_ISLNK(st.st_mode):
        try:
            return Link(os.readlink(path), host=True)
        except OSError:
            return None
    return HostFile(path)  # a regular file, or a node root made in exec's /dev


def _listing(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []
