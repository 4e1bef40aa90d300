"""The README's command blocks work as pasted, in order, after the quick
start: every ```sh block but those marked <!-- not run ... -->, in one
shell in the checkout (where the quick start leaves its reader), in a
private mount namespace where /mnt is an empty tmpfs, with a PATH that
the README itself extends by the checkout's .venv/bin."""
import os
import re
import subprocess

import pytest

from conftest import mounted_paths_of_type

pytestmark = [pytest.mark.mounted, pytest.mark.timeout(300)]

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def blocks() -> list[str]:
    text = open(os.path.join(TOP, "README.md")).read()
    return [body for skip, body in re.findall(r"(<!-- not run[^>]*-->\n)?```sh\n(.*?)```", text, re.S) if not skip]


def test_the_readmes_command_blocks_run_as_written(fuse):
    # A block that fails leaves its mount behind; the namespace would keep its daemon alive unseen.
    cleanup = ("trap 'for m in $(findmnt -rn -t fuse.daxfuse -o TARGET); do fusermount3 -u -z \"$m\"; done' EXIT\n")
    script = cleanup + "set -euo pipefail\n" + "\n".join(blocks()) + "\necho README-DONE\n"
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                        'mount -t tmpfs none /mnt && exec bash -c "$0"', script], cwd=TOP, capture_output=True,
                       text=True, timeout=280,
                       env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/"})
    assert r.returncode == 0 and r.stdout.endswith("README-DONE\n"), r.stdout[-2000:] + r.stderr[-3000:]
    assert "EBUSY while enabled" in r.stdout
    assert not any(p.startswith("/mnt/") for p in mounted_paths_of_type("fuse.daxfuse"))
