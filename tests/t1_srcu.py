"""Srcu: synchronize waits for exactly the readers that started before it.

Readers hold the read side across trio awaits and in worker threads; the
writer side must wait for all of them, must not wait for readers that came
later, and must make progress while readers keep arriving without a gap.
"""
import threading
import time

import pytest
import trio
import trio.testing

from daxfuse.core import Srcu

pytestmark = pytest.mark.timeout(30)

# Generous bound for "synchronize made progress"; only ever an upper bound.
PROGRESS = 10.0


def run(fn, *args):
    return trio.run(fn, *args)


# --- held() -------------------------------------------------------------------


def test_held_counts_nested_read_locks():
    srcu = Srcu()
    assert not srcu.held()
    a = srcu.read_lock()
    assert srcu.held()
    b = srcu.read_lock()
    assert srcu.held()
    srcu.read_unlock(b)
    assert srcu.held(), "one read lock is still held"
    srcu.read_unlock(a)
    assert not srcu.held()


def test_held_is_per_trio_task():
    srcu = Srcu()
    seen = {}

    async def main():
        holding = trio.Event()
        release = trio.Event()

        async def holder():
            idx = srcu.read_lock()
            seen["holder"] = srcu.held()
            holding.set()
            await release.wait()
            seen["holder_after_await"] = srcu.held()
            srcu.read_unlock(idx)
            seen["holder_after_unlock"] = srcu.held()

        async def other():
            await holding.wait()
            seen["other"] = srcu.held()
            release.set()

        async with trio.open_nursery() as n:
            n.start_soon(holder)
            n.start_soon(other)
        seen["main"] = srcu.held()

    run(main)
    assert seen == {"holder": True, "holder_after_await": True, "holder_after_unlock": False,
                    "other": False, "main": False}


def test_held_in_worker_thread_does_not_leak():
    srcu = Srcu()
    seen = {}

    def reader():
        idx = srcu.read_lock()
        seen["thread"] = srcu.held()
        srcu.read_unlock(idx)
        seen["thread_after"] = srcu.held()

    async def main():
        seen["before"] = srcu.held()
        await trio.to_thread.run_sync(reader)
        seen["after"] = srcu.held()

    run(main)
    assert seen == {"before": False, "thread": True, "thread_after": False, "after": False}


def test_held_in_plain_thread():
    srcu = Srcu()
    idx = srcu.read_lock()
    seen = []
    t = threading.Thread(target=lambda: seen.append(srcu.held()))
    t.start()
    t.join()
    assert seen == [False], "a new thread does not inherit the reader's hold"
    srcu.read_unlock(idx)


# --- synchronize waits for old readers ---------------------------------------------


def test_synchronize_without_readers_returns():
    srcu = Srcu()

    async def main():
        with trio.fail_after(PROGRESS):
            await srcu.synchronize()
            await srcu.synchronize()

    run(main)
    srcu.synchronize_blocking()


@pytest.mark.parametrize("synchronize", [
    lambda srcu: srcu.synchronize(),
    lambda srcu: trio.to_thread.run_sync(srcu.synchronize_blocking),
], ids=["async", "blocking-in-thread"])
def test_synchronize_waits_for_reader_across_await(synchronize):
    srcu = Srcu()
    log = []

    async def main():
        holding = trio.Event()
        release = trio.Event()

        async def reader():
            idx = srcu.read_lock()
            holding.set()
            await release.wait()
            log.append("reader done")
            srcu.read_unlock(idx)

        async def syncer():
            await synchronize(srcu)
            log.append("synchronized")

        async with trio.open_nursery() as n:
            n.start_soon(reader)
            await holding.wait()
            n.start_soon(syncer)
            # Give synchronize every chance to (wrongly) return early.
            await trio.testing.wait_all_tasks_blocked()
            await trio.sleep(0.2)
            assert log == [], "synchronize returned while an old reader held the lock"
            release.set()

    run(main)
    assert log == ["reader done", "synchronized"]


def test_synchronize_waits_for_every_old_reader_trio_and_threads():
    """Readers in trio tasks (across awaits) and in worker threads, with
    different hold times, all started before synchronize: all are done when
    it returns."""
    srcu = Srcu()
    n_tasks, n_threads = 6, 4
    done = {}
    lock = threading.Lock()

    def mark(name):
        with lock:
            done[name] = True

    async def main():
        started = trio.Semaphore(0)

        go = trio.Event()
        go_threads = threading.Event()

        async def task_reader(i):
            idx = srcu.read_lock()
            done[f"task{i}"] = False
            started.release()
            await go.wait()
            await trio.sleep(0.02 * (i + 1))
            await trio.lowlevel.checkpoint()
            mark(f"task{i}")
            srcu.read_unlock(idx)

        token = trio.lowlevel.current_trio_token()

        def thread_reader(i):
            idx = srcu.read_lock()
            with lock:
                done[f"thread{i}"] = False
            trio.from_thread.run_sync(started.release, trio_token=token)
            go_threads.wait(PROGRESS)
            time.sleep(0.03 * (i + 1))
            mark(f"thread{i}")
            srcu.read_unlock(idx)

        async with trio.open_nursery() as n:
            for i in range(n_tasks):
                n.start_soon(task_reader, i)
            for i in range(n_threads):
                n.start_soon(trio.to_thread.run_sync, thread_reader, i)
            for _ in range(n_tasks + n_threads):
                await started.acquire()
            assert not any(done.values())
            # Readers release at staggered times once synchronize is running.
            go.set()
            go_threads.set()
            with trio.fail_after(PROGRESS):
                await srcu.synchronize()
            with lock:
                snapshot = dict(done)
        return snapshot

    snapshot = run(main)
    assert len(snapshot) == n_tasks + n_threads
    assert all(snapshot.values()), f"readers still running after synchronize: {snapshot}"


def test_concurrent_synchronizers_all_wait_for_old_reader():
    """Two trio synchronizers (the second takes the busy-mutex path) and a
    thread synchronizer, all started while one reader holds the lock."""
    srcu = Srcu()
    log = []

    async def main():
        holding = trio.Event()
        release = trio.Event()

        async def reader():
            idx = srcu.read_lock()
            holding.set()
            await release.wait()
            log.append("reader done")
            srcu.read_unlock(idx)

        async def syncer(name):
            await srcu.synchronize()
            log.append(name)

        async def thread_syncer():
            await trio.to_thread.run_sync(srcu.synchronize_blocking)
            log.append("thread")

        async with trio.open_nursery() as n:
            n.start_soon(reader)
            await holding.wait()
            n.start_soon(syncer, "a")
            n.start_soon(syncer, "b")
            n.start_soon(thread_syncer)
            await trio.sleep(0.2)
            assert log == []
            release.set()
            with trio.fail_after(PROGRESS):
                while len(log) < 4:
                    await trio.sleep(0.01)

    run(main)
    assert log[0] == "reader done"
    assert sorted(log[1:]) == ["a", "b", "thread"]


# --- later readers never delay synchronize ---------------------------------------------


def test_late_trio_reader_does_not_delay_synchronize():
    srcu = Srcu()

    async def main():
        old_holding = trio.Event()
        release_old = trio.Event()
        late_holding = trio.Event()
        release_late = trio.Event()
        state = {}

        async def old_reader():
            idx = srcu.read_lock()
            old_holding.set()
            await release_old.wait()
            state["old done"] = True
            srcu.read_unlock(idx)

        async def late_reader():
            idx = srcu.read_lock()
            late_holding.set()
            await release_late.wait()
            srcu.read_unlock(idx)

        sync_done = trio.Event()

        async def syncer():
            await srcu.synchronize()
            sync_done.set()

        async with trio.open_nursery() as n:
            n.start_soon(old_reader)
            await old_holding.wait()
            n.start_soon(syncer)
            # synchronize flips before its first checkpoint: once every task
            # is blocked, a new reader counts on the other side.
            await trio.testing.wait_all_tasks_blocked()
            n.start_soon(late_reader)
            await late_holding.wait()
            release_old.set()
            with trio.fail_after(PROGRESS):
                await sync_done.wait()
            assert state == {"old done": True}
            release_late.set()

    run(main)


def test_late_thread_reader_does_not_delay_synchronize():
    srcu = Srcu()
    late_go = threading.Event()
    late_holding = threading.Event()
    release_late = threading.Event()

    def late_reader():
        late_go.wait()
        idx = srcu.read_lock()
        late_holding.set()
        release_late.wait(PROGRESS * 3)
        srcu.read_unlock(idx)

    t = threading.Thread(target=late_reader)
    t.start()
    try:
        async def main():
            old = srcu.read_lock()
            sync_done = trio.Event()

            async def syncer():
                await srcu.synchronize()
                sync_done.set()

            async with trio.open_nursery() as n:
                n.start_soon(syncer)
                await trio.testing.wait_all_tasks_blocked()
                late_go.set()
                await trio.to_thread.run_sync(late_holding.wait)
                srcu.read_unlock(old)
                with trio.fail_after(PROGRESS):
                    await sync_done.wait()

        run(main)
    finally:
        release_late.set()
        t.join()


def test_synchronize_completes_under_continuous_overlapping_readers():
    """A chain of trio readers, each holding ~20ms and starting its successor
    (which already holds the lock) after ~5ms: there is never a moment with
    zero readers. Repeated synchronizes still return, each after the readers
    that were present when it started, while the stream keeps going."""
    srcu = Srcu()
    stats = {"active": 0, "min_active_while_streaming": None, "started": 0}
    active_ids: set[int] = set()
    finished: set[int] = set()

    async def main():
        stop = trio.Event()

        async def reader(i, task_status=trio.TASK_STATUS_IGNORED):
            idx = srcu.read_lock()
            stats["active"] += 1
            stats["started"] += 1
            active_ids.add(i)
            task_status.started()
            await trio.sleep(0.005)
            if not stop.is_set():
                # The successor holds the read lock once start() returns.
                await nursery.start(reader, i + 1)
            await trio.sleep(0.015)
            stats["active"] -= 1
            active_ids.discard(i)
            finished.add(i)
            if not stop.is_set():
                m = stats["min_active_while_streaming"]
                a = stats["active"]
                stats["min_active_while_streaming"] = a if m is None else min(m, a)
            srcu.read_unlock(idx)

        async with trio.open_nursery() as nursery:
            await nursery.start(reader, 0)
            await trio.sleep(0.1)  # let the stream reach steady state
            for _ in range(5):
                before = set(active_ids)
                assert before, "stream must be running when synchronize starts"
                started_before = stats["started"]
                with trio.fail_after(PROGRESS):
                    await srcu.synchronize()
                assert before <= finished, f"old readers {before - finished} still running"
                # The stream did not stop for us: readers are still active and
                # new ones began while we waited.
                assert stats["active"] > 0
                assert stats["started"] > started_before
            stop.set()

    run(main)
    assert stats["min_active_while_streaming"] >= 1, "the stream had a gap: test proves nothing"
    assert stats["active"] == 0


def test_synchronize_completes_under_continuous_thread_readers():
    """Worker threads that overlap (each takes the lock before its
    predecessor drops it) do not starve synchronize either."""
    srcu = Srcu()
    stop = threading.Event()
    count_lock = threading.Lock()
    counts = {"active": 0, "done": 0}

    def chain():
        # Each loop iteration is a new reader that takes the lock before the
        # previous one is released: a hand-over-hand reader stream.
        prev = srcu.read_lock()
        with count_lock:
            counts["active"] += 1
        while not stop.is_set():
            time.sleep(0.01)
            nxt = srcu.read_lock()
            with count_lock:
                counts["done"] += 1  # counted before the unlock that ends it
            srcu.read_unlock(prev)
            prev = nxt
        srcu.read_unlock(prev)
        with count_lock:
            counts["active"] -= 1

    threads = [threading.Thread(target=chain) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.05)

        async def main():
            for _ in range(3):
                done_before = counts["done"]
                with trio.fail_after(PROGRESS):
                    await srcu.synchronize()
                # Every chain dropped at least the reader it held before.
                assert counts["done"] >= done_before + len(threads)
                assert counts["active"] == len(threads), "stream still running"
            for _ in range(3):
                await trio.to_thread.run_sync(srcu.synchronize_blocking)
                assert counts["active"] == len(threads)

        run(main)
    finally:
        stop.set()
        for t in threads:
            t.join()
    # Every reader was released: a synchronize has nothing left to wait for.
    sync = threading.Thread(target=srcu.synchronize_blocking)
    sync.start()
    sync.join(PROGRESS)
    assert not sync.is_alive()
