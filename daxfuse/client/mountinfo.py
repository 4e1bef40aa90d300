"""The mount table, parsed in one place: /proc/PID/mountinfo (this
process's by default). The watchdog, a shell script, greps it for its
mount's device."""
import re
from dataclasses import dataclass

FSTYPE = "fuse.daxfuse"


@dataclass(frozen=True)
class Mount:
    mnt_id: str
    dev: str  # its superblock's device, MAJOR:MINOR
    point: str
    fstype: str
    source: str
    options: str  # the superblock's: a FUSE mount's say whose it is (user_id=)

    @property
    def user_id(self) -> int | None:
        m = re.search(r"(?:^|,)user_id=([0-9]+)", self.options)
        return int(m[1]) if m else None


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo octal."""
    raw = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m[1], 8)]), field.encode("utf-8", "surrogateescape"))
    return raw.decode("utf-8", "surrogateescape")


def mounts(pid: int | str = "self") -> list[Mount]:
    """The mounts pid sees (OSError where its /proc cannot be read)."""
    out = []
    with open(f"/proc/{pid}/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            out.append(Mount(fields[0], fields[2], _unescape(fields[4]), fields[sep + 1], _unescape(fields[sep + 2]),
                             fields[sep + 3]))
    return out


def daxfuse_mounts() -> list[Mount]:
    """daxfuse mounts visible here, in mount order."""
    return [m for m in mounts() if m.fstype == FSTYPE]


def mounted(point: str) -> bool:
    return any(m.point == point for m in mounts())
