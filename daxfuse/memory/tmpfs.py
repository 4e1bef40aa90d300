"""Huge-page tmpfs instances of the daemon's own, attached to no path.

The memory file lives on one, and each device's window (window.py) on one of
its own, sized as the device. An instance can be frozen: its size set to
what it uses, after which no page can be added to it (a store into a hole
of a mapping raises SIGBUS) while the pages it has stay writable. A window's
revocation needs that, so that no store slips into a page it has not taken.

Root mounts them itself (fsopen, fsmount, and fspick to reconfigure one).
Anyone else has them mounted by a helper in a user and mount namespace of
its own, where a user may mount a tmpfs: it hands each mount back as an fd,
and freezes one when asked. Where neither may, there are none (mounter()
returns None).
"""
import ctypes
import errno
import os
import signal
import socket
import subprocess
import sys
import threading
import time

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_FSOPEN, _FSCONFIG, _FSMOUNT, _FSPICK = 430, 431, 432, 433  # x86_64: the new mount API
_FSCONFIG_SET_STRING, _FSCONFIG_CMD_CREATE, _FSCONFIG_CMD_RECONFIGURE = 1, 6, 7
_FSPICK_EMPTY_PATH = 0x08
_CLOEXEC = 1
_PR_SET_PDEATHSIG = 1
HUGE = 2 << 20  # tmpfs's huge pages: sizes are rounded up to them


def _syscall(*args) -> int:
    r = _libc.syscall(*args)
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r


def _configure(fsfd: int, options: dict[str, str], command: int) -> None:
    for key, value in options.items():
        _syscall(_FSCONFIG, fsfd, _FSCONFIG_SET_STRING, key.encode(), value.encode(), 0)
    _syscall(_FSCONFIG, fsfd, command, None, None, 0)


def mount_tmpfs(size: int) -> int:
    """A new instance of size bytes with huge=always, attached to no path:
    its mount fd (nothing to unmount: it goes with its last file)."""
    fsfd = _syscall(_FSOPEN, b"tmpfs", _CLOEXEC)
    try:
        _configure(fsfd, {"huge": "always", "size": str(-(-size // HUGE) * HUGE), "mode": "0700"},
                   _FSCONFIG_CMD_CREATE)
        return _syscall(_FSMOUNT, fsfd, _CLOEXEC, 0)
    finally:
        os.close(fsfd)


def resize_tmpfs(mnt_fd: int, size: int) -> None:
    """Set the instance's size; EINVAL when it uses more already."""
    fsfd = _syscall(_FSPICK, mnt_fd, b"", _FSPICK_EMPTY_PATH | _CLOEXEC)
    try:
        _configure(fsfd, {"size": str(size)}, _FSCONFIG_CMD_RECONFIGURE)
    finally:
        os.close(fsfd)


class Tmpfs:
    """One instance: files on it, and its freeze."""

    def __init__(self, mnt_fd: int, mounter: "Mounter") -> None:
        self._mnt = mnt_fd
        self._mounter = mounter

    def create(self) -> int:
        """An unlinked file on it, open read-write."""
        return os.open(".", os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600, dir_fd=self._mnt)

    def freeze(self, fd: int) -> None:
        """From now on no page can be added to fd's file (the instance's one
        file): the size becomes what is used (retried while a fault adds a
        page meanwhile). Returns once a fault that took room before has put
        its page in the file, where SEEK_DATA finds it (what is used and
        what the file holds agree)."""
        while True:
            vfs = os.fstatvfs(self._mnt)
            used = vfs.f_blocks - vfs.f_bfree
            try:
                self._mounter.resize(self._mnt, used * vfs.f_frsize)
                break
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
        deadline = time.monotonic() + 1
        while os.fstat(fd).st_blocks * 512 // vfs.f_frsize < used and time.monotonic() < deadline:
            vfs = os.fstatvfs(self._mnt)
            used = vfs.f_blocks - vfs.f_bfree

    def close(self) -> None:
        os.close(self._mnt)


class Mounter:
    """Makes instances and resizes them: here, as root."""

    def mount(self, size: int) -> Tmpfs:
        return Tmpfs(mount_tmpfs(size), self)

    def resize(self, mnt_fd: int, size: int) -> None:
        resize_tmpfs(mnt_fd, size)

    def close(self) -> None:
        pass


class HelperMounter(Mounter):
    """Makes and resizes them through a helper in a user namespace of its
    own (python -m daxfuse.memory.tmpfs), which dies with the daemon."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        top = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [top, os.environ.get("PYTHONPATH")]))}
        with theirs:
            self._proc = subprocess.Popen(
                ["unshare", "--user", "--map-root-user", "--mount", sys.executable, "-m", "daxfuse.memory.tmpfs",
                 str(theirs.fileno())], pass_fds=[theirs.fileno()], env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._sock = ours
        self._lock = threading.Lock()  # windows are made and frozen from worker threads

    def _ask(self, words: str, fd: int | None = None) -> int | None:
        with self._lock:
            socket.send_fds(self._sock, [words.encode()], [] if fd is None else [fd])
            reply, fds, _, _ = socket.recv_fds(self._sock, 64, 1)
        if not reply:
            raise OSError(errno.EPIPE, "the tmpfs helper is gone")
        status = int(reply)
        if status:
            raise OSError(status, os.strerror(status))
        return fds[0] if fds else None

    def mount(self, size: int) -> Tmpfs:
        return Tmpfs(self._ask(f"mount {size}"), self)

    def resize(self, mnt_fd: int, size: int) -> None:
        self._ask(f"resize {size}", mnt_fd)

    def close(self) -> None:
        self._sock.close()
        self._proc.wait()


def mounter() -> Mounter | None:
    """How this process gets instances, or None where it cannot."""
    if os.geteuid() == 0:
        try:
            os.close(mount_tmpfs(HUGE))
            return Mounter()
        except OSError:
            return None
    helper = HelperMounter()
    try:
        helper.mount(HUGE).close()
    except OSError:
        helper.close()
        return None
    return helper


def _serve(sock: socket.socket) -> None:
    """The helper's side: one request, one reply, until the daemon goes."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the daemon died before the line above
        return
    while True:
        request, fds, _, _ = socket.recv_fds(sock, 64, 1)
        if not request:
            return
        command, value = request.decode().split()
        reply, out = 0, []
        try:
            if command == "mount":
                out = [mount_tmpfs(int(value))]
            else:
                resize_tmpfs(fds[0], int(value))
        except OSError as e:
            reply = e.errno
        socket.send_fds(sock, [str(reply).encode()], out)
        for fd in fds + out:
            os.close(fd)


if __name__ == "__main__":
    _serve(socket.socket(fileno=int(sys.argv[1])))
