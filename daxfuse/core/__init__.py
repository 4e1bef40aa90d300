"""The generic dax_device core (the kernel's drivers/dax/super.c)."""
from .srcu import Srcu
from .super import DaxCore, DaxDevice

__all__ = ["DaxCore", "DaxDevice", "Srcu"]
