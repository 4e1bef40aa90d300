"""The daemon: its lifecycle (mount.py), the FUSE Operations that translate
requests into the views and the bus (fuse_ops.py), the direct-mapping socket
(direct.py), and the watchdog that removes a mount its daemon left
(watchdog.py).

Before any of them imports pyfuse3, the hook of cache_symlinks.c is loaded
into the global scope, so that pyfuse3's session asks the kernel to cache
links (a process that imported pyfuse3 first only goes without)."""
import ctypes
import importlib.util

_CACHE_SYMLINKS = "daxfuse.daemon.libdaxfuse_cache_symlinks"


def _load_cache_symlinks() -> None:
    spec = importlib.util.find_spec(_CACHE_SYMLINKS)
    if spec is None or not spec.origin:
        raise ImportError(f"{_CACHE_SYMLINKS} is not built: reinstall daxfuse (pip install .)")
    ctypes.CDLL(spec.origin, mode=ctypes.RTLD_GLOBAL)


_load_cache_symlinks()
