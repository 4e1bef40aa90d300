"""/dev/cxl/memN: a memdev's mailbox (CXL_MEM_QUERY_COMMANDS and
CXL_MEM_SEND_COMMAND, include/uapi/linux/cxl_mem.h), in the form
views/ioctl.py gives: what `cxl list -I -H -F`, read-labels, write-labels
and zero-labels send. Payloads are little-endian and packed; capacities
count 256 MiB. Validation follows cxl_validate_cmd_from_user: an unknown
command is ENOTTY, flags or reserved fields set EINVAL, a fixed-size
input of another size or an output too small ENOMEM, a raw command EPERM.
"""
import errno
import struct

from . import wire
from ..core.errors import DaxError
from ..cxl import GRANULE, LSA_SIZE, CxlBus, Memdev
from .cxl import FIRMWARE_VERSION
from .ioctl import IoctlFile, need

VARIABLE = 0xFFFFFFFF  # a size the command does not fix (~0)
IDENTIFY, RAW, GET_FW_INFO, GET_PARTITION_INFO, GET_LSA, GET_HEALTH_INFO, SET_LSA = 1, 2, 4, 5, 6, 7, 10
# id -> (size_in, size_out): the commands a cxl_test memdev's CEL enables, less poison and firmware transfer
COMMANDS = {IDENTIFY: (0, 0x43), RAW: (VARIABLE, VARIABLE), GET_FW_INFO: (0, 0x50), GET_PARTITION_INFO: (0, 0x20),
            GET_LSA: (8, VARIABLE), GET_HEALTH_INFO: (0, 0x12), SET_LSA: (VARIABLE, 0)}
NR_COMMANDS = 21  # the uapi table's size, as the kernel reports it
IN_TABLE = set(range(1, 15)) | {18}  # ids the kernel's table has (15-17, 19, 20 are deprecated: they read 0)
SEND = struct.Struct("<IIIIIIQIIQ")  # id, flags, raw opcode+rsvd, retval, in.size, rsvd, in.payload, out.size, rsvd, out.payload


class CxlMemFile(IoctlFile):
    """An open /dev/cxl/memN."""
    __slots__ = ("cxl", "memdev")
    NAME = "cxl memdev"

    def __init__(self, bus, cxl: CxlBus, memdev: Memdev) -> None:
        super().__init__(bus)
        self.cxl, self.memdev = cxl, memdev

    def commands(self) -> dict:
        return {wire.CXL_QUERY_COMMANDS: (self._query, wire.CXL_QUERY_HEAD),
                wire.CXL_SEND_COMMAND: (self._send, wire.CXL_SEND_SIZE)}

    async def _query(self, p: bytearray) -> None:
        """n_commands 0 asks for the count; else that many entries are filled."""
        wanted = struct.unpack_from("<I", p)[0]
        if not wanted:
            struct.pack_into("<I", p, 0, NR_COMMANDS)
            return
        count = min(wanted, NR_COMMANDS)
        need(p, wire.CXL_QUERY_HEAD + count * wire.CXL_COMMAND_INFO, "cxl query commands")
        for i in range(count):
            size_in, size_out = COMMANDS.get(i, (0, 0))  # one the device's CEL lacks: its id, not enabled
            struct.pack_into("<IIII", p, wire.CXL_QUERY_HEAD + i * wire.CXL_COMMAND_INFO,
                             i if i in IN_TABLE else 0, 1 if i in COMMANDS else 0, size_in, size_out)

    async def _send(self, p: bytearray) -> None:
        id_, flags, raw, _, in_size, in_rsvd, in_ptr, out_size, out_rsvd, out_ptr = SEND.unpack_from(p)
        if id_ not in COMMANDS:
            raise DaxError(errno.ENOTTY, f"cxl command {id_} is not supported")
        if flags or (raw and id_ != RAW) or in_rsvd or out_rsvd:
            raise DaxError(errno.EINVAL, "cxl command with flags or reserved fields set")
        if id_ == RAW:
            raise DaxError(errno.EPERM, "raw cxl commands are refused (CONFIG_CXL_MEM_RAW_COMMANDS is off)")
        if in_size > wire.CXL_PAYLOAD_MAX:
            raise DaxError(errno.EINVAL, f"{in_size} bytes of input: payload_max is {wire.CXL_PAYLOAD_MAX}")
        size_in, size_out = COMMANDS[id_]
        if (size_in != VARIABLE and in_size != size_in) or (size_out != VARIABLE and out_size < size_out):
            raise DaxError(errno.ENOMEM, f"cxl command {id_}: {in_size} bytes in, {out_size} out; "
                                         f"it takes {size_in} in and {size_out} out")
        out_size = min(out_size, wire.CXL_PAYLOAD_MAX)
        head = wire.CXL_SEND_SIZE
        need(p, head + in_size + out_size, "cxl send command")
        data = bytes(p[head:head + in_size])
        handlers = {IDENTIFY: self._identify, GET_FW_INFO: self._fw_info, GET_PARTITION_INFO: self._partition_info,
                    GET_LSA: self._get_lsa, GET_HEALTH_INFO: self._health_info, SET_LSA: self._set_lsa}
        out = await handlers[id_](data, out_size)
        p[head + in_size:head + in_size + len(out)] = out
        struct.pack_into("<I", p, 12, 0)  # retval: the device's success
        struct.pack_into("<I", p, 32, len(out))

    async def _identify(self, data: bytes, room: int) -> bytes:
        """IDENTIFY."""
        m = self.memdev
        out = bytearray(0x43)
        out[0:16] = FIRMWARE_VERSION.encode().ljust(16, b"\0")
        struct.pack_into("<QQQQ", out, 0x10, (m.ram + m.pmem) // GRANULE, m.ram // GRANULE, m.pmem // GRANULE, 1)
        struct.pack_into("<I", out, 0x38, LSA_SIZE)
        return bytes(out)

    async def _fw_info(self, data: bytes, room: int) -> bytes:
        """GET_FW_INFO: one slot, active."""
        out = bytearray(0x50)
        out[0], out[1] = 1, 1
        out[16:32] = FIRMWARE_VERSION.encode().ljust(16, b"\0")
        return bytes(out)

    async def _partition_info(self, data: bytes, room: int) -> bytes:
        """GET_PARTITION_INFO: active volatile and persistent capacity; no change pending."""
        return struct.pack("<QQQQ", self.memdev.ram // GRANULE, self.memdev.pmem // GRANULE, 0, 0)

    async def _get_lsa(self, data: bytes, room: int) -> bytes:
        """GET_LSA {u32 offset, length}."""
        offset, length = struct.unpack("<II", data)
        self.cxl.check_lsa(offset, length)
        if length > room:
            raise DaxError(errno.EINVAL, f"{length} bytes of labels asked into {room}")
        return bytes(self.memdev.lsa[offset:offset + length])

    async def _health_info(self, data: bytes, room: int) -> bytes:
        """GET_HEALTH_INFO: healthy, 25 C; the dirty shutdowns of the memory daxfuse serves."""
        return struct.pack("<BBBBHIII", 0, 0, 0, 0, 25, self.bus.dirty_shutdown, 0, 0)

    async def _set_lsa(self, data: bytes, room: int) -> bytes:
        """SET_LSA {u32 offset, rsvd; data}: kept with the layout."""
        if len(data) < 8:
            raise DaxError(errno.EINVAL, "SET_LSA is offset, reserved, then data")
        offset = struct.unpack_from("<I", data)[0]
        await self.bus.apply([lambda: self.cxl.write_lsa(self.memdev.name, offset, data[8:])])
        return b""
