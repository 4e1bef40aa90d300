"""What the personality library and the daemon send each other (the
direct-mapping protocol, /dev/ndctl0's, /dev/nmem0's and /dev/cxl/memN's ioctls), read from the C header that
the library compiles with (daxfuse/preload/daxfuse_wire.h), so that the two
sides cannot disagree: its #defines become constants here, its structures
struct.Struct formats with named fields."""
import os
import re
import struct
from collections import namedtuple

HEADER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "preload", "daxfuse_wire.h")
_TYPES = {"uint64_t": "Q", "int64_t": "q", "uint32_t": "I", "int32_t": "i", "uint8_t": "B"}


def _parse(text: str):
    constants = {}
    for name, value in re.findall(r"^#define (DAXFUSE_\w+) \(?(-?(?:0x)?[0-9a-fA-F]+)(?:ULL)?\)?", text, re.M):
        constants[name] = int(value, 0)
    structs = {}
    for name, body in re.findall(r"struct (\w+) \{(.*?)\};", text, re.S):
        fmt, fields = "<", []
        for ctype, field, count in re.findall(r"(\w+) (\w+)(?:\[(\w+)\])?;", body):
            n = constants[count] if count in constants else int(count or 1)
            fmt += f"{n}s" if count else _TYPES[ctype]
            fields.append(field)
        structs[name] = (struct.Struct(fmt), namedtuple(name, fields))
    return constants, structs


with open(HEADER) as _f:
    CONSTANTS, STRUCTS = _parse(_f.read())

MAGIC = CONSTANTS["DAXFUSE_WIRE_MAGIC"]
OP_MAP = CONSTANTS["DAXFUSE_OP_MAP"]
OP_REVIVE = CONSTANTS["DAXFUSE_OP_REVIVE"]
STATUS_FUSE = CONSTANTS["DAXFUSE_STATUS_FUSE"]
TOKEN_SIZE = CONSTANTS["DAXFUSE_TOKEN_SIZE"]
MAX_POISON = CONSTANTS["DAXFUSE_MAX_POISON"]
ND_ARS_CAP = CONSTANTS["DAXFUSE_ND_ARS_CAP"]
ND_ARS_START = CONSTANTS["DAXFUSE_ND_ARS_START"]
ND_ARS_STATUS = CONSTANTS["DAXFUSE_ND_ARS_STATUS"]
ND_CLEAR_ERROR = CONSTANTS["DAXFUSE_ND_CLEAR_ERROR"]
ND_CALL = CONSTANTS["DAXFUSE_ND_CALL"]
ND_PKG_HEAD = CONSTANTS["DAXFUSE_ND_PKG_HEAD"]
ND_ARS_STATUS_SIZE = CONSTANTS["DAXFUSE_ND_ARS_STATUS_SIZE"]
ND_GET_CONFIG_SIZE = CONSTANTS["DAXFUSE_ND_GET_CONFIG_SIZE"]
ND_GET_CONFIG_DATA = CONSTANTS["DAXFUSE_ND_GET_CONFIG_DATA"]
ND_SET_CONFIG_DATA = CONSTANTS["DAXFUSE_ND_SET_CONFIG_DATA"]
ND_CONFIG_HEAD = CONSTANTS["DAXFUSE_ND_CONFIG_HEAD"]
ND_MAX_XFER = CONSTANTS["DAXFUSE_ND_MAX_XFER"]
CXL_QUERY_COMMANDS = CONSTANTS["DAXFUSE_CXL_QUERY_COMMANDS"]
CXL_SEND_COMMAND = CONSTANTS["DAXFUSE_CXL_SEND_COMMAND"]
CXL_QUERY_HEAD = CONSTANTS["DAXFUSE_CXL_QUERY_HEAD"]
CXL_COMMAND_INFO = CONSTANTS["DAXFUSE_CXL_COMMAND_INFO"]
CXL_SEND_SIZE = CONSTANTS["DAXFUSE_CXL_SEND_SIZE"]
CXL_PAYLOAD_MAX = CONSTANTS["DAXFUSE_CXL_PAYLOAD_MAX"]
REQUEST, Request = STRUCTS["daxfuse_request"]
REPLY, Reply = STRUCTS["daxfuse_reply"]
RANGE, _ = STRUCTS["daxfuse_range"]


def request(data: bytes) -> "Request | None":
    """The request data holds, or None when it is not one (size, magic)."""
    if len(data) != REQUEST.size:
        return None
    req = Request(*REQUEST.unpack(data))
    return req if req.magic == MAGIC else None


def reply(status: int, minor=0, serial=0, gen=0, align=0, size=0, token=bytes(TOKEN_SIZE),
          poison=()) -> bytes:
    return (REPLY.pack(MAGIC, status, len(poison), minor, serial, gen, align, size, token)
            + b"".join(RANGE.pack(offset, length) for offset, length in poison))
