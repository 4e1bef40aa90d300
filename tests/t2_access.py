"""Devices for ordinary users, tried by one: a user this module creates is
given a device on root's mount (owner, group, mode, chmod, chown) and is
refused everything else; then mounts, uses and execs an emulator of its own."""
import errno
import json
import os
import pwd
import grp
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pytest

from conftest import as_user, mounted_paths
from daxfuse.testing import DAXFUSE, DaxMount

pytestmark = [pytest.mark.mounted, pytest.mark.timeout(180),
              pytest.mark.skipif(os.geteuid() != 0, reason="creating a user to try it as needs root")]

USER, GROUP = "daxfuse-stranger", "daxfuse-pmem"


@pytest.fixture(scope="module")
def stranger():
    """(uid, gid of its group GROUP) of USER, made for this module and
    removed after it."""
    made = []
    try:
        grp.getgrnam(GROUP)
    except KeyError:
        subprocess.run(["groupadd", "--system", GROUP], check=True)
        made.append(["groupdel", GROUP])
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        "--user-group", "--groups", GROUP, USER], check=True)
        made.insert(0, ["userdel", USER])
    user = pwd.getpwnam(USER)
    try:
        yield user.pw_uid, grp.getgrnam(GROUP).gr_gid
    finally:
        for argv in made:
            subprocess.run(argv, check=False)


def errno_of(uid: int, path: str, flags: str) -> int:
    """0, or the errno, of an os.open(path, flags) by uid."""
    r = as_user(uid, sys.executable, "-c", textwrap.dedent(f"""
        import os, sys
        try:
            os.close(os.open({path!r}, {flags}))
        except OSError as e:
            sys.exit(e.errno)
    """))
    assert r.returncode < 128 and not r.stderr, r.stderr
    return r.returncode


@pytest.fixture
def shared():
    """A mount point others can reach (tmp_path's parents are root's 0700)."""
    top = tempfile.mkdtemp(prefix="daxfuse-access-")
    os.chmod(top, 0o755)
    mounts = []

    def mount(*options: str) -> DaxMount:
        path = os.path.join(top, f"m{len(mounts)}")
        os.mkdir(path)
        mounts.append(DaxMount(path, *options))
        return mounts[-1]
    yield mount
    errors = [e for e in (m.teardown() for m in mounts) if e]
    shutil.rmtree(top)
    assert not errors, "\n".join(errors)


def test_a_user_given_a_device_uses_it_and_is_refused_everything_else(stranger, shared):
    uid, gid = stranger
    d = shared("--size", "64M", "--align", "4K", "-o", "allow_other")
    d.control(f"create-region size=16M align=4K id=1\ncreate-device region=1 size=4M owner={USER}\n"
              f"create-device region=1 size=4M group={GROUP} mode=0660")
    assert (os.stat(d.device("dax1.0")).st_uid, os.stat(d.device("dax1.1")).st_gid) == (uid, gid)
    # its own device, and its group's: open, mmap in a child, store, msync
    for name in ("dax1.0", "dax1.1"):
        r = as_user(uid, sys.executable, "-c", textwrap.dedent("""
            import mmap, os, sys
            fd = os.open(sys.argv[1], os.O_RDWR)
            with mmap.mmap(fd, 4096, mmap.MAP_SHARED) as m:
                m[:8] = b"stranger"
                m.flush()
            print(os.pread(fd, 8, 0).decode())
        """), d.device(name))
        assert (r.returncode, r.stdout) == (0, "stranger\n"), r.stderr
    with open(d.device("dax1.0"), "rb") as f:
        assert f.read(8) == b"stranger", "its stores reached the device"
    # everything else
    before = d.layout()
    assert errno_of(uid, d.device("dax0.0"), "os.O_RDWR") == errno.EACCES, "root's device, 0600"
    assert errno_of(uid, d.path("control"), "os.O_WRONLY") == errno.EACCES
    assert errno_of(uid, d.path("control"), "os.O_RDONLY") == 0, "the layout reads, 0644"
    attrs = d.path("sys", "bus", "dax", "devices", "dax1.0")
    assert errno_of(uid, os.path.join(attrs, "size"), "os.O_WRONLY") == errno.EACCES
    assert errno_of(uid, os.path.join(attrs, "..", "dax_region", "create"), "os.O_WRONLY") == errno.EACCES
    assert errno_of(uid, os.path.join(attrs, "size"), "os.O_RDONLY") == 0
    r = as_user(uid, *DAXFUSE, "disable-device", "-m", d.mountpoint, "dax1.0")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "Permission denied" in r.stderr, r.stderr
    r = as_user(uid, "chown", USER, d.device("dax0.0"))
    assert r.returncode != 0 and "Operation not permitted" in r.stderr
    r = as_user(uid, "chown", "root", d.device("dax1.0"))
    assert r.returncode != 0 and "Operation not permitted" in r.stderr, "no giving away, as POSIX"
    r = as_user(uid, *DAXFUSE, "list", "-m", d.mountpoint, "-D")
    assert r.returncode == 0 and {x["chardev"] for x in json.loads(r.stdout)} == {"dax0.0", "dax1.0", "dax1.1"}
    assert d.layout() == before, "nothing it was refused changed anything"
    # inside exec (a user namespace of its own), through FUSE: another user gets no direct mapping
    r = as_user(uid, *d.exec_argv(sys.executable, "-c", textwrap.dedent("""
        import ctypes, mmap, os, stat
        assert stat.S_ISCHR(os.stat("/dev/dax1.0").st_mode)
        fd = os.open("/dev/dax1.0", os.O_RDWR)
        with mmap.mmap(fd, 4096, mmap.MAP_SHARED) as m:
            m[8:16] = b"via exec"
            at = "%x-" % ctypes.addressof(ctypes.c_char.from_buffer(m))
            (line,) = [ln for ln in open("/proc/self/maps") if ln.startswith(at)]
            assert line.rstrip().endswith("/dev/dax1.0"), "the FUSE file, not root's memory file: " + line
        try:
            os.open("/dev/dax0.0", os.O_RDWR)
        except PermissionError:
            print("refused dax0.0")
    """)))
    assert (r.returncode, r.stdout) == (0, "refused dax0.0\n"), r.stderr
    with open(d.device("dax1.0"), "rb") as f:
        assert f.read(16) == b"strangervia exec"


def test_a_user_may_list_the_cxl_bus_and_change_nothing_on_it(stranger, shared):
    """The CXL bus is root's, as sysfs and /dev/cxl are: a stranger reads its
    attributes but no address (start and resource are 0400), and neither
    writes one nor opens a memdev's mailbox."""
    uid, _ = stranger
    d = shared("--size", "64M", "-o", "allow_other")
    cxl = d.path("sys", "bus", "cxl", "devices")
    before = d.layout()
    for path, flags, err in (("decoder0.0/create_ram_region", "os.O_WRONLY", errno.EACCES),
                             ("decoder0.0/create_ram_region", "os.O_RDONLY", 0),
                             ("decoder0.0/start", "os.O_RDONLY", errno.EACCES),
                             ("decoder9.0/dpa_size", "os.O_WRONLY", errno.EACCES),
                             ("decoder9.0/mode", "os.O_RDONLY", 0),
                             ("../drivers/cxl_mem/unbind", "os.O_WRONLY", errno.EACCES),
                             ("mem0/serial", "os.O_RDONLY", 0)):
        assert errno_of(uid, os.path.join(cxl, path), flags) == err, path
    assert errno_of(uid, d.path("dev", "cxl", "mem0"), "os.O_RDWR") == errno.EACCES
    assert errno_of(uid, d.path("dev", "cxl", "mem0"), "os.O_RDONLY") == errno.EACCES
    r = as_user(uid, sys.executable, "-c", "import os, sys\ntry:\n    os.mkdir(sys.argv[1])\n"
                "except OSError as e:\n    sys.exit(e.errno)", d.path("sys", "kernel", "tracing", "instances", "mine"))
    assert r.returncode == errno.EACCES, "trace instances are root's (the directory is)"
    assert d.layout() == before


def test_another_user_cannot_reach_the_direct_mapping_socket(stranger, shared):
    """The socket lives in the daemon's run directory (0700): a user given a
    device on root's mount maps it through FUSE, and cannot even connect."""
    uid, _ = stranger
    d = shared("--size", "64M", "-o", "allow_other")
    r = as_user(uid, sys.executable, "-c", textwrap.dedent("""
        import socket, sys
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            s.connect(sys.argv[1])
        except PermissionError:
            print("refused")
    """), os.readlink(d.path(".direct")))
    assert r.stdout == "refused\n", r.stderr


def plant(uid: int, *argv: str) -> None:
    as_user(uid, *argv, check=True)


def test_a_root_daemon_is_not_steered_by_what_another_user_plants(stranger, shared):
    """In a directory others may write (sticky, as /tmp), another user
    plants a link or a file of theirs where the memory file, its layout
    record or the record's temporary go: a root daemon follows no link,
    uses no file of theirs, and overwrites nothing of root's."""
    uid, _ = stranger
    sticky = tempfile.mkdtemp(prefix="daxfuse-sticky-")
    os.chmod(sticky, 0o1777)
    secret = os.path.join(sticky, "root-only")
    try:
        with open(secret, "w") as f:
            f.write("root's own\n")
        os.chmod(secret, 0o600)
        memory, point = os.path.join(sticky, "memory"), os.path.join(sticky, "refused")
        os.mkdir(point)
        plant(uid, "ln", "-s", secret, memory)
        r = subprocess.run([*DAXFUSE, "mount", point, "--memory-file", memory], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 1 and "a symbolic link; refused" in r.stderr, r.stderr
        os.unlink(memory)
        plant(uid, "touch", memory)
        r = subprocess.run([*DAXFUSE, "mount", point, "--memory-file", memory], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 1 and f"belongs to uid {uid}" in r.stderr, r.stderr
        os.unlink(memory)
        d = shared("--size", "64M", "--memory-file", memory)
        plant(uid, "ln", "-s", secret, memory + ".layout.tmp")
        d.control("create-device region=0 size=0")  # a change: the record is written again
        assert open(secret).read() == "root's own\n"
        assert not os.path.islink(memory + ".layout") and os.stat(memory + ".layout").st_uid == 0
        assert d.stop() == 0
    finally:
        shutil.rmtree(sticky)


def test_chmod_and_chown_by_root_stick_and_persist(stranger, shared, tmp_path):
    uid, gid = stranger
    memory = str(tmp_path / "memory")
    d = shared("--size", "64M", "--align", "4K", "-o", "allow_other", "--memory-file", memory)
    dev = d.device("dax0.0")
    assert errno_of(uid, dev, "os.O_RDWR") == errno.EACCES
    os.chown(dev, uid, -1)
    assert errno_of(uid, dev, "os.O_RDWR") == 0
    os.chmod(dev, 0o400)
    assert errno_of(uid, dev, "os.O_RDWR") == errno.EACCES and errno_of(uid, dev, "os.O_RDONLY") == 0
    os.chown(dev, -1, gid)
    os.chmod(dev, 0o640)
    d.control("disable-device dax0.0")
    d.control("enable-device dax0.0")
    st = os.stat(dev)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (uid, gid, 0o640), "for the device's life"
    with pytest.raises(OSError) as e:
        os.chmod(dev, 0o4640)
    assert e.value.errno == errno.EINVAL, "no setuid on a device"
    with pytest.raises(OSError) as e:
        os.chmod(d.path("control"), 0o666)
    assert e.value.errno == errno.EPERM, "only devices change hands"
    assert d.stop() == 0
    again = shared("-o", "allow_other", "--memory-file", memory)
    st = os.stat(again.device("dax0.0"))
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (uid, gid, 0o640), "with the layout"
    again.control("disable-device dax0.0\ndestroy-device dax0.0\ncreate-device region=0 size=4M")
    st = os.stat(again.device("dax0.1"))
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, 0, 0o600), "a new device: the mount's defaults"


def test_mount_defaults_and_per_device_access(stranger, daxfuse_factory):
    uid, gid = stranger
    d = daxfuse_factory("--size", "64M", "--align", "4K", "--owner", USER, "--group", str(gid), "--mode", "0660")
    st = os.stat(d.device("dax0.0"))
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (uid, gid, 0o660)
    d.control("create-region size=8M align=4K id=1")
    r = subprocess.run([*DAXFUSE, "create-device", "-m", d.mountpoint, "-r", "1", "-s", "2M", "--owner", "root",
                        "--mode", "0604"], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout) == (0, "dax1.0\n"), r.stderr
    st = os.stat(d.device("dax1.0"))
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, gid, 0o604), "what is not given: the mount's"
    for bad, message in (("owner=no-such-user", "no user named"), ("group=99999999999", "out of range"),
                         ("mode=0888", "invalid mode"), ("mode=04755", "invalid mode")):
        with pytest.raises(OSError) as e:
            d.control(f"create-device region=1 size=2M {bad}")
        assert e.value.errno == errno.EINVAL and message in str(e.value)
    assert [dev["name"] for dev in d.layout()[1]["devices"]] == ["dax1.0"], "nothing made"
    r = subprocess.run([*DAXFUSE, "mount", "--owner", "no-such-user", d.mountpoint + "x"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no user named 'no-such-user'" in r.stderr


def userns_or_skip(uid: int) -> None:
    r = as_user(uid, "unshare", "--user", "--map-root-user", "true")
    if r.returncode:
        pytest.skip(f"the kernel gives {USER} no user namespace: {r.stderr.strip()}")


SCENARIO = """
set -eu
x() { echo "+ $*"; "$@"; }
mnt=$1/mnt
mkdir "$mnt"
x $DAXFUSE mount "$mnt" --size 64M --align 4K
x ls -ln "$mnt/dax"
x $DAXFUSE list
x dd if=/dev/urandom of="$1/data" bs=1M count=4 status=none
x dd if="$1/data" of="$mnt/dax/dax0.0" bs=1M conv=notrunc status=none
x cmp -n 4194304 "$1/data" "$mnt/dax/dax0.0"
x $DAXFUSE create-device -r 0 -s 0 >/dev/null
x $DAXFUSE exec -- sh -c 'stat -c "%F %u" /dev/dax0.0 && daxctl list -D | grep -c chardev && id -u &&
  echo "null: $(stat -c %F /dev/null)"'
x $DAXFUSE exec -- "$PYTHON" -c 'import ctypes, mmap, os
m = mmap.mmap(os.open("/dev/dax0.0", os.O_RDWR), 4096)
m[:6] = b"stored"
at = "%x-" % ctypes.addressof(ctypes.c_char.from_buffer(m))
(line,) = [ln for ln in open("/proc/self/maps") if ln.startswith(at)]
print(os.getuid(), bytes(m[:6]).decode(), "fuse" if "dax0.0" in line else "direct")'
x $DAXFUSE create-region -s 8M -a 4K >/dev/null
x $DAXFUSE create-device -r 1 -s 2M --owner 0 --mode 0644 >/dev/null
x $DAXFUSE exec -- "$PYTHON" -c 'import mmap, os
m = mmap.mmap(os.open("/dev/dax1.0", os.O_RDONLY), 4096, prot=mmap.PROT_READ)
fuse = any(ln.rstrip().endswith("dax1.0") for ln in open("/proc/self/maps"))
print("read-only, not writable by it:", "fuse" if fuse else "direct")'
echo "log: $(cat "$(ls -d /tmp/daxfuse-$(id -u) "${XDG_RUNTIME_DIR:-/nonexistent}/daxfuse" 2>/dev/null | head -1)"/*.log)"
x $DAXFUSE umount
if $DAXFUSE mount "$mnt" -o allow_other 2>"$1/err"; then echo "allow_other mounted"; $DAXFUSE umount; fi
echo "allow_other: $(cat "$1/err")"
"""


def test_a_user_mounts_uses_execs_and_unmounts_its_own(stranger, tmp_path):
    """As the user, in a mount namespace of root's where /dev/fuse is opened
    up (this machine's is 0600): mount, write, read, exec (the personality,
    daxctl, a direct mapping), umount; -o allow_other refused with the cure."""
    uid, _ = stranger
    userns_or_skip(uid)
    work = tempfile.mkdtemp(prefix="daxfuse-user-")
    try:
        os.chmod(work, 0o755)
        os.chown(work, uid, -1)
        script = os.path.join(work, "scenario.sh")
        with open(script, "w") as f:
            f.write(SCENARIO)
        opened = ('dir=$(mktemp -d) && mount -t tmpfs none "$dir" && mknod -m 0666 "$dir/fuse" c 10 229 && '
                  'mount --bind "$dir/fuse" /dev/fuse')
        r = as_user(uid, "sh", script, work, before=opened, timeout=150,
                    env={"PATH": "/usr/bin:/bin:/usr/sbin", "DAXFUSE": " ".join(DAXFUSE), "PYTHON": sys.executable})
        out = r.stdout
        print(out, r.stderr)
        assert r.returncode == 0, out + r.stderr
        assert f"-rw------- 1 {uid} " in out, "its devices are its own"
        assert "character special file" in out and f"\n1\n{uid}\n" in out, "exec: personality, daxctl, its own uid"
        assert "null: character special file" in out, "exec: the host's /dev/null mounted on its name"
        assert f"{uid} stored direct" in out, "its own daemon's memory, mapped directly"
        assert "read-only, not writable by it: fuse" in out, "a window it could open read-write is not given"
        assert "read-ahead stays at the kernel's 128 KiB" in out and "a quarter slower" in out
        assert "allow_other: daxfuse: EPERM: -o allow_other needs a line user_allow_other in /etc/fuse.conf" in out
        assert not any(p.startswith(work) for p in mounted_paths()), "its namespace is gone, and its mount"
    finally:
        shutil.rmtree(work)


def test_a_world_writable_run_is_still_roots(stranger):
    """/run as a tmpfs of default mode (1777, as some containers and chroots
    have it): another user's daemon keeps its files in a directory of its
    own, not in root's /run/daxfuse, where it could not write anyway."""
    uid, _ = stranger
    where = [sys.executable, "-c", "from daxfuse.client import runfiles; print(runfiles.run_dir())"]
    before = "mount -t tmpfs none /run && mkdir -m 0755 /run/daxfuse"
    assert as_user(uid, *where, before=before).stdout == f"/tmp/daxfuse-{uid}\n"
    assert as_user(0, *where, before=before).stdout == "/run/daxfuse\n"


def test_a_users_mount_where_etc_mtab_is_missing_is_refused_with_the_cure(stranger):
    """Minimal images lack /etc/mtab, where fusermount3 looks a user's mount
    up to unmount it: the mount would outlive its daemon, ENOTCONN."""
    uid, _ = stranger
    point = tempfile.mkdtemp(prefix="daxfuse-mtab-")
    os.chmod(point, 0o777)
    try:
        before = "mount -t tmpfs none /mnt && cp -a /etc /mnt && rm /mnt/etc/mtab && mount --bind /mnt/etc /etc"
        r = as_user(uid, *DAXFUSE, "mount", point, "--size", "16M", before=before)
        assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
        assert "needs /etc/mtab" in r.stderr and "ln -s ../proc/self/mounts /etc/mtab" in r.stderr
        assert point not in mounted_paths()
    finally:
        os.rmdir(point)
