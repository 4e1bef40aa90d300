"""The daemon: build the emulator, mount, serve, unmount cleanly.

Owns the lifecycle as s3ql's mount does: one AsyncExitStack inside the
nursery (_serve), each teardown registered beside its setup. SIGTERM and SIGINT end the FUSE main
loop (pyfuse3 itself ignores SIGTERM), then the mount is removed and the
process exits 0. Readiness (READY=1 over $NOTIFY_SOCKET, the systemd protocol)
is sent only once the mount has answered a request.
"""
import contextlib
import errno
import logging
import os
import signal
import socket
from dataclasses import dataclass

import pyfuse3
import trio

from ..client import runfiles
from . import watchdog
from ..core import DaxCore
from ..core.devt import dev_text
from ..dax import DEFAULT_ALIGN, DEFAULT_SIZE, Access, DaxBus
from ..dax.layout import LayoutStore
from ..cxl import CxlBus, Topology
from ..memory import host_nodes
from .direct import DirectServer
from ..core.errors import DaxError
from .fuse_ops import DaxOperations
from ..memory import MemoryFile

log = logging.getLogger("daxfuse")

# After this long without data-path accesses, the daemon drops its mappings
# of the emulated memory it touched, so that its RSS is its own again.
# Not sooner: mapping pages again costs about 2 us a page, which halves the
# first pass over the data after it (mmap first touch 2.5 -> 1.1 GB/s), so
# workloads that pause between steps should not pay it every step.
UNMAP_IDLE = 10.0
# The mount's read-ahead: FUSE READs of page-cache misses (buffered reads and
# mmap faults) come in read-ahead-sized requests; 128 KiB by default, FUSE
# takes up to 1 MiB per request. Larger windows measured no faster (scripts/bench)
# and cost more per random mmap fault.
READ_AHEAD_KB = 1024
# pyfuse3 answers each request in a task of its own, 99 at most by default.
# A request that waits (a control write queued behind a disable) keeps its
# task, so with 99 of them waiting nothing would be left to answer the
# writeback WRITEs the disable waits for: a deadlock. Every request gets a
# task instead; the kernel bounds them by the client threads waiting on them.
MAX_TASKS = 1 << 30
# How long a shutdown waits for clients to read the result of a batch they
# wrote on a control handle that is still open.
CONTROL_DRAIN = 5.0
FUSE_CONF = "/etc/fuse.conf"
MTAB = "/etc/mtab"


@dataclass
class MountConfig:
    mountpoint: str
    memory_file: str | None
    size: int | None   # None: not given (1 GiB for a new layout)
    align: int | None  # None: not given (2 MiB for a new layout)
    default_device: bool
    nr_dax: int
    options: list[str]
    access: Access  # of new devices: --owner, --group, --mode
    fresh: bool = False  # a memory file with data and no layout record: make it new memory
    cxl_topology: Topology | None = None  # the CXL bus beside the dax bus, if any


def sd_notify(message: str) -> None:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(address)
            s.sendall(message.encode())
    except OSError as e:  # best effort, as sd_notify(3): `daxfuse mount` stops listening once ready
        log.debug("sd_notify(%s): %s", message, e)


def fuse_options(config: MountConfig) -> set[str]:
    options = set(pyfuse3.default_options)
    options |= {"fsname=daxfuse", "subtype=daxfuse", "auto_unmount"}
    for opt in config.options:
        options |= {o for o in opt.split(",") if o}
    if "allow_other" in options and os.geteuid() and not _user_allow_other():
        # what fusermount3 checks; its own refusal would reach us as a bare "mount failed"
        raise DaxError(errno.EPERM, f"-o allow_other needs a line user_allow_other in {FUSE_CONF} "
                                    f"for a mount by anyone but root")
    if os.geteuid() and not os.path.exists(MTAB):
        # fusermount3 finds a user's mount there to unmount it: without it the
        # mount would stay behind the daemon, every access ENOTCONN
        raise DaxError(errno.ENOENT, f"a mount by anyone but root needs {MTAB}, which fusermount3 reads to "
                                     f"unmount it (minimal images lack it): as root, ln -s ../proc/self/mounts {MTAB}")
    return options


def _user_allow_other() -> bool:
    try:
        with open(FUSE_CONF) as f:
            return any(line.strip() == "user_allow_other" for line in f)
    except OSError:
        return False


async def _stop_on_signal(ops: DaxOperations, nursery: trio.Nursery,
                          task_status=trio.TASK_STATUS_IGNORED) -> None:
    """The first SIGTERM or SIGINT shuts down; later ones are only logged
    (left to their default, a second one would kill the daemon mid-way).
    Started before READY=1: a stop sent the moment readiness is seen must
    find the receiver, not the default action."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for signum in signals:
            name = signal.Signals(signum).name
            if ops.bus.closing:
                log.info("%s: already shutting down", name)
                continue
            log.info("%s: writing mapped pages back, then unmounting", name)
            nursery.start_soon(_shut_down, ops)


async def _shut_down(ops: DaxOperations) -> None:
    """Let the running batch finish, write clients' dirty mapped pages back
    (as a disable does), close windows (revoking direct mappings, as the
    devices go), mark the stop clean (every store is in the memory file), let
    clients read their batches' results, then end the FUSE loop."""
    async with ops.bus.closed():
        await ops.write_back()
        await ops.bus.stop_serving()
        await ops.tree.control.drained(CONTROL_DRAIN)
        pyfuse3.terminate()


async def _unmap_when_idle(memory: MemoryFile, task_status=trio.TASK_STATUS_IGNORED) -> None:
    task_status.started()
    seen, mapped = memory.accesses, False
    while True:
        await trio.sleep(UNMAP_IDLE)
        if memory.accesses != seen:
            seen, mapped = memory.accesses, True
        elif mapped:
            memory.unmap_pages()
            mapped = False


async def _fuse_main(task_status=trio.TASK_STATUS_IGNORED) -> None:
    task_status.started()
    await pyfuse3.main(max_tasks=MAX_TASKS)


async def _start(nursery: trio.Nursery, stack: contextlib.AsyncExitStack, task, *args) -> trio.Event:
    """task(*args, task_status=) started in nursery, and its stop (cancel it,
    wait for its end) on stack, so that it ends before what was set up before
    it is torn down. The Event is set when the task ends."""
    scope, ended = trio.CancelScope(), trio.Event()

    async def run(task_status=trio.TASK_STATUS_IGNORED) -> None:
        try:
            with scope:
                await task(*args, task_status=task_status)
        finally:
            ended.set()

    async def stop() -> None:
        scope.cancel()
        with trio.CancelScope(shield=True):  # unwinding a failure: the stack's scope is cancelled already
            await ended.wait()

    await nursery.start(run)
    stack.push_async_callback(stop)
    return ended


def _open_bus(config: MountConfig, stack: contextlib.AsyncExitStack,
              undo: contextlib.ExitStack) -> tuple[DaxBus, bool]:
    """The memory file and the bus over it, and whether a layout was
    restored; the store marked running. What it creates goes on undo, for a
    mount that fails before it serves."""
    store = record = None
    if config.memory_file:  # its layout: read, and checked, before the memory is opened
        store = LayoutStore(config.memory_file)
        record = store.load()
        if record is not None:
            store.check_options(record, config.size, config.align, config.default_device)
    memory = MemoryFile(config.memory_file)
    stack.callback(memory.close)
    if memory.created:
        undo.callback(_unlink_if_there, memory.path)
    bus = DaxBus(DaxCore(config.nr_dax), memory, store, config.access)
    if config.cxl_topology is not None:  # before the layout: the record holds its part
        CxlBus(bus, config.cxl_topology, max(host_nodes(), default=-1) + 1)
    if store is None:
        return bus, False
    store.check(record, memory.fileno(), config.fresh)
    if record is None:
        undo.callback(_unlink_if_there, store.path)
    else:
        store.restore(bus, record)
    if not os.path.exists(store.marker):
        undo.callback(_unlink_if_there, store.marker)
    if bus.start_serving():
        log.warning("%s: the last daemon did not shut down cleanly (unsafe shutdowns: %d)",
                    config.memory_file, bus.dirty_shutdown)
    return bus, record is not None


def _unlink_if_there(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


async def _first_layout(bus: DaxBus, config: MountConfig, restored: bool) -> None:
    """A restored layout saved again (the unsafe-shutdown count, should it
    have grown); else the new one: region 0, and its seed dax0.0 over all of
    it. The CXL windows go above what there is, unless the layout placed them."""
    unplaced = [b.place_windows for b in bus.beside if not b.placed]
    if restored:
        await (bus.apply(unplaced) if unplaced else bus.persist())
        return
    size = DEFAULT_SIZE if config.size is None else config.size
    align = DEFAULT_ALIGN if config.align is None else config.align
    ops = [lambda: bus.create_region(size, align, 0)]
    if config.default_device:
        ops.append(lambda: bus.create_device(0))
    await bus.apply(ops + unplaced)


async def _serve(config: MountConfig, options: set[str]) -> None:
    """The whole life of a mount, read top to bottom: each teardown is
    registered beside its setup, and runs in the reverse order."""
    served = False
    try:
        async with trio.open_nursery() as nursery, contextlib.AsyncExitStack() as stack:
            with contextlib.ExitStack() as undo:
                bus, restored = _open_bus(config, stack, undo)
                await _first_layout(bus, config, restored)
                ops = DaxOperations(bus)
                pyfuse3.init(ops, config.mountpoint, options)
                stack.callback(pyfuse3.close, unmount=True)
                fuse_ended = await _start(nursery, stack, _fuse_main)
                await _start(nursery, stack, _stop_on_signal, ops, nursery)  # stopped late: a signal while unwinding is only logged
                st = await trio.to_thread.run_sync(os.stat, config.mountpoint)  # answered: the mount serves
                stack.callback(watchdog.stop, watchdog.start(config.mountpoint, st.st_dev))  # main thread
                runfiles.make_run_dir()
                direct = DirectServer(bus, st.st_dev, runfiles.socket_path(st.st_dev))
                await _start(nursery, stack, direct.serve)
                ops.tree.direct_socket = direct.path
                await _start(nursery, stack, _unmap_when_idle, bus.memory)
                _raise_read_ahead(st.st_dev)
                stack.callback(os.unlink, runfiles.write_pid_file(config.mountpoint))
                log.info("serving %s", config.mountpoint)
                sd_notify("READY=1")
                served = True
                undo.pop_all()  # from now on the files hold what clients stored
            await fuse_ended.wait()
            sd_notify("STOPPING=1")
    except Exception as e:
        if served:  # for `daxfuse umount` to say
            runfiles.write_error(config.mountpoint, str(sole_error(e)))
        raise


def _raise_read_ahead(st_dev: int) -> None:
    path = f"/sys/class/bdi/{dev_text(st_dev)}/read_ahead_kb"
    try:
        with open(path, "w") as f:
            f.write(f"{READ_AHEAD_KB}\n")
    except OSError as e:  # not root: the kernel's 128 KiB stays
        log.warning("read-ahead stays at the kernel's 128 KiB (%s: %s): cold sequential reads through the "
                    "page cache run about a quarter slower (1.5 against 2.0 GB/s here); O_DIRECT and direct "
                    "mappings are unaffected", path, e.strerror)


def run(config: MountConfig) -> None:
    """Serve until unmounted or signalled. Raises DaxError / OSError on bad
    set-up, having removed what it made; one that fails after serving
    leaves its line for `daxfuse umount` (runfiles' error file)."""
    options = fuse_options(config)  # refused before anything is opened or written
    try:
        trio.run(_serve, config, options)
    except BaseExceptionGroup as group:
        raise sole_error(group) from None
    _remove_own_log(config.mountpoint)


def sole_error(group: BaseExceptionGroup) -> BaseException:
    """The one error a nursery wrapped (so the CLI can print it in one line),
    else the group itself."""
    while isinstance(group, BaseExceptionGroup) and len(group.exceptions) == 1:
        group = group.exceptions[0]
    return group


def _remove_own_log(mountpoint: str) -> None:
    """A detached daemon logs to its run file; after a clean exit it is noise."""
    path = runfiles.run_file(mountpoint, "log")
    try:
        if os.path.samestat(os.fstat(2), os.stat(path)):
            os.unlink(path)
    except OSError:
        pass
