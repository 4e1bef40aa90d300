"""The pyfuse3 Operations: serve the Tree, translating FUSE requests into
Device DAX calls.

Inode numbers: a device's comes from its dax_device (the kernel may hold it
across destroy, so a reference is held per kernel lookup and the number is not
reused until the last forget); every other node gets a number per path, never
reused, dropped when the kernel forgets it. Handles (DaxFile, the control
file's, an attribute's) share one protocol, so requests on them only
dispatch. DaxError becomes FUSEError; any other exception is logged and
answered EIO, since pyfuse3 dies on anything but FUSEError.
"""
import errno
import functools
import itertools
import logging
import os
import stat
import time

import pyfuse3
import trio
from pyfuse3 import FUSEError

from ..dax import DaxBus, DaxFile, DevDax, Event
from ..core.errors import DaxError
from ..views.nodes import Attr, Chardev, Device, Dir, HostFile, HostFileHandle, Link, Mountpoint
from ..views.tree import Tree

log = logging.getLogger(__name__)

DAX_DIR = ("dax",)
DEVICE_DIRS = (DAX_DIR, ("dev",))  # where devices have entries, with the device's own inode
# The kernel caches what the bus drives for an hour: each change drops what
# it made stale before the write that made it is answered (_on_change), so
# that a walk of sys/ costs no request per component and daxctl sees a
# driver link go as unbind returns. The host's names in dev/ and its nodes
# under sys/ change behind the bus's back: the kernel asks for those again
# after a few seconds.
_TIMEOUT = 3600.0
_HOST_TIMEOUT = 10.0
# The changes after which a device's cached pages must go (dirty ones
# written back first); the others drop only its attributes (size, times).
# Not CLEARED: a poisoned page is never cached (its reads fail), and a
# clear-on-write comes inside a WRITE whose pages stay locked until it is
# answered.
_DROP_PAGES = (Event.DISABLING, Event.DISABLED, Event.RESIZED, Event.REMOVED, Event.FLUSH, Event.POISONED)


def _handler(fn):
    @functools.wraps(fn)
    async def wrapper(self, *args):
        try:
            return await fn(self, *args)
        except FUSEError:
            raise
        except DaxError as e:
            raise FUSEError(e.errno) from None
        except Exception:
            log.exception("%s%r failed", fn.__name__, args[:2])
            raise FUSEError(errno.EIO) from None
    return wrapper


class DaxOperations(pyfuse3.Operations):
    def __init__(self, bus: DaxBus) -> None:
        super().__init__()
        self.bus = bus
        self.core = bus.core
        self.tree = Tree(bus)
        self._paths: dict[tuple, int] = {(): pyfuse3.ROOT_INODE}
        self._path_of: dict[int, list] = {pyfuse3.ROOT_INODE: [(), 1]}  # ino -> [path, kernel lookups]
        self._next_ino = itertools.count(pyfuse3.ROOT_INODE + 1)
        self._nodes: dict[int, object] = {}  # ino -> node, while the bus is at generation _nodes_of
        self._nodes_of = -1
        self._devices: dict[int, list] = {}  # ino -> [DevDax, kernel lookups]
        self._open_dirs: dict[int, list] = {}  # opendir handle -> [(path, Dir), names when it started]
        self._handles: dict[int, object] = {}
        self._fh = itertools.count(1)
        self._uid, self._gid = os.getuid(), os.getgid()
        self._mounted = time.time_ns()
        self._stale: set[tuple[tuple, str]] = set()  # (directory, name) a batch made stale
        self._times_stale = False
        bus.listeners.append(self._on_change)

    # --- nodes and attributes ---------------------------------------------------------
    def _path_ino(self, path: tuple, node=None) -> int:
        ino = self._paths.get(path)
        if ino is None:
            ino = node.ino if type(node) is Chardev else next(self._next_ino)
            self._paths[path] = ino
            self._path_of[ino] = [path, 0]
        return ino

    def _node(self, ino: int):
        """(path, node) of a non-device inode, ENOENT when it is gone. A
        node found stays the one at its path until the bus changes (nodes
        read the bus as they answer), so a request costs no walk from the
        root."""
        entry = self._path_of.get(ino)
        if entry is None:
            raise FUSEError(errno.ENOENT)
        if self._nodes_of != self.bus.generation:
            self._nodes.clear()
            self._nodes_of = self.bus.generation
        node = self._nodes.get(ino)
        if node is None:
            node = self.tree.resolve(entry[0])
            if node is None:
                raise FUSEError(errno.ENOENT)
            self._nodes[ino] = node
        return entry[0], node

    def _attr(self, path: tuple, node) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        size = 0
        if type(node) is Device:
            access = node.dev.access
            a.st_ino, a.st_mode, size = node.dev.dax_dev.ino, stat.S_IFREG | access.mode, node.dev.size
            a.st_uid, a.st_gid = access.uid, access.gid
        else:
            a.st_ino = self._path_ino(path, node)
            a.st_uid, a.st_gid = self._uid, self._gid  # the mounter's, as sysfs is root's: only it writes
            if type(node) is Dir:
                a.st_mode = stat.S_IFDIR | 0o755
            elif type(node) is Link:
                a.st_mode, size = stat.S_IFLNK | 0o777, len(node.target)
            elif type(node) is Attr:
                a.st_mode, size = stat.S_IFREG | node.mode, 4096
            elif type(node) is Chardev:
                a.st_mode = stat.S_IFREG | 0o600
            elif type(node) is HostFile:  # the host's own, which the kernel checks a caller against
                a.st_mode, size, a.st_uid, a.st_gid, a.st_rdev = self._host_file(node)
            else:
                a.st_mode = stat.S_IFREG | 0o644
        host = (path[:1] == ("dev",) and type(node) in (Link, Mountpoint, Dir)) or getattr(node, "host", False) \
            or type(node) is HostFile
        a.attr_timeout = a.entry_timeout = _HOST_TIMEOUT if host else _TIMEOUT
        changed = self.tree.changed(path) if type(node) is not Device else node.dev.changed
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = changed or self._mounted
        a.st_nlink = 2 if stat.S_ISDIR(a.st_mode) else 1
        a.st_size = size
        a.st_blksize = 4096
        a.st_blocks = size // 512
        return a

    @staticmethod
    def _host_file(node: HostFile) -> tuple[int, int, int, int, int]:
        """A host file's mode, size, owner, group and device number (ENOENT once it is gone)."""
        try:
            st = os.lstat(node.path)
        except OSError as e:
            raise FUSEError(e.errno) from None
        return st.st_mode, st.st_size, st.st_uid, st.st_gid, st.st_rdev

    def _remember(self, dev: DevDax) -> None:
        """The kernel now holds one more lookup of dev's inode."""
        ino = dev.dax_dev.ino
        entry = self._devices.get(ino)
        if entry is None:
            self.core.get_dax(dev.dax_dev)
            entry = self._devices[ino] = [dev, 0]
        entry[1] += 1

    def _forget(self, ino: int, nlookup: int) -> None:
        """The kernel dropped nlookup references to ino."""
        entry = self._devices.get(ino)
        if entry is not None:
            entry[1] -= nlookup
            if entry[1] <= 0:
                del self._devices[ino]
                self.core.put_dax(entry[0].dax_dev)
            return
        entry = self._path_of.get(ino)
        if entry is not None and ino != pyfuse3.ROOT_INODE:
            entry[1] -= nlookup
            if entry[1] <= 0:
                del self._path_of[ino], self._paths[entry[0]]
                self._nodes.pop(ino, None)

    def _entry(self, parent: tuple, name: str):
        """(path, node, attributes) of name in the directory at parent,
        ENOENT when it is not there. No kernel reference yet: _hold takes
        it once the kernel has the entry."""
        path, directory = parent
        node = directory.child(name) if type(directory) is Dir else None
        if node is None:
            raise FUSEError(errno.ENOENT)
        path = path + (name,)
        return path, node, self._attr(path, node)

    def _hold(self, path: tuple, node) -> None:
        """The kernel now holds one more lookup of path's inode."""
        if type(node) is Device:
            self._remember(node.dev)
        else:
            ino = self._paths[path]
            self._path_of[ino][1] += 1
            self._nodes[ino] = node  # found from its parent, at the generation _node just checked

    # --- namespace ------------------------------------------------------------------
    @_handler
    async def lookup(self, parent_inode, name, ctx=None):
        path, node, attr = self._entry(self._node(parent_inode), os.fsdecode(name))
        self._hold(path, node)
        return attr

    @_handler
    async def getattr(self, inode, ctx=None):
        entry = self._devices.get(inode)
        if entry is not None:
            return self._attr(DAX_DIR, Device(entry[0]))
        return self._attr(*self._node(inode))

    async def forget(self, inode_list):
        # pyfuse3 does not expect forget to fail, not even with FUSEError
        try:
            for ino, nlookup in inode_list:
                self._forget(ino, nlookup)
        except Exception:
            log.exception("forget(%r) failed", inode_list)

    @_handler
    async def setattr(self, inode, attr, fields, fh, ctx):
        if inode not in self._devices and self._node(inode)[0][:1] == ("dev",):
            await self._setattr_dev(inode, attr, fields, ctx)
        elif fields.update_mode or fields.update_uid or fields.update_gid:
            # chmod and chown of a device (the kernel checked who may:
            # default_permissions); nothing else changes hands.
            entry = self._devices.get(inode)
            if entry is None:
                raise FUSEError(errno.EPERM)
            dev = entry[0]

            def set_access():
                if self.bus.find_device(dev.name) is not dev:
                    raise DaxError(errno.ENXIO, f"{dev.name} was destroyed")
                self.bus.set_access(dev.name, attr.st_uid if fields.update_uid else None,
                                    attr.st_gid if fields.update_gid else None,
                                    stat.S_IMODE(attr.st_mode) if fields.update_mode else None)
            await self.bus.apply([set_access])
        current = await self.getattr(inode)
        if fields.update_size and inode in self._devices and attr.st_size != current.st_size:
            # fio and PMDK truncate to the current size; any other size
            # would change a fixed-size device.
            raise FUSEError(errno.EINVAL)
        return current

    async def _setattr_dev(self, inode, attr, fields, ctx) -> None:
        """chmod, chown and truncate of what root made in dev/ (Tree.change_dev)."""
        path, _ = self._node(inode)

        def change(host: str) -> None:
            if fields.update_mode:
                os.chmod(host, stat.S_IMODE(attr.st_mode))
            if fields.update_uid or fields.update_gid:
                os.chown(host, attr.st_uid if fields.update_uid else -1, attr.st_gid if fields.update_gid else -1,
                         follow_symlinks=False)
            if fields.update_size:
                os.truncate(host, attr.st_size)
        if fields.update_mode or fields.update_uid or fields.update_gid or fields.update_size:
            self.tree.change_dev(path[:-1], path[-1], ctx.uid, change, made=True)

    @_handler
    async def readlink(self, inode, ctx):
        _, node = self._node(inode)
        if type(node) is not Link:
            raise FUSEError(errno.EINVAL)
        return node.target.encode()

    @_handler
    async def opendir(self, inode, ctx):
        directory = self._node(inode)
        if type(directory[1]) is not Dir:
            raise FUSEError(errno.ENOTDIR)
        fh = next(self._fh)
        self._open_dirs[fh] = [directory, None]
        return fh

    @_handler
    async def readdir(self, fh, start_id, token):
        """Entries from a snapshot of the names, taken when a listing starts
        (or rewinds): offsets are places in it, so that entries made or
        removed while a long listing is read shift no others, and a
        listing costs one walk of the bus, not one per READDIR."""
        listing = self._open_dirs[fh]
        directory = listing[0]
        if not start_id or listing[1] is None:
            listing[1] = self.tree.listing(*directory)
        names = listing[1]
        for offset in range(start_id, len(names)):
            try:
                path, node, attr = self._entry(directory, names[offset])
            except FUSEError:  # gone since the listing started
                continue
            if not pyfuse3.readdir_reply(token, os.fsencode(names[offset]), attr, offset + 1):
                self._forget(attr.st_ino, 0)  # a number made for an entry the kernel did not take
                break
            self._hold(path, node)  # the kernel counts a lookup per entry it took

    @_handler
    async def releasedir(self, fh):
        del self._open_dirs[fh]

    async def _refuse(self, *args):
        raise FUSEError(errno.EPERM)

    rename = link = _refuse

    # dev/ as a devtmpfs for root (Tree.change_dev), and trace instances (Tree.mkdir)
    async def _make(self, parent_inode, name, ctx, change):
        directory = self._node(parent_inode)
        self.tree.change_dev(directory[0], os.fsdecode(name), ctx.uid, change, made=True)
        return self._made(directory, name)

    def _made(self, directory, name):
        path, node, attr = self._entry(directory, os.fsdecode(name))
        self._hold(path, node)
        return attr

    @_handler
    async def create(self, parent_inode, name, mode, flags, ctx):
        def create(host: str) -> HostFileHandle:
            os.close(os.open(host, os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, stat.S_IMODE(mode)))
            return HostFileHandle(HostFile(host), flags & ~(os.O_CREAT | os.O_EXCL | os.O_TRUNC))
        directory = self._node(parent_inode)
        if directory[0][:1] == ("sys",):
            raise FUSEError(errno.EACCES)  # vfs_create, where a directory has no create: sysfs
        handle = self.tree.change_dev(directory[0], os.fsdecode(name), ctx.uid, create, made=True)
        path, node, attr = self._entry(directory, os.fsdecode(name))
        self._hold(path, node)
        fh = next(self._fh)
        self._handles[fh] = handle
        return pyfuse3.FileInfo(fh=fh, direct_io=True), attr

    @_handler
    async def mknod(self, parent_inode, name, mode, rdev, ctx):
        return await self._make(parent_inode, name, ctx, lambda host: os.mknod(host, mode, rdev))

    @_handler
    async def mkdir(self, parent_inode, name, mode, ctx):
        directory = self._node(parent_inode)
        self.tree.mkdir(directory[0], os.fsdecode(name), ctx.uid, mode)
        return self._made(directory, name)

    @_handler
    async def symlink(self, parent_inode, name, target, ctx):
        return await self._make(parent_inode, name, ctx, lambda host: os.symlink(target, host))

    @_handler
    async def unlink(self, parent_inode, name, ctx):
        self.tree.change_dev(self._node(parent_inode)[0], os.fsdecode(name), ctx.uid, os.unlink, made=False)

    @_handler
    async def rmdir(self, parent_inode, name, ctx):
        self.tree.rmdir(self._node(parent_inode)[0], os.fsdecode(name), ctx.uid)

    @_handler
    async def statfs(self, ctx):
        s = pyfuse3.StatvfsData()
        regions = self.bus.regions.values()
        s.f_bsize = s.f_frsize = 4096
        s.f_blocks = sum(r.size for r in regions) // 4096
        s.f_bfree = s.f_bavail = sum(r.available_size for r in regions) // 4096
        s.f_files = self.core.nr_dax
        s.f_ffree = s.f_favail = self.core.nr_dax - len(self.core)
        s.f_namemax = 255
        return s

    # --- files ------------------------------------------------------------------------------
    @_handler
    async def open(self, inode, flags, ctx):
        fh = next(self._fh)
        entry = self._devices.get(inode)
        if entry is not None:
            if flags & os.O_TRUNC:
                # libfuse negotiates atomic_o_trunc: accepting the flag would make
                # the kernel drop its page cache, dirty mapped pages included.
                raise DaxError(errno.EINVAL, "O_TRUNC would discard device contents")
            self._handles[fh] = DaxFile(self.bus, entry[0].dax_dev)
            # O_DIRECT needs no FOPEN_DIRECT_IO: the kernel's own direct I/O
            # path is as fast (scripts/bench) and, unlike it, allows MAP_SHARED.
            # While the device is mapped directly, stores reach its memory
            # behind the page cache: an open then starts from a dropped one.
            return pyfuse3.FileInfo(fh=fh, keep_cache=entry[0].window is None)
        _, node = self._node(inode)
        handle = self.tree.open(node, flags, ctx.pid)
        if handle is None:
            raise FUSEError(errno.EISDIR if type(node) is Dir else errno.EINVAL)
        self._handles[fh] = handle
        return pyfuse3.FileInfo(fh=fh, direct_io=True)

    @_handler
    async def read(self, fh, off, size):
        return await self._handles[fh].read(off, size)

    @_handler
    async def write(self, fh, off, buf):
        return await self._handles[fh].write(off, buf)

    @_handler
    async def fsync(self, fh, datasync):
        await self._handles[fh].fsync()

    # No flush(): pyfuse3's answers ENOSYS, after which the kernel sends no
    # FLUSH on close (a request saved per sysfs read); it writes dirty pages
    # back before it would ask anyway.

    @_handler
    async def release(self, fh):
        self._handles.pop(fh).release()

    # --- lifecycle: keep the kernel's caches true ----------------------------------------
    async def _on_change(self, event: Event, subject) -> None:
        if event is Event.APPLIED:
            await self._drop_stale()
            return
        if event is Event.WINDOW:  # where the data lives: nothing the kernel caches changes
            return
        self._times_stale = True
        if event is not Event.FLUSH:
            for parent, name in self.tree.places(subject):
                if parent not in DEVICE_DIRS or event is Event.REMOVED:
                    self._stale.add((parent, name))
        if type(subject) is DevDax and subject.dax_dev.ino in self._devices:
            # Inline this deadlocks: the kernel writes dirty mapped pages
            # back through WRITE requests that only the trio thread answers.
            await trio.to_thread.run_sync(self._invalidate_inode, subject.dax_dev.ino, event not in _DROP_PAGES)

    async def _drop_stale(self) -> None:
        """Drop, in one go per batch, the entries its changes made stale
        that the kernel holds, and the attributes of the nodes that show the
        bus's time."""
        stale, self._stale = self._stale, set()
        entries = [(ino, name.encode()) for parent, name in stale
                   if (ino := self._paths.get(parent)) and (parent in DEVICE_DIRS or parent + (name,) in self._paths)]
        # the kernel caches what a link points to with its inode, which a
        # name keeps (a minor's /sys/dev/char link): dropped too, in sys/
        # alone, where no inode holds device data
        kept = [ino for parent, name in stale if parent[:1] == ("sys",) and (ino := self._paths.get(parent + (name,)))]
        timed = [ino for path in self.tree.bus_timed() if (ino := self._paths.get(path))] \
            if self._times_stale else []
        self._times_stale = False
        if entries or kept or timed:
            await trio.to_thread.run_sync(self._invalidate, entries, kept, timed)

    @classmethod
    def _invalidate(cls, entries: list[tuple[int, bytes]], kept: list[int], timed: list[int]) -> None:
        for parent, name in entries:
            cls._invalidate_entry(parent, name)
        for ino in kept:
            cls._invalidate_inode(ino)
        for ino in timed:
            cls._invalidate_inode(ino, True)

    async def write_back(self) -> None:
        """Write every device's dirty pages back (a clean shutdown)."""
        for ino in list(self._devices):
            await trio.to_thread.run_sync(self._invalidate_inode, ino)

    @staticmethod
    def _invalidate_inode(ino: int, attr_only: bool = False) -> None:
        try:
            pyfuse3.invalidate_inode(ino, attr_only)
        except OSError as e:  # not cached by the kernel: nothing to drop
            log.debug("invalidate_inode(%d): %s", ino, e)

    @staticmethod
    def _invalidate_entry(parent: int, name: bytes) -> None:
        try:
            pyfuse3.invalidate_entry(parent, name)
        except OSError as e:
            log.debug("invalidate_entry(%r): %s", name, e)
