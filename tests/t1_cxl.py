"""The CXL bus without a mount: region assembly as cxl create-region drives
it, the kernel's errno at each step, all-or-nothing batches beside the dax
bus, memdev and port unbinding, the layout record, and routing checked
against a reference model of the interleave rules."""
import errno
import functools
import json
import uuid

import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from conftest import apply
from daxfuse.core import DaxCore
from daxfuse.core.errors import DaxError
from daxfuse.cxl import DEFAULT, DEFAULT_TEXT, GRANULE, CxlBus, parse
from daxfuse.dax import DaxBus
from daxfuse.dax.drivers import KMEM_TYPE
from daxfuse.memory import MemoryFile

P = functools.partial
G = 1 << 30


@pytest.fixture
def cxl(memory):
    bus = DaxBus(DaxCore(64), memory)
    apply(bus, lambda: bus.create_region(G, 2 << 20, 0), lambda: bus.create_device(0))
    cxl = CxlBus(bus, DEFAULT, 1)
    apply(bus, cxl.place_windows)
    return cxl


def state(cxl: CxlBus):
    """Everything a failed batch must leave as it was: the CXL record and the dax layout."""
    return json.dumps(cxl.snapshot(), sort_keys=True), cxl.dax.layout(), sorted(cxl.dax.blocks)


def fails(err, cxl, *ops):
    before = state(cxl)
    with pytest.raises(DaxError) as ei:
        apply(cxl.dax, *ops)
    assert ei.value.errno == err, ei.value
    assert state(cxl) == before, "a failed batch changed something"
    return ei.value


def endpoint(cxl, memdev: int, index: int = None) -> str:
    """The next free endpoint decoder of memN (the one `cxl create-region` picks), by name."""
    m = cxl.memdevs[memdev]
    d = next(d for d in m.endpoint.decoders if not d.dpa_size) if index is None else m.endpoint.decoders[index]
    return d.name


def region_ops(cxl, root: str, memdevs: list[int], size: int, mode: str = "ram", granularity: int = 4096,
               commit: bool = True, bind: bool = True) -> list:
    """What cxl create-region writes, in its order (SPEC: region.c:create_region)."""
    name = f"region{cxl.next_region_id()}"
    ops = [P(cxl.create_region, root, mode, name), P(cxl.set_granularity, name, granularity),
           P(cxl.set_ways, name, len(memdevs))]
    if mode == "pmem":
        ops.append(P(cxl.set_uuid, name, str(uuid.uuid4())))
    ops.append(P(cxl.set_size, name, size))
    decoders = [endpoint(cxl, m) for m in memdevs]
    for d in decoders:
        ops += [P(cxl.set_mode, d, mode), P(cxl.set_dpa_size, d, size // len(memdevs))]
    ops += [P(cxl.set_target, name, i, d) for i, d in enumerate(decoders)]
    if commit:
        ops.append(P(cxl.set_commit, name, True))
    if bind:
        ops.append(P(cxl.bind_region, name))
    return ops


def test_the_default_topology_is_cxl_tests_shape(cxl):
    kinds = [(p.name, p.depth) for p in cxl.ports.values()]
    assert kinds[:4] == [("root0", 0), ("port1", 1), ("port2", 1), ("port3", 1)]
    assert sum(1 for _, depth in kinds if depth == 2) == 5 and sum(1 for _, depth in kinds if depth == 3) == 10
    assert [(d.size // G, d.ways, d.ram, d.pmem) for d in cxl.root.decoders] == [
        (1, 1, True, False), (2, 2, True, False), (1, 1, False, True), (2, 2, False, True), (1, 1, False, True)]
    assert all((m.ram, m.pmem) == (G, G) for m in cxl.memdevs.values())
    windows = cxl.windows()
    assert all(a.end <= b.start for a, b in zip(windows, windows[1:])) and windows[0].start >= G
    assert all(w.start % min(G, w.size) == 0 for w in windows)


def test_a_ram_region_across_two_host_bridges_is_a_kmem_dax_region_at_its_hpa(cxl):
    apply(cxl.dax, *region_ops(cxl, "decoder0.1", [0, 4], 2 * G))
    region = cxl.regions[1]
    root = cxl.root.decoders[1]
    assert (region.start, region.size, region.committed, region.bound) == (root.start, 2 * G, True, True)
    dax_region = cxl.dax.regions[1]
    assert (dax_region.res.start, dax_region.size, dax_region.type, dax_region.target_node) == \
        (root.start, 2 * G, KMEM_TYPE, root.node)
    dev = cxl.dax.device("dax1.0")
    assert (dev.size, dev.driver) == (2 * G, "kmem")
    # each host bridge routes its one position; every decoder on the way commits
    decoders = {d.name: (d.ways, d.granularity, d.committed) for d in cxl.decoders_of(region)} \
        if hasattr(cxl, "_decoders") else {}
    assert all(c for _, _, c in decoders.values())
    assert [cxl.memdevs[m].endpoint.decoders[0].dpa_size for m in (0, 4)] == [G, G]


def test_eight_ways_under_a_two_way_window_routes_as_cxl_region_sysfs_checks(cxl):
    """ndctl's cxl-region-sysfs.sh: positions ordered by host bridge, then by
    each port's dports; host bridge decoders interleave 2 ways at root ig <<
    1, switches 2 ways at << 2, endpoints 8 ways at the region's."""
    order = [0, 4, 2, 6, 1, 5, 3, 7]  # position p: bridge p % 2, root port (p / 2) % 2, switch dport (p / 4) % 2
    apply(cxl.dax, *region_ops(cxl, "decoder0.3", order, 2 * G, mode="pmem", bind=False))
    region = cxl.regions[1]
    for d in cxl.decoders_of(region):
        depth = d.port.depth
        expect = (8, 4096) if d.kind == "endpoint" else (2, 4096 << depth)
        assert (d.ways, d.granularity, d.start, d.size) == (*expect, region.start, region.size), d.name
    assert len([d for d in cxl.decoders_of(region) if d.kind == "switch"]) == 6


@pytest.mark.parametrize("setup, op, err", [
    # interleave misconfigured
    (lambda c: [], lambda c: [P(c.create_region, "decoder0.1", "ram", "region1"),
                              P(c.set_granularity, "region1", 256)], errno.EINVAL),
    (lambda c: [], lambda c: [P(c.create_region, "decoder0.1", "ram", "region1"),
                              P(c.set_ways, "region1", 3)], errno.EINVAL),
    (lambda c: [], lambda c: [P(c.create_region, "decoder0.0", "ram", "region1"),
                              P(c.set_granularity, "region1", 3000)], errno.EINVAL),
    (lambda c: [], lambda c: region_ops(c, "decoder0.1", [0, 1], G), errno.ENXIO),  # both behind bridge 0
    (lambda c: [], lambda c: region_ops(c, "decoder0.1", [4, 0], G), errno.ENXIO),  # bridge 1 at position 0
    (lambda c: [], lambda c: region_ops(c, "decoder0.1", [0], G), errno.EINVAL),  # 1 way under a 2-way window
    # out of capacity: HPA (ERANGE) and DPA (ENOSPC)
    (lambda c: [], lambda c: region_ops(c, "decoder0.0", [0], 2 * G), errno.ERANGE),
    (lambda c: region_ops(c, "decoder0.0", [0], G // 2),
     lambda c: [P(c.set_mode, endpoint(c, 0), "ram"), P(c.set_dpa_size, endpoint(c, 0), G)], errno.ENOSPC),
    # the wrong kind of window, order, and state
    (lambda c: [], lambda c: [P(c.create_region, "decoder0.2", "ram", "region1")], errno.EOPNOTSUPP),
    (lambda c: [], lambda c: [P(c.create_region, "decoder0.0", "ram", "region7")], errno.EBUSY),
    (lambda c: [], lambda c: [P(c.set_mode, endpoint(c, 0, 1), "ram"),
                              P(c.set_dpa_size, endpoint(c, 0, 1), GRANULE)], errno.EBUSY),  # decoder .1 before .0
    (lambda c: [], lambda c: [P(c.set_dpa_size, endpoint(c, 0), GRANULE)], errno.EBUSY),  # no mode yet
    (lambda c: [], lambda c: [P(c.set_mode, endpoint(c, 0), "ram"), P(c.set_dpa_size, endpoint(c, 0), 4096)],
     errno.EINVAL),
    (lambda c: [], lambda c: [P(c.set_mode, endpoint(c, 0), "cxl")], errno.EINVAL),
    (lambda c: [], lambda c: region_ops(c, "decoder0.0", [0], G, commit=False, bind=True), errno.ENXIO),
    (lambda c: [], lambda c: region_ops(c, "decoder0.0", [0], G)[:3] + [P(c.set_commit, "region1", True)],
     errno.ENXIO),
    (lambda c: [], lambda c: [P(c.create_region, "decoder0.0", "ram", "region1"),
                              P(c.set_size, "region1", G)], errno.ENXIO),  # no ways yet
    (lambda c: [], lambda c: [P(c.set_target, "region9", 0, "decoder9.0")], errno.ENODEV),
    (lambda c: region_ops(c, "decoder0.0", [0], G // 2),
     lambda c: [P(c.set_dpa_size, endpoint(c, 0, 0), 0)], errno.EBUSY),  # in a region
    (lambda c: region_ops(c, "decoder0.0", [0], G // 2),
     lambda c: [P(c.set_target, "region1", 0, "")], errno.EBUSY),  # committed
    (lambda c: region_ops(c, "decoder0.0", [0], G // 2), lambda c: [P(c.enable_memdev, "mem0")], errno.EBUSY),
    (lambda c: [P(c.disable_port, "port1")], lambda c: [P(c.enable_memdev, "mem0")], errno.ENXIO),
    (lambda c: [], lambda c: [P(c.disable_port, "root0")], errno.ENODEV),
    # names are matched exactly: no leading zero, no other digits
    (lambda c: [], lambda c: [P(c.set_mode, "decoder09.0", "ram")], errno.ENODEV),
    (lambda c: [], lambda c: [P(c.set_mode, "decoder9.\u0663", "ram")], errno.ENODEV),
    (lambda c: [], lambda c: [P(c.disable_memdev, "mem\u0663")], errno.ENODEV),
    (lambda c: region_ops(c, "decoder0.0", [0], G // 2, bind=False),
     lambda c: [P(c.bind_region, "region01")], errno.ENODEV),
])
def test_each_step_fails_with_the_kernels_errno_and_changes_nothing(cxl, setup, op, err):
    ops = setup(cxl)
    if ops:
        apply(cxl.dax, *ops)
    fails(err, cxl, *op(cxl))


def test_a_batch_failing_at_its_last_step_leaves_no_region_no_dpa_and_no_dax_region(cxl):
    ops = region_ops(cxl, "decoder0.1", [0, 4], 2 * G)
    fails(errno.ENXIO, cxl, *ops, P(cxl.set_target, "region1", 5, "decoder9.1"))
    assert not cxl.regions and 1 not in cxl.dax.regions
    assert cxl.next_region_id() == 1


def test_region_ids_are_one_space_with_dax_regions(cxl):
    apply(cxl.dax, *region_ops(cxl, "decoder0.0", [0], G // 2, bind=False))
    created = apply(cxl.dax, lambda: cxl.dax.create_region(64 << 20))[0]
    assert created.id == 2, "region1 is held by the CXL region, unbound as it is"
    fails(errno.EEXIST, cxl, lambda: cxl.dax.create_region(64 << 20, id_=1))
    assert all(w.start >= created.res.end or w.end <= created.res.start for w in cxl.windows())
    apply(cxl.dax, P(cxl.bind_region, "region1"))
    assert cxl.dax.regions[1].res.start == cxl.regions[1].start


def test_unbinding_a_region_with_online_kmem_memory_is_ebusy(cxl):
    apply(cxl.dax, *region_ops(cxl, "decoder0.0", [0], G // 2))
    blocks = cxl.dax.device_blocks(cxl.dax.device("dax1.0"))
    apply(cxl.dax, P(cxl.dax.set_block_state, blocks[0], "online_movable"))
    fails(errno.EBUSY, cxl, P(cxl.unbind_region, "region1"))
    fails(errno.EBUSY, cxl, P(cxl.disable_memdev, "mem0"))
    fails(errno.EBUSY, cxl, P(cxl.set_commit, "region1", False))
    apply(cxl.dax, P(cxl.dax.set_block_state, blocks[0], "offline"), P(cxl.unbind_region, "region1"))
    assert 1 not in cxl.dax.regions and not cxl.regions[1].bound and cxl.regions[1].committed


def test_destroying_and_recreating_a_region_finds_the_same_memory(cxl):
    apply(cxl.dax, *region_ops(cxl, "decoder0.0", [0], G // 2))
    start = cxl.regions[1].start
    cxl.dax.memory.write(start + 4096, b"kept")
    name, d = "region1", cxl.regions[1].targets[0].name
    apply(cxl.dax, P(cxl.set_commit, name, False), P(cxl.set_target, name, 0, ""), P(cxl.set_dpa_size, d, 0),
          P(cxl.delete_region, "decoder0.0", name))
    assert not cxl.regions and cxl.next_region_id() == 1
    apply(cxl.dax, *region_ops(cxl, "decoder0.0", [0], G // 2))
    assert cxl.regions[1].start == start and bytes(cxl.dax.memory.read(start + 4096, 4)) == b"kept"


def test_disabling_a_memdev_kills_its_regions_and_its_switch_goes_with_the_last(cxl):
    apply(cxl.dax, *region_ops(cxl, "decoder0.1", [0, 4], G))
    switch = cxl.memdevs[0].endpoint.parent
    apply(cxl.dax, P(cxl.disable_memdev, "mem0"))
    region = cxl.regions[1]
    assert not region.bound and not region.committed and region.targets[0] is None
    assert 1 not in cxl.dax.regions
    assert cxl.present(switch), "mem1 is still below it"
    apply(cxl.dax, P(cxl.disable_memdev, "mem1"))
    assert not cxl.present(switch)
    fails(errno.ENODEV, cxl, P(cxl.set_mode, "decoder9.0", "ram"))  # the endpoint is gone
    apply(cxl.dax, P(cxl.enable_memdev, "mem0"))
    assert cxl.present(switch) and cxl.memdevs[0].endpoint.decoders[0].dpa_size == 0


def test_a_host_bridge_port_disabled_stays_and_takes_every_memdev_below(cxl):
    apply(cxl.dax, P(cxl.disable_port, "port1"))
    assert cxl.present(cxl.ports[1]) and not cxl.ports[1].enabled
    assert [m.enabled for m in cxl.memdevs.values()][:4] == [False] * 4
    fails(errno.ENXIO, cxl, P(cxl.enable_memdev, "mem0"))
    apply(cxl.dax, P(cxl.enable_port, "port1"), P(cxl.enable_memdev, "mem0"))
    assert cxl.memdevs[0].enabled


def test_poison_injected_at_a_dpa_lands_where_the_interleave_maps_it(cxl):
    """cxl_dpa_to_hpa: DPA 4K of the memdev at position 1 of a 2-way region
    at 4K granularity is the region's 12K (chunk 1 of that memdev: the
    third of the region's); clearing it cleans it."""
    apply(cxl.dax, *region_ops(cxl, "decoder0.1", [0, 4], G))
    start = cxl.regions[1].start
    assert cxl.dpa_to_hpa(cxl.memdevs[4], 4096) == start + 3 * 4096
    assert cxl.dpa_to_hpa(cxl.memdevs[0], 4096 + 100) == start + 2 * 4096 + 100
    apply(cxl.dax, P(cxl.inject_poison, "mem4", 4096))
    dev = cxl.dax.device("dax1.0")
    assert cxl.dax.device_badblocks(dev) == [(3 * 4096 // 512, 1)]
    assert [(p.dpa, p.length) for p in cxl.poison_list(cxl.memdevs[4])] == [(4096, 512)]
    apply(cxl.dax, P(cxl.clear_poison, "mem4", 4096))
    assert cxl.dax.device_badblocks(dev) == [] and cxl.poison_list(cxl.memdevs[4]) == []


def test_poison_stays_with_the_memdev_when_its_region_goes(cxl):
    """Found by review: poison is the memdev's media. A region unbound
    hands its media errors back to its memdevs' DPA; another memdev's
    region at the same HPA is clean; the first memdev's region again is not."""
    def make(memdev: int):
        apply(cxl.dax, *region_ops(cxl, "decoder0.0", [memdev], G // 4))

    def destroy():
        d = cxl.regions[1].targets[0].name
        apply(cxl.dax, P(cxl.set_commit, "region1", False), P(cxl.set_target, "region1", 0, ""),
              P(cxl.set_dpa_size, d, 0), P(cxl.delete_region, "decoder0.0", "region1"))
    make(2)
    apply(cxl.dax, P(cxl.inject_poison, "mem2", 4096))
    destroy()
    assert cxl.memdevs[2].poison == [(4096, 512)] and not cxl.dax.badblocks.ranges()
    make(3)
    assert cxl.dax.device_badblocks(cxl.dax.device("dax1.0")) == []
    destroy()
    make(2)
    assert cxl.dax.device_badblocks(cxl.dax.device("dax1.0")) == [(8, 1)] and cxl.memdevs[2].poison == []


def test_poison_outside_a_region_is_listed_only_and_bad_addresses_are_refused(cxl):
    apply(cxl.dax, P(cxl.inject_poison, "mem2", G + 64))  # pmem, in no region
    assert cxl.memdevs[2].poison == [(G + 64, 64)] and not cxl.dax.badblocks.ranges()
    fails(errno.EINVAL, cxl, P(cxl.inject_poison, "mem2", 65))  # not 64-byte aligned
    fails(errno.EINVAL, cxl, P(cxl.inject_poison, "mem2", 2 * G))  # past its capacity
    apply(cxl.dax, P(cxl.disable_memdev, "mem3"))
    fails(errno.ENXIO, cxl, P(cxl.clear_poison, "mem3", 0))


def test_the_poison_list_maps_media_errors_back_to_each_memdevs_dpa(cxl):
    """What cxl list --media-errors shows: a run of bad sectors of a 2-way
    region at 4K granularity splits by position, one record a run of DPA;
    an injection no bound region maps is listed as it was made."""
    apply(cxl.dax, *region_ops(cxl, "decoder0.1", [0, 4], G))
    start = cxl.regions[1].start
    apply(cxl.dax, P(cxl.dax.inject_physical, start + 4096, 3 * 4096), P(cxl.inject_poison, "mem0", G + 256))
    m0, m4 = cxl.memdevs[0], cxl.memdevs[4]
    # chunks 1 and 3 of the region are mem4's DPA 0 and 4K: one run
    assert [(p.dpa, p.length, p.hpa - start) for p in cxl.poison_list(m4)] == [(0, 8192, 4096)]
    assert [(p.dpa, p.length, p.region and p.region.name) for p in cxl.poison_list(m0)] == [
        (4096, 4096, "region1"), (G + 256, 64, None)]


def test_a_poison_list_past_its_limit_ends_in_an_overflow(cxl):
    apply(cxl.dax, *region_ops(cxl, "decoder0.0", [0], G // 2))
    start = cxl.regions[1].start
    apply(cxl.dax, *(P(cxl.dax.inject_physical, start + 1024 * i, 512) for i in range(1100)))
    found = cxl.poison_list(cxl.memdevs[0])
    assert len(found) == 1024 and found[-1].overflow and not any(p.overflow for p in found[:-1])


def test_unbinding_cxl_acpi_takes_the_whole_bus_and_binding_it_brings_the_memdevs_back(cxl):
    apply(cxl.dax, *region_ops(cxl, "decoder0.1", [0, 4], G))
    apply(cxl.dax, P(cxl.disable_port, "port2"))
    apply(cxl.dax, cxl.disable_bus)
    assert not cxl.regions and 1 not in cxl.dax.regions, "regions go with their root decoders"
    assert not any(cxl.present(p) for p in cxl.ports.values())
    assert not any(m.enabled for m in cxl.memdevs.values())
    fails(errno.ENODEV, cxl, P(cxl.create_region, "decoder0.0", "ram", "region1"))
    fails(errno.ENODEV, cxl, cxl.disable_bus)
    apply(cxl.dax, cxl.enable_bus)
    assert all(m.enabled for m in cxl.memdevs.values()) and cxl.ports[2].enabled
    assert cxl.memdevs[0].endpoint.decoders[0].dpa_size == 0
    apply(cxl.dax, *region_ops(cxl, "decoder0.1", [0, 4], G))


def test_a_cxl_regions_dax_region_is_the_cxl_buss_alone(cxl):
    """Found by review: the dax bus destroyed a bound CXL region's dax
    region, and gave its id to another, which a reset then destroyed."""
    apply(cxl.dax, *region_ops(cxl, "decoder0.0", [0], G // 2))
    apply(cxl.dax, P(cxl.dax.disable_device, "dax1.0"), P(cxl.dax.resize_device, "dax1.0", 0))
    fails(errno.EBUSY, cxl, P(cxl.dax.destroy_region, 1))
    apply(cxl.dax, *region_ops(cxl, "decoder0.1", [1, 5], G, bind=False))
    fails(errno.EEXIST, cxl, lambda: cxl.dax.create_region(64 << 20, id_=2))


def test_a_record_restores_regions_whose_ids_are_not_in_hpa_order(cxl, memory):
    """Found by review: regions were set up again in id order, which a port's HPA order refused."""
    apply(cxl.dax, *region_ops(cxl, "decoder0.0", [0], G // 4, bind=False))
    apply(cxl.dax, *region_ops(cxl, "decoder0.0", [1], G // 4, bind=False))
    apply(cxl.dax, P(cxl.set_commit, "region2", False), P(cxl.set_commit, "region1", False),
          P(cxl.set_target, "region1", 0, ""), P(cxl.delete_region, "decoder0.0", "region1"))
    apply(cxl.dax, *region_ops(cxl, "decoder0.0", [2], G // 2, bind=False))  # past region2: the gap is too small
    assert cxl.regions[1].start > cxl.regions[2].start
    again = CxlBus(DaxBus(DaxCore(8), memory), DEFAULT, 1)
    again.restore(json.loads(json.dumps(cxl.snapshot())))
    assert again.snapshot() == cxl.snapshot()


def test_the_record_restores_regions_decoders_and_labels_exactly(cxl, memory):
    apply(cxl.dax, *region_ops(cxl, "decoder0.1", [0, 4], G))
    apply(cxl.dax, *region_ops(cxl, "decoder0.2", [1], G // 2, mode="pmem", bind=False),
          P(cxl.write_lsa, "mem3", 100, b"labels"), P(cxl.disable_memdev, "mem9"), P(cxl.inject_poison, "mem7", 128),
          P(cxl.disable_port, "port3"))
    record = cxl.snapshot()
    bus2 = DaxBus(DaxCore(64), memory)
    for r in cxl.dax.regions.values():  # the dax layout comes back first (layout.restore)
        bus2.adopt_region(r.id, r.res, r.align, (r.target_node, r.numa_node), r.type, r.enabled,
                          [(d.id, d.align, d.access, d.ranges, d.driver, False, d.hotplug_state)
                           for d in r.devices.values()], None, None)
    again = CxlBus(bus2, DEFAULT, 1)
    again.restore(json.loads(json.dumps(record)))
    assert again.snapshot() == record
    assert bytes(again.memdevs[3].lsa[100:106]) == b"labels"
    # and it goes on from there: the next commit on a shared port is in order
    apply(bus2, *region_ops(again, "decoder0.3", [2, 6], G, mode="pmem", bind=False))


def test_a_record_of_another_topology_is_refused(cxl):
    record = cxl.snapshot()
    other = CxlBus(DaxBus(DaxCore(4), cxl.dax.memory), parse(
        '{"host_bridges": [{"root_ports": [{"memdev": {}}]}], "windows": [{"size": "1G", "targets": [0]}]}'), 1)
    with pytest.raises(DaxError) as ei:
        other.restore(record)
    assert ei.value.errno == errno.EINVAL and "topology" in ei.value.message


@pytest.mark.parametrize("text, says", [
    ("nope", "not JSON"),
    ('{"host_bridges": []}', "host_bridges"),
    ('{"host_bridges": [{"root_ports": [{"memdev": {"ram": "100M"}}]}], "windows": [{"size": "1G", "targets": [0]}]}',
     "256M"),
    ('{"host_bridges": [{"root_ports": [{"memdev": {}}]}], "windows": [{"size": "1G", "targets": [1]}]}', "targets"),
    ('{"host_bridges": [{"root_ports": [{"memdev": {}}]}], "windows": [{"size": "1G", "targets": [0], '
     '"type": "cxl"}]}', "type"),
    ('{"host_bridges": [{"root_ports": [{"switch": []}]}], "windows": [{"size": "1G", "targets": [0]}]}', "root port"),
    ('{"host_bridges": [{"root_ports": [{"memdev": {}}]}], "windows": [{"size": "2048T", "targets": [0]}]}', "1T"),
    ('{"host_bridges": [{"root_ports": [{"memdev": {}}]}], "windows": [{"size": "1E", "targets": [0]}]}', "1T"),
    ('{"host_bridges": [{"root_ports": [{"memdev": {}}]}], "windows": [{"size": "1G", "targets": [0], '
     '"granularity": 4096.0}]}', "granularity"),
    ('{"memdev": {"ram": "0"}, "host_bridges": [{"root_ports": [{"memdev": {}}]}], '
     '"windows": [{"size": "1G", "targets": [0]}]}', "no capacity"),
    ('{"host_bridges": ' + json.dumps([{"root_ports": [{"switch": [{}] * 8}] * 8}] * 5) +
     ', "windows": [{"size": "1G", "targets": [0]}]}', "more than 256 memdevs"),
    ('{"host_bridges": [{"root_ports": [{"memdev": {}}]}], "windows": ' +
     json.dumps([{"size": "1G", "targets": [0]}] * 17) + '}', "1 to 16 windows"),
])
def test_a_topology_that_is_not_one_is_einval_saying_where(text, says):
    with pytest.raises(DaxError) as ei:
        parse(text)
    assert ei.value.errno == errno.EINVAL and says in ei.value.message


def test_a_default_memdev_of_no_capacity_is_fine_where_each_memdev_gives_its_own():
    topology = parse('{"memdev": {"ram": "0"}, "host_bridges": [{"root_ports": [{"memdev": {"pmem": "512M"}}]}], '
                     '"windows": [{"size": "1G", "targets": [0], "type": "pmem"}]}')
    assert topology.host_bridges[0][0].memdevs[0].pmem == 512 << 20


def test_the_default_topology_text_is_the_default():
    assert parse(DEFAULT_TEXT) == DEFAULT


# --- routing against a reference model --------------------------------------------------------------
def routable(cxl, root, memdevs: list[int]) -> bool:
    """The kernel's rules, phrased per port as check_last_peer and
    cxl_port_setup_targets state them: position p must sit behind root
    target p % root_ways; below, the positions under a port are a stride-D
    sequence that cycles through its iw dports (a power of 2, at most 8)
    in one fixed order, iw apart."""
    ways = len(memdevs)
    paths = [cxl.memdevs[m].endpoint.path() for m in memdevs]
    if any(paths[p][1].parent_dport.id != root.targets[p % root.ways] for p in range(ways)):
        return False
    stride = {}
    for depth in (1, 2):
        for port in {path[depth] for path in paths if len(path) > depth + 1}:
            under = [p for p in range(ways) if paths[p][depth] is port]
            dports = [paths[p][depth + 1].parent_dport for p in under]
            iw = len(set(map(id, dports)))
            if iw & (iw - 1) or iw > 8:
                return False
            if any(dports[k] is not dports[k % iw] for k in range(len(under))):
                return False
            if len(set(map(id, dports[:iw]))) != iw:
                return False
            stride[port] = iw
    return True


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([1, 2, 4, 8]), st.randoms(use_true_random=False))
def test_routing_is_accepted_exactly_when_the_reference_routes_it(ways, rnd):
    memory = MemoryFile()
    try:
        bus = DaxBus(DaxCore(8), memory)
        cxl = CxlBus(bus, DEFAULT, 1)
        apply(bus, cxl.place_windows)
        root = "decoder0.3" if ways > 1 else "decoder0.2"
        memdevs = rnd.sample(range(8), ways)
        expected = routable(cxl, cxl.decoder(root), memdevs)
        try:
            apply(bus, *region_ops(cxl, root, memdevs, ways * GRANULE, mode="pmem", bind=False))
        except DaxError as e:
            assert not expected and e.errno == errno.ENXIO, (memdevs, e)
        else:
            assert expected, memdevs
            assert cxl.regions[0].committed
    finally:
        memory.close()


# --- a state machine: any sequence of steps keeps the bus consistent ------------------------------------
class CxlMachine(RuleBasedStateMachine):
    """Random steps of region assembly, teardown and unbinding, each a batch:
    a failed one changes nothing, and after every step the bus holds together."""

    @initialize()
    def init(self):
        self.memory = MemoryFile()
        self.bus = DaxBus(DaxCore(32), self.memory)
        self.cxl = CxlBus(self.bus, DEFAULT, 1)
        apply(self.bus, self.cxl.place_windows)

    def teardown(self):
        if hasattr(self, "memory"):
            self.memory.close()

    def _try(self, *ops):
        before = state(self.cxl)
        try:
            apply(self.bus, *ops)
        except DaxError as e:
            assert e.errno in (errno.EINVAL, errno.ENXIO, errno.EBUSY, errno.ENOSPC, errno.ERANGE, errno.ENODEV,
                               errno.EOPNOTSUPP, errno.EACCES), e
            assert state(self.cxl) == before

    @rule(root=st.integers(0, 4), memdevs=st.lists(st.integers(0, 9), min_size=1, max_size=4, unique=True),
          units=st.integers(1, 4), commit=st.booleans(), bind=st.booleans())
    def assemble(self, root, memdevs, units, commit, bind):
        d = self.cxl.root.decoders[root]
        try:
            ops = region_ops(self.cxl, d.name, memdevs, units * len(memdevs) * GRANULE,
                             mode="ram" if d.ram else "pmem", commit=commit, bind=bind)
        except StopIteration:  # a memdev with no free decoder left
            return
        self._try(*ops)

    @rule(data=st.data())
    def step(self, data):
        cxl = self.cxl
        names = sorted(r.name for r in cxl.regions.values()) or ["region0"]
        region = data.draw(st.sampled_from(names))
        memdev = data.draw(st.sampled_from([f"mem{i}" for i in range(10)]))
        decoder = data.draw(st.sampled_from([f"decoder{e}.{i}" for e in range(9, 19) for i in range(3)]))
        choice = data.draw(st.sampled_from([
            P(cxl.set_commit, region, False), P(cxl.set_commit, region, True), P(cxl.bind_region, region),
            P(cxl.unbind_region, region), P(cxl.set_target, region, 0, ""),
            P(cxl.delete_region, f"decoder0.{data.draw(st.integers(0, 4))}", region),
            P(cxl.disable_memdev, memdev), P(cxl.enable_memdev, memdev),
            P(cxl.disable_port, f"port{data.draw(st.integers(1, 8))}"),
            P(cxl.enable_port, f"port{data.draw(st.integers(1, 3))}"),
            P(cxl.set_dpa_size, decoder, 0), P(cxl.set_mode, decoder, "pmem"),
            P(cxl.set_dpa_size, decoder, GRANULE)]))
        self._try(choice)

    @invariant()
    def consistent(self):
        cxl, bus = self.cxl, self.bus
        for root in cxl.root.decoders:
            spans = sorted((r.start, r.start + r.size) for r in cxl.regions.values() if r.root is root and r.size)
            assert all(root.start <= a and b <= root.start + root.size for a, b in spans)
            assert all(b <= c for (_, b), (c, _) in zip(spans, spans[1:]))
        for m in cxl.memdevs.values():
            held = [d for d in m.endpoint.decoders if d.dpa_size]
            assert [d.id for d in held] == list(range(len(held))), "DPA is allocated in decoder order"
            ends = [(d.dpa_start, d.dpa_start + d.dpa_size, d.mode) for d in held]
            assert all(b <= c for (_, b, _), (c, _, _) in zip(ends, ends[1:]))
            assert all(sum(m.partition(mode)) >= b and a >= m.partition(mode)[0] for a, b, mode in ends)
            assert m.enabled or not held
        for port in cxl.ports.values():
            flags = [d.committed for d in port.decoders]
            assert flags == sorted(flags, reverse=True), f"{port.name} commits in order"
        for r in cxl.regions.values():
            assert not r.committed or r.active
            assert r.bound == (r.id in bus.regions)
            assert not r.bound or (bus.regions[r.id].res.start, bus.regions[r.id].size) == (r.start, r.size)
            for i, d in enumerate(r.targets):
                assert d is None or (d.region is r and cxl.memdev_of(d.port).enabled)
        for d in (d for p in cxl.ports.values() for d in p.decoders if d.region is not None):
            assert d.region.id in cxl.regions


TestCxlMachine = CxlMachine.TestCase
TestCxlMachine.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
