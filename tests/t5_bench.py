"""scripts/bench runs end to end on a small size and writes well-formed JSON
(timings are never asserted: they belong to the benchmark, not the suite)."""
import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.mounted, pytest.mark.timeout(300)]

BENCH = os.path.join(os.path.dirname(__file__), "..", "scripts", "bench.py")


def test_bench_runs_and_emits_json(fuse, tmp_path):
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, BENCH, "--size", "64M", "--runs", "1", "--json", str(out)],
                       capture_output=True, text=True, timeout=280)
    assert r.returncode == 0, r.stdout + r.stderr
    result = json.loads(out.read_text())
    assert set(result) == {"machine", "daxfuse", "tmpfs", "c_libfuse", "pyfuse3", "placement", "personality", "direct",
                           "control", "cxl"}
    assert set(result["daxfuse"]) == set(result["tmpfs"]) == set(result["c_libfuse"]) == set(result["pyfuse3"])
    for section in ("daxfuse", "tmpfs", "c_libfuse", "pyfuse3", "personality", "direct", "control", "cxl"):
        assert all(isinstance(v, float) and v > 0 for k, v in result[section].items()
                   if not k.startswith("daemon_RssShmem")), result[section]
    # Idle, the daemon no longer maps the emulated memory the run touched.
    assert result["control"]["daemon_RssShmem_after_run_MiB"] < 1
    assert "| sequential read 1M (cold) (GB/s) |" in r.stdout
