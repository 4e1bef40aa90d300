"""The second baseline scripts/bench compares daxfuse with: a minimal pyfuse3
daemon with default settings, serving one file, MOUNT/data, from the file
given (os.pread and os.pwrite, page cache on), as scripts/bench_cfuse.c
does in C. What pyfuse3 and trio cost per request without daxfuse: where
daxfuse is slower than the C daemon and this one is too, pyfuse3 is why.
  bench_pyfuse3.py FILE MOUNTPOINT   (foreground; unmount to stop)"""
import errno
import os
import stat
import sys

import pyfuse3
import trio


class Operations(pyfuse3.Operations):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.fd = os.open(path, os.O_RDWR)
        self.size = os.fstat(self.fd).st_size

    def _attr(self, ino: int) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino, a.attr_timeout, a.entry_timeout = ino, 10, 10
        if ino == pyfuse3.ROOT_INODE:
            a.st_mode, a.st_nlink = stat.S_IFDIR | 0o755, 2
        else:
            a.st_mode, a.st_nlink, a.st_size = stat.S_IFREG | 0o600, 1, self.size
        return a

    async def lookup(self, parent, name, ctx=None):
        if parent != pyfuse3.ROOT_INODE or name != b"data":
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attr(pyfuse3.ROOT_INODE + 1)

    async def getattr(self, inode, ctx=None):
        return self._attr(inode)

    async def open(self, inode, flags, ctx):
        return pyfuse3.FileInfo(fh=inode, keep_cache=True)

    async def read(self, fh, off, size):
        return os.pread(self.fd, size, off)

    async def write(self, fh, off, buf):
        return os.pwrite(self.fd, buf, off)


def main() -> None:
    path, mountpoint = sys.argv[1:]
    pyfuse3.init(Operations(path), mountpoint, set(pyfuse3.default_options) | {"fsname=bench_pyfuse3"})
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=False)


if __name__ == "__main__":
    main()
