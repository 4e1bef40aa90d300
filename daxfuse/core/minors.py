"""Lowest-free id allocation, as the kernel's IDA."""
import heapq


class Ida:
    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self._next = 0
        self._freed: list[int] = []

    def get(self) -> int | None:
        """The lowest free id, or None when all ids below limit are taken."""
        if self._freed:
            return heapq.heappop(self._freed)
        if self.limit is not None and self._next >= self.limit:
            return None
        self._next += 1
        return self._next - 1

    def remove(self, id_: int) -> None:
        heapq.heappush(self._freed, id_)

    def claim(self, id_: int) -> None:
        """Take id_ itself (a layout restored): it must be free."""
        if id_ < self._next:
            self._freed.remove(id_)
            heapq.heapify(self._freed)
            return
        for free in range(self._next, id_):
            heapq.heappush(self._freed, free)
        self._next = id_ + 1
