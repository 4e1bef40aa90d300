"""Device numbers, shared by the core, the sysfs view and the personality:
the char major the emulated devices report, and how a device's inode number
in the mount gives its minor (ino = DAX_INO_BASE + minor)."""
import os

# A major no host driver uses: 120-127 are LANANA's "local/experimental"
# char majors, which the kernel never hands out dynamically.
DAX_MAJOR = 120
# Front ends number their other nodes below it, which 2^32 leaves room for
# however long a mount lives.
DAX_INO_BASE = 1 << 32
# The NVDIMM bus's character devices: /dev/ndctl0 (the bus, where ndctl's
# ioctls go) and /dev/nmem0 (the DIMM: its labels). Each node has an inode
# number of its own, just below the devices'.
NDCTL_MAJOR = 121
NMEM_MAJOR = 122
NDCTL_INO = DAX_INO_BASE - 1
NMEM_INO = DAX_INO_BASE - 2
# The CXL bus's memdevs, /dev/cxl/memN: minor N, inode number CXL_MEM_INO_BASE + N
# (65536 memdevs' worth below the NVDIMM bus's nodes).
CXL_MEM_MAJOR = 123
CXL_MEM_INO_BASE = DAX_INO_BASE - (1 << 16) - 2


def dev_text(dev: int) -> str:
    """A device number as the kernel prints it (print_dev_t): MAJOR:MINOR,
    as mountinfo, /sys/dev and /sys/class/bdi spell it."""
    return f"{os.major(dev)}:{os.minor(dev)}"
