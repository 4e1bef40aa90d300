"""Opening the files a user names (the memory file, and what lives beside it:
its layout record, windows, their temporaries) so that another user cannot
steer a daemon, root's above all, onto a file of their choosing.

Links are never followed at the last component; files are created
exclusively; a file in a directory that others may write is used only when
the directory is sticky and the file is the caller's own (the only files no
one else can replace there); and a file with other names (hard links) is
refused, since another name could be anyone's.
"""
import errno
import os
import stat

from .errors import DaxError


def _refuse(path: str, why: str) -> DaxError:
    return DaxError(errno.EPERM, f"{path}: {why}; refused")


def check_directory(path: str) -> os.stat_result:
    """The directory path lives in: its stat, or EPERM when others may
    write it and it is not sticky (anyone could swap the file there)."""
    directory = os.path.dirname(os.path.abspath(path))
    st = os.stat(directory)
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
        raise _refuse(path, f"its directory {directory} may be written by others and is not sticky")
    return st


def check_file(path: str, fd: int, directory: os.stat_result) -> None:
    """What fd opened must be a regular file of one name, and in a directory
    that others may write, the caller's own."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise _refuse(path, "not a regular file")
    if st.st_nlink > 1:
        raise _refuse(path, f"it has {st.st_nlink} names (hard links)")
    if directory.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and st.st_uid != os.geteuid():
        raise _refuse(path, f"in a directory others may write, it belongs to uid {st.st_uid}, not to this user")


def open_file(path: str, flags: int, create: bool = False) -> int:
    """path opened with flags (O_RDONLY or O_RDWR, and such), not through a
    link; created exclusively (mode 0600) when create and it does not exist.
    Raises DaxError (EPERM for what is refused) or OSError."""
    directory = check_directory(path)
    flags |= os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # a FIFO planted there must not hang the open
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        if not create:
            raise
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _refuse(path, "a symbolic link") from None
        raise
    try:
        check_file(path, fd, directory)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def create_file(path: str) -> int:
    """A new file at path, read-write, that did not exist (EEXIST if it did)."""
    directory = check_directory(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        check_file(path, fd, directory)
    except BaseException:
        os.close(fd)
        raise
    return fd


def fsync_directory(path: str) -> None:
    """Make a name made or removed in path's directory durable."""
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
