"""The emulated tracefs without a mount: instances as root makes them, and
cxl_poison records laid out as the kernel's ring buffer pages and its
format file say, read back the way libtraceevent's kbuffer reads them."""
import errno
import re
import struct

import pytest
import trio

from daxfuse.core.errors import DaxError
from daxfuse.views.tracefs import CXL_POISON_ID, FORMAT, PAGE, PipeFile, TraceFs, poison_event


def fields() -> dict[str, tuple[int, int]]:
    """name -> (offset, size), from the format file, as libtraceevent parses it."""
    return {m["name"]: (int(m["offset"]), int(m["size"])) for m in re.finditer(
        r"field:.*?(?P<name>\w+)(?:\[\d*\])?;\toffset:(?P<offset>\d+);\tsize:(?P<size>\d+);", FORMAT)}


def records(page: bytes) -> list[bytes]:
    """kbuffer's walk of a page: header (timestamp, commit), then type_len 0 events with their length."""
    commit = struct.unpack_from("<Q", page, 8)[0]
    out, at = [], 16
    while at < 16 + commit:
        head, length = struct.unpack_from("<II", page, at)
        assert head & 31 == 0
        data = page[at + 8:at + 8 + length - 4]
        out.append(data)
        at += 8 + ((length - 4 + 3) & ~3)
    return out


def test_a_record_reads_back_through_its_format():
    data = poison_event(4242, "mem3", "cxl_mem.3", 3, "region7", 0x1234000, 0x8000, 512, 3, 0)
    f = fields()
    assert struct.unpack_from("<H", data, f["common_type"][0])[0] == CXL_POISON_ID
    assert struct.unpack_from("<i", data, f["common_pid"][0])[0] == 4242
    for name, fmt, want in (("hpa", "<Q", 0x1234000), ("dpa", "<Q", 0x8000), ("dpa_length", "<I", 512),
                            ("serial", "<Q", 3), ("source", "<B", 3), ("flags", "<B", 0)):
        assert struct.unpack_from(fmt, data, f[name][0])[0] == want, name

    def string(name: str) -> str:
        loc = struct.unpack_from("<I", data, f[name][0])[0]
        return data[loc & 0xFFFF:(loc & 0xFFFF) + (loc >> 16) - 1].decode()
    assert (string("memdev"), string("host"), string("region")) == ("mem3", "cxl_mem.3", "region7")


def test_records_go_only_to_instances_tracing_the_event_and_are_read_once():
    tracefs = TraceFs()
    for name in ("on", "off", "disabled"):
        tracefs.mkdir(name, 0)
    tracefs.instances["on"].enabled = tracefs.instances["off"].enabled = True
    tracefs.instances["off"].on = False
    events = [poison_event(1, "mem0", "cxl_mem.0", 0, "", 0, 64 * i, 64, 3, 0) for i in range(100)]
    tracefs.emit(events)
    assert not tracefs.instances["off"].pages and not tracefs.instances["disabled"].pages
    pipe = PipeFile(tracefs.instances["on"])
    pages = []
    while page := trio.run(pipe.read, 0, PAGE):
        pages.append(page)
    assert len(pages) > 1 and all(len(p) == PAGE for p in pages), "100 records fill more than a page"
    assert [r for p in pages for r in records(p)] == events
    assert trio.run(pipe.read, 0, PAGE) == b"", "read once: a pipe"


def test_instances_are_roots_to_make_and_remove():
    tracefs = TraceFs()
    for op, args, err in ((tracefs.mkdir, ("x", 1000), errno.EPERM), (tracefs.rmdir, ("x", 0), errno.ENOENT)):
        with pytest.raises(DaxError) as ei:
            op(*args)
        assert ei.value.errno == err
    tracefs.mkdir("x", 0)
    with pytest.raises(DaxError) as ei:
        tracefs.mkdir("x", 0)
    assert ei.value.errno == errno.EEXIST
    with pytest.raises(DaxError) as ei:
        tracefs.rmdir("x", 1000)
    assert ei.value.errno == errno.EPERM
    tracefs.rmdir("x", 0)
    assert not tracefs.instances
