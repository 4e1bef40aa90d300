"""The daemon: its lifecycle (mount.py), the FUSE Operations that translate
requests into the views and the bus (fuse_ops.py), and the direct-mapping
socket (direct.py)."""
