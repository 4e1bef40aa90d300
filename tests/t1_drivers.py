"""The dax bus's drivers and kmem's memory blocks without a mount: binding
against a reference model of bus.c's matching, and hotplug's rules."""
import errno
import functools

import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from conftest import apply
from daxfuse.core import DaxCore
from daxfuse.core.errors import DaxError
from daxfuse.dax import DaxBus
from daxfuse.dax import hotplug
from daxfuse.dax.drivers import DRIVERS, KMEM_TYPE
from daxfuse.memory import MemoryFile

P = functools.partial
M = 1 << 20
NAMES = ["dax0.0", "dax0.1", "dax1.0", "dax1.1"]  # region 0 of type device, region 1 of type kmem


def snapshot(bus: DaxBus):
    """Everything a failed batch must leave as it was."""
    return (bus.layout(), {k: set(v) for k, v in bus.driver_ids.items()}, bus.auto_online,
            {i: (b.node, b.zone, b.pinned) for i, b in bus.blocks.items()},
            {d.name: d.hotplug_state for d in bus.devices()})


class Model:
    """bus.c's rules in a few lines: which driver a device is bound to."""

    def __init__(self, types: dict[str, str]) -> None:
        self.types = types
        self.driver = {name: None for name in types}
        self.ids = {name: set() for name in DRIVERS}

    def matches(self, name: str, driver: str) -> bool:
        return name in self.ids[driver] or DRIVERS[driver].type == self.types[name]

    def apply(self, op: str, driver: str, name: str) -> None:
        """As the bus should; the bus may refuse where kmem's memory is in the way."""
        if op == "bind" and self.driver[name] is None and self.matches(name, driver):
            self.driver[name] = driver
        elif op == "unbind" and self.driver[name] == driver:
            self.driver[name] = None
        elif op == "new_id":
            self.ids[driver].add(name)
            for other in sorted(self.driver):
                if self.driver[other] is None and self.matches(other, driver):
                    self.driver[other] = driver
        elif op == "remove_id":
            self.ids[driver].discard(name)
        elif op == "enable" and self.driver[name] is None:
            self.driver[name] = next((d for d in DRIVERS if self.matches(name, d)), None)
        elif op == "disable":
            self.driver[name] = None


class DriverMachine(RuleBasedStateMachine):
    @initialize(policy=st.sampled_from(hotplug.ONLINE_TYPES))
    def init(self, policy):
        self.memory = MemoryFile()
        bus = self.bus = DaxBus(DaxCore(8), self.memory)
        bus.block_size = 2 * M  # blocks small enough for devices of a few MiB
        apply(bus, P(bus.create_region, 16 * M), P(bus.create_region, 16 * M, target_node=1, type_=KMEM_TYPE),
              P(bus.set_auto_online, policy))
        apply(bus, P(bus.resize_device, "dax0.0", 4 * M), P(bus.create_seed, 0), P(bus.resize_device, "dax0.1", 4 * M),
              P(bus.resize_device, "dax1.0", 4 * M), P(bus.create_seed, 1), P(bus.resize_device, "dax1.1", 4 * M))
        self.model = Model({name: ("device" if name.startswith("dax0") else KMEM_TYPE) for name in NAMES})

    def teardown(self):
        if hasattr(self, "memory"):
            self.memory.close()

    def _run(self, *ops):
        before = snapshot(self.bus)
        try:
            apply(self.bus, *ops)
        except DaxError as e:
            assert snapshot(self.bus) == before, "a failed batch changed something"
            return e.errno
        return 0

    @rule(op=st.sampled_from(["bind", "unbind", "new_id", "remove_id"]), driver=st.sampled_from(list(DRIVERS)),
          name=st.sampled_from(NAMES))
    def driver_file(self, op, driver, name):
        err = self._run(P(getattr(self.bus, op), driver, name))
        self._check(op, driver, name, err)

    @rule(op=st.sampled_from(["enable", "disable"]), name=st.sampled_from(NAMES))
    def device(self, op, name):
        err = self._run(P(getattr(self.bus, f"{op}_device"), name))
        self._check(op, None, name, err)

    def _check(self, op, driver, name, err):
        if err == errno.EBUSY and self.bus.blocks:  # kmem's online memory holds it: the bus refused
            return
        if err == errno.EINVAL and (op in ("bind", "enable", "new_id")):  # kmem found no whole block
            return
        assert err in (0, errno.ENODEV, errno.EBUSY), err
        self.model.apply(op, driver, name)
        # what the bus refused with ENODEV/EBUSY the model leaves as it was too
        assert {d.name: d.driver for d in self.bus.devices()} == self.model.driver
        assert {k: set(v) for k, v in self.bus.driver_ids.items()} == self.model.ids

    @rule(name=st.sampled_from(NAMES), online_type=st.sampled_from([*hotplug.ONLINE_TYPES, "sideways"]))
    def block_state(self, name, online_type):
        indices = self.bus.device_blocks(self.bus.device(name))
        err = self._run(P(self.bus.set_block_state, indices[0], online_type))
        assert err in (0, errno.EINVAL, errno.EBUSY, errno.ENOENT)

    @rule(name=st.sampled_from(NAMES), state=st.sampled_from([hotplug.UNPLUGGED, *hotplug.ONLINE_TYPES]))
    def device_state(self, name, state):
        assert self._run(P(self.bus.set_hotplug_state, name, state)) in (0, errno.EINVAL, errno.EBUSY, errno.ENOENT)

    @rule(name=st.sampled_from(NAMES), pinned=st.booleans())
    def pin(self, name, pinned):
        index = self.bus.device_blocks(self.bus.device(name))[-1]
        assert self._run(P(self.bus.pin_block if pinned else self.bus.unpin_block, index)) in (0, errno.ENOENT)

    @invariant()
    def blocks_follow_kmem(self):
        """A kmem device's blocks are there unless it is unplugged; no other's are."""
        if not hasattr(self, "bus"):
            return
        bus, present = self.bus, set()
        for dev in bus.devices():
            mine = set(bus.device_blocks(dev))
            plugged = dev.driver == "kmem" and dev.hotplug_state != hotplug.UNPLUGGED
            assert (mine <= set(bus.blocks)) if plugged else not (mine & set(bus.blocks)), dev.name
            present |= mine if plugged else set()
            assert dev.dax_dev.alive == (dev.driver is not None and DRIVERS[dev.driver].runs)
        assert present == set(bus.blocks)
        for block in bus.blocks.values():
            assert block.node == 1 or any(d.region.target_node == block.node for d in bus.devices())


TestDriverMachine = DriverMachine.TestCase
TestDriverMachine.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)


def test_kmem_adds_whole_blocks_and_refuses_a_device_with_none(bus):
    bus.block_size = 4 * M
    apply(bus, P(bus.create_region, 64 * M, type_=KMEM_TYPE))
    with pytest.raises(DaxError) as e:
        apply(bus, P(bus.create_device, 0, 2 * M))  # binds kmem at once: no whole 4M block in 2M
    assert e.value.errno == errno.EINVAL and "alignment" in e.value.message
    apply(bus, P(bus.create_device, 0, 12 * M))
    assert len(bus.blocks) == 3
    with pytest.raises(DaxError) as e:
        apply(bus, P(bus.create_region, 8 * M, target_node=-1, type_=KMEM_TYPE), P(bus.create_device, 1, 8 * M))
    assert e.value.errno == errno.EINVAL and "node" in e.value.message


def test_zones_follow_the_kernels_rules():
    block = hotplug.MemoryBlock(1, 0)
    assert hotplug.valid_zones(block, set()) == "Normal Movable"
    assert hotplug.valid_zones(block, {"Movable"}) == "Movable Normal"
    assert hotplug.zone_for(block, hotplug.ONLINE, {"Movable"}) == "Movable"
    assert hotplug.zone_for(block, hotplug.ONLINE_KERNEL, {"Movable"}) == "Normal"
    block.zone = "Movable"
    assert hotplug.valid_zones(block, {"Movable"}) == "Movable"
    assert list(hotplug.block_range(3 * M, 13 * M, 4 * M)) == [1, 2]
