"""daxfuse.testing as a downstream suite meets it: pytest runs, in a child
process, of test files that use nothing but the plugin; none may leave a
mount, whether its test passes, fails, times out, hangs the daemon, or
pytest itself is killed."""
import subprocess
import sys
import textwrap

import pytest

from conftest import mounted_paths, wait_for
from daxfuse import client

pytestmark = [pytest.mark.mounted, pytest.mark.timeout(180)]


def pytest_run(tmp_path, source: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    (tmp_path / "test_downstream.py").write_text(textwrap.dedent(source))
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                           f"--basetemp={tmp_path / 'base'}", *args, "test_downstream.py"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=timeout)


def left(tmp_path) -> list[str]:
    return [p for p in mounted_paths() if p.startswith(str(tmp_path))]


def test_the_fixtures_shape_a_mount_and_clean_up(fuse, tmp_path):
    r = pytest_run(tmp_path, """
        import json, os, pytest

        @pytest.mark.daxfuse(size="64M", align="4K", devices=["16M", "8M"])
        def test_shaped(daxfuse_mount, dax_device):
            (region,) = daxfuse_mount.layout()
            assert (region["size"], region["align"]) == (64 << 20, 4096)
            assert [(d["name"], d["size"]) for d in region["devices"]] == [("dax0.0", 16 << 20), ("dax0.1", 8 << 20)]
            assert dax_device == daxfuse_mount.device("dax0.0") and os.path.getsize(dax_device) == 16 << 20
            daxfuse_mount.inject_error("dax0.1", 3)
            with pytest.raises(OSError) as e:
                os.pread(os.open(daxfuse_mount.device("dax0.1"), os.O_RDONLY), 4096, 0)
            assert e.value.errno == 5  # EIO
            name = daxfuse_mount.create_device(0, "4M", mode="0640")
            assert name == "dax0.2" and oct(os.stat(daxfuse_mount.device(name)).st_mode)[-3:] == "640"
            daxfuse_mount.destroy("dax0.2")

        def test_default(daxfuse_mount, dax_device, daxfuse_factory):
            assert os.path.getsize(dax_device) == 64 << 20
            other = daxfuse_factory("--size", "16M", name="other")
            assert os.path.getsize(other.device()) == 16 << 20
    """)
    assert r.returncode == 0 and "2 passed" in r.stdout, r.stdout + r.stderr
    assert left(tmp_path) == []


def test_a_failing_test_still_unmounts(fuse, tmp_path):
    r = pytest_run(tmp_path, """
        def test_fails(daxfuse_mount):
            assert daxfuse_mount.mounted()
            assert False, "the test's own failure"
    """)
    assert r.returncode == 1 and "1 failed" in r.stdout and "the test's own failure" in r.stdout
    assert "error" not in r.stdout.splitlines()[-1], "teardown itself was fine"
    assert left(tmp_path) == []


def test_an_error_in_the_daemons_log_fails_the_test(fuse, tmp_path):
    """As s3ql's checklogs: a traceback or an ERROR line in the daemon's log
    (a request answered EIO for a bug, a listener that failed) fails the
    test that caused it, though the test itself passed."""
    r = pytest_run(tmp_path, """
        def test_passes(daxfuse_mount):
            with open(daxfuse_mount.log_path, "a") as log:  # what a daemon bug would leave
                log.write("daxfuse[1] ERROR: listener failed on added dax0.1\\nTraceback (most recent call last):\\n")
    """)
    assert r.returncode == 1 and "1 passed, 1 error" in r.stdout, r.stdout
    assert "logged what it never should" in r.stdout and "listener failed on added" in r.stdout
    assert left(tmp_path) == []


def test_a_hung_daemon_is_forced_off_and_named(fuse, tmp_path):
    """SIGSTOP stands in for a deadlock: SIGTERM does nothing, a reader
    blocks on the mount; teardown waits, then umount -f frees both."""
    r = pytest_run(tmp_path, """
        import os, signal, subprocess

        def test_hangs_it(daxfuse_mount, dax_device):
            os.kill(daxfuse_mount.proc.pid, signal.SIGSTOP)
            reader = subprocess.Popen(["dd", "if=" + dax_device, "of=/dev/null", "bs=4k", "count=1", "iflag=direct"])
            open("reader.pid", "w").write(str(reader.pid))
    """)
    assert r.returncode == 1 and "1 passed, 1 error" in r.stdout, r.stdout + r.stderr
    assert "daxfuse daemon of " in r.stdout and "hung: not stopped 15 s after SIGTERM" in r.stdout
    assert str(tmp_path / "base") in r.stdout, "the message names the mount"
    assert left(tmp_path) == []
    reader = int((tmp_path / "reader.pid").read_text())
    wait_for(lambda: (client.proc_stat(reader) or ["Z"])[0] == "Z", "the blocked reader to be freed", 10)


def test_a_timed_out_test_still_unmounts(fuse, tmp_path):
    r = pytest_run(tmp_path, """
        import time

        def test_slow(daxfuse_mount):
            time.sleep(60)
    """, "--timeout=3")
    assert r.returncode == 1 and "Timeout" in r.stdout, r.stdout + r.stderr
    assert left(tmp_path) == []


def test_pytest_killed_takes_its_daemons_along(fuse, tmp_path):
    (tmp_path / "test_downstream.py").write_text(textwrap.dedent("""
        import time

        def test_forever(daxfuse_mount):
            print("mounted", flush=True)
            time.sleep(600)
    """))
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-s",
                             f"--basetemp={tmp_path / 'base'}", "test_downstream.py"],
                            cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    try:
        while "mounted" not in proc.stdout.readline():
            assert proc.poll() is None, "pytest ended early"
        assert left(tmp_path)
        proc.kill()  # SIGKILL: no teardown at all
        proc.wait(30)
        wait_for(lambda: not left(tmp_path), "the daemon to go with pytest")
    finally:
        proc.kill()
        proc.wait()
        for path in left(tmp_path):
            subprocess.run(["umount", "-f", path])
