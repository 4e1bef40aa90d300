"""/dev/nmem0: the emulated DIMM's ioctls (ND_IOCTL_GET_CONFIG_SIZE,
_GET_CONFIG_DATA, _SET_CONFIG_DATA, include/uapi/linux/ndctl.h) over its
label storage area, which the bus keeps with the layout: what `ndctl
read-labels`, `write-labels`, `zero-labels` and `init-labels` send. A write
while a region is enabled is EBUSY, as the kernel's; a range outside the
area, or longer than max_xfer, is EINVAL.
"""
import errno
import struct

from . import wire
from ..core.errors import DaxError
from ..dax.device import LABEL_SIZE
from .ioctl import IoctlFile, need

HEAD, MAX_XFER = wire.ND_CONFIG_HEAD, wire.ND_MAX_XFER


class NmemFile(IoctlFile):
    """An open /dev/nmem0."""
    __slots__ = ()
    NAME = "nmem"

    def commands(self) -> dict:
        return {wire.ND_GET_CONFIG_SIZE: (self._get_size, HEAD), wire.ND_GET_CONFIG_DATA: (self._get_data, HEAD),
                wire.ND_SET_CONFIG_DATA: (self._set_data, HEAD)}

    # struct nd_cmd_get_config_size {u32 status, config_size, max_xfer}
    async def _get_size(self, p: bytearray) -> None:
        struct.pack_into("<III", p, 0, 0, LABEL_SIZE, MAX_XFER)

    # struct nd_cmd_get_config_data_hdr {u32 in_offset, in_length, status; u8 out_buf[]}
    async def _get_data(self, p: bytearray) -> None:
        offset, length = _span(p)
        self.bus.check_labels(offset, length)
        struct.pack_into("<I", p, 8, 0)
        p[HEAD:HEAD + length] = self.bus.dimm.label_area[offset:offset + length]

    # struct nd_cmd_set_config_hdr {u32 in_offset, in_length; u8 in_buf[]}, then u32 status
    async def _set_data(self, p: bytearray) -> None:
        offset, length = _span(p)
        data = bytes(p[8:8 + length])
        await self.bus.apply([lambda: self.bus.write_labels(offset, data)])
        struct.pack_into("<I", p, 8 + length, 0)


def _span(p: bytearray) -> tuple[int, int]:
    """(in_offset, in_length) of a config data command whose payload holds its data."""
    offset, length = struct.unpack_from("<II", p)
    if length > MAX_XFER:
        raise DaxError(errno.EINVAL, f"{length} bytes of labels in one command; at most {MAX_XFER} (max_xfer)")
    need(p, HEAD + length, "nmem config data")
    return offset, length
