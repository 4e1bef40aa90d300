"""What sysfs stores parse written text as: the kernel's kstrto* and
sysfs_streq rules, shared by the views (trailing newline and NUL accepted)."""
import errno
import re

from ..core.errors import DaxError, shown
from ..core.units import U64_MAX, bounded_int


def text(data: str) -> str:
    return data.replace("\0", "").strip()


def streq(data: str) -> str:
    """What sysfs_streq compares of a write: up to its first NUL, less one
    trailing newline (a blank elsewhere is part of it)."""
    data = data.split("\0", 1)[0]
    return data[:-1] if data.endswith("\n") else data


# kstrtoull(buf, 0): an optional '+', then 0x hex, 0 octal or decimal
_KSTRTOULL = re.compile(r"\+?(?:0[xX]([0-9a-fA-F]+)|(0[0-7]*)|([1-9][0-9]*))", re.ASCII)


def number(data: str, err: int | None = None) -> int:
    """kstrtoull: EINVAL when malformed, ERANGE past u64; or err for both,
    where the kernel's store maps every failure to one errno."""
    m = _KSTRTOULL.fullmatch(text(data))
    if not m:
        raise DaxError(err or errno.EINVAL, f"invalid number {shown(text(data))}")
    hexa, octal, decimal = m.groups()
    value = bounded_int(*((hexa, 16) if hexa else (octal, 8) if octal else (decimal, 10)), U64_MAX)
    if value is None:
        raise DaxError(err or errno.ERANGE, f"number {shown(text(data))} is past 2^64 - 1")
    return value


def kstrtobool(data: str) -> bool:
    """kstrtobool: the first character decides (y, t, 1 / n, f, 0), or
    "on" / "off"; anything else is EINVAL."""
    word = text(data).lower()
    if word[:1] in ("y", "t", "1") or word[:2] == "on":
        return True
    if word[:1] in ("n", "f", "0") or word[:2] == "of":
        return False
    raise DaxError(errno.EINVAL, f"invalid boolean {shown(word)}")
