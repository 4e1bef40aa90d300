"""Direct mappings: under the personality a device's memory itself is
mapped, and a disable still revokes it everywhere: running, stopped,
threaded and forked mappers, none of which calls libc."""
import os
import signal
import struct
import subprocess
import time

import pytest

from conftest import DAXFUSE

pytestmark = [pytest.mark.mounted, pytest.mark.timeout(120)]

C_DIR = os.path.join(os.path.dirname(__file__), "c")


@pytest.fixture(scope="module")
def revoke(tmp_path_factory):
    exe = tmp_path_factory.mktemp("c") / "revoke"
    subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-pthread", "-o", str(exe), os.path.join(C_DIR, "revoke.c")],
                   check=True)
    return str(exe)


def counters(memory, offsets):
    with open(memory, "rb") as f:
        return [struct.unpack("<Q", os.pread(f.fileno(), 8, off))[0] for off in offsets]


def descendants(pid):
    """pid and every process below it."""
    out = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True).stdout
    kids = {}
    for line in out.splitlines():
        p, pp = map(int, line.split())
        kids.setdefault(pp, []).append(p)
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += kids.get(p, [])
    return found


def mapping(daxfuse_factory, tmp_path, revoke, mode):
    """A mount on a memory file of the test's, and the revoke program in
    mode mapping its dax0.0 inside exec: (memory file, mount, process)."""
    memory = tmp_path / "memory"
    d = daxfuse_factory("--size", "64M", "--memory-file", str(memory))
    return memory, d, subprocess.Popen([*DAXFUSE, "exec", "-m", d.mountpoint, "--", revoke, "/dev/dax0.0", mode],
                                       stdout=subprocess.PIPE, text=True)


@pytest.mark.parametrize("mode,offsets,stop", [
    ("spin", [0], False),
    ("spin", [0], True),
    ("threads", [4096, 8192, 12288], False),
    ("fork", [0, 4096], False),
], ids=["running", "stopped", "threads", "forked-child"])
def test_a_disable_revokes_direct_mappings_everywhere(daxfuse_factory, tmp_path, revoke, mode, offsets, stop):
    memory, d, proc = mapping(daxfuse_factory, tmp_path, revoke, mode)
    try:
        assert proc.stdout.readline() == "ready\n"
        mappers = descendants(proc.pid)[-(2 if mode == "fork" else 1):]
        running = counters(memory, offsets)
        deadline = time.monotonic() + 10
        while not all(b > a for a, b in zip(running, counters(memory, offsets))):
            assert time.monotonic() < deadline, "stores do not reach memory"
            time.sleep(0.01)
        if stop:
            for pid in mappers:
                os.kill(pid, signal.SIGSTOP)
        start = time.monotonic()
        assert d.control("disable-device dax0.0") == "ok dax0.0"
        print(f"disable took {(time.monotonic() - start) * 1000:.1f} ms")
        frozen = counters(memory, offsets)
        if stop:
            for pid in mappers:
                os.kill(pid, signal.SIGCONT)
        time.sleep(0.2)
        assert counters(memory, offsets) == frozen, "a store landed after the disable returned"
        assert proc.wait(30) == -signal.SIGBUS or proc.returncode == 128 + signal.SIGBUS
        for pid in mappers:
            assert not os.path.exists(f"/proc/{pid}/stat") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
        d.control("enable-device dax0.0")
        fd = os.open(d.path("dax", "dax0.0"), os.O_RDONLY)
        assert os.pread(fd, 25, 1 << 20) == b"stored before the disable"
        os.close(fd)
    finally:
        for pid in descendants(proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(10)


@pytest.mark.parametrize("mode, death", [("masked", signal.SIGBUS), ("blocked", signal.SIGKILL)],
                         ids=["through libc", "behind the library"])
def test_a_mapper_that_blocks_the_revocation_signal_is_stopped_all_the_same(daxfuse_factory, tmp_path, revoke,
                                                                             mode, death):
    """Through libc, the library keeps the revocation signal out of
    sigprocmask's sets: revoked as any mapper (SIGBUS). A raw rt_sigprocmask
    keeps the handler away while the thread runs: the daemon kills the
    process, the one way left to stop its loads. Either way no store lands
    after the disable."""
    memory, d, proc = mapping(daxfuse_factory, tmp_path, revoke, mode)
    try:
        assert proc.stdout.readline() == "ready\n"
        d.control("disable-device dax0.0")
        frozen = counters(memory, [0])
        assert proc.wait(30) == -death
        assert counters(memory, [0]) == frozen
    finally:
        proc.kill()
        proc.wait(10)


def syscall_nr(pid):
    with open(f"/proc/{pid}/syscall") as f:
        return f.read().split()[0]


def test_a_grant_in_flight_during_a_revocation_is_dead_on_arrival(daxfuse_factory, tmp_path, revoke):
    """Lost on purpose: the client asked for a mapping and the daemon granted
    it, but the disable revokes before the client has mapped it. The
    library re-reads the generation once mapped: the mapping is dead at birth."""
    memory = tmp_path / "memory"
    d = daxfuse_factory("--size", "64M", "--memory-file", str(memory))
    proc = subprocess.Popen([*DAXFUSE, "exec", "-m", d.mountpoint, "--", revoke, "/dev/dax0.0", "late"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "first\n"
        d.proc.send_signal(signal.SIGSTOP)  # the daemon answers nothing for now
        try:
            proc.stdin.write("go\n")
            proc.stdin.flush()
            deadline = time.monotonic() + 10
            while syscall_nr(proc.pid) != "47":  # recvmsg: waiting for the grant
                assert time.monotonic() < deadline, "the client never asked for its grant"
                time.sleep(0.001)
            os.kill(proc.pid, signal.SIGSTOP)
        finally:
            d.proc.send_signal(signal.SIGCONT)
        time.sleep(0.2)  # the grant is sent, not yet taken
        assert d.control("disable-device dax0.0") == "ok dax0.0"
        os.kill(proc.pid, signal.SIGCONT)
        assert proc.wait(30) == -signal.SIGBUS
        assert counters(memory, [(2 << 20) + 4096]) == [0], "a store through the late mapping landed"
    finally:
        proc.kill()
        proc.wait(10)
