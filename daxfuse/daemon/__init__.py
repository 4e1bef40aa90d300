"""The daemon: its lifecycle (mount.py), the FUSE Operations that translate
requests into the views and the bus (fuse_ops.py), the direct-mapping socket
(direct.py), and the watchdog that removes a mount its daemon left
(watchdog.py)."""
