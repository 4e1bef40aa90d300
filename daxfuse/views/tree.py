"""The mount's tree: control, dax/ (the devices), sys/ (the sysfs view),
.direct (a link to the socket of direct mappings, daxfuse/daemon/direct.py) and
dev/ (a /dev for `daxfuse exec`: the devices, plus every other name of the
host's /dev as a link into .host/, where exec mounts the host's /dev; the
names of HOST_MOUNTED, as a place where exec mounts that host node itself).
Root makes and removes other names in dev/ as in a devtmpfs: in the host's
/dev, which is what dev/ shows; what root made there is shown as the node
itself (a device node, a directory), which the kernel wants of a mknod or a
mkdir (exec's /dev, root's, is a mount that allows device nodes)."""
import errno
import functools
import os

from ..core.errors import DaxError
from .control import Control
from ..dax import DaxBus, DaxRegion, DevDax, Dimm
from .ars import NdctlFile
from .labels import NmemFile
from .devdir import HOST_DEV, HOST_MOUNTED
from ..core.devt import CXL_MEM_INO_BASE, NDCTL_INO, NMEM_INO
from .cxl_mem import CxlMemFile
from .host import host_node, overlay
from .nodes import Attr, AttrFile, Chardev, Device, Dir, HostFile, HostFileHandle, Link, Mountpoint, Stream, table
from .tracefs import INSTANCES
from .sysfs import SysfsView, kernfs_order

NDCTL, NMEM, CXL = "ndctl0", "nmem0", "cxl"


class Tree:
    def __init__(self, bus: DaxBus) -> None:
        self.bus = bus
        self.control = Control(bus)
        self.sysfs = SysfsView(bus)
        self.sys = overlay(self.sysfs.root)  # the host's /sys beneath
        self.chardevs: dict[str, object] = {NDCTL: Chardev(NDCTL_INO, functools.partial(NdctlFile, bus)),
                                            NMEM: Chardev(NMEM_INO, functools.partial(NmemFile, bus))}
        if self.sysfs.cxl:  # /dev/cxl/memN, each memdev's mailbox
            cxl = self.sysfs.cxl.cxl
            memdevs = {m.name: Chardev(CXL_MEM_INO_BASE + m.id, functools.partial(CxlMemFile, bus, cxl, m))
                       for m in cxl.memdevs.values()}
            self.chardevs[CXL] = Dir(lambda: list(memdevs), memdevs.get)
        self.direct_socket: str | None = None  # where direct mappings are asked for, once it serves
        self.made: set[str] = set()  # names of dev/ that root made
        self.root = table({
            ".direct": lambda: self.direct_socket and Link(self.direct_socket),
            "control": lambda: self.control,
            "dax": lambda: Dir(self._device_names, self._device),
            "dev": lambda: Dir(self._dev_names, self._dev),
            "sys": lambda: self.sys,
        })

    def _device_names(self) -> list[str]:
        return [d.name for d in sorted(self.bus.devices(), key=lambda d: (d.region.id, d.id))]

    def _device(self, name: str) -> Device | None:
        dev = self.bus.find_device(name)
        return dev and Device(dev)

    def _dev_names(self) -> list[str]:
        devices = self._device_names()
        return [HOST_DEV, *self.chardevs] + devices + sorted(set(os.listdir("/dev")) - set(devices) - set(self.chardevs))

    def _dev(self, name: str):
        if name == HOST_DEV:
            return Dir(lambda: [], lambda _: None)
        if name in self.chardevs:
            return self.chardevs[name]
        if name.startswith("dax") and (node := self._device(name)):
            return node
        host = f"/dev/{name}"
        if name in self.made:
            return host_node(host)
        if name in HOST_MOUNTED and os.path.exists(host) and not os.path.islink(host):
            return Dir(lambda: [], lambda _: None) if os.path.isdir(host) else Mountpoint()
        return Link(f"{HOST_DEV}/{name}") if os.path.lexists(host) else None

    def change_dev(self, path: tuple[str, ...], name: str, uid: int, change, made: bool):
        """change (mknod, mkdir, symlink, create, unlink or rmdir, given the
        host path) of NAME in dev/ or a directory root made there, for root,
        done in the host's /dev; made: whether NAME is there after it. The
        emulator's own names, and the host nodes exec mounts, are not root's
        to change. What change returns."""
        if path[:1] != ("dev",) or (len(path) > 1 and path[1] not in self.made) or uid != 0:
            raise DaxError(errno.EPERM, "only root changes names, and only in dev/ (a devtmpfs for exec)")
        if len(path) == 1 and (name in (HOST_DEV, *self.chardevs, *HOST_MOUNTED) or self.bus.find_device(name)):
            raise DaxError(errno.EBUSY if name in HOST_MOUNTED else errno.EPERM, f"dev/{name} is the emulator's")
        host = os.path.join("/dev", *path[1:], name)
        try:
            done = change(host)
        except OSError as e:
            raise DaxError(e.errno, f"{host}: {e.strerror}") from None
        if len(path) == 1:
            (self.made.add if made else self.made.discard)(name)
        return done

    def listing(self, path: tuple[str, ...], directory: Dir) -> list[str]:
        """The names of directory (at path), in the order its readdir gives
        them: kernfs's under sys/, as the bus has them elsewhere."""
        names = directory.names()
        return kernfs_order(names) if path[:1] == ("sys",) else list(names)

    def resolve(self, path: tuple[str, ...]):
        node = self.root
        for name in path:
            node = node.child(name) if type(node) is Dir else None
            if node is None:
                return None
        return node

    def changed(self, path: tuple[str, ...]) -> int | None:
        """When what path shows last changed: its device's or region's time,
        the last batch for listings of devices; None for what never changes
        (the mount's time)."""
        match path:
            case ("dax", name) | ("dev", name) if (dev := self.bus.find_device(name)):
                return dev.changed
            case ("control",) | ("dax",) | ("dev",):
                return self.bus.changed
            case ("sys", *rest):
                return self.sysfs.changed(tuple(rest))
        return None

    def places(self, subject: DevDax | DaxRegion | Dimm) -> list[tuple[tuple[str, ...], str]]:
        """(directory, name) of every entry a change to subject makes stale."""
        devices = [(("dax",), subject.name), (("dev",), subject.name)] if type(subject) is DevDax else []
        return devices + [(("sys", *parent), name) for parent, name in self.sysfs.places(subject)]

    def bus_timed(self) -> list[tuple[str, ...]]:
        """The nodes whose time is the bus's: the control file, and the
        directories that list devices or regions."""
        return [("control",), ("dax",), ("dev",), *(("sys", *path) for path in self.sysfs.listings())]

    def mkdir(self, path: tuple[str, ...], name: str, uid: int, mode: int) -> None:
        """A directory root makes: a trace instance, or one in dev/ (change_dev)."""
        if path == ("sys", *INSTANCES) and self.sysfs.tracefs:
            self.sysfs.tracefs.mkdir(name, uid)
        else:
            self.change_dev(path, name, uid, lambda host: os.mkdir(host, mode), made=True)

    def rmdir(self, path: tuple[str, ...], name: str, uid: int) -> None:
        if path == ("sys", *INSTANCES) and self.sysfs.tracefs:
            self.sysfs.tracefs.rmdir(name, uid)
        else:
            self.change_dev(path, name, uid, os.rmdir, made=False)

    def open(self, node, flags: int, pid: int = 0):
        """A handle on a control file, an attribute (pid: its opener's), a
        stream or a host file; None for other nodes."""
        if node is self.control:
            return self.control.open()
        if type(node) is Attr:
            return AttrFile(node, self.bus, pid)
        if type(node) is Stream:
            return node.open()
        if type(node) is HostFile:
            return HostFileHandle(node, flags)
        if type(node) is Chardev:
            return node.open()
        return None
