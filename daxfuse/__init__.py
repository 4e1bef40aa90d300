"""daxfuse: a userspace emulator of Linux device-dax over FUSE.

The folders are the layers, imports pointing down only (tests/t1_layers.py):
  core (dax_device, SRCU, minors; errors, units) -> memory (the memory file,
  windows) -> dax (Device DAX: regions, dev_dax, the bus and its drivers,
  kmem's memory hotplug, the layout record, media errors, grants) -> views
  (sysfs, memory hotplug's sysfs, the NVDIMM bus, control, the tree)
  -> client (finding and talking to a daemon) -> daemon (lifecycle, FUSE
  Operations, the direct-mapping socket) -> cli, testing and the C library
  in preload/.
"""
