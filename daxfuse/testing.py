"""pytest fixtures for suites that test their code on emulated device-dax
(a plugin: pip install daxfuse registers it through the pytest11 entry point).

    def test_my_engine(daxfuse_mount, dax_device):
        with open(dax_device, "r+b") as f, mmap.mmap(f.fileno(), 2 << 20) as m:
            m[:5] = b"hello"
        daxfuse_mount.disable("dax0.0")  # hot-unplug: mappings now SIGBUS

- daxfuse_mount: a fresh emulator in a temp dir, shaped by the test's
  @pytest.mark.daxfuse(size="64M", align="2M", devices=["32M", "32M"])
  (default: one region of 64M, align 2M, dax0.0 over all of it);
- dax_device: the path of its first device (MOUNT/dax/dax0.0);
- daxfuse_factory: more emulators, each from `daxfuse mount` options.

A mount's daemon serves in the foreground as the test's child, and it is
made to get SIGTERM should pytest itself die. Teardown never leaves a
mount behind: SIGTERM, a bounded wait, then `umount -f` for a daemon that
hung, and an error that names the mount; a daemon that exits non-zero is an
error too, with its log.
"""
import ctypes
import os
import re
import signal
import subprocess
import sys

import pytest

from . import client
from .client import mountinfo

DAXFUSE = [sys.executable, "-m", "daxfuse"]
READY_WAIT = 30.0
STOP_WAIT = 15.0
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # in the child, before exec
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class DaxMount:
    """A daxfuse daemon serving mountpoint, ready once it said READY=1."""

    def __init__(self, mountpoint: str, *options: str) -> None:
        self.mountpoint = str(mountpoint)
        self.log_path = f"{self.mountpoint}.log"
        with client.Readiness() as ready:
            with open(self.log_path, "ab") as log:  # O_APPEND: what else writes there stays
                self.proc = subprocess.Popen([*DAXFUSE, "mount", "--foreground", self.mountpoint, *options],
                                             env={**os.environ, "NOTIFY_SOCKET": ready.address},
                                             stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                             preexec_fn=_die_with_parent)
            if not ready.wait(lambda: self.proc.poll() is None, READY_WAIT):
                if self.proc.poll() is not None:
                    raise RuntimeError(f"daxfuse mount {self.mountpoint} failed (exit {self.proc.returncode}): "
                                       f"{self.log().strip()}")
                self.kill()
                raise RuntimeError(f"daxfuse mount {self.mountpoint} not ready within {READY_WAIT:.0f} s")

    # --- the tree -------------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        return os.path.join(self.mountpoint, *parts)

    def device(self, name: str = "dax0.0") -> str:
        """The path of a device (MOUNT/dax/NAME)."""
        return self.path("dax", name)

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    # --- the control file -------------------------------------------------------------------
    def control(self, command: str) -> str:
        """Apply a batch of control lines; its `ok ...` line, or client.ControlError
        (an OSError) with the error line."""
        return client.control(self.mountpoint, command)

    def layout(self) -> list:
        """Regions and devices, as the control file reads."""
        return client.read_layout(self.mountpoint)

    def create_region(self, size: str, align: str | None = None) -> int:
        made = self.control(f"create-region size={size}" + (f" align={align}" if align else ""))
        return int(made.removeprefix("ok region"))

    def create_device(self, region: int = 0, size: str | None = None, **keys: str) -> str:
        """A device in region (align, owner, group, mode as keys); its name."""
        words = [f"region={region}"] + ([f"size={size}"] if size else []) + [f"{k}={v}" for k, v in keys.items()]
        return self.control("create-device " + " ".join(words)).removeprefix("ok ")

    def disable(self, name: str) -> None:
        """Hot-unplug: mappings revoked (next access SIGBUS), I/O fails with ENXIO."""
        self.control(f"disable-device {name}")

    def enable(self, name: str) -> None:
        self.control(f"enable-device {name}")

    def resize(self, name: str, size: str) -> None:
        self.control(f"disable-device {name}\nresize-device {name} size={size}")

    def destroy(self, name: str) -> None:
        self.control(f"disable-device {name}\ndestroy-device {name}")

    def inject_error(self, name: str, block: int, count: int = 1) -> None:
        """Poison count 512-byte blocks: reads fail with EIO, mapped loads SIGBUS."""
        self.control(f"inject-error {name} block={block} count={count}")

    def clear_error(self, name: str, block: int, count: int = 1) -> None:
        self.control(f"clear-error {name} block={block} count={count}")

    def exec_argv(self, *argv: str) -> list[str]:
        """argv run inside `daxfuse exec` (devices as /dev/daxR.I character devices)."""
        return [*DAXFUSE, "exec", "-m", self.mountpoint, "--", *argv]

    # --- the end ------------------------------------------------------------------------------
    def stop(self) -> int | None:
        """SIGTERM; the exit status (0: a clean shutdown), or None for a
        daemon that did not exit within STOP_WAIT: it is then forced off."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_WAIT)
            except subprocess.TimeoutExpired:
                self.kill()
                return None
        return self.proc.returncode

    def mounted(self) -> bool:
        return mountinfo.mounted(self.mountpoint)

    def kill(self) -> None:
        """Off at once, whatever the daemon's state: umount -f frees the
        clients of a hung daemon, then SIGKILL."""
        if self.mounted():
            subprocess.run(["umount", "-f", self.mountpoint], capture_output=True)
            if self.mounted():
                subprocess.run(["fusermount3", "-u", "-z", self.mountpoint], capture_output=True)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def teardown(self) -> str | None:
        """Stop and leave nothing behind; what went wrong, if anything."""
        rc = self.stop()
        left = self.mounted()
        self.kill()
        if rc is None:
            return (f"daxfuse daemon of {self.mountpoint} hung: not stopped {STOP_WAIT:.0f} s after SIGTERM, "
                    f"forced off (umount -f, SIGKILL); its log:\n{self.log()}")
        if rc != 0 or left:
            return f"daxfuse daemon of {self.mountpoint} exited {rc}{', its mount left' if left else ''}:\n{self.log()}"
        if failures := self.failures():
            return f"daxfuse daemon of {self.mountpoint} logged what it never should:\n" + "\n".join(failures)
        return None

    def failures(self) -> list[str]:
        """The log's errors and tracebacks: a request answered EIO for a bug,
        a listener that failed. Any is a failure of the test that caused
        it, as s3ql's checklogs makes one (expected trouble logs warnings)."""
        found, in_traceback = [], False
        for line in self.log().splitlines():
            if in_traceback:  # a traceback whole: its frames, up to the exception line
                found[-1] += "\n" + line
                in_traceback = line.startswith(" ")
            elif re.match(r"daxfuse\[\d+\] (ERROR|CRITICAL):", line) or line.startswith("Traceback"):
                found.append(line)
                in_traceback = line.startswith("Traceback")
        return found


def skip_without_fuse() -> None:
    """Skip the test, saying why, where /dev/fuse cannot be opened."""
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
    except OSError as e:
        pytest.skip(f"/dev/fuse cannot be opened ({e.strerror}): daxfuse needs FUSE")


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "daxfuse(size='64M', align='2M', devices=None, options=()): "
                                       "the daxfuse_mount of this test (devices: sizes in region 0)")


@pytest.fixture
def daxfuse_factory(tmp_path):
    """daxfuse_factory(*options, name="mnt") -> DaxMount: a fresh emulator at
    tmp_path/name for each call, from `daxfuse mount` options; all are
    stopped and unmounted at teardown."""
    skip_without_fuse()
    mounts: list[DaxMount] = []

    def start(*options: str, name: str = "mnt") -> DaxMount:
        mnt = tmp_path / name
        mnt.mkdir()
        mounts.append(DaxMount(str(mnt), *options))
        return mounts[-1]

    yield start
    errors = [e for e in (m.teardown() for m in mounts) if e]  # every one, even after a failure
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)


@pytest.fixture
def daxfuse_mount(request, daxfuse_factory):
    """A fresh emulator shaped by the test's daxfuse marker."""
    marker = request.node.get_closest_marker("daxfuse")
    shape = {"size": "64M", "align": "2M", "devices": None, "options": ()} | (marker.kwargs if marker else {})
    devices = shape["devices"]
    options = ["--size", shape["size"], "--align", shape["align"], *shape["options"]]
    mount = daxfuse_factory(*options, *(["--no-default-device"] if devices is not None else []))
    for size in devices or ():
        mount.create_device(0, size)
    return mount


@pytest.fixture
def dax_device(daxfuse_mount) -> str:
    """The path of daxfuse_mount's first device."""
    return daxfuse_mount.device("dax0.0")
