"""The NVDIMM bus's ioctls (ND_IOCTL_*, include/uapi/linux/ndctl.h) that
ndctl inject-error and libpmem2's badblock clearing send to /dev/ndctl0:
address range scrub (ARS) capabilities and status, error injection, and
clearing, in the form views/ioctl.py gives.

Injection poisons at once and counts a scrub, as if ARS had found the
error (ndctl waits for nfit/scrub to count up); un-injection takes it off
the injection list but leaves the poison, as the kernel leaves its
badblocks; ND_IOCTL_CLEAR_ERROR clears the poison.
"""
import errno
import struct

from . import wire
from ..dax.badblocks import SECTOR
from ..core.errors import DaxError
from ..memory import phys_base
from .ioctl import IoctlFile, need

ARS_CAP, ARS_START, ARS_STATUS = wire.ND_ARS_CAP, wire.ND_ARS_START, wire.ND_ARS_STATUS
CLEAR_ERROR, CALL = wire.ND_CLEAR_ERROR, wire.ND_CALL
INJECT_SET, INJECT_CLEAR, INJECT_GET = 7, 8, 9  # ND_IOCTL_CALL commands of the NFIT bus family
MAX_ARS_OUT = wire.ND_ARS_STATUS_SIZE  # room for 64 records in an ARS status: what the library sends
CLEAR_ERR_UNIT = SECTOR
ARS_TYPES = 3 << 16  # persistent and volatile scrubs supported (status' high half)
# ND_IOCTL_CALL's nd_cmd_ars_err_inj: base, length and (to set) options in; a status out
INJECTION_IN = {INJECT_SET: 17, INJECT_CLEAR: 16, INJECT_GET: 0}


class NdctlFile(IoctlFile):
    """An open /dev/ndctl0."""
    __slots__ = ()
    NAME = "ndctl"

    def commands(self) -> dict:
        return {ARS_CAP: (self._ars_cap, 32), ARS_START: (self._ars_start, 32), ARS_STATUS: (self._ars_status, 48),
                CLEAR_ERROR: (self._clear_error, 32), CALL: (self._call, wire.ND_PKG_HEAD)}

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
        need(body, size_in + size_out, f"ND_CMD_CALL command {command}")
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

