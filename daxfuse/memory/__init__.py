"""The emulated physical memory: the memory file (file.py), the tmpfs
instances it and the windows live on (tmpfs.py), and the windows through
which processes map one device's memory directly (window.py)."""
from .file import HOST_NODES, MemoryFile, host_nodes, memmap_on_memory_supported, memory_block_size, phys_base
from .window import Window

__all__ = ["HOST_NODES", "MemoryFile", "Window", "host_nodes", "memmap_on_memory_supported", "memory_block_size", "phys_base"]
