"""What a path in the mount resolves to. Front ends describe their trees with
these; the FUSE adapter serves any tree made of them."""
from dataclasses import dataclass
from typing import Callable, Iterable

from .dax import DevDax


@dataclass(frozen=True)
class Dir:
    names: Callable[[], Iterable[str]]


@dataclass(frozen=True)
class Attr:
    """A sysfs-style attribute: rendered on read, parsed into bus ops on write."""
    mode: int
    show: Callable[[], str] | None = None
    store: Callable[[str], list] | None = None


@dataclass(frozen=True)
class Link:
    target: str


@dataclass(frozen=True)
class Device:
    dev: DevDax


@dataclass(frozen=True)
class Control:
    pass


Node = Dir | Attr | Link | Device | Control
