"""The memory file: no trace left in /dev/shm, one daemon per persistent file,
writes that fail instead of killing the daemon."""
import errno
import os
import re
import sys

import pytest

from conftest import as_user
from daxfuse.core.errors import DaxError
from daxfuse.memory import MemoryFile


def test_default_file_is_unlinked_at_once():
    before = set(os.listdir("/dev/shm"))
    m = MemoryFile()
    try:
        m.ensure(1 << 20)
        m.write(0, b"gone")
        assert set(os.listdir("/dev/shm")) == before
        assert bytes(m.read(0, 4)) == b"gone"
    finally:
        m.close()


NOBODY = """
import mmap, os
from daxfuse.memory import MemoryFile
m = MemoryFile()
m.ensure(8 << 20)
view = mmap.mmap(m.fileno(), 8 << 20)
view[:] = b"x" * (8 << 20)
print(m.name)
print(os.readlink(f"/proc/self/fd/{m.fileno()}"))
print(*(line.split()[1] for line in open("/proc/self/smaps_rollup") if line.startswith("ShmemPmdMapped")))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="runs a child as nobody")
def test_without_root_the_default_file_is_on_a_huge_page_tmpfs_too():
    """A user who may not mount gets the file from a user namespace of its
    own: stores in it are mapped 2 MiB at a time, and nothing is in /dev/shm."""
    if as_user(65534, "unshare", "--user", "--map-root-user", "--mount", "true", gid=65534).returncode:
        pytest.skip("no user namespaces for nobody here")
    r = as_user(65534, sys.executable, "-c", NOBODY, gid=65534)
    assert r.returncode == 0, r.stderr
    name, path, pmd_kib = r.stdout.split("\n")[:3]
    assert name == "on a huge-page tmpfs of its own (unlinked)"
    assert re.fullmatch(r"/#[0-9]+ \(deleted\)", path), path  # an O_TMPFILE file at the root of a tmpfs
    assert int(pmd_kib) == 8192


def test_a_persistent_file_serves_one_daemon(tmp_path):
    path = str(tmp_path / "mem")
    a = MemoryFile(path)
    try:
        with pytest.raises(DaxError) as e:
            MemoryFile(path)
        assert e.value.errno == errno.EBUSY and "in use" in e.value.message
    finally:
        a.close()
    MemoryFile(path).close()  # free again once closed


def test_reading_holes_allocates_nothing(tmp_path):
    path = tmp_path / "mem"
    m = MemoryFile(str(path))
    try:
        m.ensure(8 << 20)
        m.write(4 << 20, b"data")
        assert bytes(m.read(0, 8 << 20)[4 << 20:(4 << 20) + 4]) == b"data"  # holes around data
        assert bytes(m.read(0, 4096)) == bytes(4096)
        assert os.stat(path).st_blocks * 512 <= 64 << 10  # the holes stayed holes
        assert bytes(m.read(4 << 20, 4)) == b"data"       # allocated: served from the mapping
    finally:
        m.close()


def test_data_already_in_a_persistent_file_is_served_in_place(tmp_path):
    path = tmp_path / "mem"
    with open(path, "wb") as f:
        f.truncate(8 << 20)
        f.seek(2 << 20)
        f.write(b"kept" * 1024)
    m = MemoryFile(str(path))
    try:
        data, hole = m.read(2 << 20, 8), m.read(0, 8)
        assert bytes(data) == b"keptkept" and bytes(hole) == bytes(8)
        with open(path, "r+b") as f:   # "physical memory" changes behind the reads
            os.pwrite(f.fileno(), b"new!", 2 << 20)
            os.pwrite(f.fileno(), b"hole", 0)
        assert bytes(data) == b"new!kept", "data is served in place: a view of the mapping"
        assert bytes(hole) == bytes(8), "a hole is read through the file: a copy, no memory mapped"
    finally:
        m.close()
