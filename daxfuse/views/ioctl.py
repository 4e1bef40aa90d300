"""The NVDIMM bus's character devices (/dev/ndctl0, /dev/nmem0) as the
daemon answers their ioctls. The personality's ioctl wrapper writes a
request to the node (the command's number as a little-endian u32, then its
payload) and reads the payload back as the kernel would have left it.

A payload too short for its command is EINVAL, checked before anything is
done: a call that fails changes nothing.
"""
import errno
import struct
from typing import Awaitable, Callable

from ..core.errors import DaxError
from ..dax import DaxBus

Handler = Callable[[bytearray], Awaitable[None]]


class IoctlFile:
    """An open node: the reply of the last request on this handle.
    Subclasses name their commands: number -> (handler, payload it needs)."""
    __slots__ = ("bus", "reply")
    NAME = ""

    def __init__(self, bus: DaxBus) -> None:
        self.bus = bus
        self.reply = b""

    def commands(self) -> dict[int, tuple[Handler, int]]:
        raise NotImplementedError

    async def read(self, off: int, size: int) -> bytes:
        return self.reply[off:off + size]

    async def write(self, off: int, buf: bytes) -> int:
        if len(buf) < 4:
            raise DaxError(errno.EINVAL, "an ioctl request: a command number, then its payload")
        nr, payload = struct.unpack_from("<I", buf)[0], bytearray(buf[4:])
        command = self.commands().get(nr)
        if command is None:
            raise DaxError(errno.ENOTTY, f"{self.NAME} ioctl {nr} is not emulated")
        handler, size = command
        need(payload, size, f"{self.NAME} ioctl {nr}")
        await handler(payload)
        self.reply = bytes(payload)
        return len(buf)

    async def fsync(self) -> None:
        pass

    def release(self) -> None:
        pass


def need(payload, size: int, what: str) -> None:
    if len(payload) < size:
        raise DaxError(errno.EINVAL, f"{what}: {len(payload)} bytes of payload, {size} needed")
