"""Numbers and sizes shared by every front end: one grammar, one set of
bounds, one set of errors."""
import errno
import re

from .errors import DaxError, shown

U64_MAX = (1 << 64) - 1  # sizes and addresses, as the kernel's u64
INT_MAX = (1 << 31) - 1  # ids, as the kernel's int
ID_MAX = (1 << 32) - 2  # uids and gids: (u32)-1 means "no change" to chown

_SUFFIX = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_NUMBER = r"(0[xX][0-9a-fA-F]+|[0-9]+)"
_SIZE = re.compile(_NUMBER + r"(?:([KMGTkmgt])(?:i?B)?|B)?", re.ASCII)
_PLAIN = re.compile(_NUMBER, re.ASCII)
_WIDTH = {8: "o", 10: "d", 16: "x"}


def bounded_int(digits: str, base: int, limit: int) -> int | None:
    """int(digits, base) when it is at most limit, else None. It never
    converts more digits than limit has, so no input is too long (Python's
    int() refuses decimal strings of over 4300 digits)."""
    significant = digits.lstrip("0") or "0"
    if len(significant) > len(format(limit, _WIDTH[base])):
        return None
    value = int(significant, base)
    return value if value <= limit else None


def _digits(m: re.Match) -> tuple[str, int]:
    digits = m.group(1)
    return (digits[2:], 16) if digits[:2] in ("0x", "0X") else (digits, 10)


def parse_size(text: str) -> int:
    """Decimal (a leading zero is still decimal) or 0x hex, with an optional
    binary K/M/G/T suffix in either case (4K, 4k, 4KiB, 0x10M) or B; at most
    2^64 - 1 bytes."""
    m = _SIZE.fullmatch(text.strip(" \t\r\n"))
    if not m:
        raise DaxError(errno.EINVAL, f"invalid size {shown(text)}")
    value = bounded_int(*_digits(m), U64_MAX)
    value = None if value is None else value * _SUFFIX[(m.group(2) or "").upper()]
    if value is None or value > U64_MAX:
        raise DaxError(errno.EINVAL, f"size {shown(text)} is out of range (at most 2^64 - 1)")
    return value


def parse_id(text: str) -> int:
    """A region id: decimal or 0x hex, 0 to INT_MAX."""
    m = _PLAIN.fullmatch(text)
    if not m:
        raise DaxError(errno.EINVAL, f"invalid number {shown(text)}")
    value = bounded_int(*_digits(m), INT_MAX)
    if value is None:
        raise DaxError(errno.EINVAL, f"number {shown(text)} is out of range (at most {INT_MAX})")
    return value


def parse_node(text: str) -> int:
    """A NUMA node: -1 (none) or a decimal or 0x hex id (the bus bounds it)."""
    return -1 if text == "-1" else parse_id(text)


def parse_count(text: str) -> int:
    """A block number or count: decimal or 0x hex, up to 2^64 - 1."""
    m = _PLAIN.fullmatch(text)
    value = m and bounded_int(*_digits(m), U64_MAX)
    if value is None or value is False:
        raise DaxError(errno.EINVAL, f"invalid number {shown(text)}")
    return value


def parse_index(text: str) -> int | None:
    """A decimal index in a name (dax0.1, daxfuse.0, mapping2): ASCII digits,
    no leading zero, at most INT_MAX, so that no two names mean one node;
    None when text is not one."""
    if not (text.isascii() and text.isdigit()) or (text[0] == "0" and len(text) > 1):
        return None
    return bounded_int(text, 10, INT_MAX)


def size_text(n: int) -> str:
    """A size for a message, in the user's units and in hex: 256 MiB (0x10000000)."""
    for suffix in "TGMK":
        unit = _SUFFIX[suffix]
        if n >= unit and n % unit == 0:
            return f"{n // unit} {suffix}iB ({n:#x})"
    return f"{n} bytes ({n:#x})" if n != 1 else "1 byte (0x1)"


def format_size(n: int) -> str:
    for suffix in "TGMK":
        unit = _SUFFIX[suffix]
        if n and n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)
