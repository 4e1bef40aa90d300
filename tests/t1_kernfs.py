"""The sysfs view lists directories as kernfs does, by name hash: checked
against this machine's own /sys, whose readdir order is the kernel's."""
import os

import pytest

from daxfuse.views.sysfs import kernfs_order

# directories without a namespace tag (class/net's entries are hashed with
# their network namespace)
HOST_DIRS = ["/sys/bus", "/sys/class", "/sys/module", "/sys/kernel", "/sys/devices/system/cpu",
             "/sys/devices/virtual/mem", "/sys/fs", "/sys/kernel/mm"]


@pytest.mark.parametrize("path", [p for p in HOST_DIRS if os.path.isdir(p)])
def test_the_order_is_the_host_kernels(path):
    listed = [entry.name for entry in os.scandir(path)]  # readdir's order, unsorted
    assert len(listed) > 1
    assert kernfs_order(listed) == listed
