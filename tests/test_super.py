"""DaxCore: minors, references, liveness under SRCU, lookups."""
import errno

import pytest
import trio
import trio.testing
from hypothesis import settings, strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition,
                                 rule)

from daxfuse.core import DaxCore, DaxError
from daxfuse.core.super import DAX_INO_BASE

pytestmark = pytest.mark.timeout(60)


def dead_put(core, dev):
    """Drop a reference that may be the last one (kill first if needed)."""
    if dev.refs == 1 and dev.alive:
        trio.run(core.kill_dax, dev)
    core.put_dax(dev)


# --- construction and allocation ---------------------------------------------------


@pytest.mark.parametrize("nr", [0, -1])
def test_nr_dax_must_be_positive(nr):
    with pytest.raises(DaxError) as ei:
        DaxCore(nr)
    assert ei.value.errno == errno.EINVAL


def test_alloc_gives_lowest_free_minor_and_inode():
    core = DaxCore(8)
    devs = [core.alloc_dax(f"p{i}") for i in range(4)]
    assert [d.minor for d in devs] == [0, 1, 2, 3]
    assert [d.ino for d in devs] == [DAX_INO_BASE + i for i in range(4)]
    assert [d.private for d in devs] == ["p0", "p1", "p2", "p3"]
    assert all(d.alive and d.refs == 1 for d in devs)
    assert len(core) == 4

    for d in (devs[2], devs[0]):
        trio.run(core.kill_dax, d)
        core.put_dax(d)
    assert len(core) == 2
    assert core.alloc_dax("x").minor == 0
    assert core.alloc_dax("y").minor == 2
    assert core.alloc_dax("z").minor == 4


def test_alloc_exhaustion_is_enospc_and_recovers():
    core = DaxCore(3)
    devs = [core.alloc_dax(None) for _ in range(3)]
    with pytest.raises(DaxError) as ei:
        core.alloc_dax(None)
    assert ei.value.errno == errno.ENOSPC
    assert len(core) == 3, "a failed alloc takes nothing"
    dead_put(core, devs[1])
    assert core.alloc_dax(None).minor == 1
    with pytest.raises(DaxError) as ei:
        core.alloc_dax(None)
    assert ei.value.errno == errno.ENOSPC


def test_failed_alloc_with_host_does_not_register_host():
    core = DaxCore(1)
    core.alloc_dax(None)
    with pytest.raises(DaxError):
        core.alloc_dax(None, host="h")
    assert core.dax_get_by_host("h") is None


# --- references -------------------------------------------------------------------------


def test_put_releases_minor_only_at_last_reference():
    core = DaxCore(4)
    dev = core.alloc_dax("p")
    assert core.get_dax(dev) is dev
    core.get_dax(dev)
    assert dev.refs == 3
    trio.run(core.kill_dax, dev)

    core.put_dax(dev)
    core.put_dax(dev)
    assert core.by_minor(0) is dev and core.by_inode(DAX_INO_BASE) is dev
    assert core.alloc_dax("other").minor == 1, "minor 0 still referenced"

    core.put_dax(dev)
    assert dev.refs == 0
    assert core.by_minor(0) is None and core.by_inode(DAX_INO_BASE) is None
    again = core.alloc_dax("again")
    assert again.minor == 0 and again.ino == DAX_INO_BASE


def test_final_put_of_live_device_asserts():
    core = DaxCore()
    dev = core.alloc_dax(None)
    with pytest.raises(AssertionError):
        core.put_dax(dev)


def test_get_or_put_after_release_asserts():
    core = DaxCore()
    dev = core.alloc_dax(None)
    dead_put(core, dev)
    with pytest.raises(AssertionError):
        core.get_dax(dev)
    with pytest.raises(AssertionError):
        core.put_dax(dev)


# --- liveness -------------------------------------------------------------------------------


def test_dax_alive_requires_read_lock():
    core = DaxCore()
    dev = core.alloc_dax(None)
    with pytest.raises(AssertionError):
        core.dax_alive(dev)
    with core.read_locked():
        assert core.dax_alive(dev) is True
    with pytest.raises(AssertionError):
        core.dax_alive(dev)
    idx = core.read_lock()
    assert core.dax_alive(dev)
    core.read_unlock(idx)
    with pytest.raises(AssertionError):
        core.dax_alive(dev)


def test_read_locked_releases_on_exception():
    core = DaxCore()
    dev = core.alloc_dax(None)
    with pytest.raises(RuntimeError):
        with core.read_locked():
            raise RuntimeError
    with pytest.raises(AssertionError):
        core.dax_alive(dev)

    async def main():
        with trio.fail_after(10):
            await core.kill_dax(dev)  # nothing left to wait for

    trio.run(main)


def test_kill_dax_waits_for_reader_that_saw_alive():
    core = DaxCore()
    dev = core.alloc_dax("private")
    log = []

    async def main():
        holding = trio.Event()
        release = trio.Event()

        async def reader():
            with core.read_locked():
                assert core.dax_alive(dev)
                holding.set()
                await release.wait()
                # still usable: kill_dax has not finished
                log.append(("reader done", dev.private))

        async def killer():
            await core.kill_dax(dev)
            log.append(("killed", dev.private))

        async def late_reader():
            with core.read_locked():
                log.append(("late sees alive", core.dax_alive(dev)))

        async with trio.open_nursery() as n:
            n.start_soon(reader)
            await holding.wait()
            n.start_soon(killer)
            await trio.testing.wait_all_tasks_blocked()
            await trio.sleep(0.1)
            assert [e for e in log if e[0] == "killed"] == []
            await late_reader()
            release.set()

    trio.run(main)
    assert log == [("late sees alive", False), ("reader done", "private"), ("killed", None)]
    assert dev.alive is False and dev.private is None


def test_kill_dax_waits_for_thread_reader():
    core = DaxCore()
    dev = core.alloc_dax("private")
    log = []

    async def main():
        token = trio.lowlevel.current_trio_token()
        holding = trio.Event()
        release = trio.Event()

        def reader():
            with core.read_locked():
                assert core.dax_alive(dev)
                trio.from_thread.run_sync(holding.set, trio_token=token)
                trio.from_thread.run(release.wait, trio_token=token)
                log.append("reader done")

        async def killer():
            await core.kill_dax(dev)
            log.append("killed")

        async with trio.open_nursery() as n:
            n.start_soon(trio.to_thread.run_sync, reader)
            await holding.wait()
            n.start_soon(killer)
            await trio.sleep(0.1)
            assert log == []
            release.set()

    trio.run(main)
    assert log == ["reader done", "killed"]


def test_run_dax_revives():
    core = DaxCore()
    dev = core.alloc_dax("one")
    trio.run(core.kill_dax, dev)
    with core.read_locked():
        assert not core.dax_alive(dev)
    core.run_dax(dev, "two")
    with core.read_locked():
        assert core.dax_alive(dev)
    assert dev.private == "two"
    assert core.by_minor(dev.minor) is dev, "kill/run keep the minor"


# --- lookups ------------------------------------------------------------------------------------


def test_by_minor_and_by_inode():
    core = DaxCore()
    a, b = core.alloc_dax("a"), core.alloc_dax("b")
    assert core.by_minor(0) is a and core.by_minor(1) is b
    assert core.by_inode(DAX_INO_BASE) is a and core.by_inode(DAX_INO_BASE + 1) is b
    assert core.by_minor(2) is None
    assert core.by_inode(DAX_INO_BASE + 2) is None
    assert core.by_inode(1) is None, "inode numbers below the base are not dax devices"
    assert core.by_inode(DAX_INO_BASE - 1) is None


def test_dax_get_by_host():
    core = DaxCore()
    dev = core.alloc_dax("p", host="pmem0")
    got = core.dax_get_by_host("pmem0")
    assert got is dev and dev.refs == 2, "a referenced device"
    assert core.dax_get_by_host("pmem1") is None
    assert dev.refs == 2
    assert not core.srcu.held(), "the read lock is dropped on every path"

    trio.run(core.kill_dax, dev)
    assert core.dax_get_by_host("pmem0") is None, "dead devices are not handed out"
    assert dev.refs == 2, "no reference taken on a dead device"
    assert not core.srcu.held()

    core.put_dax(dev)
    core.put_dax(dev)
    assert core.dax_get_by_host("pmem0") is None
    # the host name is free again once the last reference is gone
    new = core.alloc_dax("q", host="pmem0")
    assert core.dax_get_by_host("pmem0") is new


def test_duplicate_host_is_eexist():
    core = DaxCore()
    dev = core.alloc_dax(None, host="h")
    with pytest.raises(DaxError) as ei:
        core.alloc_dax(None, host="h")
    assert ei.value.errno == errno.EEXIST
    assert len(core) == 1
    assert core.alloc_dax(None).minor == 1, "EEXIST consumed no minor"
    # still registered while referenced, even when dead
    trio.run(core.kill_dax, dev)
    with pytest.raises(DaxError) as ei:
        core.alloc_dax(None, host="h")
    assert ei.value.errno == errno.EEXIST
    # hostless devices never collide
    core.alloc_dax(None)
    core.alloc_dax(None)


def test_dax_error_formatting():
    e = DaxError(errno.ENOSPC, "full")
    assert str(e) == "ENOSPC: full"
    assert e.errno == errno.ENOSPC and e.message == "full"
    assert e.strerror == "No space left on device"


# --- stateful: minors are never reused while referenced, always lowest free -----------------------


NR = 6


class CoreMachine(RuleBasedStateMachine):
    @initialize()
    def init(self):
        self.core = DaxCore(NR)
        self.devs = []  # devices with refs > 0, as the model knows them
        self.refs = {}  # id(dev) -> expected refs
        self.released = []

    def _live(self):
        return [d for d in self.devs if self.refs[id(d)] > 0]

    @rule(host=st.sampled_from([None, None, "a", "b"]))
    def alloc(self, host):
        used = {d.minor for d in self.devs}
        hosts = {d.host for d in self.devs if d.host is not None}
        try:
            dev = self.core.alloc_dax(object(), host=host)
        except DaxError as e:
            if host in hosts:
                assert e.errno == errno.EEXIST
            else:
                assert e.errno == errno.ENOSPC
                assert len(used) == NR
            return
        assert host not in hosts
        assert dev.minor not in used, "minor reused while referenced"
        assert dev.minor == min(set(range(NR)) - used), "not the lowest free minor"
        assert dev.ino == DAX_INO_BASE + dev.minor
        self.devs.append(dev)
        self.refs[id(dev)] = 1

    @precondition(lambda self: self.devs)
    @rule(i=st.integers(0, NR))
    def get(self, i):
        dev = self.devs[i % len(self.devs)]
        assert self.core.get_dax(dev) is dev
        self.refs[id(dev)] += 1

    @precondition(lambda self: self.devs)
    @rule(i=st.integers(0, NR))
    def put(self, i):
        dev = self.devs[i % len(self.devs)]
        if self.refs[id(dev)] == 1 and dev.alive:
            return  # a contract violation (see test_final_put_of_live_device_asserts)
        self.core.put_dax(dev)
        self.refs[id(dev)] -= 1
        if not self.refs[id(dev)]:
            self.devs.remove(dev)
            self.released.append(dev)

    @precondition(lambda self: self.devs)
    @rule(i=st.integers(0, NR))
    def kill(self, i):
        dev = self.devs[i % len(self.devs)]
        trio.run(self.core.kill_dax, dev)
        assert dev.alive is False and dev.private is None

    @precondition(lambda self: self.devs)
    @rule(i=st.integers(0, NR))
    def revive(self, i):
        dev = self.devs[i % len(self.devs)]
        priv = object()
        self.core.run_dax(dev, priv)
        assert dev.alive and dev.private is priv

    @rule(host=st.sampled_from(["a", "b", "c"]))
    def lookup_host(self, host):
        owner = [d for d in self.devs if d.host == host]
        got = self.core.dax_get_by_host(host)
        if owner and owner[0].alive:
            assert got is owner[0]
            self.refs[id(got)] += 1
        else:
            assert got is None

    @invariant()
    def lookups_match_model(self):
        if not hasattr(self, "core"):
            return
        assert len(self.core) == len(self.devs)
        assert len({d.minor for d in self.devs}) == len(self.devs)
        for d in self.devs:
            assert d.refs == self.refs[id(d)]
            assert self.core.by_minor(d.minor) is d
            assert self.core.by_inode(d.ino) is d
        used = {d.minor for d in self.devs}
        for m in set(range(NR)) - used:
            assert self.core.by_minor(m) is None
        assert not self.core.srcu.held()


TestCoreMachine = CoreMachine.TestCase
TestCoreMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
