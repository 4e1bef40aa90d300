"""Size parsing shared by every front end: one grammar, one set of errors."""
import errno
import re

from .core import DaxError

_SUFFIX = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"(0[xX][0-9a-fA-F]+|[0-9]+)([KMGT]?)(i?B)?", re.ASCII)


def parse_size(text: str) -> int:
    """Decimal or 0x hex, with an optional binary K/M/G/T suffix."""
    m = _SIZE.fullmatch(text.strip())
    if not m:
        raise DaxError(errno.EINVAL, f"invalid size {text!r}")
    return int(m.group(1), 0) * _SUFFIX[m.group(2).upper()]


def format_size(n: int) -> str:
    for suffix in "TGMK":
        unit = _SUFFIX[suffix]
        if n and n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)
