"""What a path in the mount resolves to. Front ends describe their trees with
these; the FUSE adapter serves any tree made of them."""
import contextvars
import errno
import os
from dataclasses import dataclass
from typing import Callable, Iterable

from ..dax import DaxBus, DevDax
from ..core.errors import DaxError

PAGE_SIZE = 4096


@dataclass(frozen=True)
class Dir:
    """A directory: its names, and the node of each (None once gone). A
    host one passes the host's through, live: the kernel keeps it briefly."""
    names: Callable[[], Iterable[str]]
    child: Callable[[str], "Node | None"]
    host: bool = False


def group(makers: dict[str, Callable[..., "Node | None"]], args: tuple = (),
          names: Callable[[], Iterable[str]] = lambda: (), child: Callable[[str], "Node | None"] = lambda _: None) -> Dir:
    """A directory of named entries, listed and looked up through the one
    table of makers, each called with args (a maker may answer None: the
    entry is absent just now), as the kernel's attribute groups are one
    table for every device; and of entries that come and go with the bus (a
    device's, a region's): names lists those, child looks one up by its
    name alone, so that a lookup costs the same however many there are."""
    return Dir(lambda: [name for name, make in makers.items() if make(*args) is not None] + list(names()),
               lambda name: makers[name](*args) if name in makers else child(name))


def table(entries: dict[str, Callable[[], "Node | None"]],
          names: Callable[[], Iterable[str]] = lambda: (), child: Callable[[str], "Node | None"] = lambda _: None) -> Dir:
    """group() of makers that take nothing."""
    return group(entries, (), names, child)


@dataclass(frozen=True)
class Attr:
    """A sysfs-style attribute: rendered on read, parsed into bus ops on write."""
    mode: int
    show: Callable[[], str] | None = None
    store: Callable[[str], list] | None = None


# the process that opened the attribute a store is for (what a trace event records as its pid)
WRITER: contextvars.ContextVar[int] = contextvars.ContextVar("WRITER", default=0)


class AttrFile:
    """An open attribute, as kernfs serves one: a read from offset 0 renders
    it afresh; a write stores at most a page, and returns what it took."""
    __slots__ = ("attr", "bus", "text", "pid")

    def __init__(self, attr: Attr, bus: DaxBus, pid: int = 0) -> None:
        self.attr, self.bus, self.text, self.pid = attr, bus, b"", pid

    async def read(self, off: int, size: int) -> bytes:
        if self.attr.show is None:
            raise DaxError(errno.EACCES, "write-only attribute")
        if off == 0:
            self.text = self.attr.show().encode()
        return self.text[off:off + size]

    async def write(self, off: int, buf: bytes) -> int:
        if self.attr.store is None:
            raise DaxError(errno.EACCES, "read-only attribute")
        data = bytes(buf[:PAGE_SIZE])
        try:
            text = data.decode()
        except UnicodeDecodeError:
            raise DaxError(errno.EINVAL, "not UTF-8 text") from None
        token = WRITER.set(self.pid)
        try:
            ops = self.attr.store(text)
        finally:
            WRITER.reset(token)
        if ops:  # uevent stores nothing, and must not queue behind a batch
            await self.bus.apply(ops)
        return len(data)

    async def fsync(self) -> None:
        pass

    def release(self) -> None:
        pass


@dataclass(frozen=True)
class Link:
    target: str
    host: bool = False


@dataclass(frozen=True)
class HostFile:
    """A file of the host's /sys, passed through: opened, read and written
    as the daemon's user, for a caller the kernel checked against the
    host's owner and mode (default_permissions). A device node, FIFO or
    socket (one root made in dev/) the kernel opens itself."""
    path: str


class HostFileHandle:
    __slots__ = ("fd",)

    def __init__(self, node: HostFile, flags: int) -> None:
        try:
            self.fd = os.open(node.path, flags & (os.O_ACCMODE | os.O_NONBLOCK | os.O_TRUNC) | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError as e:
            raise DaxError(e.errno, f"{node.path}: {e.strerror}") from None

    async def read(self, off: int, size: int) -> bytes:
        return self._call(os.pread, self.fd, size, off)

    async def write(self, off: int, buf: bytes) -> int:
        return self._call(os.pwrite, self.fd, bytes(buf), off)

    @staticmethod
    def _call(fn, *args):
        try:
            return fn(*args)
        except OSError as e:
            raise DaxError(e.errno, e.strerror) from None

    async def fsync(self) -> None:
        pass

    def release(self) -> None:
        os.close(self.fd)


@dataclass(frozen=True)
class Device:
    dev: DevDax


@dataclass(frozen=True)
class Chardev:
    """A character device of a bus other than a dax device (/dev/ndctl0): an
    inode number of its own, which the personality shows as S_IFCHR, and
    the handle its requests go through."""
    ino: int
    open: Callable[[], object]


@dataclass(frozen=True)
class Stream:
    """A file read as a stream (a trace pipe): each open is a handle of its own."""
    open: Callable[[], object]


@dataclass(frozen=True)
class Mountpoint:
    """An empty file that `daxfuse exec` mounts a host node on (/dev/null)."""


Node = Dir | Attr | Link | Device | Chardev | Stream | Mountpoint | HostFile
