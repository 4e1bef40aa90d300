"""DaxCore: minors, references, liveness under SRCU."""
import errno

import pytest
import trio
import trio.testing
from hypothesis import settings, strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition,
                                 rule)

from daxfuse.core import DaxCore
from daxfuse.core.errors import DaxError
from daxfuse.core.devt import DAX_INO_BASE

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


def test_alloc_gives_lowest_free_minor_and_inode_born_dead():
    core = DaxCore(8)
    devs = [core.alloc_dax(f"p{i}") for i in range(4)]
    assert [d.minor for d in devs] == [0, 1, 2, 3]
    assert [d.ino for d in devs] == [DAX_INO_BASE + i for i in range(4)]
    assert [d.private for d in devs] == ["p0", "p1", "p2", "p3"]
    with core.read_locked():
        assert not any(core.dax_alive(d) for d in devs), "nothing may use a device before run_dax"
    assert all(d.refs == 1 for d in devs)
    assert len(core) == 4

    for d in (devs[2], devs[0]):
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


# --- references -------------------------------------------------------------------------


def test_put_releases_minor_only_at_last_reference():
    core = DaxCore(4)
    dev = core.alloc_dax("p")
    assert core.get_dax(dev) is dev
    core.get_dax(dev)
    assert dev.refs == 3

    core.put_dax(dev)
    core.put_dax(dev)
    assert len(core) == 1
    assert core.alloc_dax("other").minor == 1, "minor 0 still referenced"

    core.put_dax(dev)
    assert dev.refs == 0 and len(core) == 1
    again = core.alloc_dax("again")
    assert again.minor == 0 and again.ino == DAX_INO_BASE


def test_final_put_of_live_device_asserts():
    core = DaxCore()
    dev = core.alloc_dax(None)
    core.run_dax(dev, None)
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
    core.run_dax(dev, None)
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
    dev = core.alloc_dax(None)
    core.run_dax(dev, "private")
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
    dev = core.alloc_dax(None)
    core.run_dax(dev, "private")
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
    dev = core.alloc_dax(None)
    core.run_dax(dev, "one")
    trio.run(core.kill_dax, dev)
    with core.read_locked():
        assert not core.dax_alive(dev)
    core.run_dax(dev, "two")
    with core.read_locked():
        assert core.dax_alive(dev)
    assert dev.private == "two"
    assert core.alloc_dax(None).minor == dev.minor + 1, "kill/run keep the minor"


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

    @rule()
    def alloc(self):
        used = {d.minor for d in self.devs}
        try:
            dev = self.core.alloc_dax(object())
        except DaxError as e:
            assert e.errno == errno.ENOSPC
            assert len(used) == NR
            return
        assert not dev.alive, "born dead"
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

    @invariant()
    def counts_match_model(self):
        if not hasattr(self, "core"):
            return
        assert len(self.core) == len(self.devs)
        assert len({d.minor for d in self.devs}) == len(self.devs)
        for d in self.devs:
            assert d.refs == self.refs[id(d)]
        assert not self.core.srcu.held()


TestCoreMachine = CoreMachine.TestCase
TestCoreMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
