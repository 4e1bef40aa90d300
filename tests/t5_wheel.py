"""The package as users install it: a wheel built from this tree, installed
into a fresh venv (not the editable install scripts/setup makes), mounts and
serves with its own CLI, and its pytest plugin runs the README's downstream
test as written."""
import os
import shutil
import subprocess
import sys

import pytest

from conftest import mounted_paths

pytestmark = [pytest.mark.mounted, pytest.mark.timeout(600)]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, **kw):
    r = subprocess.run(args, capture_output=True, text=True, timeout=500, **kw)
    assert r.returncode == 0, f"{args}: {r.stdout}{r.stderr}"
    return r.stdout


def test_a_wheel_installed_daxfuse_mounts_and_serves(fuse, tmp_path):
    src, wheels, venv, mnt = tmp_path / "src", tmp_path / "wheels", tmp_path / "venv", tmp_path / "mnt"
    # as from a fresh clone: no build/ left over from an earlier build to fill gaps
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info",
                                                             "__pycache__", ".pytest_cache", ".hypothesis"))
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(src))
    (wheel,) = wheels.iterdir()
    run("/usr/bin/python3", "-m", "venv", str(venv))
    run(str(venv / "bin" / "pip"), "install", "-q", str(wheel), "pytest")
    daxfuse = str(venv / "bin" / "daxfuse")
    mnt.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run(daxfuse, "mount", str(mnt), "--size", "16M", cwd=str(tmp_path), env=env)
    try:
        with open(mnt / "dax" / "dax0.0", "r+b") as f:
            f.write(b"from a wheel")
            f.seek(0)
            assert f.read(12) == b"from a wheel"
        assert '"chardev":"dax0.0"' in run(daxfuse, "list", "-m", str(mnt), cwd=str(tmp_path), env=env)
        # the personality's preload library came with the wheel
        assert run(daxfuse, "exec", "-m", str(mnt), "--", "stat", "-c", "%F", "/dev/dax0.0",
                   cwd=str(tmp_path), env=env) == "character special file\n"
    finally:
        run(daxfuse, "umount", str(mnt), cwd=str(tmp_path), env=env)
    assert str(mnt) not in mounted_paths()
    downstream = tmp_path / "downstream"
    downstream.mkdir()
    (downstream / "test_engine.py").write_text(readme_block("<!-- downstream test:"))
    out = run(str(venv / "bin" / "python"), "-m", "pytest", "-v", f"--basetemp={tmp_path / 'base'}",
              cwd=str(downstream), env=env)
    assert "test_engine.py::test_my_engine_survives_hot_unplug PASSED" in out
    assert not [p for p in mounted_paths() if p.startswith(str(tmp_path))]


def readme_block(marker: str) -> str:
    """The fenced block that follows marker in the README."""
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    after = text[text.index(marker):]
    start = after.index("```python\n") + len("```python\n")
    return after[start:after.index("```", start)]
