"""The long-run torture harness (scripts/torture.py, its workloads in
scripts/workloads), each workload in a
bounded, CI-sized run: it must find no violation, and it must have done
enough to mean something. `scripts/torture --minutes N` runs the same
workloads for longer."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
import torture  # noqa: E402
from workloads import concurrency, fuzz  # noqa: E402
from workloads.harness import Stats  # noqa: E402

pytestmark = [pytest.mark.mounted, pytest.mark.torture, pytest.mark.timeout(150)]


@pytest.fixture
def run(tmp_path):
    if not os.path.exists("/dev/fuse"):
        pytest.skip("/dev/fuse is missing: mounted tests need FUSE")

    def run_(workload: str, seconds: float) -> Stats:
        stats = torture.run([workload], seconds, seed=1, workdir=str(tmp_path))
        assert not stats.violations, "\n".join(stats.violations)
        assert not torture.left_mounted(str(tmp_path))
        return stats
    return run_


def test_fuzz(run):
    stats = run("fuzz", 15)
    assert sum(stats.inputs.values()) > 1000
    attrs = fuzz.DEVICE_ATTRS + fuzz.REGION_ATTRS + fuzz.DRIVER_ATTRS
    assert {f"fuzz sysfs {a}" for a in attrs} | {"fuzz control"} <= stats.inputs.keys()


def test_concurrency(run):
    stats = run("concurrency", 30)
    assert all(stats.ops[f"concurrency {kind}"] > 100 for kind in concurrency.IO_KINDS)
    assert all(stats.ops[f"concurrency churner {action}"] > 0
               for action in ("cycle", "resize", "recreate", "failing_batch"))


def test_crash(run):
    stats = run("crash", 20)
    assert sum(n for key, n in stats.ops.items() if key.startswith("crash SIGKILL")) >= 3
    assert stats.ops["crash SIGTERM during I/O"] and stats.ops["crash SIGTERM during a disable"]
