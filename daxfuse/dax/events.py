"""What the bus tells its listeners (front ends), as the kernel's device
and bus notifiers: each change of a device or region as its batch commits,
then APPLIED once the batch's effects are done."""
import enum
from typing import Awaitable, Callable


class Event(enum.Enum):
    # of a device (the listener is given the DevDax)
    ADDED = "added"
    REMOVED = "removed"
    ENABLED = "enabled"
    DISABLING = "disabling"  # still alive: dirty mapped pages can be written back
    DISABLED = "disabled"  # dead: mappings are revoked
    RESIZED = "resized"
    REALIGNED = "realigned"
    ACCESS = "access"  # owner, group or mode
    CONFIGURED = "configured"  # a setting no data path reads (memmap_on_memory)
    FLUSH = "flush"  # write back what is held for it (deep flush)
    POISONED = "poisoned"  # media errors in its ranges
    CLEARED = "cleared"
    WINDOW = "window"  # a window opened or closed (DaxBus.window): where its memory lives
    # of a region (given the DaxRegion)
    REGION_ADDED = "region-added"
    REGION_REMOVED = "region-removed"
    REGION_ENABLED = "region-enabled"
    REGION_DISABLED = "region-disabled"
    # of the DIMM (given the Dimm)
    DIMM_ENABLED = "dimm-enabled"
    DIMM_DISABLED = "dimm-disabled"
    # of an object of a bus beside (a CXL region, decoder, memdev or port)
    CXL = "cxl"
    # of a batch (given None): what a listener does once per batch (dropping
    # the kernel's caches) then costs the same for one change as for a thousand
    APPLIED = "applied"

    @property
    def quiet(self) -> bool:
        """Changes nothing a user sees: no time moves."""
        return self in (Event.FLUSH, Event.WINDOW)


Listener = Callable[[Event, object], Awaitable[None]]
