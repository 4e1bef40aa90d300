"""The FUSE tree, observed from real processes against a real daemon."""
import errno
import mmap
import os
import signal
import subprocess
import tempfile
import time

import pytest

from conftest import as_user, child, mounted_paths, mounted_paths_of_type
from daxfuse.testing import DAXFUSE, DaxMount
from daxfuse.client.runfiles import run_file

MiB = 1 << 20
DEV = ("dax", "dax0.0")

NOBODY = 65534
pytestmark = [pytest.mark.mounted, pytest.mark.timeout(120)]


def pattern(n: int, seed: int = 1) -> bytes:
    return (bytes(range(seed, 256)) + bytes(range(seed))) * (n // 256) + bytes(n % 256)


def read_memory(dax, start: int, n: int) -> bytes:
    with open(os.path.join(os.path.dirname(dax.mountpoint), "memory"), "rb") as f:
        f.seek(start)
        return f.read(n)


def test_tree(dax):
    assert sorted(os.listdir(dax.mountpoint)) == [".direct", "control", "dax", "dev", "sys"]
    assert os.listdir(dax.path("dax")) == ["dax0.0"]
    st = os.stat(dax.path(*DEV))
    assert st.st_size == 64 * MiB
    assert st.st_mode & 0o777 == 0o600


def test_sysfs_makes_no_names(dax):
    """As sysfs answers: no create (EACCES), no mkdir (EPERM), even for root."""
    with pytest.raises(PermissionError) as e:
        os.open(dax.path("sys", "bus", "dax", "made"), os.O_CREAT | os.O_WRONLY, 0o644)
    assert e.value.errno == errno.EACCES
    with pytest.raises(PermissionError) as e:
        os.mkdir(dax.path("sys", "made"))
    assert e.value.errno == errno.EPERM


def test_dd_and_cmp(dax, tmp_path):
    src = tmp_path / "src"
    src.write_bytes(os.urandom(3 * MiB))
    dev = dax.path(*DEV)
    subprocess.run(["dd", f"if={src}", f"of={dev}", "bs=1M", "seek=5", "conv=notrunc,fsync",
                    "status=none"], check=True)
    subprocess.run(["cmp", "-n", str(3 * MiB), str(src), dev, "-i", f"0:{5 * MiB}"], check=True)
    assert read_memory(dax, 5 * MiB, 3 * MiB) == src.read_bytes()


def test_pread_pwrite_two_handles(dax):
    a = os.open(dax.path(*DEV), os.O_RDWR)
    b = os.open(dax.path(*DEV), os.O_RDWR)
    try:
        os.pwrite(a, b"through a", 12345)
        assert os.pread(b, 9, 12345) == b"through a"
        os.pwrite(b, b"B" * 8192, 64 * MiB - 8192)
        assert os.pread(a, 8192, 64 * MiB - 8192) == b"B" * 8192
        assert os.pread(a, 100, 64 * MiB) == b""           # EOF at the end
        assert os.pread(a, 100, 64 * MiB - 10) == b"B" * 10  # short read at the end
        with pytest.raises(OSError) as e:
            os.pwrite(a, b"x", 64 * MiB)
        assert e.value.errno == errno.ENOSPC
    finally:
        os.close(a)
        os.close(b)


def test_mmap_in_child_reaches_memory_file_on_msync(dax):
    proc = child("""
        import mmap, os, sys
        fd = os.open(sys.argv[1], os.O_RDWR)
        m = mmap.mmap(fd, 4 << 20, mmap.MAP_SHARED)
        m[2 << 20:(2 << 20) + 11] = b"mapped data"
        m.flush()
        print(m[0:4].hex())
    """, dax.path(*DEV))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert read_memory(dax, 2 * MiB, 11) == b"mapped data"
    fd = os.open(dax.path(*DEV), os.O_RDONLY)
    assert os.pread(fd, 11, 2 * MiB) == b"mapped data"
    os.close(fd)


DIRTY_CHILD = """
    import mmap, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR)
    m = mmap.mmap(fd, 4 << 20, mmap.MAP_SHARED)
    m[0:6] = b"synced"
    m.flush()
    m[4096:4101] = b"dirty"          # left dirty: never msynced
    print("ready", flush=True)
    sys.stdin.readline()             # parent disabled the device
    m[0]                             # must SIGBUS
    print("survived", flush=True)
"""


def test_disable_revokes_mapping_with_dirty_page(dax):
    proc = child(DIRTY_CHILD, dax.path(*DEV), stdin=subprocess.PIPE)
    assert proc.stdout.readline() == "ready\n"
    start = time.monotonic()
    assert dax.control("disable-device dax0.0") == "ok dax0.0"
    print(f"disable took {(time.monotonic() - start) * 1000:.1f} ms")
    out, _ = proc.communicate("go\n", timeout=60)
    assert proc.returncode == -signal.SIGBUS, out
    assert "survived" not in out
    assert os.path.exists(dax.path(*DEV))  # the node stays
    assert dax.control("enable-device dax0.0") == "ok dax0.0"
    fd = os.open(dax.path(*DEV), os.O_RDONLY)
    assert os.pread(fd, 6, 0) == b"synced"
    os.close(fd)


def test_disabled_device_gives_enxio_and_enable_revives_old_handles(dax):
    fd = os.open(dax.path(*DEV), os.O_RDWR)
    os.pwrite(fd, b"before", 0)
    dax.control("disable-device dax0.0")
    for op in (lambda: os.pread(fd, 6, 0), lambda: os.pwrite(fd, b"x", 0), lambda: os.fsync(fd),
               lambda: os.open(dax.path(*DEV), os.O_RDONLY)):
        with pytest.raises(OSError) as e:
            op()
        assert e.value.errno == errno.ENXIO
    assert os.stat(dax.path(*DEV)).st_size == 64 * MiB
    dax.control("enable-device dax0.0")
    assert os.pread(fd, 6, 0) == b"before"
    os.fsync(fd)
    os.close(fd)


def test_lifecycle_leaves_no_stale_pages_or_size(dax, tmp_path):
    fd = os.open(dax.path(*DEV), os.O_RDWR)
    assert os.pread(fd, 5, 0) == bytes(5)  # now cached by the kernel
    dax.control("disable-device dax0.0")
    with open(tmp_path / "memory", "r+b") as mem:  # change "physical memory" behind the cache
        mem.write(b"fresh")
    dax.control("enable-device dax0.0")
    assert os.pread(fd, 5, 0) == b"fresh"
    dax.control("disable-device dax0.0\nresize-device dax0.0 size=32M\nenable-device dax0.0")
    assert os.stat(dax.path(*DEV)).st_size == 32 * MiB
    assert os.fstat(fd).st_size == 32 * MiB
    assert os.pread(fd, 10, 32 * MiB) == b""
    os.close(fd)


def test_destroy_keeps_inode_number_and_open_handle_gets_enxio(dax):
    fd = os.open(dax.path(*DEV), os.O_RDWR)
    os.pwrite(fd, b"old bytes", 0)
    old_ino = os.fstat(fd).st_ino
    dax.control("disable-device dax0.0\ndestroy-device dax0.0")
    assert os.listdir(dax.path("dax")) == []
    with pytest.raises(OSError) as e:
        os.pread(fd, 9, 0)
    assert e.value.errno == errno.ENXIO
    # same name, same range: the old bytes are still there (pmem semantics),
    # through a new inode number while the old one is still referenced
    assert dax.control("create-device region=0") == "ok dax0.0"
    new = os.open(dax.path(*DEV), os.O_RDWR)
    assert os.fstat(new).st_ino != old_ino
    assert os.pread(new, 9, 0) == b"old bytes"
    os.close(new)
    os.close(fd)


def test_o_trunc_refused_and_truncate_rules(dax):
    dev = dax.path(*DEV)
    fd = os.open(dev, os.O_RDWR)
    os.pwrite(fd, b"keep me", 0)
    m = mmap.mmap(fd, 4096, mmap.MAP_SHARED)
    m[100:105] = b"dirty"                     # dirty mapped page, not msynced
    with pytest.raises(OSError) as e:
        os.open(dev, os.O_WRONLY | os.O_TRUNC)
    assert e.value.errno == errno.EINVAL
    assert m[100:105] == b"dirty" and os.pread(fd, 7, 0) == b"keep me"
    m.close()
    os.truncate(dev, 64 * MiB)                # same size: fio and PMDK do this
    for size in (0, 32 * MiB, 128 * MiB):
        with pytest.raises(OSError) as e:
            os.ftruncate(fd, size)
        assert e.value.errno == errno.EINVAL
    assert os.fstat(fd).st_size == 64 * MiB
    os.posix_fallocate(fd, 0, 8192)           # glibc's fallback needs statfs
    os.close(fd)


def test_namespace_is_fixed(dax):
    d = dax.path("dax")
    for op in (lambda: open(os.path.join(d, "new"), "w"), lambda: os.mkdir(os.path.join(d, "x")),
               lambda: os.unlink(dax.path(*DEV)), lambda: os.rename(dax.path(*DEV), os.path.join(d, "y"))):
        with pytest.raises(OSError) as e:
            op()
        assert e.value.errno == errno.EPERM
    st = os.statvfs(dax.mountpoint)
    assert st.f_bsize == 4096 and st.f_blocks == 64 * MiB // 4096


@pytest.mark.parametrize("bad, err", [
    ("bogus-command", errno.EINVAL),
    ("create-device region=7", errno.ENXIO),
    ("resize-device dax0.0 size=32M", errno.EBUSY),
    ("create-region size=3M align=2M", errno.EINVAL),
    ("create-device region=0 size=2M", errno.ENOSPC),
    ("destroy-device dax0.0", errno.EBUSY),
    ("disable-device dax0.0\ncreate-device region=0 size=1M", errno.EINVAL),
    ("create-region size=8M\ncreate-device region=1 size=16M", errno.ENOSPC),
])
def test_bad_control_input_changes_nothing(dax, bad, err):
    before = dax.layout()
    fd = os.open(dax.path("control"), os.O_RDWR)
    with pytest.raises(OSError) as e:
        os.write(fd, bad.encode())
    assert e.value.errno == err
    assert os.pread(fd, 4096, 0).decode().startswith(f"error {errno.errorcode[err]}: ")
    os.close(fd)
    assert dax.layout() == before
    assert os.listdir(dax.path("dax")) == ["dax0.0"]


def test_cli_manages_a_mount(dax):
    def cli(*args):
        return subprocess.run([*DAXFUSE, *args, "-m", dax.mountpoint], capture_output=True,
                              text=True, timeout=60)

    r = cli("create-region", "-s", "16M", "-a", "4K")
    assert (r.returncode, r.stdout.strip()) == (0, "region1"), r.stderr
    r = cli("create-device", "-r", "1", "-s", "8M")
    assert (r.returncode, r.stdout.strip()) == (0, "dax1.0"), r.stderr
    assert os.stat(dax.path("dax", "dax1.0")).st_size == 8 * MiB
    r = cli("reconfigure-device", "dax1.0", "-s", "4M")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "EBUSY" in r.stderr
    assert "Traceback" not in r.stderr
    for args in (("disable-device", "dax1.0"), ("reconfigure-device", "dax1.0", "-s", "4M"),
                 ("enable-device", "dax1.0")):
        assert cli(*args).returncode == 0
    listing = __import__("json").loads(cli("list", "-RDM").stdout)
    region1 = [r for r in listing if r["id"] == 1][0]
    assert region1["available_size"] == 12 * MiB
    assert region1["devices"][0]["mappings"][0]["size"] == 4 * MiB
    r = cli("destroy-region", "1")
    assert r.returncode == 1 and "EBUSY" in r.stderr


def test_cli_exit_status_tells_usage_errno_and_unreachable_apart(daxfuse_factory, tmp_path):
    """2: the command line; 1: the request failed, its errno named; 3: no
    daemon to ask (no such mount, or one whose daemon was killed)."""
    d = daxfuse_factory("--size", "16M")

    def cli(*args, mount=d.mountpoint):
        r = subprocess.run([*DAXFUSE, *args, "-m", mount], capture_output=True, text=True, timeout=60)
        assert r.stderr.count("\n") <= 4 and "Traceback" not in r.stderr, r.stderr
        return r.returncode, r.stderr

    assert cli("create-device")[0] == 2  # -r missing: argparse
    assert cli("inject-error", "dax0.0")[0] == 2
    assert cli("exec")[0] == 2
    for args, name in ((("create-device", "-r", "0", "-s", "3M"), "EINVAL"), (("disable-device", "dax0.9"), "ENXIO"),
                       (("destroy-device", "dax0.0"), "EBUSY"), (("create-region", "-s", "x"), "EINVAL"),
                       (("inject-error", "dax0.0", "-B", "-1"), "EINVAL"),
                       (("create-region", "-s", "2M\ndestroy-region 0"), "EINVAL")):  # one command, not two
        status, said = cli(*args)
        assert status == 1 and name in said and said.count("\n") == 1, (args, said)
    assert subprocess.run(d.exec_argv("sh", "-c", "exit 7"), timeout=60).returncode == 7  # the command's own
    status, said = cli("list", mount=str(tmp_path))
    assert status == 3 and "not a daxfuse mount" in said
    (tmp_path / "killed").mkdir()
    killed = DaxMount(str(tmp_path / "killed"), "--size", "16M")
    try:
        killed.proc.kill()
        killed.proc.wait(30)
        status, said = cli("list", mount=killed.mountpoint)
        assert status == 3 and said.count("\n") == 1, said
    finally:
        killed.kill()


def test_cli_finds_the_only_mount_and_refuses_to_guess(daxfuse_factory):
    a = daxfuse_factory("--size", "16M", name="a")
    daxfuse_factory("--size", "16M", name="b")
    r = subprocess.run([*DAXFUSE, "list"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 3 and "pass -m MOUNTPOINT" in r.stderr
    # in a mount namespace where only `a` is left, `list` finds it
    others = " ".join(m for m in mounted_paths_of_type("fuse.daxfuse") if m != a.mountpoint)
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                        f"for m in {others}; do umount -l $m; done; exec \"$@\"", "sh",
                        *DAXFUSE, "list", "-D"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert [d["chardev"] for d in __import__("json").loads(r.stdout)] == ["dax0.0"]


def test_detached_mount_and_umount(fuse, tmp_path):
    mnt = tmp_path / "detached"
    mnt.mkdir()
    r = subprocess.run([*DAXFUSE, "mount", str(mnt), "--size", "16M"], capture_output=True,
                       text=True, timeout=90)
    try:
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == str(mnt)
        assert os.listdir(mnt / "dax") == ["dax0.0"]
        again = subprocess.run([*DAXFUSE, "mount", str(mnt)], capture_output=True, text=True, timeout=60)
        assert again.returncode == 1 and "already" in again.stderr
    finally:
        u = subprocess.run([*DAXFUSE, "umount", str(mnt)], capture_output=True, text=True, timeout=60)
        if str(mnt) in mounted_paths():
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)])
    assert u.returncode == 0, u.stderr
    assert str(mnt) not in mounted_paths()
    # the daemon removes its log only when it exits cleanly
    assert not os.path.exists(run_file(str(mnt), "log")), open(run_file(str(mnt), "log")).read()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_unmounts_and_exits_zero(daxfuse_factory, signum):
    d = daxfuse_factory("--size", "16M")
    fd = os.open(d.path(*DEV), os.O_RDWR)  # an open handle must not block shutdown
    d.proc.send_signal(signum)
    assert d.proc.wait(30) == 0
    assert d.mountpoint not in mounted_paths()
    with pytest.raises(OSError):  # FLUSH has no daemon to answer it any more
        os.close(fd)


def test_a_stop_the_moment_ready_is_seen_is_a_clean_shutdown(daxfuse_factory):
    """The race: READY=1 was sent before the signal receiver existed, so a
    supervisor's SIGTERM right after it hit the default action (exit -15)."""
    for i in range(5):
        d = daxfuse_factory("--size", "16M", name=f"m{i}")
        d.proc.send_signal(signal.SIGTERM)  # no await between READY=1 and this
        assert d.proc.wait(30) == 0
        assert d.mountpoint not in mounted_paths()


def test_bad_mount_arguments_fail_with_one_line(tmp_path):
    for args in (["--size", "3M"], ["--align", "8K"], ["--size", "lots"]):
        mnt = tmp_path / f"m{len(os.listdir(tmp_path))}"
        mnt.mkdir()
        r = subprocess.run([*DAXFUSE, "mount", "--foreground", str(mnt), *args],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode != 0
        assert "Traceback" not in r.stderr and r.stderr.strip(), r.stderr
        assert str(mnt) not in mounted_paths()


def test_o_direct_handle_bypasses_the_cache_and_can_be_mapped(dax):
    fd = os.open(dax.path(*DEV), os.O_RDWR | os.O_DIRECT)
    buf = mmap.mmap(-1, 4096)
    buf[:] = b"D" * 4096
    assert os.pwritev(fd, [buf], 8192) == 4096
    assert read_memory(dax, 8192, 4096) == b"D" * 4096   # no page cache in between
    out = mmap.mmap(-1, 4096)
    assert os.preadv(fd, [out], 8192) == 4096 and out[:] == b"D" * 4096
    with mmap.mmap(fd, 4 * 4096, mmap.MAP_SHARED) as m:   # as on device-dax
        assert m[8192:8200] == b"D" * 8
        m[0:4] = b"mmap"
    assert os.preadv(fd, [out], 0) == 4096 and out[:4] == b"mmap"  # coherent with the mapping
    os.close(fd)


def test_the_mount_table_decides_what_is_a_mount(tmp_path):
    """A plain directory holding a file named control is not a mount."""
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "control").write_text("[]")
    for args in (["umount", str(fake)], ["list", "-m", str(fake)], ["disable-device", "dax0.0", "-m", str(fake)]):
        r = subprocess.run([*DAXFUSE, *args], capture_output=True, text=True, timeout=60)
        assert (r.returncode, r.stderr) == (3, f"daxfuse: {fake} is not a daxfuse mount\n"), args


def test_another_users_mount_is_permission_denied(dax):
    r = as_user(NOBODY, *DAXFUSE, "list", "-m", dax.mountpoint, gid=NOBODY)
    assert r.returncode == 1 and "permission denied" in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_stale_pid_files_are_removed_when_a_daemon_starts(daxfuse_factory, tmp_path):
    (tmp_path / "a").mkdir()
    a = DaxMount(str(tmp_path / "a"), "--size", "16M")
    pid_file = run_file(a.mountpoint, "pid")
    try:
        assert os.path.exists(pid_file)
        a.proc.kill()  # SIGKILL: no chance to remove it
        a.proc.wait(30)
    finally:
        a.kill()
    assert os.path.exists(pid_file)
    daxfuse_factory("--size", "16M", name="b")
    assert not os.path.exists(pid_file)


def test_setup_errors_are_one_line_and_leave_nothing(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    cases = [
        ([str(tmp_path / "missing")], f"daxfuse: mount point {tmp_path / 'missing'} does not exist\n"),
        ([str(mnt), "--memory-file", "/nonexistent/dir/mem.img"],
         "daxfuse: ENOENT: cannot open memory file /nonexistent/dir/mem.img: No such file or directory\n"),
    ]
    for args, expected in cases:
        r = subprocess.run([*DAXFUSE, "mount", *args], capture_output=True, text=True, timeout=60)
        assert (r.returncode, r.stderr) == (1, expected)
        assert not os.path.exists(run_file(args[0], "log")), "a failed mount leaves its log behind"
    assert str(mnt) not in mounted_paths()


def test_times_are_the_mount_and_the_last_change(daxfuse_factory):
    before = time.time_ns()
    d = daxfuse_factory("--size", "64M")
    mounted = os.stat(d.path("sys", "module", "device_dax", "initstate")).st_mtime_ns
    after = time.time_ns()
    assert before <= mounted <= after, (before, mounted, after)
    dev = os.stat(d.path(*DEV)).st_mtime_ns
    size_attr = d.path("sys", "bus", "dax", "devices", "dax0.0", "size")
    available = d.path("sys", "devices", "platform", "daxfuse.0", "dax_region", "available_size")
    assert before <= dev == os.stat(size_attr).st_mtime_ns  # made just before the mount
    d.control("disable-device dax0.0\nresize-device dax0.0 size=32M\nenable-device dax0.0")
    changed = os.stat(d.path(*DEV)).st_mtime_ns
    assert dev < changed <= time.time_ns()
    assert os.stat(size_attr).st_mtime_ns == changed
    assert os.stat(available).st_mtime_ns == changed
    assert os.stat(d.path("sys", "module", "device_dax", "initstate")).st_mtime_ns == mounted
    d.control("create-device region=0")
    assert os.stat(d.path("dax")).st_mtime_ns >= os.stat(d.path("dax", "dax0.1")).st_mtime_ns > changed


def test_a_listing_survives_changes_made_while_it_is_read(daxfuse_factory):
    """readdir offsets are stable: a device made or removed during a listing
    that takes several READDIR requests shifts no other entry."""
    d = daxfuse_factory("--size", "64M", "--nr-dax", "512")
    d.control("create-region size=600M align=4K id=1\n" + "\n".join(["create-device region=1 size=2M"] * 300))
    before = set(os.listdir(d.path("dax")))
    seen = []
    with os.scandir(d.path("dax")) as it:
        for entry in it:
            seen.append(entry.name)
            if len(seen) == 40:  # past the first READDIR reply
                d.control("disable-device dax1.3\ndestroy-device dax1.3\ncreate-device region=1 size=2M")
    assert len(seen) == len(set(seen)), "an entry came twice"
    assert before - {"dax1.3"} <= set(seen), f"entries skipped: {sorted(before - set(seen) - {'dax1.3'})}"


def test_a_mount_inside_another_is_refused(dax):
    inner = dax.path("dax")
    r = subprocess.run([*DAXFUSE, "mount", inner], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "inside the daxfuse mount" in r.stderr, r.stderr
    assert inner not in mounted_paths()


def test_another_users_umount_is_permission_denied(dax):
    r = as_user(NOBODY, *DAXFUSE, "umount", dax.mountpoint, gid=NOBODY)
    assert (r.returncode, r.stderr) == (1, f"daxfuse: {dax.mountpoint}: permission denied (a daxfuse mount of "
                                           f"uid 0)\n")
    assert dax.mounted()


def test_a_mount_fusermount3_refuses_says_why_in_the_background():
    """Only "fuse_session_mount failed" reached the user: fusermount3's own
    line is what says why (here: nobody may not open /dev/fuse)."""
    point = tempfile.mkdtemp(prefix="daxfuse-nobody-")
    os.chmod(point, 0o777)
    try:
        r = as_user(NOBODY, *DAXFUSE, "mount", point, "--size", "16M", gid=NOBODY)
        assert r.returncode == 1 and r.stderr.startswith("daxfuse: fusermount3: "), r.stderr
        assert r.stderr.count("\n") == 1
    finally:
        os.rmdir(point)


def test_scripts_run_says_how_to_use_and_unmount(tmp_path):
    top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    mnt = tmp_path / "mnt"
    r = subprocess.run([os.path.join(top, "scripts", "run"), str(mnt), "--size", "16M"], capture_output=True,
                       text=True, timeout=120)
    try:
        assert r.returncode == 0, r.stderr
        assert f"daxfuse serves {mnt}" in r.stdout
        assert f'export PATH="{top}/.venv/bin:$PATH"' in r.stdout
        umount = r.stdout.splitlines()[-1].removeprefix("to unmount: ")
        assert subprocess.run(umount.split(), timeout=60).returncode == 0
        assert str(mnt) not in mounted_paths()
    finally:
        subprocess.run([*DAXFUSE, "umount", str(mnt)], capture_output=True, timeout=60)
