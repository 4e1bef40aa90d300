"""Size parsing shared by every front end: one grammar, one set of errors."""
import errno
import re

from .errors import DaxError

_SUFFIX = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"(0[xX][0-9a-fA-F]+|[0-9]+)(?:([KMGTkmgt])(?:i?B)?|B)?", re.ASCII)


def parse_size(text: str) -> int:
    """Decimal (a leading zero is still decimal) or 0x hex, with an optional
    binary K/M/G/T suffix in either case (4K, 4k, 4KiB, 0x10M) or B."""
    m = _SIZE.fullmatch(text.strip())
    if not m:
        raise DaxError(errno.EINVAL, f"invalid size {text!r}")
    digits = m.group(1)
    value = int(digits, 16) if digits[:2] in ("0x", "0X") else int(digits)
    return value * _SUFFIX[(m.group(2) or "").upper()]


def format_size(n: int) -> str:
    for suffix in "TGMK":
        unit = _SUFFIX[suffix]
        if n and n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)
