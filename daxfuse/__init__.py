"""daxfuse: a userspace emulator of Linux device-dax over FUSE.

Layers, imports pointing down only:
  core (SRCU, dax_device, minors) -> memory -> Device DAX (regions, dev_dax)
  -> front ends (control grammar, FUSE adapter, CLI, daemon).
"""
