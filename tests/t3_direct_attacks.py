"""The direct-mapping socket, attacked as a hostile program of the daemon's
own user would (another user cannot reach it: t2_access.py): forged
messages of every kind, idle connections by the thousand, fds of a
filesystem that never answers, minors to pin. None does harm: the daemon
serves on, the devices change as asked, nobody is signalled."""
import array
import errno
import os
import random
import resource
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest

from daxfuse.views import wire
from daxfuse.testing import DAXFUSE

pytestmark = [pytest.mark.mounted, pytest.mark.timeout(120)]


def connect(d) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(os.readlink(d.path(".direct")))
    return s


def ask(d, payload: bytes) -> tuple[bytes, list[int]]:
    """What the daemon answers to payload (b"" when it closed without a word)."""
    with connect(d) as s:
        s.settimeout(10)
        s.sendall(payload)
        reply, fds, _, _ = socket.recv_fds(s, 1 << 16, 2)
        return reply, fds


def request(op=wire.OP_MAP, fd=0, minor=0, serial=0, write=0, token=bytes(32), magic=wire.MAGIC) -> bytes:
    return wire.REQUEST.pack(magic, op, fd, minor, serial, write, 0, token)


def status(reply: bytes) -> int:
    return wire.Reply(*wire.REPLY.unpack(reply[:wire.REPLY.size])).status


def maps_directly(d) -> bool:
    """A program inside exec maps dax0.0 from its window (not the FUSE file)."""
    program = ("import mmap, os\n"
               "m = mmap.mmap(os.open('/dev/dax0.0', os.O_RDWR), 2 << 20)\n"
               "m[:4] = b'live'\n"
               "print(any(line.rstrip().endswith('/dax0.0') for line in open('/proc/self/maps')))\n")
    r = subprocess.run([*DAXFUSE, "exec", "-m", d.mountpoint, "--", sys.executable, "-c", program],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip() == "False"  # a mapping of the FUSE file would show its name


def serves(d) -> None:
    """The daemon is whole: changes apply, and mappings are still direct."""
    assert d.proc.poll() is None
    assert d.control("disable-device dax0.0\nenable-device dax0.0") == "ok dax0.0 dax0.0"
    assert maps_directly(d)


def test_the_old_protocols_forged_pid_and_signal_signal_nobody(dax):
    """"hello PID SIG" once made the daemon signal PID at the next disable.
    Now a message is only a request of the wire format: this one closes its
    connection, and the victim lives through a disable and a shutdown."""
    victim = subprocess.Popen(["sleep", "60"])
    try:
        for forged in (f"hello {victim.pid} 9", f"hello {dax.proc.pid} 9", f"hello {victim.pid} 0",
                       "inherit 0 1", "ack 1", "unmap 0 0"):
            assert ask(dax, forged.encode()) == (b"", [])
        serves(dax)
        assert victim.poll() is None, "a forged pid was signalled"
    finally:
        victim.kill()
        victim.wait()


def test_malformed_requests_close_their_connection_and_change_nothing(dax):
    with open(os.devnull) as other, open(dax.path("dax", "dax0.0"), "rb") as device:
        r, w = os.pipe()
        cases = {
            "empty": b"", "a byte": b"x", "short": request()[:-1], "long": request() + b"x",
            "foreign magic": request(magic=wire.MAGIC ^ 1), "no operation": request(op=0),
            "an unknown operation": request(op=99), "random": bytes(random.randbytes(wire.REQUEST.size)),
            "a revival with a forged token": request(op=wire.OP_REVIVE, token=os.urandom(32)),
        }
        for what, payload in cases.items():
            reply, fds = ask(dax, payload)
            assert reply == b"" and fds == [], what
        answered = {
            "no such fd": (request(fd=99999), errno.EBADF),
            "a negative fd": (request(fd=-1), errno.EBADF),
            "a pipe": (request(fd=r), errno.ENODEV),
            "another filesystem's file": (request(fd=other.fileno()), errno.ENODEV),
            "a writable mapping of a read-only open": (request(fd=device.fileno(), write=1), errno.EACCES),
        }
        for what, (payload, expected) in answered.items():
            reply, fds = ask(dax, payload)
            assert status(reply) == expected and fds == [], what
        os.close(r), os.close(w)
    serves(dax)
    warnings = [line for line in dax.log().splitlines() if "direct:" in line]
    assert len(warnings) <= 2 * 10, "a flood of bad requests floods the log"


def test_thousands_of_idle_connections_are_dropped_and_the_daemon_serves_on(dax):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    held = []
    try:
        for _ in range(2000):
            try:
                held.append(connect(dax))
            except OSError as e:  # the backlog full: the daemon drops them as fast as they come
                assert e.errno in (errno.EAGAIN, errno.ECONNREFUSED), e
        for s in held:
            s.settimeout(10)
        closed = sum(s.recv(1) == b"" for s in held[64:])
        assert closed == len(held) - 64, "connections past the bounds are closed at once"
        assert dax.control("disable-device dax0.0\nenable-device dax0.0") == "ok dax0.0 dax0.0"
    finally:
        for s in held:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    serves(dax)


def test_no_fd_reaches_the_daemon_not_even_of_a_filesystem_that_never_answers(dax, daxfuse_factory):
    """Closing an fd of a FUSE filesystem waits for its daemon: one that never
    answers held every control change hostage. The socket refuses fds."""
    hung = daxfuse_factory("--size", "16M", name="hung")
    with open(hung.path("dax", "dax0.0"), "rb") as f:
        hung.proc.send_signal(signal.SIGSTOP)
        try:
            with connect(dax) as s:
                with pytest.raises(PermissionError):
                    s.sendmsg([request(fd=f.fileno())], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                                          array.array("i", [f.fileno()]))])
            start = time.monotonic()
            assert dax.control("disable-device dax0.0\nenable-device dax0.0") == "ok dax0.0 dax0.0"
            assert time.monotonic() - start < 5
        finally:
            hung.proc.send_signal(signal.SIGCONT)
    serves(dax)


def test_grants_and_revivals_pin_no_minor(daxfuse_factory):
    """A grant holds no reference to the device: a client asking again and
    again leaves every minor for create-device."""
    d = daxfuse_factory("--size", "64M", "--nr-dax", "3")
    d.control("disable-device dax0.0\nresize-device dax0.0 size=16M\nenable-device dax0.0")
    program = ("import mmap, os\n"
               "fd = os.open('/dev/dax0.0', os.O_RDWR)\n"
               "for _ in range(200):\n"
               "    m = mmap.mmap(fd, 2 << 20)\n"
               "    m[0] = 1\n"
               "    m.close()\n")
    subprocess.run([*DAXFUSE, "exec", "-m", d.mountpoint, "--", sys.executable, "-c", program], check=True, timeout=60)
    for _ in range(100):
        ask(d, request(op=wire.OP_REVIVE, minor=random.randrange(3), serial=random.randrange(10),
                       token=os.urandom(32)))
    assert d.control("create-device region=0 size=16M\ncreate-device region=0 size=16M").startswith("ok")


def test_a_window_reaches_its_device_alone_and_no_further(daxfuse_factory):
    """A grant hands a file holding the device's memory and nothing else:
    not the other devices, mode 0000 ones included."""
    d = daxfuse_factory("--size", "64M", "--no-default-device")
    d.control("create-device region=0 size=32M\ncreate-device region=0 size=32M mode=0000")
    with open(d.path("dax", "dax0.1"), "r+b") as f:
        os.pwrite(f.fileno(), b"the other device", 0)
    with open(d.path("dax", "dax0.0"), "rb") as device:
        reply, fds = ask(d, request(fd=device.fileno()))
    assert status(reply) == 0 and len(fds) == 2
    window, table = fds
    try:
        assert os.fstat(window).st_size == 32 << 20
        assert os.pread(window, 16, 32 << 20) == b"", "nothing past the device"
        with pytest.raises(OSError) as e:
            os.pwrite(window, b"x", 0)
        assert e.value.errno == errno.EBADF, "opened for reading, as asked"
        writable = os.open(f"/proc/self/fd/{table}", os.O_RDWR)
        try:  # sealed: nobody writes the table but the daemon, whatever they open it as
            with pytest.raises(PermissionError):
                os.pwrite(writable, struct.pack("<Q", 0), 0)
        finally:
            os.close(writable)
    finally:
        os.close(window)
        os.close(table)
