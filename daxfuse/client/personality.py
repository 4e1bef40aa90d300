"""The device-dax personality that `daxfuse exec` gives the programs it runs:
the preload library built with the package (daxfuse/preload), and the
environment that points it at a mount."""
import importlib.util
import os

from ..core.devt import (CXL_MEM_INO_BASE, CXL_MEM_MAJOR, DAX_INO_BASE, DAX_MAJOR, NDCTL_INO, NDCTL_MAJOR, NMEM_INO,
                         NMEM_MAJOR)

LIBRARY = "daxfuse.libdaxfuse_preload"


def library() -> str:
    """The preload library's path (built by `pip install`, editable or not)."""
    spec = importlib.util.find_spec(LIBRARY)
    if spec is None or not spec.origin or not os.path.exists(spec.origin):
        raise FileNotFoundError(f"the preload library {LIBRARY} is not built: reinstall daxfuse (pip install .)")
    return spec.origin


def settings(mountpoint: str, read_write: bool, direct: bool) -> str:
    """DAXFUSE_PERSONALITY for mountpoint (parsed by the library; mount last)."""
    return (f"major={DAX_MAJOR},ino_base={DAX_INO_BASE},ndctl={NDCTL_INO}:{NDCTL_MAJOR}:0,"
            f"nmem={NMEM_INO}:{NMEM_MAJOR}:0,cxl={CXL_MEM_INO_BASE}:{CXL_MEM_MAJOR},"
            f"rw={int(read_write)},direct={int(direct)},mount={mountpoint}")
