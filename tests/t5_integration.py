"""The integration tier: real programs nobody here wrote, through scripts/integration."""
import json
import os
import shutil
import subprocess
import tempfile

import pytest

from conftest import as_user
from daxfuse.testing import DAXFUSE, DaxMount

pytestmark = [pytest.mark.integration, pytest.mark.mounted, pytest.mark.timeout(600)]

SCRIPTS = os.path.join(os.path.dirname(__file__), "..", "scripts", "integration")


@pytest.mark.parametrize("script", ["fio", "fio-devdax", "pmdk", "pmdk-devdax", "pmdk-unsafe-shutdown",
                                    "media-errors", "mmap", "hotunplug", "go-mapper", "jvm-mapper", "qemu", "kmem", "famfs",
                                    "cxl"])
def test_script(fuse, script):
    r = subprocess.run([os.path.join(SCRIPTS, script)], capture_output=True, text=True, timeout=580)
    print(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"[{script}] ok" in r.stdout


# --- newer tools than the host's, from a root of Debian unstable: `daxfuse exec --root` -----------
TOOLS_ROOT = os.path.join(os.path.dirname(__file__), "..", "scripts", "tools-root")
TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tools_root():
    """scripts/tools-root's root (Debian unstable: ndctl, daxctl, cxl), built once and cached."""
    if os.geteuid():
        pytest.skip("debootstrap needs root")
    r = subprocess.run([TOOLS_ROOT], capture_output=True, text=True, timeout=560)
    print(r.stderr)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().splitlines()[-1]


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in text.strip().split("-")[0].split("."))


def _names(listing: str) -> list[str]:
    return [d.get("chardev") for d in json.loads(listing)]


@pytest.mark.parametrize("tools", ["host", "unstable"])
def test_daxctl_and_ndctl_of_two_releases_name_the_device(request, daxfuse_factory, tools):
    """The host's daxctl and ndctl (Debian 12: 76.1) through `daxfuse exec`, and unstable's (85 and
    on) through `daxfuse exec --root`, on a fresh mount: both list dax0.0, daxctl -D and ndctl -N."""
    d = daxfuse_factory("--size", "64M")
    root = ["--root", request.getfixturevalue("tools_root")] if tools == "unstable" else []

    def run(*argv: str) -> str:
        r = subprocess.run([*DAXFUSE, "exec", "-m", d.mountpoint, *root, "--", *argv],
                           capture_output=True, text=True, timeout=100)
        assert r.returncode == 0, f"{argv}: {r.stdout}{r.stderr}"
        return r.stdout

    versions = {tool: _version(run(tool, "version")) for tool in ("daxctl", "ndctl")}
    if tools == "unstable":
        versions["cxl"] = _version(run("cxl", "version"))
        assert all(v > (76, 1) for v in versions.values()), versions
    else:
        assert versions["daxctl"] >= (76,), versions
    print(tools, versions)
    assert _names(run("daxctl", "list", "-D")) == ["dax0.0"]
    assert _names(run("ndctl", "list", "-N")) == ["dax0.0"]


def test_exec_root_shows_the_mount_and_hides_the_host(daxfuse_factory, tools_root):
    """Inside `daxfuse exec --root`: the mount at its own path, /dev/dax0.0 a character device
    (the preload library, built against Debian 12's glibc, loaded by unstable's), a direct mapping
    of it (a program of the host's, copied in through stdin), /proc; not the checkout; writes
    vanish with the overlay, and no mount stays behind."""
    d = daxfuse_factory("--size", "64M")
    probe = os.path.join(os.path.dirname(d.mountpoint), "probe")
    subprocess.run(["gcc", "-O2", "-o", probe, "-x", "c", "-"], check=True, input=MAPPER, text=True)
    script = (f'set -e; cat >/tmp/probe; chmod +x /tmp/probe; test -e {d.mountpoint}/control && echo mount; '
              f'test -c /dev/dax0.0 && echo chardev; test ! -e {TOP}/README.md && echo no-checkout; '
              f'test -e /proc/self/maps && echo proc; grep -q libdaxfuse_preload /proc/self/maps && echo library; '
              f'. /etc/os-release; echo "$VERSION_CODENAME"; touch /etc/daxfuse-exec-root-test; /tmp/probe')
    with open(probe, "rb") as f:
        r = subprocess.run([*DAXFUSE, "exec", "-m", d.mountpoint, "--root", tools_root, "--", "sh", "-c", script],
                           stdin=f, capture_output=True, text=True, timeout=100, env={**os.environ, "DAXFUSE_DEBUG": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[:5] == ["mount", "chardev", "no-checkout", "proc", "library"], r.stdout
    assert lines[5] not in ("bookworm", ""), "a release newer than the host's"
    assert lines[6:] == ["mapped exec-root"], r.stdout + r.stderr
    assert "directly" in r.stderr, r.stderr
    with open(d.device(), "rb") as f:
        assert f.read(16) == b"mapped exec-root"
    assert not os.path.exists(os.path.join(tools_root, "etc", "daxfuse-exec-root-test"))
    assert not os.listdir(os.path.join(tools_root, "proc"))
    with open("/proc/self/mountinfo") as f:
        assert tools_root not in f.read()


MAPPER = r"""
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
int main(void) {
    int fd = open("/dev/dax0.0", O_RDWR);
    char *p = fd < 0 ? MAP_FAILED : mmap(NULL, 2 << 20, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) { perror("/dev/dax0.0"); return 1; }
    memcpy(p, "mapped exec-root", 16);
    printf("%.16s\n", p);
    return 0;
}
"""


def test_exec_root_as_another_user(tools_root):
    """`daxfuse exec --root` for a user other than root (nobody, on root's mount shared with
    allow_other): the same tools and devices, chrooted by the user namespace exec makes."""
    if as_user(65534, "unshare", "--user", "--map-root-user", "--mount", "true", gid=65534).returncode:
        pytest.skip("no user namespaces for nobody here")
    top = tempfile.mkdtemp(prefix="daxfuse-root-")  # a mount point nobody reaches: tmp_path is 0700
    os.chmod(top, 0o755)
    os.mkdir(os.path.join(top, "mnt"))
    d = DaxMount(os.path.join(top, "mnt"), "--size", "64M", "-o", "allow_other", "--mode", "0666")
    try:
        r = as_user(65534, *DAXFUSE, "exec", "-m", d.mountpoint, "--root", tools_root, "--",
                    "sh", "-c", "id -u; daxctl version; test -c /dev/dax0.0 && echo chardev; "
                                "daxctl list -D 2>/dev/null", gid=65534)
    finally:
        error = d.teardown()
        shutil.rmtree(top)
    assert not error, error
    assert r.returncode == 0, r.stdout + r.stderr
    uid, version, chardev, listing = r.stdout.split("\n", 3)
    assert (uid, chardev) == ("65534", "chardev") and _version(version) > (76, 1), r.stdout
    assert _names(listing) == ["dax0.0"]


def test_daxctl_85_moves_a_device_between_devdax_famfs_and_system_ram(daxfuse_factory, tools_root):
    """daxctl 85's reconfigure-device, as on a kernel with fsdev_dax: devdax to famfs (fsdev_dax,
    by new_id) and back, to system-ram with its memory onlined, famfs refused from there (EINVAL,
    nothing changed), and -f back to devdax."""
    d = daxfuse_factory("--size", "256M")

    def daxctl(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([*DAXFUSE, "exec", "-m", d.mountpoint, "--root", tools_root, "--", "daxctl", *argv],
                              capture_output=True, text=True, timeout=100)

    def mode() -> dict:
        (dev,) = json.loads(daxctl("list", "-d", "dax0.0").stdout)
        return dev

    for target, expect in (("famfs", "famfs"), ("devdax", "devdax"), ("system-ram", "system-ram")):
        r = daxctl("reconfigure-device", "-m", target, "dax0.0")
        assert r.returncode == 0 and mode()["mode"] == expect, r.stderr
        listed = subprocess.run([*DAXFUSE, "list", "-m", d.mountpoint, "-D"], capture_output=True, text=True)
        assert listed.stdout == daxctl("list", "-D").stdout, "daxfuse list follows 85"
    assert mode()["online_memblocks"] == 2
    r = daxctl("reconfigure-device", "-m", "famfs", "dax0.0")
    assert r.returncode != 0 and "must be in devdax mode to convert to famfs" in r.stderr, r.stderr
    assert mode()["mode"] == "system-ram"
    assert daxctl("reconfigure-device", "-f", "-m", "devdax", "dax0.0").returncode == 0
    assert mode()["mode"] == "devdax"
