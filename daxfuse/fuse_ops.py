"""The pyfuse3 Operations: translate FUSE requests into Device DAX calls.

Tree: MOUNT/control and MOUNT/dax/daxR.I. Rules live in the layers below;
this class keeps the node table (which inodes the kernel knows, holding a
dax_device reference for each so an inode number is never reused under the
kernel) and the open handles, and turns DaxError into FUSEError. Any other
exception is logged and answered EIO: pyfuse3 dies on anything but FUSEError.
"""
import errno
import functools
import itertools
import logging
import os
import stat

import pyfuse3
import trio
from pyfuse3 import FUSEError

from . import control
from .core import DaxError
from .dax import DaxBus, DaxFile, DevDax

log = logging.getLogger(__name__)

ROOT_INO = pyfuse3.ROOT_INODE
DAX_DIR_INO = ROOT_INO + 1
CONTROL_INO = ROOT_INO + 2
_STATIC = {ROOT_INO: (b"", stat.S_IFDIR | 0o755), DAX_DIR_INO: (b"dax", stat.S_IFDIR | 0o755),
           CONTROL_INO: (b"control", stat.S_IFREG | 0o644)}
DEVICE_MODE = stat.S_IFREG | 0o600
# Every lifecycle change invalidates the kernel's caches explicitly, so the
# timeouts only bound the cost of a missed invalidation.
_TIMEOUT = 10.0


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


class _Control:
    """An open control file: the result of its last write, else the layout
    (snapshotted when a read starts at offset 0)."""
    __slots__ = ("result", "layout")

    def __init__(self) -> None:
        self.result: bytes | None = None
        self.layout = b""


class DaxOperations(pyfuse3.Operations):
    def __init__(self, bus: DaxBus) -> None:
        super().__init__()
        self.bus = bus
        self.core = bus.core
        self._nodes: dict[int, list] = {}  # ino -> [DevDax, kernel lookup count]
        self._handles: dict[int, object] = {}
        self._fh = itertools.count(1)
        self._uid, self._gid = os.getuid(), os.getgid()
        bus.listeners.append(self._on_change)

    # --- attributes --------------------------------------------------------------------
    def _attr(self, ino: int, mode: int, size: int = 0) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = ino
        a.st_mode = mode
        a.st_nlink = 2 if stat.S_ISDIR(mode) else 1
        a.st_uid, a.st_gid = self._uid, self._gid
        a.st_size = size
        a.st_blksize = 4096
        a.st_blocks = size // 512
        a.entry_timeout = a.attr_timeout = _TIMEOUT
        return a

    def _device_attr(self, dev: DevDax) -> pyfuse3.EntryAttributes:
        return self._attr(dev.dax_dev.ino, DEVICE_MODE, dev.size)

    def _remember(self, dev: DevDax) -> pyfuse3.EntryAttributes:
        """The kernel now holds one more lookup of dev's inode."""
        ino = dev.dax_dev.ino
        node = self._nodes.get(ino)
        if node is None:
            self.core.get_dax(dev.dax_dev)
            node = self._nodes[ino] = [dev, 0]
        node[1] += 1
        return self._device_attr(dev)

    # --- namespace ------------------------------------------------------------------------
    @_handler
    async def lookup(self, parent_inode, name, ctx=None):
        if parent_inode == ROOT_INO:
            for ino in (DAX_DIR_INO, CONTROL_INO):
                if _STATIC[ino][0] == name:
                    return self._attr(ino, _STATIC[ino][1])
        elif parent_inode == DAX_DIR_INO and name.startswith(b"dax"):
            try:
                return self._remember(self.bus.device(name.decode()))
            except (DaxError, UnicodeDecodeError):
                pass
        raise FUSEError(errno.ENOENT)

    @_handler
    async def getattr(self, inode, ctx=None):
        if inode in _STATIC:
            return self._attr(inode, _STATIC[inode][1])
        node = self._nodes.get(inode)
        if node is None:
            raise FUSEError(errno.ENOENT)
        return self._device_attr(node[0])

    @_handler
    async def forget(self, inode_list):
        for ino, nlookup in inode_list:
            if ino in self._nodes:
                self._forget(ino, nlookup)

    def _forget(self, ino: int, nlookup: int) -> None:
        node = self._nodes[ino]
        node[1] -= nlookup
        if node[1] <= 0:
            del self._nodes[ino]
            self.core.put_dax(node[0].dax_dev)

    @_handler
    async def setattr(self, inode, attr, fields, fh, ctx):
        if fields.update_mode or fields.update_uid or fields.update_gid:
            raise FUSEError(errno.EPERM)
        current = await self.getattr(inode)
        if fields.update_size and attr.st_size != current.st_size:
            # fio and PMDK truncate to the current size; any other size
            # would change a fixed-size device.
            raise FUSEError(errno.EINVAL)
        return current

    @_handler
    async def opendir(self, inode, ctx):
        if inode not in (ROOT_INO, DAX_DIR_INO):
            raise FUSEError(errno.ENOTDIR)
        return inode

    @_handler
    async def readdir(self, fh, start_id, token):
        if fh == ROOT_INO:
            entries = [(ino, _STATIC[ino][0], None) for ino in (DAX_DIR_INO, CONTROL_INO)]
        else:
            entries = [(d.dax_dev.ino, d.name.encode(), d)
                       for d in sorted(self.bus.devices(), key=lambda d: d.dax_dev.ino)]
        for ino, name, dev in entries:
            if ino <= start_id:
                continue
            attr = self._attr(ino, _STATIC[ino][1]) if dev is None else self._remember(dev)
            if not pyfuse3.readdir_reply(token, name, attr, ino):
                if dev is not None:  # the kernel did not take this lookup
                    self._forget(ino, 1)
                break

    async def _refuse(self, *args):
        raise FUSEError(errno.EPERM)

    create = mknod = mkdir = unlink = rmdir = rename = symlink = link = _refuse

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
        if inode == CONTROL_INO:
            self._handles[fh] = _Control()
            return pyfuse3.FileInfo(fh=fh, direct_io=True, nonseekable=False)
        node = self._nodes.get(inode)
        if node is None:
            raise FUSEError(errno.ENOENT)
        if flags & os.O_TRUNC:
            # libfuse negotiates atomic_o_trunc: accepting the flag would make
            # the kernel drop its page cache, dirty mapped pages included.
            raise DaxError(errno.EINVAL, "O_TRUNC would discard device contents")
        self._handles[fh] = DaxFile(self.core, self.bus.memory, node[0].dax_dev)
        return pyfuse3.FileInfo(fh=fh, direct_io=bool(flags & os.O_DIRECT))

    @_handler
    async def read(self, fh, off, size):
        h = self._handles[fh]
        if type(h) is DaxFile:
            return h.read(off, size)
        if h.result is not None:
            return h.result[off:off + size]
        if off == 0:
            h.layout = control.layout_text(self.bus).encode()
        return h.layout[off:off + size]

    @_handler
    async def write(self, fh, off, buf):
        h = self._handles[fh]
        if type(h) is DaxFile:
            return h.write(off, buf)
        try:
            h.result = (await control.execute(self.bus, buf.decode()) + "\n").encode()
        except UnicodeDecodeError:
            h.result = b"error EINVAL: command is not UTF-8\n"
            raise FUSEError(errno.EINVAL) from None
        except DaxError as e:
            h.result = (control.error_line(e) + "\n").encode()
            raise
        return len(buf)

    @_handler
    async def fsync(self, fh, datasync):
        h = self._handles[fh]
        if type(h) is DaxFile:
            await h.fsync()

    @_handler
    async def flush(self, fh):
        pass

    @_handler
    async def release(self, fh):
        h = self._handles.pop(fh)
        if type(h) is DaxFile:
            h.release()

    # --- lifecycle: keep the kernel's caches true ----------------------------------------
    async def _on_change(self, event: str, dev: DevDax) -> None:
        ino = dev.dax_dev.ino
        if event == "removed":
            await trio.to_thread.run_sync(self._invalidate_entry, dev.name.encode())
        if event in ("disabling", "disabled", "resized", "removed") and ino in self._nodes:
            # Inline this deadlocks: the kernel writes dirty mapped pages
            # back through WRITE requests that only the trio thread answers.
            await trio.to_thread.run_sync(self._invalidate_inode, ino)

    @staticmethod
    def _invalidate_inode(ino: int) -> None:
        try:
            pyfuse3.invalidate_inode(ino)
        except OSError as e:  # not cached by the kernel: nothing to drop
            log.debug("invalidate_inode(%d): %s", ino, e)

    @staticmethod
    def _invalidate_entry(name: bytes) -> None:
        try:
            pyfuse3.invalidate_entry(DAX_DIR_INO, name)
        except OSError as e:
            log.debug("invalidate_entry(%r): %s", name, e)
