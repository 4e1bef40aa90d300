"""Owner, group and mode as the control grammar, the CLI and the mount
options spell them: a user or group name (resolved here, in the daemon's
user database) or a number, and an octal mode, as chown and chmod take them."""
import errno
import grp
import pwd
import re

from ..core.errors import DaxError, shown
from ..core.units import ID_MAX, bounded_int
from .device import valid_mode

_OCTAL = re.compile(r"0?[0-7]{1,4}", re.ASCII)
_DECIMAL = re.compile(r"[0-9]+", re.ASCII)


def _id(text: str, lookup, what: str) -> int:
    if _DECIMAL.fullmatch(text):
        value = bounded_int(text, 10, ID_MAX)
        if value is None:
            raise DaxError(errno.EINVAL, f"{what} {shown(text)} is out of range (0 to {ID_MAX})")
        return value
    try:
        return lookup(text)
    except (KeyError, UnicodeEncodeError, ValueError):
        raise DaxError(errno.EINVAL, f"no {what} named {shown(text)}") from None


def parse_owner(text: str) -> int:
    return _id(text, lambda name: pwd.getpwnam(name).pw_uid, "user")


def parse_group(text: str) -> int:
    return _id(text, lambda name: grp.getgrnam(name).gr_gid, "group")


def parse_mode(text: str) -> int:
    """Octal permission bits, 0 to 0777 (0660, 660)."""
    if not _OCTAL.fullmatch(text) or not valid_mode(int(text, 8)):
        raise DaxError(errno.EINVAL, f"invalid mode {shown(text)} (octal, at most 0777)")
    return int(text, 8)
