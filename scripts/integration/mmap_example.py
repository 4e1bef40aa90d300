"""The smallest "point your own code at daxfuse": map a device, store, msync, read back.

    python3 mmap_example.py /mnt/daxfuse/dax/dax0.0
"""
import mmap
import os
import sys

import numpy as np

dev = sys.argv[1]
fd = os.open(dev, os.O_RDWR)
size = os.fstat(fd).st_size
with mmap.mmap(fd, size, mmap.MAP_SHARED) as m:   # device-dax wants MAP_SHARED
    m[:13] = b"hello, daxfus"
    m.flush()                                      # msync: the bytes reach the memory file
# numpy.memmap works the same way
words = np.memmap(dev, dtype=np.uint64, mode="r+", shape=(size // 8,))
words[-512:] = np.arange(512, dtype=np.uint64)
words.flush()
del words
assert os.pread(fd, 13, 0) == b"hello, daxfus"
assert np.frombuffer(os.pread(fd, 4096, size - 4096), dtype=np.uint64).tolist() == list(range(512))
os.close(fd)
print(f"{dev}: {size} bytes, mmap and numpy.memmap stores read back through pread")
