"""The mount's tree: control, dax/ (the devices), sys/ (the sysfs view) and
dev/ (a /dev for `daxfuse exec`: the devices, plus every other name of the
host's /dev as a link into .host/, where exec mounts the host's /dev)."""
import os

from .core import DaxError
from .dax import DaxBus
from .nodes import Control, Device, Dir, Link, Node
from .sysfs import SysfsView

HOST_DEV = ".host"


class Tree:
    def __init__(self, bus: DaxBus) -> None:
        self.bus = bus
        self.sysfs = SysfsView(bus)

    def _device_names(self) -> list[str]:
        return [d.name for d in sorted(self.bus.devices(), key=lambda d: (d.region.id, d.id))]

    def _dev_names(self) -> list[str]:
        devices = self._device_names()
        return [HOST_DEV] + devices + sorted(set(os.listdir("/dev")) - set(devices))

    def _device(self, name: str) -> Device | None:
        try:
            return Device(self.bus.device(name))
        except DaxError:
            return None

    def resolve(self, path: tuple[str, ...]) -> Node | None:
        match path:
            case ():
                return Dir(lambda: ["control", "dax", "dev", "sys"])
            case ("control",):
                return Control()
            case ("dax",):
                return Dir(self._device_names)
            case ("dax", name):
                return self._device(name)
            case ("sys", *rest):
                return self.sysfs.resolve(tuple(rest))
            case ("dev",):
                return Dir(self._dev_names)
            case ("dev", ".host"):
                return Dir(lambda: [])
            case ("dev", name):
                if name.startswith("dax") and (node := self._device(name)):
                    return node
                return Link(f"{HOST_DEV}/{name}") if os.path.lexists(f"/dev/{name}") else None
        return None
