"""Sleepable RCU: readers never block writers' progress and may await.

Two reader counters and an index flip, as the kernel's SRCU: a synchronize
flips the index so new readers count on the other side, then waits for the
old side to drain. Readers arriving during the wait never delay it. Readers
may run in trio tasks or worker threads, so the counters sit behind a
threading lock; synchronizers are serialized, which keeps the invariant that
the side a synchronize flips to is empty.
"""
import contextvars
import threading

import trio

_held = contextvars.ContextVar("srcu_held", default=0)


class Srcu:
    def __init__(self) -> None:
        # The read side takes only the plain lock (a C-level lock: a
        # Condition's context manager costs microseconds per request).
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._readers = [0, 0]
        self._idx = 0
        self._draining = False
        self._sync_mutex = threading.Lock()

    def read_lock(self) -> int:
        with self._lock:
            idx = self._idx
            self._readers[idx] += 1
        _held.set(_held.get() + 1)
        return idx

    def read_unlock(self, idx: int) -> None:
        _held.set(_held.get() - 1)
        with self._lock:
            self._readers[idx] -= 1
            if self._draining and not self._readers[idx]:
                self._cond.notify_all()

    @staticmethod
    def held() -> bool:
        """Whether the calling context holds a read lock (for assertions)."""
        return _held.get() > 0

    def _flip(self) -> tuple[int, bool]:
        with self._lock:
            old = self._idx
            self._idx = old ^ 1
            return old, self._readers[old] != 0

    def _drain(self, old: int) -> None:
        with self._lock:
            self._draining = True
            while self._readers[old]:
                self._cond.wait()
            self._draining = False

    def synchronize_blocking(self) -> None:
        """Wait for every reader that started before this call (threads only)."""
        with self._sync_mutex:
            old, busy = self._flip()
            if busy:
                self._drain(old)

    async def synchronize(self) -> None:
        """Wait for every reader that started before this call.

        The fast path (no old readers) stays on the trio thread; otherwise
        the wait runs in a worker so trio readers keep running and finish.
        """
        if not self._sync_mutex.acquire(blocking=False):
            await trio.to_thread.run_sync(self.synchronize_blocking)
            return
        try:
            old, busy = self._flip()
            if busy:
                await trio.to_thread.run_sync(self._drain, old)
        finally:
            self._sync_mutex.release()
