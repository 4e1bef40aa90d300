"""The FUSE adapter without a mount: errors come out as FUSEError, never as
anything that would end pyfuse3.main."""
import errno
import logging
import os
import types

import pyfuse3
import pytest
import trio

from daxfuse.daemon.fuse_ops import DaxOperations


@pytest.fixture
def ops(bus):
    trio.run(bus.apply, [lambda: bus.create_region(4 << 20), lambda: bus.create_device(0)])
    return DaxOperations(bus)


def errno_of(coro_fn, *args) -> int:
    async def run():
        with pytest.raises(pyfuse3.FUSEError) as e:
            await coro_fn(*args)
        return e.value.errno
    return trio.run(run)


@pytest.mark.logs_errors
def test_unexpected_exception_is_logged_and_answered_eio(ops, caplog):
    with caplog.at_level(logging.ERROR, logger="daxfuse.daemon.fuse_ops"):
        assert errno_of(ops.read, 12345, 0, 10) == errno.EIO  # no such handle: a KeyError inside
    assert "Traceback" in caplog.text and "KeyError" in caplog.text


def test_dax_errors_keep_their_errno(ops):
    async def open_device():
        entry = await ops.lookup(pyfuse3.ROOT_INODE, b"dax")
        dev = await ops.lookup(entry.st_ino, b"dax0.0")
        return dev.st_ino
    ino = trio.run(open_device)
    assert errno_of(ops.open, ino, os.O_RDWR | os.O_TRUNC, None) == errno.EINVAL
    assert errno_of(ops.lookup, pyfuse3.ROOT_INODE, b"nothing") == errno.ENOENT
    root = types.SimpleNamespace(uid=0)  # what pyfuse3's RequestContext tells of the caller
    assert errno_of(ops.unlink, pyfuse3.ROOT_INODE, b"control", root) == errno.EPERM, "outside dev/, even root"
