"""A memory file on a filesystem too small for it (a container's 64 MiB
/dev/shm): refused up front, and writes that fail with ENOSPC instead of a
SIGBUS in the daemon. Each test mounts a small tmpfs."""
import errno
import os
import subprocess

import pytest

from conftest import dirty_shutdowns, mounted_paths
from daxfuse.core.errors import DaxError
from daxfuse.memory import MemoryFile
from daxfuse.testing import DAXFUSE

pytestmark = [pytest.mark.mounted, pytest.mark.timeout(120)]


@pytest.fixture
def small(tmp_path):
    """A tmpfs of 16 MiB."""
    path = tmp_path / "small"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16M", "tmpfs", str(path)], check=True)
    yield path
    subprocess.run(["umount", str(path)], check=False)


def test_write_to_a_full_filesystem_fails_with_enospc(small):
    m = MemoryFile(str(small / "mem"))
    try:
        m.ensure(32 << 20)  # sparse: bigger than its filesystem
        with pytest.raises(DaxError) as e:
            m.write(0, bytes(20 << 20))
        assert e.value.errno == errno.ENOSPC
    finally:
        m.close()


def test_memory_file_without_room_is_refused_not_a_sigbus(fuse, small, tmp_path):
    """A sparse memory file bigger than its filesystem would SIGBUS the daemon
    when clients fill it: refuse it up front."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        r = subprocess.run([*DAXFUSE, "mount", str(mnt), "--size", "64M", "--memory-file", str(small / "mem")],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and r.stderr.startswith("daxfuse: ENOSPC: the memory file"), r.stderr
        assert r.stderr.count("\n") == 1
        assert str(mnt) not in mounted_paths()
        r = subprocess.run([*DAXFUSE, "mount", str(mnt), "--size", "8M", "--memory-file", str(small / "mem")],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        r = subprocess.run([*DAXFUSE, "create-region", "-m", str(mnt), "-s", "16M"], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 1 and "ENOSPC" in r.stderr
    finally:
        subprocess.run([*DAXFUSE, "umount", str(mnt)], capture_output=True, timeout=60)


def test_hot_unplug_and_a_clean_stop_work_on_a_full_disk(fuse, small, tmp_path):
    """The kernel never refuses an unbind: with no room left for the layout
    record, disable and enable still work (their record catches up with the
    next one written), a change of the layout is refused (ENOSPC, nothing
    changed), and a stop is clean: every store is in the memory file, the
    record is no older than the last layout change, and no temporary is left."""
    memory, mnt = str(small / "mem"), tmp_path / "mnt"
    mnt.mkdir()
    daxfuse = lambda *a: subprocess.run([*DAXFUSE, *a], capture_output=True, text=True, timeout=60)
    assert daxfuse("mount", str(mnt), "--size", "8M", "--memory-file", memory).returncode == 0
    try:
        with open(mnt / "dax" / "dax0.0", "r+b") as f:
            f.write(b"stored")
        with open(small / "filler", "wb") as f:  # the disk, full
            with pytest.raises(OSError):
                while True:
                    f.write(bytes(1 << 20))
                    f.flush()
        assert daxfuse("disable-device", "dax0.0", "-m", str(mnt)).returncode == 0
        assert daxfuse("enable-device", "dax0.0", "-m", str(mnt)).returncode == 0
        r = daxfuse("create-region", "-s", "2M", "-m", str(mnt))
        assert r.returncode == 1 and "ENOSPC" in r.stderr
        r = daxfuse("umount", str(mnt))
        assert r.returncode == 0, r.stderr
        assert sorted(os.listdir(small)) == ["filler", "mem", "mem.layout"], "no temporary, the stop marked clean"
    finally:
        daxfuse("umount", str(mnt))
    os.unlink(small / "filler")
    assert daxfuse("mount", str(mnt), "--memory-file", memory).returncode == 0
    try:
        assert dirty_shutdowns(mnt) == 0
        with open(mnt / "dax" / "dax0.0", "rb") as f:
            assert f.read(6) == b"stored"
    finally:
        daxfuse("umount", str(mnt))
