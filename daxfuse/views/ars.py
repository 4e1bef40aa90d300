"""The NVDIMM bus's ioctls (ND_IOCTL_*, include/uapi/linux/ndctl.h) that
ndctl inject-error and libpmem2's badblock clearing send to /dev/ndctl0:
address range scrub (ARS) capabilities and status, error injection, and
clearing. The personality's ioctl wrapper writes a request to the node
(the command's number as a little-endian u32, then its payload) and reads
the payload back as the kernel would have left it.

Injection poisons at once and counts a scrub, as if ARS had found the
error (ndctl waits for nfit/scrub to count up); un-injection takes it off
the injection list but leaves the poison, as the kernel leaves its
badblocks; ND_IOCTL_CLEAR_ERROR clears the poison.

A payload too short for its command is EINVAL, checked before anything is
done: a call that fails changes nothing.
"""
import errno
import struct

from . import wire
from ..dax import DaxBus
from ..dax.badblocks import SECTOR
from ..core.errors import DaxError
from ..memory import phys_base

ARS_CAP, ARS_START, ARS_STATUS = wire.ND_ARS_CAP, wire.ND_ARS_START, wire.ND_ARS_STATUS
CLEAR_ERROR, CALL = wire.ND_CLEAR_ERROR, wire.ND_CALL
INJECT_SET, INJECT_CLEAR, INJECT_GET = 7, 8, 9  # ND_IOCTL_CALL commands of the NFIT bus family
MAX_ARS_OUT = wire.ND_ARS_STATUS_SIZE  # room for 64 records in an ARS status: what the library sends
CLEAR_ERR_UNIT = SECTOR
ARS_TYPES = 3 << 16  # persistent and volatile scrubs supported (status' high half)
# the payload each command reads and writes: struct nd_cmd_ars_cap, _start, _clear_error; at least
# the head of nd_cmd_ars_status and of nd_cmd_pkg
PAYLOAD = {ARS_CAP: 32, ARS_START: 32, ARS_STATUS: 48, CLEAR_ERROR: 32, CALL: wire.ND_PKG_HEAD}
# ND_IOCTL_CALL's nd_cmd_ars_err_inj: base, length and (to set) options in; a status out
INJECTION_IN = {INJECT_SET: 17, INJECT_CLEAR: 16, INJECT_GET: 0}


class NdctlFile:
    """An open /dev/ndctl0: the reply of the last request on this handle."""
    __slots__ = ("bus", "reply")

    def __init__(self, bus: DaxBus) -> None:
        self.bus = bus
        self.reply = b""

    async def read(self, off: int, size: int) -> bytes:
        return self.reply[off:off + size]

    async def write(self, off: int, buf: bytes) -> int:
        if len(buf) < 4:
            raise DaxError(errno.EINVAL, "an ioctl request: a command number, then its payload")
        nr, payload = struct.unpack_from("<I", buf)[0], bytearray(buf[4:])
        handler = {ARS_CAP: self._ars_cap, ARS_START: self._ars_start, ARS_STATUS: self._ars_status,
                   CLEAR_ERROR: self._clear_error, CALL: self._call}.get(nr)
        if handler is None:
            raise DaxError(errno.ENOTTY, f"ndctl ioctl {nr} is not emulated")
        _need(payload, PAYLOAD[nr], f"ndctl ioctl {nr}")
        await handler(payload)
        self.reply = bytes(payload)
        return len(buf)

    async def fsync(self) -> None:
        pass

    def release(self) -> None:
        pass

    # struct nd_cmd_ars_cap {u64 address, length; u32 status, max_ars_out, clear_err_unit; u16 flags, rsvd}
    async def _ars_cap(self, p: bytearray) -> None:
        struct.pack_into("<IIIHH", p, 16, ARS_TYPES, MAX_ARS_OUT, CLEAR_ERR_UNIT, 0, 0)

    # struct nd_cmd_ars_start {u64 address, length; u16 type; u8 flags, rsvd[5]; u32 status, scrub_time}
    async def _ars_start(self, p: bytearray) -> None:
        await self.bus.apply([self.bus.start_scrub])  # a scrub finds what was injected at once
        struct.pack_into("<II", p, 24, 0, 0)

    # struct nd_cmd_ars_status {u32 status, out_length; u64 address, length, restart_address,
    #   restart_length; u16 type, flags; u32 num_records; {u32 handle, rsvd; u64 err_address, length}[]}
    async def _ars_status(self, p: bytearray) -> None:
        records = [(phys_base() + s * SECTOR, c * SECTOR) for s, c in self.bus.badblocks.ranges()]
        records = records[:(len(p) - 48) // 24]
        struct.pack_into("<IIQQQQHHI", p, 0, 0, 48 + 24 * len(records), phys_base(), self.bus.memory.size, 0, 0,
                         2, 0, len(records))
        for i, (address, length) in enumerate(records):
            struct.pack_into("<IIQQ", p, 48 + 24 * i, 0, 0, address, length)

    # struct nd_cmd_clear_error {u64 address, length; u32 status; u8 rsvd[4]; u64 cleared}
    async def _clear_error(self, p: bytearray) -> None:
        address, length = struct.unpack_from("<QQ", p)
        await self.bus.apply([lambda: self.bus.clear_physical(_offset(address), length)])
        struct.pack_into("<I4xQ", p, 16, 0, length)

    # struct nd_cmd_pkg {u64 nd_family, nd_command; u32 nd_size_in, nd_size_out, rsvd[9], fw_size;
    #   payload: input, then output}
    async def _call(self, p: bytearray) -> None:
        family, command, size_in, size_out = struct.unpack_from("<QQII", p)
        body = memoryview(p)[wire.ND_PKG_HEAD:]
        if family != 0 or command not in (INJECT_SET, INJECT_CLEAR, INJECT_GET):
            raise DaxError(errno.ENOTTY, f"ND_CMD_CALL family {family} command {command} is not emulated")
        need_in = INJECTION_IN[command]
        if size_in < need_in or size_out < (8 if command == INJECT_GET else 4):
            raise DaxError(errno.EINVAL, f"ND_CMD_CALL command {command}: {size_in} bytes in and {size_out} "
                                         f"out are too few")
        _need(body, size_in + size_out, f"ND_CMD_CALL command {command}")
        if command == INJECT_GET:  # {u32 status, count; {u64 base, length}[]}
            records = [(phys_base() + s * SECTOR, c * SECTOR) for s, c in self.bus.injected.ranges()]
            records = records[:(size_out - 8) // 16]
            struct.pack_into("<II", body, 0, 0, len(records))
            for i, record in enumerate(records):
                struct.pack_into("<QQ", body, 8 + 16 * i, *record)
            return
        base, length = struct.unpack_from("<QQ", body)
        if command == INJECT_SET:
            await self.bus.apply([lambda: self.bus.inject_physical(_offset(base), length), self.bus.start_scrub])
        else:
            await self.bus.apply([lambda: self.bus.uninject_physical(_offset(base), length)])
        struct.pack_into("<I", body, size_in, 0)  # the status, after the input


def _offset(address: int) -> int:
    """The memory-file offset of an emulated physical address (one below the
    emulated memory is no address of its: ENXIO)."""
    if address < phys_base():
        raise DaxError(errno.ENXIO, f"address {address:#x} is below the emulated memory ({phys_base():#x})")
    return address - phys_base()


def _need(payload, size: int, what: str) -> None:
    if len(payload) < size:
        raise DaxError(errno.EINVAL, f"{what}: {len(payload)} bytes of payload, {size} needed")
