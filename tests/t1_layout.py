"""The layout record without a mount: verified on load, replaced atomically,
and a change whose record cannot be written is undone."""
import errno
import functools
import json
import os

import pytest
import trio

from daxfuse.core import DaxCore
from daxfuse.dax import DaxBus, DaxFile
from daxfuse.dax.device import LABEL_SIZE
from daxfuse.dax.layout import LayoutStore
from daxfuse.core.errors import DaxError
from daxfuse.memory import MemoryFile

pytestmark = pytest.mark.timeout(60)
P = functools.partial
M2 = 2 << 20


@pytest.fixture
def bus(tmp_path):
    memory = MemoryFile()
    bus = DaxBus(DaxCore(), memory, LayoutStore(str(tmp_path / "memory")))
    trio.run(bus.apply, [P(bus.create_region, 16 << 20), P(bus.create_device, 0, 4 * M2)])
    yield bus
    memory.close()


def rewrite(path, change):
    """The record changed by change(), with a fresh, valid checksum."""
    with open(path) as f:
        record = json.load(f)
    record.pop("sha256")
    change(record)
    LayoutStore(path.removesuffix(".layout")).save(record)


def test_every_change_is_recorded_before_it_is_acknowledged(bus):
    store = bus.store
    trio.run(bus.apply, [P(bus.inject_error, "dax0.0", 3)])
    record = LayoutStore(store.path[:-len(".layout")]).load()
    assert record["badblocks"] == [[3, 1]] and record["regions"][0]["devices"][0]["size"] == 4 * M2
    assert not os.path.exists(store.path + ".tmp"), "renamed over the record"


def test_a_stale_temporary_record_is_ignored(bus):
    """A crash between write and rename leaves PATH.layout.tmp: the record is the one before."""
    with open(bus.store.path + ".tmp", "w") as f:
        f.write('{"half": ')
    assert LayoutStore(bus.store.path[:-len(".layout")]).load()["regions"][0]["size"] == 16 << 20
    trio.run(bus.apply, [P(bus.disable_device, "dax0.0")])
    assert not os.path.exists(bus.store.path + ".tmp")


@pytest.mark.parametrize("change,what", [
    (lambda r: r["regions"][0].update(size=4 << 20), "a range outside region 0"),
    (lambda r: r["regions"][0].update(size=(16 << 20) + 4096), "region 0 size"),
    (lambda r: r["regions"][0].update(align=8192), "align 8192"),
    (lambda r: r["regions"].append({**r["regions"][0], "id": 1}), "region 0 overlaps region 1"),
    (lambda r: r["regions"][0]["devices"][0].update(size=1), "do not add up"),
    (lambda r: r["regions"][0].update(seed=7), "seed"),
    (lambda r: r.update(memory_id="short"), "memory_id 'short'"),
    (lambda r: r.pop("badblocks"), "'badblocks'"),
    (lambda r: r.update(dirty_shutdown=-1), "dirty_shutdown -1"),
    (lambda r: r["regions"][0].update(target_node=-2), "target_node or numa_node"),
    (lambda r: r["regions"][0].update(numa_node="0"), "target_node or numa_node"),
    (lambda r: r["regions"][0]["devices"][0].update(memmap_on_memory=1), "memmap_on_memory"),
    (lambda r: r["regions"][0]["devices"][0].update(driver="nvme"), "driver 'nvme'"),
    (lambda r: r["regions"][0]["devices"][0].update(hotplug_state="sideways"), "hotplug_state"),
    (lambda r: r["regions"][0].update(type="cxl"), "enabled or type"),
    (lambda r: r.update(memory_blocks=[[200, 0, "DMA", False]]), "memory block 200 zone"),
    (lambda r: r.update(memory_blocks=[[-1, 0, None, False]]), "memory block -1"),
    (lambda r: r.update(auto_online_blocks="sometimes"), "auto_online_blocks"),
])
def test_a_record_that_verifies_but_makes_no_sense_is_refused(bus, change, what):
    rewrite(bus.store.path, change)
    with pytest.raises(DaxError) as e:
        LayoutStore(bus.store.path[:-len(".layout")]).load()
    assert e.value.errno == errno.EINVAL and "inconsistent record" in e.value.message and what in e.value.message
    assert bus.store.path in e.value.message and "\n" not in e.value.message


def test_a_change_whose_record_cannot_be_written_is_undone(bus, tmp_path):
    before = bus.layout()
    with open(bus.store.path, "rb") as f:
        recorded = f.read()
    os.mkdir(bus.store.path + ".tmp")  # the temporary record cannot be opened for writing
    with pytest.raises(DaxError) as e:
        trio.run(bus.apply, [P(bus.disable_device, "dax0.0"), P(bus.resize_device, "dax0.0", M2)])
    assert e.value.errno == errno.EISDIR and "cannot record the layout" in e.value.message
    assert bus.layout() == before and bus.device("dax0.0").dax_dev.alive, "undone, the device still alive"
    with open(bus.store.path, "rb") as f:
        assert f.read() == recorded
    os.rmdir(bus.store.path + ".tmp")
    trio.run(bus.apply, [P(bus.disable_device, "dax0.0")])
    assert not bus.device("dax0.0").enabled


def test_writes_that_clear_poison_at_once_are_recorded_one_at_a_time(bus):
    """Clear-on-write is a change of the bus like any other: made under its
    lock, its record written once the one before is. Forty writes over forty
    poisoned sectors at once (the race: forty saves of one PATH.layout.tmp
    at a time): each is answered, no poison is left, and the record says so."""
    trio.run(bus.apply, [P(bus.inject_error, "dax0.0", 8 * i) for i in range(40)])
    f = DaxFile(bus, bus.device("dax0.0").dax_dev)

    async def all_at_once():
        async with trio.open_nursery() as nursery:
            for i in range(40):
                nursery.start_soon(f.write, 8 * i * 512, b"w" * 512)
    trio.run(all_at_once)
    f.release()
    assert not bus.badblocks and not bus.injected
    record = LayoutStore(bus.store.path[:-len(".layout")]).load()
    assert record["badblocks"] == record["injected"] == []
    assert not os.path.exists(bus.store.path + ".tmp")


def test_a_record_without_nodes_or_memmap_on_memory_restores_with_the_defaults(bus, tmp_path):
    """Records written before regions had nodes and devices memmap_on_memory
    restore as they were then: node 0, off."""
    def old(record):
        for r in record["regions"]:
            del r["target_node"], r["numa_node"]
            for d in r["devices"]:
                del d["memmap_on_memory"]
    rewrite(bus.store.path, old)
    store = LayoutStore(bus.store.path[:-len(".layout")])
    memory = MemoryFile()
    again = DaxBus(DaxCore(), memory, store)
    store.restore(again, store.load())
    region = again.regions[0]
    assert (region.target_node, region.numa_node, again.device("dax0.0").memmap_on_memory) == (0, 0, False)
    memory.close()


def test_labels_and_a_disabled_region_come_back_from_the_record(bus, tmp_path):
    """The DIMM's label area and a region's state are kept with the layout;
    a record written before either restores all-zero labels, enabled."""
    trio.run(bus.apply, [P(bus.disable_region, 0), P(bus.write_labels, 4096, b"NAMESPACE_INDEX")])
    store = LayoutStore(bus.store.path[:-len(".layout")])
    memory = MemoryFile()
    again = DaxBus(DaxCore(), memory, store)
    store.restore(again, store.load())
    assert again.dimm.label_area == bus.dimm.label_area and not again.regions[0].enabled
    assert not again.device("dax0.0").enabled
    memory.close()

    def old(record):
        del record["labels"], record["regions"][0]["enabled"]
    rewrite(bus.store.path, old)
    memory = MemoryFile()
    again = DaxBus(DaxCore(), memory, store)
    store.restore(again, store.load())
    assert again.dimm.label_area == bytes(LABEL_SIZE) and again.regions[0].enabled
    memory.close()


@pytest.mark.parametrize("labels", ["not base64!", "", 12])
def test_a_record_with_labels_that_are_no_label_area_is_refused(bus, labels):
    rewrite(bus.store.path, lambda record: record.__setitem__("labels", labels))
    with pytest.raises(DaxError) as e:
        LayoutStore(bus.store.path[:-len(".layout")]).load()
    assert "labels" in e.value.message


def test_a_device_recorded_before_the_2m_step_comes_back_as_it_was(bus):
    """An older daxfuse allowed 4 KiB steps: such a device is restored with
    its size and data place; only its next change follows alloc_is_aligned."""
    def older(record):
        dev = record["regions"][0]["devices"][0]
        dev.update(size=12 << 10, align=4096, ranges=[[0, 12 << 10]])
    rewrite(bus.store.path, older)
    store = LayoutStore(bus.store.path[:-len(".layout")])
    memory = MemoryFile()
    again = DaxBus(DaxCore(), memory, store)
    store.restore(again, store.load())
    dev = again.device("dax0.0")
    assert (dev.size, dev.align, [(r.start, r.end) for r in dev.ranges]) == (12 << 10, 4096, [(0, 12 << 10)])
    with pytest.raises(DaxError) as e:
        trio.run(again.apply, [P(again.disable_device, "dax0.0"), P(again.resize_device, "dax0.0", 16 << 10)])
    assert e.value.errno == errno.EINVAL and dev.size == 12 << 10
    with pytest.raises(DaxError) as e:  # a step of 2M - 12K: dev_dax_resize's ENXIO
        trio.run(again.apply, [P(again.disable_device, "dax0.0"), P(again.resize_device, "dax0.0", M2)])
    assert e.value.errno == errno.ENXIO
    trio.run(again.apply, [P(again.disable_device, "dax0.0"), P(again.resize_device, "dax0.0", 0),
                           P(again.resize_device, "dax0.0", M2)])
    assert dev.size == M2
    memory.close()
