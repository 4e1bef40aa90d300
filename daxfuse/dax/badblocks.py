"""Media errors: poisoned 512-byte sectors of the memory file ("physical
memory"), kept merged and sorted as the kernel's badblocks list. They
belong to the media, not to a device: a device made over a poisoned range
sees the poison."""
from bisect import bisect_left

SECTOR = 512


class Badblocks:
    def __init__(self, ranges=()) -> None:
        self._ranges: list[list[int]] = []  # [start, end) in sectors, merged, sorted
        for start, count in ranges:
            self.add(start, count)

    def __bool__(self) -> bool:
        return bool(self._ranges)

    def ranges(self) -> list[tuple[int, int]]:
        """(first sector, count) of each merged range, in order."""
        return [(s, e - s) for s, e in self._ranges]

    def add(self, start: int, count: int) -> None:
        end = start + count
        i = bisect_left([e for _, e in self._ranges], start)
        j = i
        while j < len(self._ranges) and self._ranges[j][0] <= end:
            start, end = min(start, self._ranges[j][0]), max(end, self._ranges[j][1])
            j += 1
        self._ranges[i:j] = [[start, end]]

    def remove(self, start: int, count: int) -> None:
        end, kept = start + count, []
        for s, e in self._ranges:
            if e <= start or s >= end:
                kept.append([s, e])
                continue
            if s < start:
                kept.append([s, start])
            if e > end:
                kept.append([end, e])
        self._ranges = kept

    def within(self, start: int, count: int) -> list[tuple[int, int]]:
        """(first sector, count) of what is bad in [start, start + count)."""
        end = start + count
        return [(max(s, start), min(e, end) - max(s, start)) for s, e in self._ranges if s < end and e > start]

    def overlaps(self, start: int, count: int) -> bool:
        return bool(self.within(start, count))


def sectors(byte_start: int, length: int) -> tuple[int, int]:
    """The sectors [first, first + count) that bytes [byte_start, +length) touch."""
    first = byte_start // SECTOR
    return first, -(-(byte_start + length) // SECTOR) - first


def whole_sectors(byte_start: int, length: int) -> tuple[int, int]:
    """The sectors that bytes [byte_start, +length) cover entirely."""
    first = -(-byte_start // SECTOR)
    return first, max(0, (byte_start + length) // SECTOR - first)
