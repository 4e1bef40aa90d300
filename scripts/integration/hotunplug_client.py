"""A client dirtying mapped pages of a device nonstop, checking every page it reads back.

Exit codes: killed by SIGBUS (expected after disable), 0 never, 1 wrong bytes seen,
3 ENXIO/EIO through read/write (also an acceptable end).
"""
import errno
import mmap
import os
import sys

dev = sys.argv[1]
fd = os.open(dev, os.O_RDWR)
size = os.fstat(fd).st_size
m = mmap.mmap(fd, size, mmap.MAP_SHARED)
half = size // 2
m[:half] = bytes([0xA5]) * half          # the data that must survive: msynced before any disable
m.flush(0, half)
print("ready", flush=True)
n = 0
while True:
    n += 1
    page = half + (n * 4096) % half
    value = bytes([n % 251]) * 4096
    m[page:page + 4096] = value
    if m[page:page + 4096] != value:
        sys.exit(f"wrong bytes at {page:#x} after store {n}")
    if n % 64 == 0:
        try:
            os.pread(fd, 1, 0)
        except OSError as e:
            if e.errno in (errno.ENXIO, errno.EIO):
                print(f"{os.strerror(e.errno)} after {n} stores", flush=True)
                os._exit(3)
            raise
