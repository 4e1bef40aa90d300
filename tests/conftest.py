"""Shared fixtures. Mounted tests run a real daxfuse daemon on a temp dir,
through daxfuse.testing (the plugin downstream suites use)."""
import logging
import os
import pwd
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest
import trio

from daxfuse.client import mountinfo
from daxfuse.core import DaxCore
from daxfuse.dax import DaxBus
from daxfuse.memory import MemoryFile
from daxfuse.testing import DAXFUSE, skip_without_fuse


def mounted_paths() -> set[str]:
    return {m.point for m in mountinfo.mounts()}


def mounted_paths_of_type(fstype: str) -> list[str]:
    return [m.point for m in mountinfo.mounts() if m.fstype == fstype]


def wait_for(condition, what: str, timeout: float = 30) -> None:
    """Until condition() holds: a state observed, never a sleep that stands in for one."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def syscall(pid: int) -> list[str]:
    """/proc/PID/syscall: the number of the system call the task is in, then
    its arguments in hex (["running"] while it runs in user space)."""
    with open(f"/proc/{pid}/syscall") as f:
        return f.read().split()


def writing(pid: int, path: str) -> bool:
    """pid is inside a write(2) to the file at path (one the daemon holds)."""
    call = syscall(pid)
    if call[0] != str(SYS_WRITE):
        return False
    try:
        return os.readlink(f"/proc/{pid}/fd/{int(call[1], 16)}") == path
    except OSError:
        return False


def write_errno(path: str, data: bytes) -> int:
    """data in one write(2) on a fresh handle (O_TRUNC, as a shell's > opens
    sysfs files): 0, or the errno of the open or the write."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    except OSError as e:
        return e.errno
    try:
        assert os.write(fd, data) == len(data)
        return 0
    except OSError as e:
        return e.errno
    finally:
        os.close(fd)


def child(code: str, *args: str, **kw) -> subprocess.Popen:
    """A Python child running code (dedented), with its output piped as text."""
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def inside(d, *argv: str, options=(), cwd=None) -> subprocess.CompletedProcess:
    """argv run inside `daxfuse exec` on d's mount, its output captured."""
    return subprocess.run([*DAXFUSE, "exec", "-m", d.mountpoint, *options, "--", *argv],
                          capture_output=True, text=True, timeout=100, cwd=cwd)


def apply(bus, *ops):
    """A batch of bus operations, run to completion."""
    return trio.run(bus.apply, list(ops))


def dirty_shutdowns(mountpoint: str) -> int:
    """The emulated DIMM's unsafe-shutdown count, as ndctl reads it."""
    with open(f"{mountpoint}/sys/devices/platform/daxfuse-nvdimm/ndbus0/nmem0/nfit/dirty_shutdown") as f:
        return int(f.read())


SYS_WRITE, SYS_RECVMSG, SYS_OPENAT = 1, 47, 257  # x86_64

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What another user runs in, where this checkout is theirs to reach: it may
# live where they may not go (under /root, 0700), so a mount namespace of its
# own shows it on a directory anyone may enter ($2), and the user runs there.
_REACH = ('mount --bind "$1" "$2" && uid=$3 gid=$4 groups=$5 && shift 5 && '
          'exec setpriv --reuid="$uid" --regid="$gid" "$groups" env -i "$@"')


def as_user(uid: int, *argv: str, gid: int | None = None, env: dict | None = None, before: str = "true",
            check: bool = False, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    """argv run as uid (its own group and groups, or gid and none), in a clean
    environment (PATH, HOME=/ and env), with this checkout within its reach
    wherever it lives: paths into it in argv and env point where it is shown.
    before: shell commands run first as root in that mount namespace."""
    reach = tempfile.mkdtemp(prefix="daxfuse-checkout-")
    os.chmod(reach, 0o755)
    there = lambda x: x.replace(TOP, reach)  # noqa: E731
    variables = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/", "PYTHONPATH": TOP, **(env or {})}
    groups = "--init-groups" if gid is None else "--clear-groups"
    gid = pwd.getpwuid(uid).pw_gid if gid is None else gid
    try:
        return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", f"{before} && {_REACH}",
                               "sh", TOP, reach,
                               str(uid), str(gid), groups, *(f"{k}={there(v)}" for k, v in variables.items()),
                               *map(there, argv)],
                              capture_output=True, text=True, timeout=timeout, check=check, **kw)
    finally:
        os.rmdir(reach)


@pytest.fixture(autouse=True)
def checklogs(request, caplog):
    """A test fails on an error that code it ran in this process logged (a
    listener that failed, a request answered EIO for a bug), as s3ql's
    checklogs fails one; daemons' logs are checked by DaxMount.teardown.
    A test that provokes one on purpose is marked logs_errors."""
    yield
    errors = [r.getMessage() for r in caplog.get_records("call") if r.levelno >= logging.ERROR]
    if errors and not request.node.get_closest_marker("logs_errors"):
        pytest.fail("logged errors: " + "; ".join(errors), pytrace=False)


@pytest.fixture(scope="session")
def fuse():
    """Skip, saying why, where /dev/fuse cannot be opened: mounted tests need it."""
    skip_without_fuse()


@pytest.fixture
def dax(daxfuse_factory, tmp_path):
    """A daemon with a 64 MiB region 0, dax0.0 spanning it, memory file in tmp."""
    return daxfuse_factory("--size", "64M", "--memory-file", str(tmp_path / "memory"))


@pytest.fixture
def memory():
    """A memory file of the test's own, unlinked (in /dev/shm)."""
    m = MemoryFile()
    assert m.path is None
    yield m
    m.close()


@pytest.fixture
def bus(memory):
    """An empty bus over memory, with 16 minors and no layout record."""
    return DaxBus(DaxCore(16), memory)
