"""The layout of a persistent memory file, kept in a record beside it
(PATH.layout), as NVDIMM namespace labels live on the media: regions,
devices with their ranges in order and states, seeds, bad blocks, and the
DIMM's unsafe-shutdown count.

The record is versioned and checksummed (sha256 over its canonical JSON),
and replaced atomically: written to PATH.layout.tmp, fsynced, renamed over
the record, and the directory fsynced. A SIGKILL at any moment leaves either
the record before a change or the one after it, never a mix. A change is
acknowledged only once its record is durable (DaxBus.apply).
"""
import errno
import hashlib
import json
import os

from ..errors import DaxError

FORMAT = "daxfuse-layout"
VERSION = 1


def _checksum(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class LayoutStore:
    def __init__(self, memory_path: str) -> None:
        self.path = memory_path + ".layout"
        self.state = "running"  # "clean" once a shutdown finished: anything else was a crash
        self.sequence = 0

    def load(self) -> dict | None:
        """The record, verified; None when there is none. A record that is
        corrupt, foreign or from a newer daxfuse fails in one line."""
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise DaxError(e.errno, f"{self.path}: cannot read the layout record: {e.strerror}") from None

        def bad(what: str) -> DaxError:
            return DaxError(errno.EINVAL, f"{self.path}: {what}; the memory file was not touched")

        try:
            record = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise bad("not a layout record (truncated or corrupt JSON)") from None
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            raise bad(f"not a {FORMAT} record")
        if not isinstance(record.get("version"), int) or record["version"] > VERSION:
            raise bad(f"layout version {record.get('version')!r}: this daxfuse reads version {VERSION}")
        checksum = record.pop("sha256", None)
        if checksum != _checksum(record):
            raise bad("checksum mismatch (flipped or changed bytes)")
        self.sequence = record["sequence"]
        return record

    def snapshot(self, bus) -> dict:
        """The record of bus as it is now."""
        self.sequence += 1
        return {
            "format": FORMAT, "version": VERSION, "sequence": self.sequence, "state": self.state,
            "dirty_shutdown": bus.dirty_shutdown,
            "regions": [{
                "id": r.id, "start": r.res.start, "size": r.size, "align": r.align,
                "seed": r.seed and r.seed.id, "youngest": r.youngest and r.youngest.id,
                "devices": [{"id": d.id, "size": d.size, "align": d.align, "enabled": d.enabled,
                             "ranges": [[x.start, x.end] for x in d.ranges]}
                            for d in sorted(r.devices.values(), key=lambda d: d.id)],
            } for r in sorted(bus.regions.values(), key=lambda r: r.id)],
            "badblocks": bus.badblocks.ranges(),
            "injected": bus.injected.ranges(),
        }

    def save(self, record: dict) -> None:
        """Replace the record atomically and durably."""
        data = json.dumps({**record, "sha256": _checksum(record)}, separators=(",", ":")).encode()
        tmp = self.path + ".tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, self.path)
            dirfd = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dirfd)
            finally:
                os.close(dirfd)
        except OSError as e:
            raise DaxError(e.errno, f"cannot record the layout in {self.path}: {e.strerror}") from None
