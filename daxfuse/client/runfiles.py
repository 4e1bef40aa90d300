"""Where a daemon keeps its pid file and (detached) its log, and how the CLI
finds the daemon of a mount point again.

A pid file holds the daemon's pid and its start time, so that a pid reused
by another process after a SIGKILL is never taken for the daemon; stale pid
files are removed whenever a daemon starts.
"""
import errno
import glob
import os
import stat

from .. import client
from ..core.devt import dev_text


def run_dir() -> str:
    """/run/daxfuse for root where /run is writable, else a directory of the
    user's own: $XDG_RUNTIME_DIR/daxfuse, or /tmp/daxfuse-UID. Not /run for
    anyone else, even where it is world-writable (a tmpfs of default mode):
    root's daemons keep their logs and sockets there."""
    if os.geteuid() == 0 and os.access("/run", os.W_OK):
        return "/run/daxfuse"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return os.path.join(runtime, "daxfuse") if runtime else f"/tmp/daxfuse-{os.getuid()}"


def run_file(mountpoint: str, suffix: str) -> str:
    """The pid file or log of mountpoint's daemon: the path escaped as
    systemd-escape --path does, so that no two mount points share it."""
    path = os.path.realpath(mountpoint).strip("/")
    key = path.replace("\\", "\\x5c").replace("-", "\\x2d").replace("/", "-") or "-"
    return os.path.join(run_dir(), f"{key}.{suffix}")


def socket_path(mount_dev: int) -> str:
    """Where the daemon of the mount whose st_dev is mount_dev takes direct
    mapping requests: short, for sun_path's 108 bytes."""
    return os.path.join(run_dir(), f"{dev_text(mount_dev)}.sock")


def make_run_dir() -> None:
    """The run directory, which must be this user's alone: in /tmp another
    user could have made it first, to read logs or plant pid files."""
    path = run_dir()
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.lstat(path)
    if path != "/run/daxfuse" and (not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid()
                                   or st.st_mode & 0o077):
        raise PermissionError(errno.EPERM, f"{path} is not a directory of this user's alone (mode 0700): "
                                           f"remove it, or set XDG_RUNTIME_DIR")


def _start_time(pid: int) -> str | None:
    fields = client.proc_stat(pid)
    return None if fields is None or fields[0] == "Z" else fields[19]


def write_pid_file(mountpoint: str) -> str:
    """Record this process as mountpoint's daemon, after removing the pid
    files of daemons that are gone (SIGKILL leaves them)."""
    make_run_dir()
    for path in glob.glob(os.path.join(glob.escape(run_dir()), "*.pid")):
        if _read(path) is None:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
    path = run_file(mountpoint, "pid")
    with open(path, "w") as f:
        f.write(f"{os.getpid()} {_start_time(os.getpid())}\n")
    return path


def _read(path: str) -> int | None:
    try:
        with open(path) as f:
            pid, start = f.read().split()
        pid = int(pid)
    except (OSError, ValueError):
        return None
    return pid if _start_time(pid) == start else None


def write_error(mountpoint: str, line: str) -> None:
    """What ended a daemon that had served mountpoint, for `daxfuse umount` to say."""
    with open(run_file(mountpoint, "error"), "w") as f:
        f.write((line.strip().splitlines() or ["failed"])[0] + "\n")


def take_error(mountpoint: str) -> str | None:
    """The line a daemon of mountpoint left when it ended in an error, once."""
    path = run_file(mountpoint, "error")
    try:
        with open(path) as f:
            line = f.read().strip()
    except FileNotFoundError:
        return None
    os.unlink(path)
    return line


def daemon_pid(mountpoint: str) -> int | None:
    """The pid of mountpoint's running daemon, or None."""
    return _read(run_file(mountpoint, "pid"))


def running(pid: int) -> bool:
    """Alive and not a zombie (an exited daemon its parent has not reaped yet)."""
    return _start_time(pid) is not None
