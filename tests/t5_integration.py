"""The integration tier: real programs nobody here wrote, through scripts/integration."""
import os
import subprocess

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.mounted, pytest.mark.timeout(600)]

SCRIPTS = os.path.join(os.path.dirname(__file__), "..", "scripts", "integration")


@pytest.mark.parametrize("script", ["fio", "fio-devdax", "pmdk", "pmdk-devdax", "pmdk-unsafe-shutdown",
                                    "media-errors", "mmap", "hotunplug", "go-mapper", "jvm-mapper", "qemu"])
def test_script(fuse, script):
    r = subprocess.run([os.path.join(SCRIPTS, script)], capture_output=True, text=True, timeout=580)
    print(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"[{script}] ok" in r.stdout
