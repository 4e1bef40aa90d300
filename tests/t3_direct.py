"""Direct mappings: under the personality a mapping of a device maps the
device's window, and a disable takes it away from every process that
could reach it, whatever that process does. Mappers here count nonstop
without calling libc (tests/c/revoke.c); a disable must freeze their
counters, in the device and in the next device made over its memory."""
import mmap
import os
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest

from conftest import SYS_RECVMSG, syscall, wait_for
from daxfuse import client
from daxfuse.testing import DAXFUSE, DaxMount

pytestmark = [pytest.mark.mounted, pytest.mark.timeout(120)]

C_DIR = os.path.join(os.path.dirname(__file__), "c")
WATCH = 0.2  # how long a frozen counter is watched for a store that lands late
MARKER = b"stored before the disable"


def build(tmp_path_factory, *flags: str) -> str:
    exe = tmp_path_factory.mktemp("c") / "revoke"
    subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-pthread", *flags, "-o", str(exe),
                    os.path.join(C_DIR, "revoke.c")], check=True)
    return str(exe)


@pytest.fixture(scope="module")
def revoke(tmp_path_factory):
    return build(tmp_path_factory)


@pytest.fixture(scope="module")
def revoke_static(tmp_path_factory):
    """The same mapper linked statically: no preload reaches it."""
    return build(tmp_path_factory, "-static")


def device_words(path: str, offsets) -> list[int]:
    """Words of a device, read through FUSE (O_DIRECT: from the daemon, now)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        with mmap.mmap(-1, max(offsets) + 4096) as page:  # aligned, as O_DIRECT wants
            os.preadv(fd, [page], 0)
            return [struct.unpack_from("<Q", page, off)[0] for off in offsets]
    finally:
        os.close(fd)


def memory_words(memory, offsets) -> list[int]:
    """Words of the memory file itself (where a disabled device's data is)."""
    with open(memory, "rb") as f:
        return [struct.unpack("<Q", os.pread(f.fileno(), 8, off))[0] for off in offsets]


class Mapper:
    """tests/c/revoke.c in mode, inside exec: the pids it counts in."""

    def __init__(self, d, revoke: str, mode: str, stdin=None) -> None:
        self.proc = subprocess.Popen([*DAXFUSE, "exec", "-m", d.mountpoint, "--", revoke, "/dev/dax0.0", mode],
                                     stdin=stdin, stdout=subprocess.PIPE, text=True)
        self.pids, self.lines = [], []

    def ready(self, word: str = "ready") -> None:
        for line in self.proc.stdout:
            self.lines.append(line.strip())
            if line.startswith("pid "):
                self.pids.append(int(line.split()[1]))
            elif line.strip() == word:
                return
        pytest.fail(f"the mapper ended before {word!r} ({self.proc.wait()})")

    def say(self, line: str) -> str:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def close(self) -> None:
        for pid in self.pids + [self.proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(10)


def gone(pid: int) -> bool:
    return (client.proc_stat(pid) or ["X"])[0] in "ZX"


@pytest.fixture
def mount(daxfuse_factory, tmp_path):
    """A 64 MiB mount on a memory file of the test's: (mount, memory file)."""
    memory = str(tmp_path / "memory")
    return daxfuse_factory("--size", "64M", "--memory-file", memory), memory


MODES = {  # mode: (offsets it counts at, what ends its processes)
    "spin": ([0], -signal.SIGBUS),
    "threads": ([4096, 8192, 12288], -signal.SIGBUS),
    "fork": ([0, 4096], -signal.SIGBUS),
    "rawfork": ([0, 4096], -signal.SIGBUS),
    "_Fork": ([0, 4096], -signal.SIGBUS),
    "clone": ([0, 4096], -signal.SIGBUS),
    "vfork": ([4096], -signal.SIGBUS),
    "sigign": ([0], -signal.SIGBUS),
    "handler": ([0], 42),
    "sigset": ([0], 42),
    "closerange": ([0], -signal.SIGBUS),
}


@pytest.mark.parametrize("stopped", [False, True], ids=["running", "stopped"])
@pytest.mark.parametrize("mode", list(MODES))
def test_after_a_disable_no_store_lands_anywhere(mount, revoke, mode, stopped):
    """Whatever the mapper does (children made by any clone, its own SIGBUS
    action, its fds closed), once disable returns its stores reach neither
    the device nor the device made next over the same memory, and its next
    access faults: revocation is a truncate the kernel carries out."""
    d, memory = mount
    offsets, death = MODES[mode]
    mapper = Mapper(d, revoke, mode)
    try:
        mapper.ready()
        device = d.path("dax", "dax0.0")
        before = device_words(device, offsets)
        wait_for(lambda: all(b > a for a, b in zip(before, device_words(device, offsets))), "stores do not land")
        if stopped:
            for pid in mapper.pids:
                os.kill(pid, signal.SIGSTOP)
        assert d.control("disable-device dax0.0") == "ok dax0.0"
        frozen = memory_words(memory, offsets)
        for pid in mapper.pids if stopped else []:
            os.kill(pid, signal.SIGCONT)
        time.sleep(WATCH)
        assert memory_words(memory, offsets) == frozen, "a store landed after the disable returned"
        assert mapper.proc.wait(30) == death
        wait_for(lambda: all(gone(pid) for pid in mapper.pids), "a mapper outlived its mapping")
        # the next device over the same memory: the old mapping reaches it not
        assert d.control("destroy-device dax0.0") == "ok dax0.0"
        new = d.path("dax", d.control("create-device region=0").split()[1])
        time.sleep(WATCH)
        assert device_words(new, offsets) == frozen
        assert os.pread(os.open(new, os.O_RDONLY), len(MARKER), 1 << 20) == MARKER
    finally:
        mapper.close()


def test_a_static_binary_is_revoked_too(mount, revoke_static):
    """A static binary gets no personality: it maps the FUSE file, which a
    disable revokes as well (its reads fail, so its pages fault)."""
    d, memory = mount
    mapper = Mapper(d, revoke_static, "spin")
    try:
        mapper.ready()
        device = d.path("dax", "dax0.0")
        before = device_words(device, [0])
        assert d.control("disable-device dax0.0") == "ok dax0.0"
        assert mapper.proc.wait(30) == -signal.SIGBUS
        frozen = memory_words(memory, [0])
        assert frozen >= before
        time.sleep(WATCH)
        assert memory_words(memory, [0]) == frozen
    finally:
        mapper.close()


def test_a_sleeper_with_every_signal_blocked_is_left_alone(mount, revoke):
    """No process is killed for not answering: nothing is asked of it."""
    d, _ = mount
    mapper = Mapper(d, revoke, "ppoll")
    try:
        mapper.ready()
        assert d.control("disable-device dax0.0") == "ok dax0.0"
        assert mapper.proc.wait(30) == 0
    finally:
        mapper.close()


def test_the_library_leaves_no_fd_behind(mount, revoke):
    """Between calls the library holds no fd: a program that counts its fds
    (PMDK's test framework) finds none but the device's."""
    d, _ = mount
    mapper = Mapper(d, revoke, "noticefd")
    try:
        mapper.ready()
        assert "fds reaching memory: 0" in mapper.lines
    finally:
        mapper.close()


def test_valgrind_finds_nothing_of_the_librarys(mount, revoke):
    """Every byte the library sends is its own (PMDK runs its tests under
    memcheck): a mapper under valgrind maps directly, and memcheck is quiet."""
    d, _ = mount
    r = subprocess.run([*DAXFUSE, "exec", "-m", d.mountpoint, "--", "valgrind", "-q", "--error-exitcode=9",
                        revoke, "/dev/dax0.0", "once"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "==" not in r.stderr, r.stderr


def test_a_mapping_made_before_a_disable_works_again_after_the_enable(mount, revoke):
    """As the kernel's device-dax faults a mapping in again once the device
    is bound: an idle mapper (a VM with an idle guest) carries on, data
    intact; a mapper that touched it meanwhile got SIGBUS, then carries on."""
    d, _ = mount
    mapper = Mapper(d, revoke, "revive", stdin=subprocess.PIPE)
    try:
        mapper.ready()
        assert mapper.say("touch") == "read " + MARKER.decode()
        d.control("disable-device dax0.0")
        d.control("enable-device dax0.0")
        assert mapper.say("touch") == "read " + MARKER.decode(), "idle across disable and enable"
        d.control("disable-device dax0.0")
        assert mapper.say("touch") == "sigbus 2", "a fault on a disabled device is SIGBUS (BUS_ADRERR)"
        d.control("enable-device dax0.0")
        assert mapper.say("touch") == "read " + MARKER.decode()
        assert os.pread(os.open(d.path("dax", "dax0.0"), os.O_RDONLY), 12, 8) == b"stored after"
    finally:
        mapper.close()


def test_a_mapper_that_blocks_sigbus_is_revived_not_killed(mount, revoke):
    """QEMU blocks SIGBUS in every thread (it reads it from a signalfd); a
    fault the kernel finds blocked kills without a handler. The library
    keeps it unblocked for real and blocked in what the program sees, so an
    idle VM carries on across a disable and an enable."""
    d, _ = mount
    mapper = Mapper(d, revoke, "blocked", stdin=subprocess.PIPE)
    try:
        mapper.ready("ready blocked=1")  # the program sees the mask it asked for
        assert mapper.say("touch") == "read " + MARKER.decode()
        d.control("disable-device dax0.0")
        d.control("enable-device dax0.0")
        assert mapper.say("touch") == "read " + MARKER.decode(), "alive, mapped again"
    finally:
        mapper.close()


def test_a_fresh_open_reads_what_a_direct_mapping_stored_behind_the_page_cache(mount):
    """A buffered read cached a page; stores through a direct mapping do not
    pass the page cache: the next open of the device reads them."""
    d, _ = mount
    device = d.path("dax", "dax0.0")
    fd = os.open(device, os.O_RDONLY)
    assert os.pread(fd, 8, 1 << 20) != b"AAAAAAAA"  # now in the page cache
    os.close(fd)
    storer = subprocess.Popen([*DAXFUSE, "exec", "-m", d.mountpoint, "--", sys.executable, "-c",
                               "import mmap, os, sys\nm = mmap.mmap(os.open('/dev/dax0.0', os.O_RDWR), 2 << 20)\n"
                               "m[1 << 20:(1 << 20) + 8] = b'AAAAAAAA'\nprint('stored', flush=True)\n"
                               "sys.stdin.readline()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert storer.stdout.readline() == "stored\n"
        fd = os.open(device, os.O_RDONLY)
        assert os.pread(fd, 8, 1 << 20) == b"AAAAAAAA"
        os.close(fd)
    finally:
        storer.communicate("\n", timeout=30)


def unix_receive_queues(pid: int) -> list[int]:
    """How many messages wait in each Unix socket pid holds (sock_diag with
    UDIAG_SHOW_RQLEN: what `ss -x` reads)."""
    queues = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if not link.startswith("socket:["):
            continue
        req = struct.pack("=BBHIIIII", socket.AF_UNIX, 0, 0, 0xFFFFFFFF, int(link[8:-1]),
                          0x10, 0xFFFFFFFF, 0xFFFFFFFF)  # UDIAG_SHOW_RQLEN; no cookie
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 4) as nl:  # NETLINK_SOCK_DIAG
            nl.send(struct.pack("=IHHII", 16 + len(req), 20, 1, 1, 0) + req)  # SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST
            reply = nl.recv(65536)
        length, kind = struct.unpack_from("=IH", reply)
        at = 16 + 16  # nlmsghdr, unix_diag_msg
        while kind == 20 and at + 4 <= length:
            attr_len, attr_type = struct.unpack_from("=HH", reply, at)
            if attr_type == 4:  # UNIX_DIAG_RQLEN
                queues.append(struct.unpack_from("=I", reply, at + 4)[0])
            at += (attr_len + 3) & ~3
    return queues


def test_a_grant_in_flight_during_a_revocation_is_dead_on_arrival(mount, revoke):
    """Lost on purpose: the daemon granted the window, and the disable
    truncates it before the client has mapped it. The mapping made from it
    is dead at birth, and the device is disabled: the store is SIGBUS."""
    d, memory = mount
    mapper = Mapper(d, revoke, "late", stdin=subprocess.PIPE)
    try:
        mapper.ready("first")
        d.proc.send_signal(signal.SIGSTOP)  # the daemon answers nothing for now
        try:
            mapper.proc.stdin.write("go\n")
            mapper.proc.stdin.flush()
            wait_for(lambda: syscall(mapper.proc.pid)[0] == str(SYS_RECVMSG), "the client to ask for its grant")
            os.kill(mapper.proc.pid, signal.SIGSTOP)
        finally:
            d.proc.send_signal(signal.SIGCONT)
        wait_for(lambda: any(unix_receive_queues(mapper.proc.pid)), "the grant in the stopped client's socket")
        assert d.control("disable-device dax0.0") == "ok dax0.0"
        os.kill(mapper.proc.pid, signal.SIGCONT)
        assert mapper.proc.wait(30) == -signal.SIGBUS
        assert memory_words(memory, [(2 << 20) + 4096]) == [0], "a store through the late mapping landed"
    finally:
        mapper.close()


def test_a_flock_goes_with_the_last_close(mount):
    """The daemon holds no fd of the device a grant was asked for, so a
    lock is gone when the program closes its own (PMDK locks the device,
    maps it, and the next tool locks it again)."""
    d, _ = mount
    program = ("import fcntl, mmap, os\n"
               "for _ in range(50):\n"
               "    fd = os.open('/dev/dax0.0', os.O_RDWR)\n"
               "    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
               "    m = mmap.mmap(fd, 2 << 20)\n"
               "    m[0] = 1\n"
               "    m.close()\n"
               "    os.close(fd)\n"
               "print('locked 50 times')\n")
    r = subprocess.run([*DAXFUSE, "exec", "-m", d.mountpoint, "--", sys.executable, "-c", program],
                       capture_output=True, text=True, timeout=60)
    assert r.stdout == "locked 50 times\n", r.stderr


def test_the_mm_calls_answer_as_on_device_dax(mount):
    """MADV_REMOVE would punch a hole (ENODEV, as for any character device),
    MADV_DONTNEED only drops page-table entries (the data stays), and an
    O_PATH fd maps nothing (EBADF)."""
    d, _ = mount
    program = """
import ctypes, errno, mmap, os
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open("/dev/dax0.0", os.O_RDWR)
m = mmap.mmap(fd, 2 << 20)
m[:4] = b"kept"
m.madvise(mmap.MADV_DONTNEED)
print(m[:4])
try:
    m.madvise(mmap.MADV_REMOVE)
except OSError as e:
    print(errno.errorcode[e.errno])
path = os.open("/dev/dax0.0", os.O_PATH)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
print(libc.mmap(None, 2 << 20, 3, 1, path, 0) == 2 ** 64 - 1, errno.errorcode[ctypes.get_errno()])
print(m[:4])
"""
    r = subprocess.run([*DAXFUSE, "exec", "-m", d.mountpoint, "--", sys.executable, "-c", program],
                       capture_output=True, text=True, timeout=60)
    assert r.stdout.split() == ["b'kept'", "ENODEV", "True", "EBADF", "b'kept'"], r.stderr


def test_a_daemon_killed_with_a_window_open_loses_nothing(daxfuse_factory, tmp_path, revoke):
    """With a memory file of the user's, a window is a file beside it that
    the layout record names: a SIGKILLed daemon leaves it, the mapper still
    storing into it; the next mount moves it back, which takes it from the
    mapper (SIGBUS), and the device holds every store it made."""
    memory = str(tmp_path / "memory")
    (tmp_path / "killed").mkdir()
    d = DaxMount(str(tmp_path / "killed"), "--size", "64M", "--memory-file", memory)
    mapper = Mapper(d, revoke, "spin")
    try:
        mapper.ready()
        assert os.path.exists(memory + ".window.dax0.0")
        d.proc.kill()
        d.proc.wait()
        wait_for(lambda: not d.mounted(), "the mount outlived its daemon")
        again = daxfuse_factory("--memory-file", memory, name="again")
        assert mapper.proc.wait(30) == -signal.SIGBUS, "the old window is gone from under the mapper"
        assert not os.path.exists(memory + ".window.dax0.0")
        frozen = device_words(again.path("dax", "dax0.0"), [0])
        assert frozen[0] > 0 and memory_words(memory, [0]) == frozen
        assert os.pread(os.open(again.path("dax", "dax0.0"), os.O_RDONLY), len(MARKER), 1 << 20) == MARKER
    finally:
        mapper.close()
        d.kill()
