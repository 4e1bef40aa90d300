"""Shared fixtures. Mounted tests run a real daxfuse daemon on a temp dir."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from daxfuse import mountinfo

DAXFUSE = [sys.executable, "-m", "daxfuse"]


def mounted_paths() -> set[str]:
    return {m.point for m in mountinfo.mounts()}


def mounted_paths_of_type(fstype: str) -> list[str]:
    return [m.point for m in mountinfo.mounts() if m.fstype == fstype]


class Daemon:
    """A foreground daxfuse daemon, ready when it said READY=1."""

    def __init__(self, mountpoint: str, *args: str) -> None:
        self.mountpoint = str(mountpoint)
        self.sock_path = sock_path = f"{self.mountpoint}.notify"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(sock_path)
        self.sock.settimeout(0.2)
        self.proc = subprocess.Popen([*DAXFUSE, "mount", "--foreground", self.mountpoint, *args],
                                     env={**os.environ, "NOTIFY_SOCKET": sock_path},
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if b"READY=1" in self.sock.recv(4096):
                    return
            except socket.timeout:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited {self.proc.returncode}: {self.proc.stdout.read().decode()}")
        self.kill()
        raise RuntimeError("daemon not ready within 30s")

    def path(self, *parts: str) -> str:
        return os.path.join(self.mountpoint, *parts)

    def control(self, command: str) -> str:
        fd = os.open(self.path("control"), os.O_RDWR)
        try:
            try:
                os.write(fd, command.encode())
            except OSError as e:
                raise OSError(e.errno, os.pread(fd, 4096, 0).decode().strip()) from None
            return os.pread(fd, 4096, 0).decode().strip()
        finally:
            os.close(fd)

    def layout(self) -> list:
        with open(self.path("control")) as f:
            return json.load(f)

    def stop(self) -> int:
        """SIGTERM; the exit status (the daemon must exit 0)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def kill(self) -> None:
        if self.mountpoint in mounted_paths():
            subprocess.run(["umount", "-f", self.mountpoint], check=False)
            subprocess.run(["fusermount3", "-u", "-z", self.mountpoint], check=False)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.sock.close()
        if os.path.exists(self.sock_path):
            os.unlink(self.sock_path)


@pytest.fixture(scope="session")
def fuse():
    """Skip, saying why, where /dev/fuse cannot be opened: mounted tests need it."""
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
    except OSError as e:
        pytest.skip(f"/dev/fuse cannot be opened ({e.strerror}): mounted tests need FUSE")


@pytest.fixture
def daemon_factory(fuse, tmp_path):
    daemons = []

    def start(*args: str, name: str = "mnt") -> Daemon:
        mnt = tmp_path / name
        mnt.mkdir()
        daemons.append(Daemon(str(mnt), *args))
        return daemons[-1]

    yield start
    failed = []
    for d in daemons:  # every one, even after a failure: no daemon or mount outlives its test
        rc = d.stop()
        d.kill()
        if rc != 0 or d.mountpoint in mounted_paths():
            failed.append(f"{d.mountpoint}: exit {rc}\n{d.proc.stdout.read().decode()}")
    assert not failed, "\n".join(failed)


@pytest.fixture
def dax(daemon_factory, tmp_path):
    """A daemon with a 64 MiB region 0, dax0.0 spanning it, memory file in tmp."""
    return daemon_factory("--size", "64M", "--memory-file", str(tmp_path / "memory"))
