"""Shared fixtures. Mounted tests run a real daxfuse daemon on a temp dir,
through daxfuse.testing (the plugin downstream suites use)."""
import pytest

from daxfuse import mountinfo
from daxfuse.testing import DAXFUSE, skip_without_fuse


def mounted_paths() -> set[str]:
    return {m.point for m in mountinfo.mounts()}


def mounted_paths_of_type(fstype: str) -> list[str]:
    return [m.point for m in mountinfo.mounts() if m.fstype == fstype]


@pytest.fixture(scope="session")
def fuse():
    """Skip, saying why, where /dev/fuse cannot be opened: mounted tests need it."""
    skip_without_fuse()


@pytest.fixture
def dax(daxfuse_factory, tmp_path):
    """A daemon with a 64 MiB region 0, dax0.0 spanning it, memory file in tmp."""
    return daxfuse_factory("--size", "64M", "--memory-file", str(tmp_path / "memory"))
