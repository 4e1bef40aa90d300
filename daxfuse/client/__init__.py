"""Talking to a daemon from outside it, in one place for the CLI, the
pytest plugin, scripts/torture and scripts/bench: a batch written to the
control file and its result line read back, the layout read, readiness
awaited, a process's /proc/PID/stat."""
import json
import os
import socket
import tempfile
import time
from typing import Callable


class ControlError(OSError):
    """A batch the daemon refused: its errno, and its error line."""


def batch(fd: int, command: str) -> str:
    """command, written as one batch on fd, an open control file; the
    result line (ok ...) read back on it, or ControlError."""
    try:
        os.write(fd, command.encode())
    except OSError as e:
        line = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        raise ControlError(e.errno, line or os.strerror(e.errno)) from None
    return os.pread(fd, 4096, 0).decode(errors="replace").strip()


def control(mountpoint: str, command: str) -> str:
    """batch() on a handle of mountpoint's control file of its own."""
    fd = os.open(os.path.join(mountpoint, "control"), os.O_RDWR)
    try:
        return batch(fd, command)
    finally:
        os.close(fd)


def read_layout(mountpoint: str) -> list[dict]:
    with open(os.path.join(mountpoint, "control"), "rb") as f:
        return json.loads(f.read())


class Readiness:
    """Where a daemon started with NOTIFY_SOCKET=address says READY=1 (the
    systemd protocol): a socket in a directory of this user's alone, so
    that no one else can say it for the daemon."""

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="daxfuse-notify-")
        self.address = os.path.join(self._dir, "notify")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.bind(self.address)
        self._sock.settimeout(0.2)

    def wait(self, alive: Callable[[], bool], timeout: float) -> bool:
        """Whether READY=1 came within timeout, while alive() held."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if b"READY=1" in self._sock.recv(4096).split(b"\n"):
                    return True
            except socket.timeout:
                pass
            if not alive():
                return False
        return False

    def close(self) -> None:
        self._sock.close()
        os.unlink(self.address)
        os.rmdir(self._dir)

    def __enter__(self) -> "Readiness":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def proc_stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first, the
    start time at 19); None once the process is gone. PID may be PID/task/TID."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
