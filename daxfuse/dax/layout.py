"""The layout of a persistent memory file, kept in a record beside it
(PATH.layout), as NVDIMM namespace labels live on the media: regions,
devices with their ranges in order and states, seeds, bad blocks, and the
DIMM's unsafe-shutdown count and label area, and the state of each bus
beside (CXL: decoders, regions, label storage). The record's whole format is
here: what a bus writes (snapshot), how one is rebuilt from it (restore),
what a record must hold (check_record) and what mount options must agree
with (check_options).

The record is versioned and checksummed (sha256 over its canonical JSON),
and replaced atomically: written to PATH.layout.tmp, fsynced, renamed over
the record, and the directory fsynced. A SIGKILL at any moment leaves either
the record before a change or the one after it, never a mix. A change is
acknowledged only once its record is durable (DaxBus.apply).

A record belongs to one memory file: it names an id that the file carries
too (an extended attribute, user.daxfuse.id), so that a record copied or
swapped beside another file is refused. A file that holds data and no
record, or less than its record lays out (truncated), is refused as well:
only --fresh makes it new memory, on purpose.

Whether the last daemon stopped cleanly is a file of its own, PATH.running,
made when a daemon starts and removed when it has stopped cleanly: removing
it needs no room, so a clean stop on a full disk is clean (the data is in
the memory file; only a record not rewritten is older than the layout it
served, which the next change rewrites).
"""
import errno
import hashlib
import json
import os

from ..core import files
from ..core.errors import DaxError
from ..core.packing import pack, unpack
from ..core.units import INT_MAX, size_text
from .badblocks import Badblocks
from .drivers import DEVICE_DAX, DEVICE_TYPE, DRIVERS, KMEM_TYPE
from .hotplug import MOVABLE, NORMAL, OFFLINE, ONLINE_TYPES, UNPLUGGED, MemoryBlock
from .device import ALIGNS, LABEL_SIZE, Access, Range, valid_id, valid_mode, valid_node

FORMAT = "daxfuse-layout"
VERSION = 2  # 1 kept "state" in the record itself, and had no memory_id
ID_XATTR = "user.daxfuse.id"
MAX_RECORD = 64 << 20  # a record of 2^31 devices' worth would not fit either: anything larger is no record


def _checksum(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def check_record(record: dict) -> None:
    """A record that verifies must also make sense (one written by hand with
    a fresh checksum may not): regions apart, ranges inside their region and
    apart, seeds among the devices. Raises KeyError, TypeError, ValueError."""
    def whole(value, what: str) -> int:
        if type(value) is not int or value < 0:
            raise ValueError(f"{what} {value!r}")
        return value

    whole(record["sequence"], "sequence"), whole(record["dirty_shutdown"], "dirty_shutdown")
    if record["version"] == 1 and record["state"] not in ("running", "clean"):
        raise ValueError(f"state {record['state']!r}")
    if record["version"] >= 2 and not (isinstance(record["memory_id"], str) and len(record["memory_id"]) == 32):
        raise ValueError(f"memory_id {record['memory_id']!r}")
    spans = []
    for r in record["regions"]:
        start, size = whole(r["start"], "region start"), whole(r["size"], "region size")
        if r["align"] not in ALIGNS:
            raise ValueError(f"region {r['id']!r} align {r['align']!r}")
        if not Range(start, start + size).aligned(r["align"]):
            raise ValueError(f"region {r['id']!r} size or start off its align")
        ids = {whole(d["id"], "device id") for d in r["devices"]}
        if whole(r["id"], "region id") > INT_MAX or len(ids) != len(r["devices"]):
            raise ValueError(f"region {r['id']} or its device ids")
        if not all(type(node) is int and valid_node(node)
                   for node in (r.get("target_node", 0), r.get("numa_node", 0))):
            raise ValueError(f"region {r['id']} target_node or numa_node")
        if type(r.get("enabled", True)) is not bool or r.get("type", DEVICE_TYPE) not in (DEVICE_TYPE, KMEM_TYPE):
            raise ValueError(f"region {r['id']} enabled or type")
        if r["seed"] not in ids | {None} or r["youngest"] not in ids | {None}:
            raise ValueError(f"region {r['id']} seed")
        spans.append((start, start + size, f"region {r['id']}"))
        ranges = []
        for d in r["devices"]:
            whole(d["size"], "device size"), whole(d["align"], "device align"), _driver(d)
            if type(d.get("window", False)) is not bool or type(d.get("memmap_on_memory", False)) is not bool \
                    or d.get("hotplug_state", UNPLUGGED) not in (UNPLUGGED, *ONLINE_TYPES):
                raise ValueError(f"dax{r['id']}.{d['id']} window, memmap_on_memory or hotplug_state")
            if not (valid_id(whole(d["uid"], "uid")) and valid_id(whole(d["gid"], "gid"))
                    and valid_mode(whole(d["mode"], "mode"))):
                raise ValueError(f"dax{r['id']}.{d['id']} owner, group or mode")
            ranges += [(whole(a, "range"), whole(b, "range"), f"dax{r['id']}.{d['id']}") for a, b in d["ranges"]]
            if any(b <= a for a, b in d["ranges"]) or sum(b - a for a, b in d["ranges"]) != d["size"]:
                raise ValueError(f"dax{r['id']}.{d['id']} ranges do not add up to its size")
        if any(a < start or b > start + size for a, b, _ in ranges):
            raise ValueError(f"a range outside region {r['id']}")
        _apart(ranges)
    _apart(spans)
    for name in ("badblocks", "injected"):
        for first, count in record[name]:
            whole(first, name), whole(count, name)
    labels(record)
    for index, node, zone, pinned in record.get("memory_blocks", []):
        whole(index, "memory block"), whole(node, "memory block node")
        if zone not in (None, NORMAL, MOVABLE) or type(pinned) is not bool:
            raise ValueError(f"memory block {index} zone or pin")
    if record.get("auto_online_blocks", OFFLINE) not in ONLINE_TYPES:
        raise ValueError("auto_online_blocks")


def _driver(d: dict) -> str | None:
    """A device's driver as recorded: by name; a record from before drivers
    says only whether it was enabled (bound to device_dax)."""
    driver = d["driver"] if "driver" in d else DEVICE_DAX.name if d["enabled"] else None
    if driver is not None and driver not in DRIVERS:
        raise ValueError(f"driver {driver!r}")
    return driver


def labels(record: dict) -> bytes:
    """The DIMM's label area a record holds (none: all zeros, as a record
    written before labels were kept). ValueError for one that is not packed
    or larger than the area."""
    text = record.get("labels")
    return bytes(LABEL_SIZE) if text is None else unpack(text, LABEL_SIZE)


def _apart(spans: list[tuple[int, int, str]]) -> None:
    spans = sorted(spans)
    for (_, end, one), (start, _, other) in zip(spans, spans[1:]):
        if start < end:
            raise ValueError(f"{one} overlaps {other}")


class LayoutStore:
    def __init__(self, memory_path: str) -> None:
        self.memory_path = memory_path
        self.path = memory_path + ".layout"
        self.marker = memory_path + ".running"
        self.sequence = 0
        self.memory_id = os.urandom(16).hex()  # a new layout's; a record's own once loaded
        self._crashed = False  # what a version-1 record said of the last daemon

    def load(self) -> dict | None:
        """The record, verified; None when there is none. A record that is
        corrupt, foreign or from a newer daxfuse fails in one line; what is
        not a regular file of this user's, or is larger than any record,
        fails before a byte is read (core/files.py)."""
        try:
            fd = files.open_file(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise DaxError(e.errno, f"{self.path}: cannot read the layout record: {e.strerror}") from None
        with open(fd, "rb") as f:
            size = os.fstat(fd).st_size
            if size > MAX_RECORD:
                raise DaxError(errno.EFBIG, f"{self.path}: {size} bytes, more than a layout record holds "
                                            f"({MAX_RECORD}); the memory file was not touched")
            raw = f.read(MAX_RECORD + 1)

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
        try:
            check_record(record)
        except (KeyError, TypeError, ValueError) as e:
            raise bad(f"inconsistent record ({e})") from None
        self.sequence = record["sequence"]
        self.memory_id = record.get("memory_id", self.memory_id)
        self._crashed = record.get("state") == "running"
        return record

    def check(self, record: dict | None, memory_fd: int, fresh: bool) -> None:
        """The memory file at memory_fd may be served with record (None: a
        new layout): refused, in one line, where data would be reused or
        lost by accident. fresh empties a file for a new layout."""
        path, size = self.memory_path, os.fstat(memory_fd).st_size
        if record is None:
            if size and not fresh:
                raise DaxError(errno.EEXIST, f"{path} holds {size} bytes and no layout record ({self.path}): "
                                             f"to use it as new memory, losing what it holds, pass --fresh")
            os.ftruncate(memory_fd, 0)
            return
        if fresh:
            raise DaxError(errno.EINVAL, f"--fresh with a layout record ({self.path}): remove the record first "
                                         f"to start afresh, on purpose")
        bound = _get_id(memory_fd)
        if record["version"] >= 2 and bound != self.memory_id:
            raise DaxError(errno.EINVAL, f"{self.path} belongs to another memory file, not {path} "
                                         f"(ids {self.memory_id} and {bound}); a copy made without its "
                                         f"attributes loses the id: copy with cp -a")
        needed = max((r["start"] + r["size"] for r in record["regions"]), default=0)
        if size < needed:
            raise DaxError(errno.EINVAL, f"{path} is {size} bytes, its layout needs {needed}: it was truncated; "
                                         f"the record and the file were left as they were")

    def begin(self, memory_fd: int) -> bool:
        """A daemon starts serving: bind the file to the record, mark it
        running. Whether the last daemon died serving it (an unsafe shutdown)."""
        _set_id(memory_fd, self.memory_id)
        try:
            os.close(files.create_file(self.marker))
            files.fsync_directory(self.marker)
        except FileExistsError:
            return True
        return self._crashed

    def end(self) -> None:
        """A clean stop: every store is in the memory file."""
        os.unlink(self.marker)
        files.fsync_directory(self.marker)

    def snapshot(self, bus) -> dict:
        """The record of bus as it is now."""
        self.sequence += 1
        return {
            "format": FORMAT, "version": VERSION, "sequence": self.sequence, "memory_id": self.memory_id,
            "dirty_shutdown": bus.dirty_shutdown,
            "regions": [{
                "id": r.id, "start": r.res.start, "size": r.size, "align": r.align,
                "target_node": r.target_node, "numa_node": r.numa_node, "type": r.type, "enabled": r.enabled,
                "seed": r.seed and r.seed.id, "youngest": r.youngest and r.youngest.id,
                "devices": [{"id": d.id, "size": d.size, "align": d.align, "driver": d.driver,
                             "memmap_on_memory": d.memmap_on_memory, "hotplug_state": d.hotplug_state,
                             "window": d.window is not None and d.window.path is not None,
                             "uid": d.access.uid, "gid": d.access.gid, "mode": d.access.mode,
                             "ranges": [[x.start, x.end] for x in d.ranges]}
                            for d in sorted(r.devices.values(), key=lambda d: d.id)],
            } for r in sorted(bus.regions.values(), key=lambda r: r.id)],
            "badblocks": bus.badblocks.ranges(),
            "injected": bus.injected.ranges(),
            "labels": pack(bus.dimm.label_area),
            "memory_blocks": [[b.index, b.node, b.zone, b.pinned] for b in sorted(bus.blocks.values(),
                                                                                  key=lambda b: b.index)],
            "auto_online_blocks": bus.auto_online,
            "beside": {b.NAME: b.snapshot() for b in bus.beside},
        }

    def restore(self, bus, record: dict) -> None:
        """Rebuild in bus the layout record describes (before serving, no
        batch): the same ids, ranges, states, seeds and bad blocks; fresh
        minors; the windows a daemon that died left open moved back."""
        windowed = []
        for r in record["regions"]:
            devices = [(d["id"], d["align"], Access(d["uid"], d["gid"], d["mode"]),
                        [Range(start, end) for start, end in d["ranges"]], _driver(d),
                        d.get("memmap_on_memory", False), d.get("hotplug_state", UNPLUGGED)) for d in r["devices"]]
            region = bus.adopt_region(r["id"], Range(r["start"], r["start"] + r["size"]), r["align"],
                                      (r.get("target_node", 0), r.get("numa_node", 0)), r.get("type", DEVICE_TYPE),
                                      r.get("enabled", True),
                                      devices, r["seed"], r["youngest"])
            windowed += [region.devices[d["id"]] for d in r["devices"] if d.get("window")]
        for dev in windowed:
            bus.memory.recover([(r.start, r.size) for r in dev.ranges], dev.name)
        bus.memory.remove_stale_windows()
        bus.adopt_media(Badblocks(record["badblocks"]), Badblocks(record["injected"]), record["dirty_shutdown"],
                        labels(record))
        bus.adopt_memory([MemoryBlock(*b) for b in record.get("memory_blocks", [])],
                         record.get("auto_online_blocks", OFFLINE))
        for beside in bus.beside:  # a bus beside checks its own part (ValueError)
            if beside.NAME in record.get("beside", {}):
                beside.restore(record["beside"][beside.NAME])

    def check_options(self, record: dict, size: int | None, align: int | None, default_device: bool) -> None:
        """--size, --align and --no-default-device shape a new layout only:
        given (not None, or False) with a recorded one, they must agree."""
        region0 = next((r for r in record["regions"] if r["id"] == 0), None)
        seed = region0 and next((d for d in region0["devices"] if d["id"] == 0), None)
        for given, recorded, what in ((size, region0 and region0["size"], "--size"),
                                      (align, region0 and region0["align"], "--align")):
            if given is not None and given != recorded:
                recorded_text = "no region 0" if recorded is None else f"region 0 of {size_text(recorded)}"
                raise DaxError(errno.EINVAL, f"{what} {size_text(given)} disagrees with the layout of "
                                             f"{self.memory_path} ({recorded_text}): leave it out")
        if not default_device and seed and seed["size"]:
            raise DaxError(errno.EINVAL, f"--no-default-device disagrees with the layout of {self.memory_path} "
                                         f"(dax0.0 has {size_text(seed['size'])}): leave it out")

    def save(self, record: dict) -> None:
        """Replace the record atomically and durably."""
        data = json.dumps({**record, "sha256": _checksum(record)}, separators=(",", ":")).encode()
        tmp = self.path + ".tmp"
        try:
            try:
                fd = files.create_file(tmp)
            except FileExistsError:  # left by a daemon killed mid-save, or planted: never followed
                os.unlink(tmp)
                fd = files.create_file(tmp)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError:  # a full disk: no half record is left behind
                os.unlink(tmp)
                raise
            finally:
                os.close(fd)
            os.rename(tmp, self.path)
            files.fsync_directory(self.path)
        except OSError as e:
            raise DaxError(e.errno, f"cannot record the layout in {self.path}: {e.strerror}") from None


def _get_id(fd: int) -> str | None:
    try:
        return os.getxattr(fd, ID_XATTR).decode()
    except OSError:  # none, or a filesystem without user xattrs
        return None


def _set_id(fd: int, memory_id: str) -> None:
    try:
        os.setxattr(fd, ID_XATTR, memory_id.encode())
    except OSError as e:
        if e.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
            raise DaxError(e.errno, f"cannot bind the memory file to its layout record: {e.strerror}") from None
