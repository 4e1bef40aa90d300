"""Media errors without a mount: the badblocks list (merged, sorted, as the
kernel's), their device-relative view, and the bus operations on them."""
import errno
import functools

import pytest
import trio
from hypothesis import given, strategies as st

from conftest import apply
from daxfuse.core import DaxCore
from daxfuse.dax import DaxBus, DaxFile
from daxfuse.dax.badblocks import Badblocks
from daxfuse.core.errors import DaxError
from daxfuse.memory import MemoryFile

pytestmark = pytest.mark.timeout(60)
P = functools.partial
M2 = 2 << 20

ops = st.lists(st.tuples(st.booleans(), st.integers(0, 200), st.integers(1, 40)), max_size=30)


@given(ops)
def test_badblocks_are_the_set_of_sectors_merged_and_sorted(changes):
    bad, model = Badblocks(), set()
    for add, start, count in changes:
        (bad.add if add else bad.remove)(start, count)
        (model.update if add else model.difference_update)(range(start, start + count))
    ranges = bad.ranges()
    assert {s for start, count in ranges for s in range(start, start + count)} == model
    assert all(a[0] + a[1] < b[0] for a, b in zip(ranges, ranges[1:])), "merged (no touching ranges) and sorted"
    assert bad.overlaps(0, 1000) == bool(model)


@pytest.fixture
def bus(bus):
    """conftest's, with region 0 of 16 MiB and dax0.0 of 8 MiB."""
    trio.run(bus.apply, [P(bus.create_region, 16 << 20), P(bus.create_device, 0, 4 * M2)])
    return bus


def test_inject_and_clear_by_device_block(bus):
    apply(bus, P(bus.inject_error, "dax0.0", 8, 3), P(bus.inject_error, "dax0.0", 11))
    assert bus.device_badblocks(bus.device("dax0.0")) == [(8, 4)]
    assert bus.layout()[0]["devices"][0]["badblocks"] == [{"offset": 8, "length": 4}]
    apply(bus, P(bus.clear_error, "dax0.0", 9, 2))
    assert bus.device_badblocks(bus.device("dax0.0")) == [(8, 1), (11, 1)]
    with pytest.raises(DaxError) as e:
        apply(bus, P(bus.inject_error, "dax0.0", 4 * M2 // 512))
    assert e.value.errno == errno.EINVAL and "not within dax0.0" in e.value.message
    with pytest.raises(DaxError):
        apply(bus, P(bus.inject_error, "dax0.0", 0), P(bus.inject_error, "dax0.9", 0))
    assert bus.device_badblocks(bus.device("dax0.0")) == [(8, 1), (11, 1)], "a failed batch poisons nothing"


def test_poison_belongs_to_the_media_not_the_device(bus):
    """A device made over a poisoned range sees it, at its own offsets."""
    apply(bus, P(bus.inject_error, "dax0.0", 1))
    apply(bus, P(bus.disable_device, "dax0.0"), P(bus.destroy_device, "dax0.0"))
    apply(bus, P(bus.create_device, 0, M2), P(bus.create_device, 0, M2))
    assert bus.device_badblocks(bus.device("dax0.0")) == [(1, 1)], "a new device over the old range"
    assert bus.device_badblocks(bus.device("dax0.1")) == []


def test_reads_of_poison_fail_and_whole_writes_clear_it(bus):
    dev = bus.device("dax0.0")
    apply(bus, P(bus.inject_error, "dax0.0", 2))
    f = DaxFile(bus, dev.dax_dev)
    with pytest.raises(DaxError) as e:
        trio.run(f.read, 0, 4096)
    assert e.value.errno == errno.EIO
    assert bytes(trio.run(f.read, 2048, 16)) == bytes(16), "next to the poison"
    with pytest.raises(DaxError) as e:
        trio.run(f.write, 1024 + 100, b"x")  # part of the poisoned sector
    assert e.value.errno == errno.EIO
    assert trio.run(f.write, 1024, b"y" * 512) == 512  # the whole sector: cleared, as pmem's clear-on-write
    assert bus.device_badblocks(dev) == [] and bytes(trio.run(f.read, 1024, 3)) == b"yyy"
    f.release()


def test_ars_injection_list_is_apart_from_the_poison(bus):
    apply(bus, P(bus.inject_physical, 4096, 1024))
    assert bus.injected.ranges() == bus.badblocks.ranges() == [(8, 2)]
    apply(bus, P(bus.uninject_physical, 4096, 1024))
    assert bus.injected.ranges() == [] and bus.badblocks.ranges() == [(8, 2)], "the kernel keeps its badblocks"
    apply(bus, P(bus.clear_physical, 4096, 1024))
    assert bus.badblocks.ranges() == []
    with pytest.raises(DaxError):
        apply(bus, P(bus.inject_physical, 64 << 20, 512))


SECTORS = 64  # a small device's worth, so the machine hits poison often


@given(st.lists(st.tuples(st.sampled_from(["inject", "clear", "read", "write"]),
                          st.integers(0, SECTORS * 512 - 1), st.integers(1, 4 * 512)), max_size=40))
def test_a_poisoned_block_never_reads_as_data_and_a_cleared_one_never_fails(steps):
    """Against a model (the set of poisoned sectors and the bytes): reads
    touching poison fail, others return what was written; writes touching
    poison fail unless they cover every poisoned sector they touch whole."""
    memory = MemoryFile()
    bus = DaxBus(DaxCore(), memory)
    try:
        apply(bus, P(bus.create_region, 4 << 20, 4096), P(bus.create_device, 0, 2 << 20))
        dev = bus.device("dax0.0")
        f = DaxFile(bus, dev.dax_dev)
        poison, data = set(), bytearray(SECTORS * 512)
        for op, offset, length in steps:
            length = min(length, len(data) - offset)
            first, last = offset // 512, (offset + length - 1) // 512
            touched = set(range(first, last + 1))
            if op in ("inject", "clear"):
                count = last - first + 1
                apply(bus, P(bus.inject_error if op == "inject" else bus.clear_error, "dax0.0", first, count))
                (poison.update if op == "inject" else poison.difference_update)(touched)
            elif op == "read":
                if touched & poison:
                    with pytest.raises(DaxError) as e:
                        trio.run(f.read, offset, length)
                    assert e.value.errno == errno.EIO
                else:
                    assert bytes(trio.run(f.read, offset, length)) == data[offset:offset + length]
            else:
                whole = {s for s in touched if s * 512 >= offset and (s + 1) * 512 <= offset + length}
                payload = bytes([len(poison) % 251 + 1]) * length
                if touched & poison - whole:
                    with pytest.raises(DaxError) as e:
                        trio.run(f.write, offset, payload)
                    assert e.value.errno == errno.EIO
                else:
                    assert trio.run(f.write, offset, payload) == length
                    data[offset:offset + length] = payload
                    poison -= whole
            assert {s for start, count in bus.device_badblocks(dev) for s in range(start, start + count)} == poison
        f.release()
    finally:
        memory.close()
