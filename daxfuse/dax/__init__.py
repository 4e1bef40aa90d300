"""Device DAX: regions carved from the memory file and the dev_dax devices
carved from regions (the kernel's drivers/dax/bus.c and device.c)."""
from .bus import DaxBus
from .device import ALIGNS, DEFAULT_ALIGN, DEFAULT_SIZE, Access, DaxRegion, DevDax, Dimm, Range
from .events import Event
from .file import DaxFile

__all__ = ["ALIGNS", "DEFAULT_ALIGN", "DEFAULT_SIZE", "Access", "DaxBus", "DaxFile", "DaxRegion", "DevDax", "Dimm", "Event",
           "Range"]
