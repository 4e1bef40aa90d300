"""A tracefs with the one event daxfuse emits, cxl:cxl_poison, where exec's
mount table puts a tracefs (/sys/kernel/tracing, preload/mounts.c): what
`cxl list --media-errors` reads through libtracefs and libtraceevent.

- `events/header_page`, `events/header_event` and `events/cxl/cxl_poison/format` as the kernel
  prints them, so that libtraceevent parses the records;
- `instances/`, where root makes and removes instances (mkdir, rmdir), each with
  `tracing_on`, `events/cxl/cxl_poison/enable` and `per_cpu/cpuN/trace_pipe_raw`;
- records go to every instance with the event enabled and tracing on, as the ring buffer's pages
  (header: timestamp, commit; events: a type_len 0 header, their length, the data), all on cpu0; a
  read of trace_pipe_raw takes the next page, and none is EOF.

The host's own tracing is never touched.
"""
import errno
import os
import struct
import time
from collections import deque

from ..core.errors import DaxError, shown
from .nodes import Attr, Dir, Node, Stream, table
from .sysfs_text import kstrtobool

PAGE = 4096
PAGE_HEAD = 16  # u64 timestamp, local_t commit
CXL_POISON_ID = 1024
INSTANCES = ("kernel", "tracing", "instances")  # below sys/

HEADER_PAGE = ("\tfield: u64 timestamp;\toffset:0;\tsize:8;\tsigned:0;\n"
               "\tfield: local_t commit;\toffset:8;\tsize:8;\tsigned:1;\n"
               "\tfield: int overwrite;\toffset:8;\tsize:1;\tsigned:1;\n"
               "\tfield: char data;\toffset:16;\tsize:4080;\tsigned:1;\n")
HEADER_EVENT = ("# compressed entry header\n\ttype_len    :    5 bits\n\ttime_delta  :   27 bits\n"
                "\tarray       :   32 bits\n\n\tpadding     : type == 29\n\ttime_extend : type == 30\n"
                "\ttime_stamp : type == 31\n\tdata max type_len  == 28\n")
# drivers/cxl/core/trace.h's cxl_poison: (type, name, offset, size, signed); strings are __data_loc
POISON_FIELDS = [("__data_loc char[]", "memdev", 8, 4, 0), ("__data_loc char[]", "host", 12, 4, 0),
                 ("u64", "serial", 16, 8, 0), ("u8", "trace_type", 24, 1, 0),
                 ("__data_loc char[]", "region", 28, 4, 0), ("u64", "overflow_ts", 32, 8, 0),
                 ("u64", "hpa", 40, 8, 0), ("u64", "hpa_alias0", 48, 8, 0), ("u64", "dpa", 56, 8, 0),
                 ("u32", "dpa_length", 64, 4, 0), ("uuid_t", "uuid", 68, 16, 0), ("u8", "source", 84, 1, 0),
                 ("u8", "flags", 85, 1, 0)]
FIXED = 88  # where the strings start
COMMON = [("unsigned short", "common_type", 0, 2, 0), ("unsigned char", "common_flags", 2, 1, 0),
          ("unsigned char", "common_preempt_count", 3, 1, 0), ("int", "common_pid", 4, 4, 1)]


def _format() -> str:
    def lines(fields):
        return "".join(f"\tfield:{t} {n};\toffset:{o};\tsize:{s};\tsigned:{sg};\n" for t, n, o, s, sg in fields)
    return (f"name: cxl_poison\nID: {CXL_POISON_ID}\nformat:\n{lines(COMMON)}\n{lines(POISON_FIELDS)}\n"
            'print fmt: "memdev=%s host=%s serial=%lld region=%s dpa=0x%llx dpa_length=0x%x source=%u flags=%u", '
            "__get_str(memdev), __get_str(host), REC->serial, __get_str(region), REC->dpa, REC->dpa_length, "
            "REC->source, REC->flags\n")


FORMAT = _format()


def poison_event(pid: int, memdev: str, host: str, serial: int, region: str, hpa: int, dpa: int, length: int,
                 source: int, flags: int, uuid: bytes = bytes(16)) -> bytes:
    """One cxl_poison record's data (trace_type 0: a poison list's)."""
    strings, locs = b"", []
    for text in (memdev, host, region):
        data = text.encode() + b"\0"
        locs.append((FIXED + len(strings)) | (len(data) << 16))
        strings += data
    head = struct.pack("<HBBiIIQBxxxIQQQQI16sBBxx", CXL_POISON_ID, 0, 0, pid, locs[0], locs[1], serial, 0, locs[2],
                       0, hpa, (1 << 64) - 1, dpa, length, uuid, source, flags)
    return head + strings


class Instance:
    """A trace instance: whether tracing is on, whether cxl_poison is enabled, its pages."""
    __slots__ = ("on", "enabled", "pages")

    def __init__(self) -> None:
        self.on, self.enabled, self.pages = True, False, deque()


class TraceFs:
    def __init__(self) -> None:
        self.instances: dict[str, Instance] = {}

    @staticmethod
    def _events(enable: Attr) -> Node:
        """events/ as libtracefs finds an event: a system directory with an
        `enable`, an event directory with `enable`, `format` and `id`."""
        event = table({"enable": lambda: enable, "format": lambda: Attr(0o444, show=lambda: FORMAT),
                       "id": lambda: Attr(0o444, show=lambda: f"{CXL_POISON_ID}\n")})
        return table({"header_page": lambda: Attr(0o444, show=lambda: HEADER_PAGE),
                      "header_event": lambda: Attr(0o444, show=lambda: HEADER_EVENT),
                      "enable": lambda: enable,
                      "cxl": lambda: table({"enable": lambda: enable, "cxl_poison": lambda: event})})

    def root(self) -> Node:
        """The top: its events (formats; enabling them here records nowhere) and the instances."""
        return table({
            "events": lambda: self._events(Attr(0o644, show=lambda: "0\n", store=lambda data: [])),
            "instances": lambda: Dir(lambda: list(self.instances), self._instance),
            "tracing_on": lambda: Attr(0o644, show=lambda: "1\n", store=lambda data: []),
        })

    def _instance(self, name: str) -> Node | None:
        inst = self.instances.get(name)
        if inst is None:
            return None

        def turn(field: str):
            def store(data: str) -> list:
                setattr(inst, field, kstrtobool(data))
                return []
            return store
        cpus = {f"cpu{i}": (lambda i=i: table({"trace_pipe_raw": lambda: Stream(lambda: PipeFile(inst if i == 0 else None))}))
                for i in range(os.cpu_count() or 1)}
        enable = Attr(0o644, show=lambda: f"{int(inst.enabled)}\n", store=turn("enabled"))
        return table({
            "tracing_on": lambda: Attr(0o644, show=lambda: f"{int(inst.on)}\n", store=turn("on")),
            "events": lambda: self._events(enable),
            "per_cpu": lambda: table(cpus),
        })

    def mkdir(self, name: str, uid: int) -> None:
        if uid != 0:
            raise DaxError(errno.EPERM, "trace instances are root's")
        if name in self.instances:
            raise DaxError(errno.EEXIST, f"instance {shown(name)} exists")
        self.instances[name] = Instance()

    def rmdir(self, name: str, uid: int) -> None:
        if uid != 0:
            raise DaxError(errno.EPERM, "trace instances are root's")
        if self.instances.pop(name, None) is None:
            raise DaxError(errno.ENOENT, f"no instance {shown(name)}")

    def emit(self, events: list[bytes]) -> None:
        """Records into every instance tracing cxl_poison, packed into pages."""
        for inst in self.instances.values():
            if not (inst.on and inst.enabled):
                continue
            page = b""
            for data in events:
                entry = struct.pack("<II", 0, len(data) + 4) + data + bytes(-len(data) % 4)
                if len(page) + len(entry) > PAGE - PAGE_HEAD:
                    inst.pages.append(_page(page))
                    page = b""
                page += entry
            if page:
                inst.pages.append(_page(page))


def _page(data: bytes) -> bytes:
    return (struct.pack("<QQ", time.monotonic_ns(), len(data)) + data).ljust(PAGE, b"\0")


class PipeFile:
    """An open trace_pipe_raw: each read takes the next page; none left reads as EOF."""
    __slots__ = ("inst",)

    def __init__(self, inst: Instance | None) -> None:
        self.inst = inst

    async def read(self, off: int, size: int) -> bytes:
        if self.inst is None or not self.inst.pages or size < PAGE:
            return b""
        return self.inst.pages.popleft()

    async def write(self, off: int, buf: bytes) -> int:
        raise DaxError(errno.EACCES, "trace_pipe_raw is read-only")

    async def fsync(self) -> None:
        pass

    def release(self) -> None:
        pass
