"""The control-file grammar: line commands onto DaxBus operations.

A write holds one or more lines; every line is parsed before anything runs,
then the batch is applied all or nothing. Blank lines and '#' comments are
ignored.

  create-region size=SIZE [align=ALIGN] [id=N]
  destroy-region ID
  create-device region=ID [size=SIZE] [align=ALIGN]
  resize-device NAME size=SIZE
  disable-device NAME
  enable-device NAME
  destroy-device NAME
"""
import errno
import functools
import json
import weakref

from .core import DaxError
from .dax import DaxBus
from .units import parse_size


def _int(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise DaxError(errno.EINVAL, f"invalid number {text!r}") from None
    if value < 0:
        raise DaxError(errno.EINVAL, f"invalid number {text!r}")
    return value


# command -> (bus method, positional parser or None, {key: (parser, bus kwarg)}, required keys)
_COMMANDS = {
    "create-region": ("create_region", None,
                      {"size": (parse_size, "size"), "align": (parse_size, "align"), "id": (_int, "id_")},
                      {"size"}),
    "destroy-region": ("destroy_region", _int, {}, set()),
    "create-device": ("create_device", None,
                      {"region": (_int, "region_id"), "size": (parse_size, "size"),
                       "align": (parse_size, "align")},
                      {"region"}),
    "resize-device": ("resize_device", str, {"size": (parse_size, "size")}, {"size"}),
    "disable-device": ("disable_device", str, {}, set()),
    "enable-device": ("enable_device", str, {}, set()),
    "destroy-device": ("destroy_device", str, {}, set()),
}


def parse_line(bus: DaxBus, line: str):
    """One command line -> a bound bus operation."""
    words = line.split()
    name, args = words[0], words[1:]
    try:
        method, positional, keys, required = _COMMANDS[name]
    except KeyError:
        raise DaxError(errno.EINVAL, f"unknown command {name!r}") from None
    call_args, kwargs = [], {}
    if positional is not None:
        if not args or "=" in args[0]:
            raise DaxError(errno.EINVAL, f"{name} needs an argument")
        call_args.append(positional(args.pop(0)))
    for arg in args:
        key, eq, value = arg.partition("=")
        if not eq or key not in keys:
            raise DaxError(errno.EINVAL, f"{name}: unexpected argument {arg!r}")
        parser, kwarg = keys[key]
        if kwarg in kwargs:
            raise DaxError(errno.EINVAL, f"{name}: {key} given twice")
        kwargs[kwarg] = parser(value)
    missing = required - {k for k in keys if keys[k][1] in kwargs}
    if missing:
        raise DaxError(errno.EINVAL, f"{name} needs {', '.join(sorted(k + '=' for k in missing))}")
    return functools.partial(getattr(bus, method), *call_args, **kwargs)


def parse(bus: DaxBus, text: str) -> list:
    lines = [(number, ln.split("#", 1)[0].strip()) for number, ln in enumerate(text.splitlines(), 1)]
    lines = [(number, ln) for number, ln in lines if ln]
    if not lines:
        raise DaxError(errno.EINVAL, "empty command")
    ops = []
    for number, line in lines:
        try:
            ops.append(parse_line(bus, line))
        except DaxError as e:
            if len(lines) > 1:
                e.message = f"line {number}: {e.message}"
            raise
    return ops


def _name(result, op) -> str:
    if hasattr(result, "name"):
        return result.name
    if hasattr(result, "res"):
        return f"region{result.id}"
    arg = op.args[0]
    return f"region{arg}" if isinstance(arg, int) else arg


async def execute(bus: DaxBus, text: str) -> str:
    """Parse and apply a write; the one-line result, or DaxError."""
    ops = parse(bus, text)
    results = await bus.apply(ops)
    return "ok " + " ".join(_name(r, op) for r, op in zip(results, ops))


def error_line(e: DaxError) -> str:
    return f"error {errno.errorcode.get(e.errno, e.errno)}: {e.message}"


_layout_cache: "weakref.WeakKeyDictionary[DaxBus, tuple[int, bytes]]" = weakref.WeakKeyDictionary()


def layout_text(bus: DaxBus) -> bytes:
    """The layout as JSON, rendered again only after the bus changed."""
    cached = _layout_cache.get(bus)
    if cached is None or cached[0] != bus.generation:
        cached = _layout_cache[bus] = (bus.generation,
                                       json.dumps(bus.layout(), separators=(",", ":")).encode() + b"\n")
    return cached[1]
