"""The device-dax personality inside `daxfuse exec`: C programs see character
devices with the kernel's mmap rules (tests/c, after ndctl's test/device-dax.c
and dax-pmd.c); everything else passes through."""
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import inside
from daxfuse.testing import DAXFUSE


pytestmark = [pytest.mark.mounted, pytest.mark.timeout(120)]

C_DIR = os.path.join(os.path.dirname(__file__), "c")


@pytest.fixture(scope="module")
def programs(tmp_path_factory):
    """The test programs, compiled once."""
    out = tmp_path_factory.mktemp("c")
    for name in ("device_dax", "stat_family", "dax_fops", "dax_poison"):
        subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-o", str(out / name),
                        os.path.join(C_DIR, f"{name}.c"), "-ldl"], check=True)
    return out


def devt(d, name):
    with open(d.path("sys", "bus", "dax", "devices", name, "dev")) as f:
        return f.read().strip().split(":")


def test_the_stat_family_sees_a_character_device(daxfuse_factory, programs):
    d = daxfuse_factory("--size", "64M")
    r = inside(d, str(programs / "stat_family"), "/dev/dax0.0", *devt(d, "dax0.0"))
    assert r.returncode == 0 and r.stdout.endswith("all checks passed\n"), r.stdout + r.stderr


@pytest.mark.parametrize("align", ["4K", "2M"])
def test_device_dax_mmap_rules(daxfuse_factory, programs, tmp_path, align):
    d = daxfuse_factory("--size", "64M", "--align", align)
    r = inside(d, str(programs / "device_dax"), "/dev/dax0.0", d.path("control"), "dax0.0", cwd=str(tmp_path))
    assert r.returncode == 0 and r.stdout.endswith("all checks passed\n"), r.stdout + r.stderr


def test_the_other_file_calls_answer_as_dax_fops(daxfuse_factory, programs):
    """lseek, truncate, fallocate, fsync, ioctl, sendfile, splice, statfs
    and O_TRUNC, as the kernel answers them for a device-dax character device
    (memcached -e on a device must fail its ftruncate, as on the kernel)."""
    d = daxfuse_factory("--size", "64M")
    fd = os.open(d.device(), os.O_RDWR)
    os.pwrite(fd, b"marker", 0)
    os.close(fd)
    r = inside(d, str(programs / "dax_fops"), "/dev/dax0.0")
    assert r.returncode == 0 and r.stdout.endswith("all checks passed\n"), r.stdout + r.stderr


def test_opt_outs(daxfuse_factory):
    d = daxfuse_factory("--size", "64M")
    fd = os.open(d.path("dax", "dax0.0"), os.O_RDWR)
    os.pwrite(fd, b"plain bytes", 0)
    os.close(fd)
    show = ["python3", "-c", "import os, stat, sys; s = os.stat(sys.argv[1]); "
            "print(stat.S_ISCHR(s.st_mode), open(sys.argv[1], 'rb').read(11))", "/dev/dax0.0"]
    r = inside(d, *show)
    assert r.returncode == 1 and "Invalid argument" in r.stderr, "read() of a device refused by default"
    assert inside(d, *show, options=["--read-write"]).stdout == "True b'plain bytes'\n"
    assert inside(d, *show, options=["--no-personality"]).stdout == "False b'plain bytes'\n"


def test_inside_exec_the_hosts_busy_nodes_are_the_hosts_own(daxfuse_factory):
    """/dev/null, /dev/shm and the other HOST_MOUNTED names are the host's
    nodes mounted on their names, not links that FUSE resolves at every path
    walk; the rest of the host's /dev is reached through links into .host/."""
    d = daxfuse_factory("--size", "64M")
    show = ["python3", "-c", "import os, sys; print(*[(lambda s: (s.st_mode, s.st_rdev, s.st_dev, s.st_ino))"
            "(os.lstat(p)) for p in sys.argv[1:]], os.readlink('/dev/fuse'))", "/dev/null", "/dev/shm"]
    r = inside(d, *show)
    assert r.returncode == 0, r.stderr
    host = [(s.st_mode, s.st_rdev, s.st_dev, s.st_ino) for s in map(os.lstat, ("/dev/null", "/dev/shm"))]
    assert r.stdout == f"{host[0]} {host[1]} .host/fuse\n"
    open(os.path.join("/dev/shm", "daxfuse-test-probe"), "w").close()
    try:  # POSIX shared memory (glibc's shm_open) is the host's
        assert inside(d, "ls", "/dev/shm/daxfuse-test-probe").returncode == 0
    finally:
        os.unlink("/dev/shm/daxfuse-test-probe")


def test_exec_in_a_chroot_whose_root_is_no_mount_says_what_to_do(tmp_path):
    """A plain chroot, as a debootstrapped root is until a runtime mounts it:
    exec cannot keep its mounts private there (unshare fails with EINVAL),
    and says so, and how to give it a root that is a mount point."""
    root = tmp_path / "root"
    (root / "host").mkdir(parents=True)
    for name in os.listdir("/"):  # the host's tree, reached from a root that is a plain directory
        os.symlink(f"host/{name}", root / name)
    r = subprocess.run(["unshare", "--mount", "sh", "-c", 'mount --rbind / "$0/host" && exec chroot "$0" "$@"',
                        str(root), *DAXFUSE, "exec", "--", "true"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert "/ is not a mount point here" in r.stderr and "mount --bind DIR DIR" in r.stderr


MAPPINGS = r"""
import ctypes, mmap, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
MAP_FIXED, page, n = 0x10, 4096, int(sys.argv[1])
fd = os.open("/dev/dax0.0", os.O_RDWR)
base = libc.mmap(None, n * page, 0, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
for i in range(n):  # n device mappings side by side
    at = libc.mmap(base + i * page, page, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED | MAP_FIXED, fd, i * page)
    assert at == base + i * page, os.strerror(ctypes.get_errno())
rc = libc.munmap(base, n * page)
print(rc, os.strerror(ctypes.get_errno()) if rc else "")
"""


def test_an_internal_limit_fails_the_call_aloud(daxfuse_factory):
    """One munmap over more device mappings than the library tracks per call
    fails (EINVAL) and says why on stderr, whatever the debug setting."""
    d = daxfuse_factory("--size", "64M", "--align", "4K")
    r = inside(d, sys.executable, "-c", MAPPINGS, "64")
    assert (r.returncode, r.stdout, r.stderr) == (0, "0 \n", ""), r.stderr
    r = inside(d, sys.executable, "-c", MAPPINGS, "65")
    assert r.returncode == 0 and r.stdout == "-1 Invalid argument\n", r.stdout + r.stderr
    assert "more than 64 device mappings at once (an internal limit)" in r.stderr, r.stderr


def test_the_debug_channel_traces_what_the_library_does(daxfuse_factory):
    d = daxfuse_factory("--size", "64M", "--align", "4K")
    quiet = inside(d, sys.executable, "-c", MAPPINGS, "2")
    traced = inside(d, "env", "DAXFUSE_DEBUG=1", sys.executable, "-c", MAPPINGS, "2")
    assert quiet.stderr == "" and quiet.stdout == traced.stdout == "0 \n", quiet.stderr + traced.stderr
    lines = traced.stderr.splitlines()
    assert all(line.startswith("daxfuse[") for line in lines), lines
    assert any("personality on for" in line for line in lines), lines
    assert sum("minor 0 mapped at" in line and "directly" in line for line in lines) == 2, lines


def test_a_child_keeps_the_personality_whatever_environment_it_is_given(daxfuse_factory):
    """env -i, an explicit environment (PMDK's test framework runs its tools
    so), LD_PRELOAD cleared on purpose: each exec entry point puts the
    library and its settings back, so the child still sees a character
    device; its own LD_PRELOAD stays, after the library."""
    d = daxfuse_factory("--size", "64M")
    script = textwrap.dedent("""
        import os, subprocess, sys
        kind = ["stat", "-c", "%F", "/dev/dax0.0"]
        run = lambda argv, **kw: subprocess.run(argv, capture_output=True, text=True, **kw).stdout.strip()
        print(run(kind, env={}))                                    # execve with an empty environment
        print(run(["env", "-i", *kind]))                            # execvp, after env cleared it
        print(run(["env", "LD_PRELOAD=", "DAXFUSE_PERSONALITY=", *kind]))
        print(run(["sh", "-c", "exec env -i sh -c 'stat -c %F /dev/dax0.0'"]))  # two generations on
        print(run(["sh", "-c", 'echo "$LD_PRELOAD"'], env={"LD_PRELOAD": "libc.so.6"}).split(":")[1:])
    """)
    r = inside(d, sys.executable, "-c", script)
    lines = r.stdout.splitlines()
    assert lines[:4] == ["character special file"] * 4, r.stdout + r.stderr
    assert lines[4] == "['libc.so.6']", "the program's own preload follows the library's"
    # without the personality nothing is added
    r = inside(d, "env", "-i", "stat", "-c", "%F", "/dev/dax0.0", options=["--no-personality"])
    assert r.stdout.strip() == "regular file"


@pytest.mark.skipif(os.geteuid() != 0, reason="MADV_HWPOISON needs CAP_SYS_ADMIN")
@pytest.mark.parametrize("align", ["4K", "2M"])
def test_madv_hwpoison_of_a_device_page_is_memory_failure(daxfuse_factory, programs, align):
    """As ndctl's dax-poison.c checks it: SIGBUS BUS_MCEERR_AR at the page,
    si_addr_lsb the mapping's page size; the page is a media error after."""
    d = daxfuse_factory("--size", "64M", "--align", align)
    r = inside(d, str(programs / "dax_poison"), "/dev/dax0.0", str(4096 if align == "4K" else 2 << 20))
    assert r.returncode == 0 and r.stdout.endswith("all checks passed\n"), r.stdout + r.stderr
    page = (4096 if align == "4K" else 2 << 20) // 512
    assert d.layout()[0]["devices"][0]["badblocks"] == [{"offset": page, "length": 8}]


MREMAP = r"""
import ctypes, errno, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = libc.mremap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.mremap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p]
M2, MAYMOVE, FIXED = 2 << 20, 1, 2
fd = __import__("os").open("/dev/dax0.0", 2)
base = libc.mmap(None, 2 * M2, 3, 1, fd, 0)  # PROT_READ | PROT_WRITE, MAP_SHARED
ctypes.memmove(base, b"first", 5)
ctypes.memmove(base + M2, b"second", 6)
spare = libc.mmap(None, 4 * M2, 0, 0x22, -1, 0)  # PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS
target = (spare + M2 - 1) & ~(M2 - 1)

def remap(old, old_len, new_len, flags, new=None):
    p = libc.mremap(old, old_len, new_len, flags, new)
    return "ok" if p != 2**64 - 1 else errno.errorcode[ctypes.get_errno()]

print("unaligned part", remap(base + 4096, 4096, 4096, MAYMOVE | FIXED, target))
print("aligned half", remap(base + M2, M2, M2, MAYMOVE | FIXED, target),
      ctypes.string_at(target, 6), ctypes.string_at(base, 5))
print("past its end", remap(base, 2 * M2, 2 * M2, MAYMOVE))
p = libc.mremap(base, M2, 2 * M2, MAYMOVE, None)
print("grown", p % M2 == 0, ctypes.string_at(p, 5), ctypes.string_at(p + M2, 6))
print("shrunk", remap(p, 2 * M2, M2, 0), ctypes.string_at(p, 5))
"""


def test_mremap_moves_grows_and_shrinks_parts_of_a_mapping_on_its_align(daxfuse_factory):
    """As dev_dax_may_split lets a VMA split: a part of a mapping moves if it
    starts and ends on the device's align (the rest stays mapped where it
    was); a part off the align is EINVAL, one past the mapping's end EFAULT;
    a mapping grows by moving to an aligned address, and shrinks in place."""
    d = daxfuse_factory("--size", "64M")
    r = inside(d, sys.executable, "-c", MREMAP)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["unaligned part EINVAL", "aligned half ok b'second' b'first'",
                                     "past its end EFAULT", "grown True b'first' b'second'", "shrunk ok b'first'"]


def test_root_makes_and_removes_nodes_in_exec_dev_as_in_a_devtmpfs(daxfuse_factory):
    """mknod, mkdir, symlink, a file, and their removal, in exec's /dev:
    made in the host's /dev, which it shows; a device node opens (the mount
    of exec's /dev allows them). The emulator's names and the host nodes exec
    mounts are not root's to remove."""
    d = daxfuse_factory("--size", "64M")
    name = f"daxfuse-test-{os.getpid()}"
    script = textwrap.dedent(f"""\
        set -e
        mknod /dev/{name} c 1 3 && test -c /dev/{name} && echo dropped > /dev/{name}
        mkdir /dev/{name}.d && mknod /dev/{name}.d/zero c 1 5 && head -c 4 /dev/{name}.d/zero | od -An -tx1
        ln -s {name} /dev/{name}.link && test -c /dev/{name}.link
        echo "longer than kept" > /dev/{name}.d/file && echo kept > /dev/{name}.d/file && cat /dev/{name}.d/file
        chmod 600 /dev/{name}.d/file && stat -c %a /dev/{name}.d/file
        test -c /dev/.host/{name} && echo "on the host"
        rm /dev/{name} /dev/{name}.link /dev/{name}.d/zero /dev/{name}.d/file && rmdir /dev/{name}.d
        rm /dev/dax0.0 2>&1 || true
        rm /dev/null 2>&1 || true
        """)
    r = inside(d, "sh", "-c", script)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [" 00 00 00 00", "kept", "600", "on the host",
                                     "rm: cannot remove '/dev/dax0.0': Operation not permitted",
                                     "rm: cannot remove '/dev/null': Device or resource busy"]
    assert not [n for n in os.listdir("/dev") if n.startswith(name)], "all of it is gone from the host's /dev"


def _copy_with_libraries(root, *programs):
    """programs copied into root at their paths, with the libraries and loader ldd names."""
    paths = set(programs)
    for program in programs:
        out = subprocess.run(["ldd", program], capture_output=True, text=True, check=True).stdout
        paths |= {w for line in out.splitlines() for w in line.split() if w.startswith("/")}
    for path in paths:
        os.makedirs(os.path.dirname(f"{root}{path}"), exist_ok=True)
        with open(os.path.realpath(path), "rb") as f, open(f"{root}{path}", "wb") as out:
            out.write(f.read())
        os.chmod(f"{root}{path}", 0o755)


def test_exec_root_refuses_a_directory_that_is_no_root_filesystem(daxfuse_factory, tmp_path):
    """`daxfuse exec --root DIR`: a DIR without /bin/sh, or none at all, is one line and status 1,
    before anything is mounted or run."""
    d = daxfuse_factory("--size", "64M")
    (tmp_path / "empty" / "proc").mkdir(parents=True)
    for root, said in ((tmp_path / "empty", "is not a root filesystem (no /bin/sh"),
                       (tmp_path / "missing", "no such directory")):
        r = subprocess.run([*DAXFUSE, "exec", "-m", d.mountpoint, "--root", str(root), "--", "touch",
                            str(tmp_path / "ran")], capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and r.stderr.count("\n") == 1 and said in r.stderr, r.stderr
        assert r.stderr.startswith(f"daxfuse: --root {root}"), r.stderr
    assert not (tmp_path / "ran").exists()


def test_exec_root_runs_in_a_root_made_by_hand(daxfuse_factory, tmp_path):
    """`daxfuse exec --root` with a root of a shell and env copied from the host (no debootstrap):
    the emulated /sys and /dev, the device a character device, the mount at its own path, nothing
    else of the host; what the command writes there is gone after it, and so are the mounts."""
    d = daxfuse_factory("--size", "64M")
    root = tmp_path / "root"
    (root / "proc").mkdir(parents=True)
    _copy_with_libraries(str(root), "/bin/sh", "/usr/bin/env")
    listing = sorted(os.listdir(root))
    here = os.path.dirname(os.path.abspath(__file__))
    script = (f'test -c /dev/dax0.0 && echo chardev; read s </sys/bus/dax/devices/dax0.0/size && echo "$s"; '
              f'test -e {d.mountpoint}/control && echo mount; test -e {here} || echo no-checkout; '
              f'test -e /proc/self/status && echo proc; echo x >/written && echo wrote')
    r = subprocess.run([*DAXFUSE, "exec", "-m", d.mountpoint, "--root", str(root), "--", "/bin/sh", "-c", script],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["chardev", str(64 << 20), "mount", "no-checkout", "proc", "wrote"]
    assert sorted(os.listdir(root)) == listing and not os.listdir(root / "proc"), "the root as it was"
    with open("/proc/self/mountinfo") as f:
        assert str(root) not in f.read()


REPLACE = r"""
import ctypes, errno, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = libc.mremap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.mremap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
M2, FAILED = 2 << 20, 2**64 - 1
fd = __import__("os").open("/dev/dax0.0", 2)
a = libc.mmap(None, M2, 3, 1, fd, 0)
b = libc.mmap(None, M2, 3, 1, fd, M2)
ctypes.memmove(a, b"AAAA", 4)
ctypes.memmove(b, b"BBBB", 4)
moved = libc.mremap(b, M2, M2, 3, a)  # MREMAP_MAYMOVE | MREMAP_FIXED, onto a's address
print("moved over", moved == a, ctypes.string_at(a, 4))
with open(sys.argv[1] + "/control", "w") as control:  # windows close: every mapping is mapped again
    control.write("inject-error dax0.0 block=40000")
print("after a revocation", ctypes.string_at(a, 4))
c = libc.mmap(None, M2, 3, 1, fd, 4 * M2)
anon = libc.mmap(c, M2, 3, 0x32, -1, 0)  # MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED over a device mapping
print("anonymous over it", anon == c, libc.mprotect(c, 4096, 1), libc.munmap(c + 4096, 4096))
print("off the align", libc.mmap(a + 4096, 4096, 3, 0x32, -1, 0) == FAILED and ctypes.get_errno() == errno.EINVAL)
"""


def test_a_mapping_over_a_device_mapping_replaces_it(daxfuse_factory):
    """MAP_FIXED and MREMAP_FIXED unmap what they land on: the device mapping
    there is cut, so its revival never maps the old device range back over
    the new one, and what replaced it splits as its own kind (anonymous
    memory on any page; a device mapping's rest only on the align)."""
    d = daxfuse_factory("--size", "64M")
    r = inside(d, sys.executable, "-c", REPLACE, d.mountpoint)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["moved over True b'BBBB'", "after a revocation b'BBBB'",
                                     "anonymous over it True 0 0", "off the align True"]
