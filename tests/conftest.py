"""Shared fixtures. Mounted tests run a real daxfuse daemon on a temp dir,
through daxfuse.testing (the plugin downstream suites use)."""
import logging
import os
import pwd
import subprocess
import tempfile

import pytest

from daxfuse.client import mountinfo
from daxfuse.testing import DAXFUSE, skip_without_fuse


def mounted_paths() -> set[str]:
    return {m.point for m in mountinfo.mounts()}


def mounted_paths_of_type(fstype: str) -> list[str]:
    return [m.point for m in mountinfo.mounts() if m.fstype == fstype]


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
