"""PMDK clients through ctypes, run by scripts/integration/pmdk.

  pmem2 DEV              map DEV with libpmem2, persist a pattern, verify it through pread
  obj-write DEV TEXT     open the obj pool on DEV, store TEXT in the root object, persist, close
  obj-check DEV TEXT     reopen the pool and check the root object holds TEXT
"""
import ctypes
import os
import sys

PAGE_GRANULARITY = 2  # enum pmem2_granularity: BYTE, CACHE_LINE, PAGE
LAYOUT = b"daxfuse"


def fail(message: str) -> None:
    sys.exit(f"{sys.argv[1]}: {message}")


def pmem2(dev: str) -> None:
    lib = ctypes.CDLL("libpmem2.so.1")
    lib.pmem2_errormsg.restype = ctypes.c_char_p
    lib.pmem2_map_get_address.restype = ctypes.c_void_p
    lib.pmem2_map_get_size.restype = ctypes.c_size_t
    lib.pmem2_get_persist_fn.restype = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_size_t)
    cfg, src, map_ = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_void_p()
    fd = os.open(dev, os.O_RDWR)
    for call in (lambda: lib.pmem2_config_new(ctypes.byref(cfg)),
                 lambda: lib.pmem2_config_set_required_store_granularity(cfg, PAGE_GRANULARITY),
                 lambda: lib.pmem2_source_from_fd(ctypes.byref(src), fd),
                 lambda: lib.pmem2_map_new(ctypes.byref(map_), cfg, src)):
        if call():
            fail(f"libpmem2: {lib.pmem2_errormsg().decode()}")
    addr, size = lib.pmem2_map_get_address(map_), lib.pmem2_map_get_size(map_)
    if size != os.fstat(fd).st_size:
        fail(f"mapped {size} bytes of {os.fstat(fd).st_size}")
    pattern = bytes(range(256)) * 64
    offset = size - len(pattern) - 4096
    ctypes.memmove(addr + offset, pattern, len(pattern))
    lib.pmem2_get_persist_fn(map_)(addr + offset, len(pattern))
    if os.pread(fd, len(pattern), offset) != pattern:
        fail("pattern persisted through libpmem2 differs when read with pread")
    lib.pmem2_map_delete(ctypes.byref(map_))
    lib.pmem2_source_delete(ctypes.byref(src))
    lib.pmem2_config_delete(ctypes.byref(cfg))
    os.close(fd)


class PMEMoid(ctypes.Structure):
    _fields_ = [("pool_uuid_lo", ctypes.c_uint64), ("off", ctypes.c_uint64)]


def _obj():
    lib = ctypes.CDLL("libpmemobj.so.1")
    lib.pmemobj_errormsg.restype = ctypes.c_char_p
    lib.pmemobj_open.restype = ctypes.c_void_p
    lib.pmemobj_root.restype = PMEMoid
    lib.pmemobj_root.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    lib.pmemobj_direct.restype = ctypes.c_void_p
    lib.pmemobj_direct.argtypes = [PMEMoid]
    lib.pmemobj_persist.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    lib.pmemobj_close.argtypes = [ctypes.c_void_p]
    return lib


def obj(dev: str, text: str, write: bool) -> None:
    lib = _obj()
    pop = lib.pmemobj_open(dev.encode(), LAYOUT)
    if not pop:
        fail(f"libpmemobj: {lib.pmemobj_errormsg().decode()}")
    root = lib.pmemobj_direct(lib.pmemobj_root(pop, 4096))
    data = text.encode() + b"\0"
    if write:
        ctypes.memmove(root, data, len(data))
        lib.pmemobj_persist(pop, root, len(data))
    elif ctypes.string_at(root, len(data)) != data:
        fail(f"root object holds {ctypes.string_at(root)!r}, expected {text!r}")
    lib.pmemobj_close(pop)


if __name__ == "__main__":
    command, dev, *rest = sys.argv[1:]
    if command == "pmem2":
        pmem2(dev)
    else:
        obj(dev, rest[0], write=command == "obj-write")
