"""The control file: its line grammar onto DaxBus operations, and the
protocol of an open handle.

A write holds one or more lines; every line is parsed before anything runs,
then the batch is applied all or nothing. Blank lines and '#' comments are
ignored. A read returns the result of the last write on the same handle
(`ok NAME...` or `error ERRNO: message`), else the layout as JSON.

  create-region size=SIZE [align=ALIGN] [id=N] [target_node=NODE] [numa_node=NODE] [type=device|kmem]
  destroy-region ID
  create-device region=ID [size=SIZE] [align=ALIGN] [owner=USER] [group=GROUP] [mode=MODE]
  resize-device NAME size=SIZE
  disable-device NAME
  enable-device NAME
  destroy-device NAME
  inject-error NAME block=BLOCK [count=N]    poison 512-byte blocks (media errors)
  clear-error NAME block=BLOCK [count=N]
  pin-memory memoryN                         its offlining fails with EBUSY (a block kmem added)
  unpin-memory memoryN
"""
import errno
import functools
import json
import re
from dataclasses import dataclass
from typing import Callable

import trio

from ..dax import DaxBus
from ..core.errors import DaxError, shown
from ..core.units import parse_count, parse_id, parse_index, parse_node, parse_size
from ..dax.users import parse_group, parse_mode, parse_owner

# The kernel cuts a write into requests of at most 1 MiB, and one of up to
# 1 MiB - 4 KiB always arrives whole, however its buffer is aligned: larger
# writes are refused whole rather than applied in pieces.
MAX_WRITE = (1 << 20) - 4096
# Lines end at \n, words part at ASCII blanks: no other Unicode space or line
# break (NBSP, U+2028, \x1c) separates anything; it is part of a word.
_BLANK = " \t\r"
_WORDS = re.compile(r"[ \t\r]+")


@dataclass(frozen=True)
class _Command:
    method: str                                   # the DaxBus operation
    positional: Callable[[str], object] | None    # parser of the one positional argument
    keys: dict[str, tuple[Callable[[str], object], str]]  # key -> (parser, keyword argument)
    required: frozenset[str]
    report: Callable[[object, tuple], str]        # (result, positional args) -> the name `ok` reports


def _region_made(region, args) -> str:
    return f"region{region.id}"


def _region_named(_, args) -> str:
    return f"region{args[0]}"


def _device_made(dev, args) -> str:
    return dev.name


def _device_named(_, args) -> str:
    return args[0]


def _block_named(_, args) -> str:
    return f"memory{args[0]}"


def parse_block(text: str) -> int:
    """memoryN, as /sys/devices/system/memory names a block."""
    index = parse_index(text.removeprefix("memory")) if text.startswith("memory") else None
    if index is None:
        raise DaxError(errno.EINVAL, f"{shown(text)} is no memory block (memoryN)")
    return index


_SIZE_KEYS = {"size": (parse_size, "size"), "align": (parse_size, "align")}
_BLOCK_KEYS = {"block": (parse_count, "block"), "count": (parse_count, "count")}
_COMMANDS = {
    "create-region": _Command("create_region", None, {**_SIZE_KEYS, "id": (parse_id, "id_"),
                                                      "target_node": (parse_node, "target_node"),
                                                      "numa_node": (parse_node, "numa_node"),
                                                      "type": (str, "type_")},
                              frozenset({"size"}), _region_made),
    "destroy-region": _Command("destroy_region", parse_id, {}, frozenset(), _region_named),
    "create-device": _Command("create_device", None, {"region": (parse_id, "region_id"), **_SIZE_KEYS,
                                                      "owner": (parse_owner, "uid"), "group": (parse_group, "gid"),
                                                      "mode": (parse_mode, "mode")},
                              frozenset({"region"}), _device_made),
    "resize-device": _Command("resize_device", str, {"size": (parse_size, "size")},
                              frozenset({"size"}), _device_named),
    "disable-device": _Command("disable_device", str, {}, frozenset(), _device_named),
    "enable-device": _Command("enable_device", str, {}, frozenset(), _device_named),
    "destroy-device": _Command("destroy_device", str, {}, frozenset(), _device_named),
    "inject-error": _Command("inject_error", str, _BLOCK_KEYS, frozenset({"block"}), _device_named),
    "clear-error": _Command("clear_error", str, _BLOCK_KEYS, frozenset({"block"}), _device_named),
    "pin-memory": _Command("pin_block", parse_block, {}, frozenset(), _block_named),
    "unpin-memory": _Command("unpin_block", parse_block, {}, frozenset(), _block_named),
}


def parse_line(bus: DaxBus, line: str) -> tuple[functools.partial, Callable[[object], str]]:
    """One command line -> (a bound bus operation, what reports its result)."""
    words = _WORDS.split(line)
    name, args = words[0], words[1:]
    command = _COMMANDS.get(name)
    if command is None:
        raise DaxError(errno.EINVAL, f"unknown command {shown(name)}")
    call_args, kwargs = [], {}
    if command.positional is not None:
        if not args or "=" in args[0]:
            raise DaxError(errno.EINVAL, f"{name} needs an argument")
        call_args.append(command.positional(args.pop(0)))
    for arg in args:
        key, eq, value = arg.partition("=")
        if not eq or key not in command.keys:
            raise DaxError(errno.EINVAL, f"{name}: unexpected argument {shown(arg)}")
        parser, kwarg = command.keys[key]
        if kwarg in kwargs:
            raise DaxError(errno.EINVAL, f"{name}: {key} given twice")
        kwargs[kwarg] = parser(value)
    missing = command.required - {k for k in command.keys if command.keys[k][1] in kwargs}
    if missing:
        raise DaxError(errno.EINVAL, f"{name} needs {', '.join(sorted(k + '=' for k in missing))}")
    op = functools.partial(getattr(bus, command.method), *call_args, **kwargs)
    return op, functools.partial(command.report, args=tuple(call_args))


def parse(bus: DaxBus, text: str) -> list[tuple[functools.partial, Callable[[object], str]]]:
    lines = [(number, ln.split("#", 1)[0].strip(_BLANK)) for number, ln in enumerate(text.split("\n"), 1)]
    lines = [(number, ln) for number, ln in lines if ln]
    if not lines:
        raise DaxError(errno.EINVAL, "empty command")
    parsed = []
    for number, line in lines:
        try:
            parsed.append(parse_line(bus, line))
        except DaxError as e:
            if len(lines) > 1:
                e.message = f"line {number}: {e.message}"
            raise
    return parsed


async def execute(bus: DaxBus, text: str) -> str:
    """Parse and apply a write; the one-line result, or DaxError."""
    parsed = parse(bus, text)
    results = await bus.apply([op for op, _ in parsed])
    return "ok " + " ".join(report(result) for result, (_, report) in zip(results, parsed))


def error_line(e: DaxError) -> str:
    return f"error {errno.errorcode.get(e.errno, e.errno)}: {e.message}"


class Control:
    """The mount's control file: opens handles, and renders the layout once
    per change of the bus rather than once per read."""

    def __init__(self, bus: DaxBus) -> None:
        self.bus = bus
        self._layout = (-1, b"")
        self.handles = 0  # open now: a shutdown lets their results be read

    def layout_text(self) -> bytes:
        generation, text = self._layout
        if generation != self.bus.generation:
            text = json.dumps(self.bus.layout(), separators=(",", ":")).encode() + b"\n"
            self._layout = (self.bus.generation, text)
        return text

    def open(self) -> "ControlFile":
        self.handles += 1
        return ControlFile(self)

    async def drained(self, timeout: float) -> None:
        """Wait, at most timeout seconds, until every open handle is closed:
        a client that wrote a batch reads its result on the same handle."""
        with trio.move_on_after(timeout):
            while self.handles:
                await trio.sleep(0.01)


class ControlFile:
    """An open control file."""
    __slots__ = ("control", "result", "text")

    def __init__(self, control: Control) -> None:
        self.control = control
        self.result: bytes | None = None  # of the last write on this handle
        self.text = b""                   # what a read from offset 0 rendered

    async def read(self, off: int, size: int) -> bytes:
        if self.result is not None:
            return self.result[off:off + size]
        if off == 0:
            self.text = self.control.layout_text()
        return self.text[off:off + size]

    async def write(self, off: int, buf: bytes) -> int:
        try:
            if len(buf) > MAX_WRITE:
                raise DaxError(errno.E2BIG, f"a control write holds at most {MAX_WRITE} bytes, not "
                                            f"{len(buf)} or more: split the batch into several writes")
            try:
                text = bytes(buf).decode()
            except UnicodeDecodeError:
                raise DaxError(errno.EINVAL, "not UTF-8 text") from None
            self.result = (await execute(self.control.bus, text) + "\n").encode()
        except DaxError as e:
            self.result = (error_line(e) + "\n").encode()
            raise
        except BaseException:
            self.result = b"error EIO: internal error, see the daemon's log\n"
            raise
        return len(buf)

    async def fsync(self) -> None:
        pass

    def release(self) -> None:
        self.control.handles -= 1
