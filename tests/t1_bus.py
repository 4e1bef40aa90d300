"""DaxBus rules and DaxFile I/O over a real memory file (no FUSE)."""
import errno
import functools
import json

import numpy as np
import pytest
import trio
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from conftest import apply
from daxfuse.core import DaxCore
from daxfuse.core.errors import DaxError
from daxfuse.dax import ALIGNS, Access, DaxBus, DaxFile, DevDax, Event, Range
from daxfuse.dax.device import LABEL_SIZE
from daxfuse.dax.layout import LayoutStore, check_record
from daxfuse.memory import MemoryFile, phys_base

pytestmark = pytest.mark.timeout(60)

K4 = 4 << 10
M = 1 << 20
M2 = 2 << 20
P = functools.partial


def seeds(bus):
    """Each region's seed and youngest device (identity), not part of layout()."""
    return {r.id: (r.seed, r.youngest) for r in bus.regions.values()}


def fails(err, bus, *ops):
    """Apply ops expecting errno err; nothing may change."""
    before, n_minors, seed = bus.layout(), len(bus.core), seeds(bus)
    with pytest.raises(DaxError) as ei:
        apply(bus, *ops)
    assert ei.value.errno == err, ei.value
    assert bus.layout() == before, "a failed batch changed the layout"
    assert len(bus.core) == n_minors, "a failed batch leaked or freed a minor"
    assert seeds(bus) == seed, "a failed batch changed a seed or youngest"
    return ei.value


def without_minors(layout):
    return [{**r, "devices": [{k: v for k, v in d.items() if k != "minor"} for d in r["devices"]]} for r in layout]


def bare_region(bus, *args, **kw):
    """A region without its seed, as most tests here want: created, then its
    dax0.0 destroyed (the control file may; sysfs may not)."""
    (region,) = apply(bus, P(bus.create_region, *args, **kw))
    apply(bus, P(bus.destroy_device, f"dax{region.id}.0"))
    return region


def ranges(dev):
    return [(r.start, r.end) for r in dev.ranges]


@pytest.fixture
def events(bus):
    log = []

    async def listener(event, dev):
        if type(dev) is DevDax:
            log.append((event.value, dev.name, dev.dax_dev.alive))

    bus.listeners.append(listener)
    return log


def hole_device(bus):
    """Region 0 (8M, align 2M), dax0.0 seed (size 0), and dax0.2 holding two
    ranges: [2M,4M) then [0,2M), built by destroying dax0.1 and growing."""
    bare_region(bus, 8 * M)
    apply(bus, P(bus.create_seed, 0), P(bus.create_seed, 0), P(bus.create_seed, 0),
          P(bus.resize_device, "dax0.1", M2), P(bus.enable_device, "dax0.1"),
          P(bus.resize_device, "dax0.2", M2), P(bus.enable_device, "dax0.2"))
    assert bus.region(0).seed is bus.device("dax0.0")
    assert ranges(bus.device("dax0.1")) == [(0, M2)]
    assert ranges(bus.device("dax0.2")) == [(M2, 2 * M2)]
    apply(bus, P(bus.disable_device, "dax0.1"), P(bus.destroy_device, "dax0.1"),
          P(bus.disable_device, "dax0.2"), P(bus.resize_device, "dax0.2", 2 * M2))
    dev = bus.device("dax0.2")
    assert ranges(dev) == [(M2, 2 * M2), (0, M2)], "the hole at 0 is taken first-fit"
    assert dev.page_offsets() == [0, M2]
    return dev


# --- regions ------------------------------------------------------------------------


def test_create_region_defaults(bus, memory):
    (region,) = apply(bus, P(bus.create_region, 8 * M))
    assert region.id == 0 and region.align == M2
    assert region.res == Range(0, 8 * M)
    assert memory.size >= 8 * M
    assert bus.layout() == [{"id": 0, "start": 0, "resource": phys_base(), "size": 8 * M, "target_node": 0,
                             "numa_node": 0, "align": M2, "available_size": 8 * M, "state": "enabled", "devices": [
                                 {"name": "dax0.0", "id": 0, "size": 0, "align": M2, "state": "disabled", "driver": None,
                                  "memory_blocks": [], "minor": 0, "uid": 0, "gid": 0, "mode": "0600", "ranges": [],
                                  "badblocks": []}]}]
    assert region.seed is bus.device("dax0.0"), "born with its seed, as a kernel region"


@pytest.mark.parametrize("align", [0, 8 << 10, M, 3 * M, 4 << 30, -K4])
def test_create_region_bad_align(bus, align):
    e = fails(errno.EINVAL, bus, P(bus.create_region, 8 * M, align))
    assert "align" in e.message


@pytest.mark.parametrize("size,align", [(3 * M, M2), (K4 + 1, K4), (M2 + K4, 1 << 30),
                                        (0, K4), (-M2, M2)])
def test_create_region_bad_size(bus, size, align):
    fails(errno.EINVAL, bus, P(bus.create_region, size, align))


@pytest.mark.parametrize("align", ALIGNS)
def test_create_region_each_align(bus, align):
    (region,) = apply(bus, P(bus.create_region, align, align))
    assert region.res.start % align == 0 and region.size == align


def test_region_ids(bus):
    a, b = apply(bus, P(bus.create_region, M2), P(bus.create_region, M2))
    assert (a.id, b.id) == (0, 1)
    (c,) = apply(bus, P(bus.create_region, M2, id_=5))
    assert c.id == 5
    (d,) = apply(bus, P(bus.create_region, M2))
    assert d.id == 2, "lowest free id"
    e = fails(errno.EEXIST, bus, P(bus.create_region, M2, id_=5))
    assert "5" in e.message
    fails(errno.EINVAL, bus, P(bus.create_region, M2, id_=-1))
    apply(bus, P(bus.destroy_region, 1))
    (f,) = apply(bus, P(bus.create_region, M2))
    assert f.id == 1


def test_regions_never_overlap_same_align(bus):
    regions = apply(bus, *[P(bus.create_region, M2 * (i + 1)) for i in range(4)])
    spans = sorted((r.res.start, r.res.end) for r in regions)
    for (s1, e1), (s2, e2) in zip(spans, spans[1:]):
        assert e1 <= s2


def test_regions_never_overlap_mixed_align(bus):
    # Region 0 is [0, 2M+4K); region 1 must land 2M-aligned past it.
    a, b = apply(bus, P(bus.create_region, M2 + K4, K4), P(bus.create_region, M2, M2))
    assert b.res.start % M2 == 0
    assert a.res.end <= b.res.start or b.res.end <= a.res.start, (a.res, b.res)


def test_destroy_region_takes_its_unconfigured_devices(bus):
    apply(bus, P(bus.create_region, 4 * M), P(bus.create_seed, 0), P(bus.create_device, 0, M2))
    e = fails(errno.EBUSY, bus, P(bus.destroy_region, 0))
    assert e.message == "region 0 still has devices: dax0.0 (2 MiB (0x200000))"
    fails(errno.ENXIO, bus, P(bus.destroy_region, 3))
    apply(bus, P(bus.disable_device, "dax0.0"), P(bus.resize_device, "dax0.0", 0), P(bus.destroy_region, 0))
    assert bus.layout() == []
    assert len(bus.core) == 0


# --- devices -----------------------------------------------------------------------------


def test_create_device_default_takes_all_available(bus):
    bare_region(bus, 8 * M)
    apply(bus, P(bus.create_device, 0, M2))
    (dev,) = apply(bus, P(bus.create_device, 0))
    assert dev.name == "dax0.1" and dev.size == 6 * M
    assert dev.enabled and dev.dax_dev.alive and dev.dax_dev.private is dev
    assert ranges(dev) == [(M2, 8 * M)]
    assert bus.region(0).available_size == 0
    (empty,) = apply(bus, P(bus.create_device, 0))
    assert empty.size == 0 and not empty.enabled and not empty.dax_dev.alive
    assert bus.layout()[0]["devices"][2]["state"] == "disabled"


def test_create_device_default_counts_what_the_seed_has(bus):
    """A seed sized while disabled is still the seed: a create-device with
    no size enables it with its size and all that is available besides."""
    bare_region(bus, 8 * M)
    apply(bus, P(bus.create_device, 0, M2), P(bus.create_device, 0, 0), P(bus.resize_device, "dax0.1", 4 * M))
    (dev,) = apply(bus, P(bus.create_device, 0))
    assert (dev.name, dev.size, dev.enabled) == ("dax0.1", 6 * M, True)


def test_access_is_the_mounts_then_the_devices_own(memory):
    bus = DaxBus(DaxCore(), memory, access=Access(1000, 100, 0o640))
    apply(bus, P(bus.create_region, 8 * M, K4), P(bus.create_device, 0, M2), P(bus.create_device, 0, M2, uid=7))
    assert [d.access for d in sorted(bus.devices(), key=lambda d: d.name)] == [
        Access(1000, 100, 0o640), Access(7, 100, 0o640)], "the seed and a new device: the mount's; uid given"
    apply(bus, P(bus.set_access, "dax0.0", mode=0o600), P(bus.set_access, "dax0.0", gid=5))
    assert bus.device("dax0.0").access == Access(1000, 5, 0o600)
    apply(bus, P(bus.disable_device, "dax0.0"), P(bus.resize_device, "dax0.0", 2 * M2), P(bus.enable_device, "dax0.0"))
    assert bus.device("dax0.0").access == Access(1000, 5, 0o600), "for the device's life"
    for bad in (dict(mode=0o1777), dict(mode=-1), dict(uid=1 << 32), dict(gid=-1)):
        fails(errno.EINVAL, bus, P(bus.set_access, "dax0.0", uid=1), P(bus.set_access, "dax0.0", **bad))
    assert bus.device("dax0.0").access == Access(1000, 5, 0o600), "a failed batch changes no access"
    d0 = bus.layout()[0]["devices"][0]
    assert (d0["uid"], d0["gid"], d0["mode"]) == (1000, 5, "0600")


def test_create_device_size_zero_is_disabled(bus):
    bare_region(bus, 4 * M)
    (dev,) = apply(bus, P(bus.create_seed, 0))
    assert dev.size == 0 and dev.ranges == [] and not dev.enabled
    assert not dev.dax_dev.alive


def test_create_device_lowest_free_id_and_minor(bus):
    bare_region(bus, 4 * M)
    devs = apply(bus, *[P(bus.create_seed, 0) for _ in range(3)])
    assert [d.name for d in devs] == ["dax0.0", "dax0.1", "dax0.2"]
    assert [d.dax_dev.minor for d in devs] == [0, 1, 2]
    apply(bus, P(bus.destroy_device, "dax0.1"))
    (d,) = apply(bus, P(bus.create_seed, 0))
    assert d.name == "dax0.1" and d.dax_dev.minor == 1


def test_create_device_errors(bus):
    bare_region(bus, 4 * M)
    fails(errno.ENXIO, bus, P(bus.create_device, 1))
    fails(errno.ENOSPC, bus, P(bus.create_device, 0, 6 * M))
    fails(errno.EINVAL, bus, P(bus.create_device, 0, M))  # not 2M-aligned
    fails(errno.EINVAL, bus, P(bus.create_device, 0, M2, 8 << 10))
    # a 4K-aligned device still grows in 2M steps (alloc_is_aligned: memremap_compat_align)
    e = fails(errno.EINVAL, bus, P(bus.create_device, 0, M, K4))
    assert "memremap_compat_align" in e.message
    (dev,) = apply(bus, P(bus.create_device, 0, M2, K4))
    assert dev.align == K4 and dev.size == M2


def test_create_device_no_aligned_room_is_enospc(bus):
    # Region [0, 4M+8K) align 4K: dax0.0 mapped at [4K, 2M+4K) (a mapping's
    # start need not be aligned) leaves 4K and 2M+4K, but no 2M-aligned 2M.
    apply(bus, P(bus.create_region, 4 * M + 2 * K4, K4), P(bus.set_mapping, "dax0.0", K4, K4 + M2 - 1),
          P(bus.enable_device, "dax0.0"))
    assert bus.region(0).available_size == M2 + 2 * K4
    e = fails(errno.ENOSPC, bus, P(bus.create_device, 0, M2, M2))
    assert "aligned" in e.message


def test_create_device_minor_exhaustion(memory):
    bus = DaxBus(DaxCore(2), memory)
    bare_region(bus, 8 * M)
    apply(bus, P(bus.create_device, 0, M2),
          P(bus.create_device, 0, M2))
    e = fails(errno.ENOSPC, bus, P(bus.create_device, 0, M2))
    assert "minor" in e.message
    assert bus.region(0).available_size == 4 * M
    # a minor comes back when a device goes
    apply(bus, P(bus.disable_device, "dax0.0"), P(bus.destroy_device, "dax0.0"))
    (dev,) = apply(bus, P(bus.create_device, 0, M2))
    assert dev.name == "dax0.0" and dev.dax_dev.minor == 0


# --- resize --------------------------------------------------------------------------------------


def test_resize_busy_while_enabled(bus):
    bare_region(bus, 8 * M)
    apply(bus, P(bus.create_device, 0, M2))
    fails(errno.EBUSY, bus, P(bus.resize_device, "dax0.0", 4 * M))
    fails(errno.ENXIO, bus, P(bus.resize_device, "dax0.7", 4 * M))


def test_resize_misaligned(bus):
    bare_region(bus, 8 * M)
    apply(bus, P(bus.create_seed, 0))
    fails(errno.EINVAL, bus, P(bus.resize_device, "dax0.0", M))
    fails(errno.ENOSPC, bus, P(bus.resize_device, "dax0.0", 10 * M))


def test_grow_extends_adjacent_last_range(bus):
    bare_region(bus, 8 * M)
    apply(bus, P(bus.create_seed, 0),
          P(bus.resize_device, "dax0.0", M2))
    assert ranges(bus.device("dax0.0")) == [(0, M2)]
    apply(bus, P(bus.resize_device, "dax0.0", 6 * M))
    assert ranges(bus.device("dax0.0")) == [(0, 6 * M)]
    assert bus.region(0).available_size == M2


def test_grow_into_hole_adds_range(bus):
    dev = hole_device(bus)
    assert dev.size == 4 * M
    assert bus.region(0).available_size == 4 * M
    layout = bus.layout()[0]["devices"]
    assert [d["name"] for d in layout] == ["dax0.0", "dax0.2"]
    assert layout[1]["ranges"] == [{"start": M2, "end": 4 * M - 1, "page_offset": 0},
                                   {"start": 0, "end": M2 - 1, "page_offset": M2}]
    # no more holes below: the next grow takes [4M, 6M) as a third range
    apply(bus, P(bus.resize_device, "dax0.2", 6 * M))
    assert ranges(dev) == [(M2, 4 * M), (0, M2), (4 * M, 6 * M)]
    # ... and grows that last range in place next time
    apply(bus, P(bus.resize_device, "dax0.2", 8 * M))
    assert ranges(dev) == [(M2, 4 * M), (0, M2), (4 * M, 8 * M)]


def test_grow_takes_lower_hole_before_adjacent_one(bus):
    """First fit in address order (as the kernel's dev_dax_resize): the free
    space at the region start comes before the space after the last range."""
    bare_region(bus, 8 * M)
    apply(bus, P(bus.create_device, 0, M2),
          P(bus.create_device, 0, M2))
    apply(bus, P(bus.disable_device, "dax0.0"), P(bus.destroy_device, "dax0.0"),
          P(bus.disable_device, "dax0.1"), P(bus.resize_device, "dax0.1", 3 * M2))
    assert ranges(bus.device("dax0.1")) == [(M2, 2 * M2), (0, M2), (2 * M2, 3 * M2)]


def test_shrink_trims_from_the_end(bus):
    K = 512 << 10  # a "K" of this test: a quarter of the 2M step, as 1K is of a 4K page
    bare_region(bus, 64 * K, K4)
    apply(bus,
          P(bus.create_device, 0, 8 * K), P(bus.create_device, 0, 8 * K))
    apply(bus, P(bus.disable_device, "dax0.0"), P(bus.destroy_device, "dax0.0"),
          P(bus.disable_device, "dax0.1"), P(bus.resize_device, "dax0.1", 24 * K))
    dev = bus.device("dax0.1")
    assert ranges(dev) == [(8 * K, 16 * K), (0, 8 * K), (16 * K, 24 * K)]
    apply(bus, P(bus.resize_device, "dax0.1", 12 * K))
    assert ranges(dev) == [(8 * K, 16 * K), (0, 4 * K)]
    assert dev.size == 12 * K
    apply(bus, P(bus.resize_device, "dax0.1", 8 * K))
    assert ranges(dev) == [(8 * K, 16 * K)]
    apply(bus, P(bus.resize_device, "dax0.1", 0))
    assert ranges(dev) == [] and dev.size == 0
    assert bus.region(0).available_size == 64 * K
    fails(errno.ENXIO, bus, P(bus.enable_device, "dax0.1"))


def test_resize_to_same_size_is_noop(bus, events):
    dev = hole_device(bus)
    before = bus.layout()
    events.clear()
    apply(bus, P(bus.resize_device, "dax0.2", dev.size))
    assert bus.layout() == before
    assert events == [("resized", "dax0.2", False)]


# --- set_align -----------------------------------------------------------------------------------------


def test_set_align(bus):
    apply(bus, P(bus.create_region, 8 * M, K4), P(bus.set_mapping, "dax0.0", K4, K4 + M2 - 1),
          P(bus.enable_device, "dax0.0"),
          P(bus.create_device, 0, M2, K4))
    fails(errno.EBUSY, bus, P(bus.set_align, "dax0.1", M2))
    apply(bus, P(bus.disable_device, "dax0.0"), P(bus.disable_device, "dax0.1"))
    fails(errno.EINVAL, bus, P(bus.set_align, "dax0.1", 3 * M))
    # dev_dax_validate_align: each range's length against the new align, not its start
    e = fails(errno.EINVAL, bus, P(bus.set_align, "dax0.0", 1 << 30))
    assert "long" in e.message
    apply(bus, P(bus.set_align, "dax0.0", M2))
    assert ranges(bus.device("dax0.0")) == [(K4, K4 + M2)], "its start stays off the new align"
    fails(errno.ENXIO, bus, P(bus.set_align, "dax0.9", K4))
    apply(bus, P(bus.resize_device, "dax0.0", 0), P(bus.resize_device, "dax0.1", 0),
          P(bus.resize_device, "dax0.1", M2), P(bus.set_align, "dax0.1", M2))
    dev = bus.device("dax0.1")
    assert dev.align == M2 and ranges(dev) == [(0, M2)]
    assert bus.layout()[0]["devices"][1]["align"] == M2
    fails(errno.EINVAL, bus, P(bus.resize_device, "dax0.1", M2 + K4))


# --- disable / enable ------------------------------------------------------------------------------------


def test_disable_enable(bus, events):
    bare_region(bus, 4 * M)
    apply(bus, P(bus.create_device, 0, M2))
    dev = bus.device("dax0.0")
    events.clear()
    apply(bus, P(bus.disable_device, "dax0.0"))
    assert not dev.enabled and not dev.dax_dev.alive and dev.dax_dev.private is None
    assert events == [("disabling", "dax0.0", True), ("disabled", "dax0.0", False)]
    apply(bus, P(bus.disable_device, "dax0.0"))  # idempotent
    assert events == [("disabling", "dax0.0", True), ("disabled", "dax0.0", False)]
    assert bus.layout()[0]["devices"][0]["state"] == "disabled"

    events.clear()
    apply(bus, P(bus.enable_device, "dax0.0"))
    assert dev.enabled and dev.dax_dev.alive and dev.dax_dev.private is dev
    assert events == [("enabled", "dax0.0", True)]
    apply(bus, P(bus.enable_device, "dax0.0"))  # idempotent
    assert events == [("enabled", "dax0.0", True)]
    assert dev.dax_dev.minor == 0, "disable/enable keep the minor"
    fails(errno.ENXIO, bus, P(bus.enable_device, "dax1.0"))
    fails(errno.ENXIO, bus, P(bus.disable_device, "nonsense"))


def test_enable_size_zero_is_enxio(bus):
    bare_region(bus, 4 * M)
    apply(bus, P(bus.create_seed, 0))
    e = fails(errno.ENXIO, bus, P(bus.enable_device, "dax0.0"))
    assert "size 0" in e.message


def test_a_disabled_region_keeps_its_devices_down_until_it_is_enabled(bus, events):
    """ndctl disable-region: every device goes down and none comes up or
    changes shape (ENXIO) until enable-region, which brings up every device
    with a size, as the kernel probes its namespaces afresh."""
    bare_region(bus, 8 * M)
    apply(bus, P(bus.create_device, 0, M2), P(bus.create_device, 0, M2), P(bus.create_seed, 0))
    apply(bus, P(bus.disable_device, "dax0.1"))
    events.clear()
    apply(bus, P(bus.disable_region, 0))
    assert not bus.region(0).enabled and not any(d.enabled for d in bus.devices())
    assert events == [("disabling", "dax0.0", True), ("disabled", "dax0.0", False)]
    for op in (P(bus.enable_device, "dax0.0"), P(bus.create_device, 0, M2), P(bus.create_seed, 0),
               P(bus.resize_device, "dax0.1", 2 * M2), P(bus.set_align, "dax0.1", K4),
               P(bus.set_mapping, "dax0.2", 4 * M2, 5 * M2 - 1)):
        assert "disabled" in fails(errno.ENXIO, bus, op).message
    apply(bus, P(bus.disable_region, 0))  # idempotent
    apply(bus, P(bus.destroy_device, "dax0.2"))  # taking apart is allowed
    apply(bus, P(bus.enable_region, 0))
    assert [d.name for d in bus.devices() if d.enabled] == ["dax0.0", "dax0.1"]
    fails(errno.ENXIO, bus, P(bus.disable_region, 7))


def test_the_dimm_is_busy_while_a_region_maps_it(bus):
    """Labels are written, and the DIMM unbound, only while no region is
    enabled (the kernel's nvdimm->busy); a region needs its DIMM bound."""
    bare_region(bus, 8 * M)
    assert bus.dimm_busy
    fails(errno.EBUSY, bus, P(bus.write_labels, 0, b"label"))
    fails(errno.EBUSY, bus, bus.disable_dimm)
    apply(bus, P(bus.disable_region, 0), bus.disable_dimm)
    assert not bus.dimm_busy and not bus.dimm.enabled
    fails(errno.ENXIO, bus, P(bus.enable_region, 0))
    apply(bus, P(bus.write_labels, LABEL_SIZE - 5, b"label"))
    assert bus.dimm.label_area[-5:] == b"label"
    for offset, data in ((LABEL_SIZE - 4, b"label"), (-1, b"x"), (LABEL_SIZE, b"x")):
        fails(errno.EINVAL, bus, P(bus.write_labels, offset, data))
    fails(errno.EINVAL, bus, P(bus.write_labels, 0, b"ok"), P(bus.write_labels, LABEL_SIZE, b"x"))
    assert bus.dimm.label_area[:2] == bytes(2), "a failed batch writes no label"
    apply(bus, bus.enable_dimm, P(bus.enable_region, 0))
    assert bus.dimm_busy


def test_device_pages_are_offlined_as_the_kernel_offlines_them(bus):
    """hard_offline_page poisons the page (memory_failure); soft_offline_page
    fails with EIO (device memory is never online); outside every region,
    neither is the bus's: the host's memory is not daxfuse's to offline."""
    bare_region(bus, 8 * M)
    apply(bus, P(bus.create_device, 0, M2))
    fails(errno.EIO, bus, P(bus.offline_page, 4096, False))
    fails(errno.EOPNOTSUPP, bus, P(bus.offline_page, 8 * M, True))
    apply(bus, P(bus.offline_page, 4096 + 100, True))
    assert bus.device_badblocks(bus.device("dax0.0")) == [(8, 8)]
    assert bus.injected.ranges() == [], "memory failure is no ARS injection"


def test_disabled_event_sees_dead_device_and_kill_waits(bus, memory):
    """By "disabled" the device is dead and kill_dax has waited for readers."""
    bare_region(bus, 4 * M)
    apply(bus, P(bus.create_device, 0, M2))
    dev = bus.device("dax0.0")
    log = []

    async def main():
        holding = trio.Event()
        release = trio.Event()

        async def listener(event, d):
            if type(d) is not DevDax:
                return
            log.append((event.value, d.dax_dev.alive, d.dax_dev.private is d))
            if event is Event.DISABLING:
                release.set()

        bus.listeners.append(listener)

        async def reader():
            with bus.core.read_locked():
                assert bus.core.dax_alive(dev.dax_dev)
                holding.set()
                await release.wait()
                await trio.sleep(0.05)
                log.append(("reader done",))

        async with trio.open_nursery() as n:
            n.start_soon(reader)
            await holding.wait()
            await bus.apply([P(bus.disable_device, "dax0.0")])

    trio.run(main)
    assert log == [("disabling", True, True), ("reader done",), ("disabled", False, False)]


@pytest.mark.logs_errors
def test_listener_errors_are_contained(bus, events, caplog):
    async def bad(event, dev):
        raise RuntimeError("listener bug")

    bus.listeners.insert(0, bad)
    bare_region(bus, 4 * M)
    events.clear()
    apply(bus, P(bus.create_device, 0, M2))
    assert events == [("added", "dax0.0", False), ("resized", "dax0.0", False), ("enabled", "dax0.0", True)]
    assert "listener failed" in caplog.text


def test_batch_events_in_order(bus, events):
    bare_region(bus, 8 * M)
    events.clear()
    apply(bus, P(bus.create_device, 0, M2),
          P(bus.disable_device, "dax0.0"), P(bus.resize_device, "dax0.0", 4 * M),
          P(bus.enable_device, "dax0.0"), P(bus.create_seed, 0),
          P(bus.destroy_device, "dax0.1"))
    assert [e[:2] for e in events] == [
        ("added", "dax0.0"), ("resized", "dax0.0"), ("enabled", "dax0.0"), ("disabling", "dax0.0"),
        ("disabled", "dax0.0"),
        ("resized", "dax0.0"), ("enabled", "dax0.0"), ("added", "dax0.1"),
        ("removed", "dax0.1")]
    dev = bus.device("dax0.0")
    assert dev.enabled and dev.dax_dev.alive and dev.size == 4 * M
    assert len(bus.core) == 1


# --- destroy -----------------------------------------------------------------------------------------


def test_destroy_device(bus, events):
    bare_region(bus, 4 * M)
    apply(bus, P(bus.create_device, 0, M2))
    dev = bus.device("dax0.0")
    fails(errno.EBUSY, bus, P(bus.destroy_device, "dax0.0"))
    fails(errno.ENXIO, bus, P(bus.destroy_device, "dax0.5"))
    events.clear()
    apply(bus, P(bus.disable_device, "dax0.0"), P(bus.destroy_device, "dax0.0"))
    assert events[-1] == ("removed", "dax0.0", False)
    with pytest.raises(DaxError) as ei:
        bus.device("dax0.0")
    assert ei.value.errno == errno.ENXIO
    assert len(bus.core) == 0 and dev.dax_dev.refs == 0
    assert bus.region(0).available_size == 4 * M


def test_destroy_keeps_minor_while_referenced(bus, memory):
    bare_region(bus, 4 * M)
    apply(bus, P(bus.create_device, 0, M2))
    dev = bus.device("dax0.0")
    f = DaxFile(bus, dev.dax_dev)
    apply(bus, P(bus.disable_device, "dax0.0"), P(bus.destroy_device, "dax0.0"))
    assert len(bus.core) == 1 and dev.dax_dev.refs == 1, "the open file still references it"
    (new,) = apply(bus, P(bus.create_device, 0, M2))
    assert new.name == "dax0.0", "device ids are per region and free again"
    assert new.dax_dev.minor == 1, "minor 0 must not be reused while referenced"
    with pytest.raises(DaxError) as ei:
        trio.run(f.read, 0, 10)
    assert ei.value.errno == errno.ENXIO
    f.release()
    assert len(bus.core) == 1, "only the new device is left"
    (third,) = apply(bus, P(bus.create_seed, 0))
    assert third.dax_dev.minor == 0


# --- batch atomicity --------------------------------------------------------------------------------


def test_batch_failing_third_op_changes_nothing(bus, events):
    dev = hole_device(bus)
    apply(bus, P(bus.enable_device, "dax0.2"))
    events.clear()
    fails(errno.ENXIO, bus,
          P(bus.create_device, 0, M2),
          P(bus.create_seed, 0),
          P(bus.resize_device, "dax0.9", M2))
    fails(errno.EBUSY, bus,
          P(bus.destroy_device, "dax0.0"),
          P(bus.create_seed, 0),
          P(bus.destroy_device, "dax0.2"))
    fails(errno.ENOSPC, bus,
          P(bus.resize_device, "dax0.0", M2),
          P(bus.set_align, "dax0.0", K4),
          P(bus.resize_device, "dax0.0", 6 * M))
    fails(errno.EEXIST, bus,
          P(bus.create_region, M2),
          P(bus.destroy_device, "dax0.0"),
          P(bus.create_region, M2, id_=0))
    assert events == [], "no side effects from failed batches"
    assert dev.enabled and dev.dax_dev.alive and dev.dax_dev.private is dev
    assert bus.device("dax0.0").align == M2
    # nothing leaked: the next device gets the lowest free id and minor (the
    # ones dax0.1 left), as if the failed batches never ran
    (new,) = apply(bus, P(bus.create_seed, 0))
    assert new.name == "dax0.1" and new.dax_dev.minor == 1
    (new,) = apply(bus, P(bus.create_seed, 0))
    assert new.name == "dax0.3" and new.dax_dev.minor == 3


def test_failed_batch_frees_minors_it_took(memory):
    bus = DaxBus(DaxCore(3), memory)
    bare_region(bus, 8 * M)
    fails(errno.ENOSPC, bus, *[P(bus.create_seed, 0) for _ in range(4)])
    devs = apply(bus, *[P(bus.create_seed, 0) for _ in range(3)])
    assert [d.dax_dev.minor for d in devs] == [0, 1, 2]


# --- DaxFile --------------------------------------------------------------------------------------------


def test_daxfile_two_ranges(bus, memory):
    dev = hole_device(bus)
    apply(bus, P(bus.enable_device, "dax0.2"))
    f = DaxFile(bus, dev.dax_dev)
    assert dev.dax_dev.refs == 2
    size = dev.size
    data = bytes(np.random.default_rng(1).integers(0, 256, 300, dtype=np.uint8))
    # device [2M-100, 2M+200) = phys [4M-100, 4M) + phys [0, 200)
    assert trio.run(f.write, M2 - 100, data) == 300
    assert bytes(memory.read(2 * M2 - 100, 100)) == data[:100]
    assert bytes(memory.read(0, 200)) == data[100:]
    assert bytes(trio.run(f.read, M2 - 100, 300)) == data
    assert bytes(trio.run(f.read, M2, 200)) == data[100:]  # within the second range only
    assert bytes(trio.run(f.read, 0, 4)) == bytes(memory.read(M2, 4))

    # phys write shows up at the right device offset
    memory.write(M2 + 7, b"hello")
    assert bytes(trio.run(f.read, 7, 5)) == b"hello"

    # the end of the device is phys 2M (end of the second range)
    with pytest.raises(DaxError) as ei:
        trio.run(f.write, size, b"x")
    assert ei.value.errno == errno.ENOSPC
    with pytest.raises(DaxError) as ei:
        trio.run(f.write, size + 4096, b"x")
    assert ei.value.errno == errno.ENOSPC
    assert trio.run(f.write, size, b"") == 0
    before_next = bytes(memory.read(M2, 90))
    assert trio.run(f.write, size - 10, b"E" * 100) == 10, "short write at the end"
    assert bytes(memory.read(M2 - 10, 10)) == b"E" * 10
    assert bytes(memory.read(M2, 90)) == before_next, "nothing past the end"
    assert bytes(trio.run(f.read, size - 10, 100)) == b"E" * 10
    assert bytes(trio.run(f.read, size, 10)) == b""
    assert bytes(trio.run(f.read, size + M2, 10)) == b""
    trio.run(f.fsync)

    # disabled: every operation is ENXIO; enabled again: back, data kept
    apply(bus, P(bus.disable_device, "dax0.2"))
    for op in (lambda: trio.run(f.read, 0, 1), lambda: trio.run(f.write, 0, b"z"), lambda: trio.run(f.fsync),
               lambda: DaxFile(bus, dev.dax_dev)):
        with pytest.raises(DaxError) as ei:
            op()
        assert ei.value.errno == errno.ENXIO
    assert not bus.core.srcu.held(), "failed operations drop the read lock"
    apply(bus, P(bus.enable_device, "dax0.2"))
    assert bytes(trio.run(f.read, M2 - 100, 300)) == data
    assert trio.run(f.write, 0, b"again") == 5
    assert bytes(memory.read(M2, 5)) == b"again"
    f.release()
    assert dev.dax_dev.refs == 1


def test_daxfile_sees_resize(bus, memory):
    dev = hole_device(bus)
    apply(bus, P(bus.resize_device, "dax0.2", M2), P(bus.enable_device, "dax0.2"))
    f = DaxFile(bus, dev.dax_dev)
    assert bytes(trio.run(f.read, M2, 1)) == b""
    with pytest.raises(DaxError):
        trio.run(f.write, M2, b"x")
    apply(bus, P(bus.disable_device, "dax0.2"), P(bus.resize_device, "dax0.2", 2 * M2),
          P(bus.enable_device, "dax0.2"))
    assert trio.run(f.write, M2, b"y") == 1
    assert bytes(memory.read(0, 1)) == b"y"
    f.release()


# --- stateful: random batches keep every invariant --------------------------------------------------------

R0 = (16 * M, K4)       # region 0: 16M, align 4K (2M steps all the same)
R1 = (8 * M, M2)        # region 1: 8M, align 2M
UNITS = (K4, M2)

NAME = st.integers(0, 20)  # index into the current devices; 20 = a bogus name
DISABLE_FIRST = st.booleans()

op_strategy = st.one_of(
    st.tuples(st.just("create"), st.sampled_from([0, 0, 1, 1, 2]),
              st.one_of(st.none(), st.integers(0, 5)), st.sampled_from(UNITS),
              st.sampled_from([None, None, K4, M2])),
    st.tuples(st.just("resize"), NAME, DISABLE_FIRST, st.integers(0, 5),
              st.sampled_from([None, None, K4, M2])),
    st.tuples(st.just("disable"), NAME),
    st.tuples(st.just("enable"), NAME),
    st.tuples(st.just("destroy"), NAME, DISABLE_FIRST),
    st.tuples(st.just("set_align"), NAME, DISABLE_FIRST, st.sampled_from(ALIGNS)),
    st.tuples(st.just("set_access"), NAME, st.integers(0, 3), st.sampled_from([None, 0o600, 0o660, 0o1000])),
    st.tuples(st.sampled_from(["disable_region", "enable_region"]), st.sampled_from([0, 1, 2])),
    st.tuples(st.sampled_from(["disable_dimm", "enable_dimm"])),
    st.tuples(st.just("write_labels"), st.sampled_from([0, 4096, LABEL_SIZE - 8, LABEL_SIZE]), st.binary(max_size=16)),
)


class BusMachine(RuleBasedStateMachine):
    @initialize()
    def init(self):
        self.memory = MemoryFile()
        self.bus = DaxBus(DaxCore(8), self.memory)
        self.events = []

        async def listener(event, dev):
            self.events.append(event)

        self.bus.listeners.append(listener)
        bus = self.bus
        apply(bus, P(bus.create_region, *R0), P(bus.create_region, *R1),
              P(bus.create_device, 0, 2 * M2), P(bus.create_device, 1, M2),
              P(bus.create_device, 1, 0))

    def teardown(self):
        if hasattr(self, "memory"):
            self.memory.close()

    def _ops(self, spec):
        """One spec -> one op, or disable + op for ops that need it."""
        bus, kind = self.bus, spec[0]
        if kind == "create":
            _, region, units, unit, align = spec
            size = None if units is None else units * unit
            return [P(bus.create_device, region, size, align)]
        if kind in ("disable_region", "enable_region", "disable_dimm", "enable_dimm", "write_labels"):
            return [P(getattr(bus, kind), *spec[1:])]
        devs = sorted(bus.devices(), key=lambda d: d.name)
        dev = devs[spec[1] % len(devs)] if devs and spec[1] < 20 else None
        name = dev.name if dev else "dax0.99"
        pre = [P(bus.disable_device, name)] if len(spec) > 2 and spec[2] else []
        if kind == "resize":
            unit = spec[4] or (dev.align if dev else K4)
            return pre + [P(bus.resize_device, name, spec[3] * unit)]
        if kind == "set_align":
            return pre + [P(bus.set_align, name, spec[3])]
        if kind == "set_access":
            return [P(bus.set_access, name, uid=spec[2], mode=spec[3])]
        return pre + [P(getattr(bus, f"{kind}_device"), name)]

    @rule(specs=st.lists(op_strategy, min_size=1, max_size=4))
    def batch(self, specs):
        ops = [op for spec in specs for op in self._ops(spec)]
        before, labels, dimm = self.bus.layout(), bytes(self.bus.dimm.label_area), self.bus.dimm.enabled
        n_minors = len(self.bus.core)
        seed = seeds(self.bus)
        self.events.clear()
        try:
            results = apply(self.bus, *ops)
        except DaxError as e:
            assert e.errno in (errno.EINVAL, errno.ENOSPC, errno.ENXIO, errno.EBUSY), e
            assert self.bus.layout() == before, "failed batch changed the layout"
            assert (bytes(self.bus.dimm.label_area), self.bus.dimm.enabled) == (labels, dimm), "or the DIMM"
            assert len(self.bus.core) == n_minors
            assert seeds(self.bus) == seed
            assert self.events == []
            return
        assert len(results) == len(ops)
        if len(ops) == 1:
            self._postcondition(ops[0], results[0])

    def _postcondition(self, op, result):
        bus = self.bus
        name = op.func.__name__
        if name == "create_device":
            assert result.region.devices[result.id] is result
            assert result.enabled == (result.size > 0)
            if op.args[1] is not None:
                assert result.size == op.args[1]
        elif name == "resize_device":
            assert bus.device(op.args[0]).size == op.args[1]
        elif name == "disable_device":
            assert not bus.device(op.args[0]).enabled
        elif name == "enable_device":
            assert bus.device(op.args[0]).enabled
        elif name == "destroy_device":
            with pytest.raises(DaxError):
                bus.device(op.args[0])
        elif name == "set_align":
            assert bus.device(op.args[0]).align == op.args[1]
        elif name == "set_access":
            access = bus.device(op.args[0]).access
            assert access.uid == op.keywords["uid"] and op.keywords["mode"] in (None, access.mode)
        elif name == "disable_region":
            region = bus.region(op.args[0])
            assert not region.enabled and not any(d.enabled for d in region.devices.values())
        elif name == "enable_region":
            assert bus.region(op.args[0]).enabled
        elif name in ("disable_dimm", "enable_dimm"):
            assert bus.dimm.enabled == (name == "enable_dimm") and not (bus.dimm_busy and not bus.dimm.enabled)
        elif name == "write_labels":
            offset, data = op.args
            assert not bus.dimm_busy and bus.dimm.label_area[offset:offset + len(data)] == data

    @invariant()
    def recorded_layout_restores_exactly(self):
        """What a persistent memory file records brings this very layout back."""
        if not hasattr(self, "bus"):
            return
        record = json.loads(json.dumps(LayoutStore("unused").snapshot(self.bus)))
        check_record(record)
        memory = MemoryFile()
        try:
            again = DaxBus(DaxCore(8), memory)
            LayoutStore("unused").restore(again, record)
            assert without_minors(again.layout()) == without_minors(self.bus.layout())
            ids = lambda bus: {r: tuple(d and d.id for d in pair) for r, pair in seeds(bus).items()}
            assert ids(again) == ids(self.bus)
            assert again.dimm.label_area == self.bus.dimm.label_area
        finally:
            memory.close()

    @invariant()
    def consistent(self):
        if not hasattr(self, "bus"):
            return
        bus, core = self.bus, self.bus.core
        every = []
        minors = set()
        for region in bus.regions.values():
            assert self.memory.size >= region.res.end
            used = 0
            for dev_id, dev in region.devices.items():
                assert dev.id == dev_id and dev.region is region
                assert dev.size == sum(r.size for r in dev.ranges)
                assert dev.size % dev.align == 0
                assert dev.page_offsets() == [sum(r.size for r in dev.ranges[:i])
                                              for i in range(len(dev.ranges))]
                for r in dev.ranges:
                    assert r.size > 0
                    assert region.res.start <= r.start < r.end <= region.res.end
                    assert r.start % dev.align == 0 and r.size % dev.align == 0
                    every.append(r)
                used += dev.size
                assert dev.enabled == dev.dax_dev.alive
                assert not dev.enabled or dev.size > 0
                if dev.dax_dev.alive:
                    assert dev.dax_dev.private is dev
                assert dev.dax_dev.refs == 1
                minors.add(dev.dax_dev.minor)
            assert region.available_size == region.size - used >= 0
            held = sorted((r for d in region.devices.values() for r in d.ranges), key=lambda r: r.start)
            edges = [region.res.start] + [x for r in held for x in (r.start, r.end)] + [region.res.end]
            holes = [Range(a, b) for a, b in zip(edges[::2], edges[1::2]) if b > a]
            assert region.free == holes, "the free map is what no device holds"
            # seed: a present, unbound device or none; youngest: present or none
            assert region.seed is None or region.devices.get(region.seed.id) is region.seed
            assert region.seed is None or not region.seed.enabled
            assert region.youngest is None or region.devices.get(region.youngest.id) is region.youngest
            assert region.enabled or not any(d.enabled for d in region.devices.values()), "a disabled region's " \
                                                                                         "devices are down"
        assert bus.dimm.enabled or not bus.dimm_busy, "an enabled region maps an enabled DIMM"
        every.sort(key=lambda r: r.start)
        for a, b in zip(every, every[1:]):
            assert a.end <= b.start, f"overlap {a} {b}"
        assert len(core) == len(minors) == sum(len(r.devices) for r in bus.regions.values())
        assert {m: bus.device_of_minor(m) for m in minors} == {d.dax_dev.minor: d for d in bus.devices()}
        assert not core.srcu.held()


TestBusMachine = BusMachine.TestCase
TestBusMachine.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)
