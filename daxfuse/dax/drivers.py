"""The dax bus's drivers (drivers/dax/bus.c's dax_device_driver, and the
services they are): which devices each binds, and what binding makes of a
device. Matching is bus.c's dax_bus_match: a driver's own id list (new_id)
first, then the device's region type, which fsdev_dax never matches.

- device_dax: the dax_device goes live and its character device opens and
  maps (drivers/dax/device.c);
- kmem: the device's memory is hot-added as system RAM (drivers/dax/kmem.c:
  dax/hotplug.py emulates the memory blocks); the dax_device stays dead, so
  its character device does not open;
- fsdev_dax: the device is handed to a filesystem (famfs): it goes live and
  opens, but does not map and has no read or write.
"""
from dataclasses import dataclass

DEVICE_TYPE, KMEM_TYPE = "device", "kmem"  # a region's type: the kernel's IORESOURCE_DAX_KMEM or not


@dataclass(frozen=True)
class DaxDriver:
    name: str
    type: str | None  # the region type it binds by default; None: only what its id list names
    module: str       # under /sys/module (and what daxctl loads)
    runs: bool        # the dax_device goes live (run_dax): the character device opens
    maps: bool        # its character device maps


DEVICE_DAX = DaxDriver("device_dax", DEVICE_TYPE, "device_dax", runs=True, maps=True)
KMEM = DaxDriver("kmem", KMEM_TYPE, "kmem", runs=False, maps=False)
FSDEV_DAX = DaxDriver("fsdev_dax", None, "fsdev_dax", runs=True, maps=False)
# in registration order: a device goes to the first that matches it
DRIVERS = {d.name: d for d in (DEVICE_DAX, KMEM, FSDEV_DAX)}
