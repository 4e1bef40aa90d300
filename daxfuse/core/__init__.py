"""The generic dax_device core (the kernel's drivers/dax/super.c)."""
from .srcu import Srcu
from .super import NR_DAX, DaxCore, DaxDevice

__all__ = ["NR_DAX", "DaxCore", "DaxDevice", "Srcu"]
