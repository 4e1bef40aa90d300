"""A memory file on a filesystem too small for it (a container's 64 MiB
/dev/shm): refused up front, and writes that fail with ENOSPC instead of a
SIGBUS in the daemon. Each test mounts a small tmpfs."""
import errno
import subprocess

import pytest

from conftest import DAXFUSE, mounted_paths
from daxfuse.errors import DaxError
from daxfuse.memory import MemoryFile

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
