"""Direct mappings: the personality maps a device's memory itself (the
memory file's ranges), at memory speed, and this server grants and revokes
those mappings.

Protocol: one SOCK_SEQPACKET connection per client process to the abstract
socket "daxfuse/<st_dev of the mount>", text messages, fds as SCM_RIGHTS:

  hello PID SIGNAL             -> ok NR_DAX WORDS      + [the shared table, read-only]
  map OFFSET LENGTH WRITE      + [the device's fd]
                               -> ok GEN ALIGN SIZE PHYS:LEN... + [memory file]
                                | err ERRNO | fuse (map the FUSE file instead)
  inherit MINOR GEN            (a forked child holds such a mapping)
  unmap MINOR GEN              (the client unmapped it)
  ack SEQ                      (the client revoked what the table said, up to SEQ)

Revocation, as the kernel's unbind zaps every mapping: the device's
generation in the shared table is bumped (for a media error, the poisoned
ranges are published there instead, and only those pages die), then every thread of every
process that holds a mapping of it gets SIGNAL. The library's handler maps a
dead file (0 bytes: every access SIGBUS) over each mapping whose generation
is stale, then acks. A revocation is done for a process once it acked, or
once no thread of it can run a user instruction before the remap: none is
running, and each has SIGNAL pending and unblocked (the handler comes
first) or has taken it (it is in the handler or past it). A SIGSTOPped
process is such, so a disable returns at once. A process that
does neither within KILL_AFTER (a raw rt_sigprocmask blocked SIGNAL, and it
stays in user code) is killed with SIGKILL: the one way left to stop its
loads. Only processes of the daemon's own user get direct mappings: the
memory file holds every device, so another user given one device would be
given them all. Others map through FUSE, where the kernel checks each open.
"""
import ctypes
import errno
import fcntl
import logging
import mmap
import os
import socket

import numpy as np
import trio

from .dax import DaxBus, DevDax
from .dax.badblocks import SECTOR
from .devt import DAX_INO_BASE
from .errors import DaxError

log = logging.getLogger(__name__)

KILL_AFTER = 1.0
# The shared table: a generation per minor, the revocation sequence, then the
# poisoned byte ranges of the memory file (count, then start and length each).
MAX_POISON = 512
_POLL = 0.002
_libc = ctypes.CDLL(None, use_errno=True)
_SYS_TGKILL = 234


def socket_name(mount_dev: int) -> bytes:
    return f"\0daxfuse/{mount_dev}".encode()


def _tgkill(pid: int, tid: int, sig: int) -> None:
    _libc.syscall(_SYS_TGKILL, pid, tid, sig)


def _threads(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except FileNotFoundError:
        return []


def _cannot_run_unrevoked(pid: int, tid: int, sig: int) -> bool:
    """The thread runs no user instruction before the handler of sig has
    remapped: it is not running, and sig is pending and unblocked (the
    handler comes first once it runs), or no longer pending (delivered: it
    is in the handler, or past it). A thread stopped inside the handler is
    the second case. Gone threads touch nothing."""
    try:
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        with open(f"/proc/{pid}/task/{tid}/status") as f:
            status = dict(line.split(":", 1) for line in f if ":" in line)
    except (FileNotFoundError, ProcessLookupError):
        return True
    if state in ("Z", "X"):
        return True
    bit = 1 << (sig - 1)
    pending = (int(status["SigPnd"], 16) | int(status["ShdPnd"], 16)) & bit
    blocked = int(status["SigBlk"], 16) & bit
    return state != "R" and not (pending and blocked)


class _Client:
    """A connected process: the generations of what it maps, per minor."""

    def __init__(self, sock) -> None:
        self.sock = sock
        self.pid = 0
        self.signal = 0
        self.grants: dict[int, list] = {}  # minor -> [gen, dax_dev, count]
        self.signalled: set[int] = set()  # threads sent the signal of the revocation under way
        self.acked = 0
        self.acked_event = trio.Event()


class DirectServer:
    def __init__(self, bus: DaxBus, mount_dev: int) -> None:
        self.bus = bus
        self.core = bus.core
        self.mount_dev = mount_dev
        self.clients: set[_Client] = set()
        self.seq = 0
        words = self.core.nr_dax + 2 + 2 * MAX_POISON
        fd = os.memfd_create("daxfuse-generations", os.MFD_CLOEXEC)
        os.ftruncate(fd, 8 * words)
        self._table_fd = fd
        self._table = np.frombuffer(mmap.mmap(fd, 8 * words), dtype=np.uint64)
        self._seq_at = self.core.nr_dax
        bus.listeners.append(self._on_change)

    # --- serving -------------------------------------------------------------------------
    async def serve(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        await listener.bind(socket_name(self.mount_dev))
        listener.listen(64)
        task_status.started()
        async with trio.open_nursery() as nursery:
            while True:
                sock, _ = await listener.accept()
                nursery.start_soon(self._client, sock)

    async def _client(self, sock) -> None:
        client = _Client(sock)
        uid = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        peer_uid = int.from_bytes(uid[4:8], "little")
        trusted = peer_uid == os.getuid()
        self.clients.add(client)
        try:
            with sock:
                while True:
                    msg, fds = await self._receive(sock)
                    if msg is None:
                        return
                    try:
                        await self._handle(client, msg, fds, trusted)
                    finally:
                        for fd in fds:  # a file of this mount: its FLUSH asks this daemon
                            await trio.to_thread.run_sync(os.close, fd)
        except OSError as e:
            log.debug("direct client %d: %s", client.pid, e)
        finally:
            self.clients.discard(client)
            for gen, dax_dev, count in client.grants.values():
                self.core.put_dax(dax_dev)

    @staticmethod
    async def _receive(sock):
        data, ancdata, flags, _ = await sock.recvmsg(4096, socket.CMSG_SPACE(4 * 4))
        if not data:
            return None, []
        fds = []
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds += np.frombuffer(payload[:len(payload) - len(payload) % 4], dtype=np.int32).tolist()
        return data.decode(errors="replace").split(), fds

    @staticmethod
    async def _send(sock, words, fds=()) -> None:
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, np.array(fds, dtype=np.int32).tobytes())] if fds else []
        await sock.sendmsg([" ".join(map(str, words)).encode()], anc)

    async def _handle(self, client: _Client, msg: list[str], fds: list[int], trusted: bool) -> None:
        match msg:
            case ["hello", pid, sig]:
                client.pid, client.signal = int(pid), int(sig)
                await self._send(client.sock, ["ok", self.core.nr_dax, len(self._table)], [self._table_fd])
            case ["map", offset, length, write] if len(fds) == 1:
                await self._map(client, int(offset), int(length), write == "1", fds[0], trusted)
            case ["inherit", minor, gen]:
                self._inherit(client, int(minor), int(gen))
            case ["unmap", minor, gen]:
                self._release(client, int(minor), int(gen))
            case ["ack", seq]:
                client.acked = max(client.acked, int(seq))
                client.acked_event.set()
            case _:
                log.warning("direct client %d: unknown message %r", client.pid, msg[:4])

    # --- grants ------------------------------------------------------------------------------
    async def _device_of(self, fd: int) -> DevDax:
        # in a worker: an fstat of a file of this mount may ask this daemon (GETATTR)
        st = await trio.to_thread.run_sync(os.fstat, fd)
        if st.st_dev != self.mount_dev or st.st_ino < DAX_INO_BASE:
            raise DaxError(errno.EBADF, "not a device of this mount")
        minor = st.st_ino - DAX_INO_BASE
        for dev in self.bus.devices():
            if dev.dax_dev.minor == minor:
                return dev
        raise DaxError(errno.ENXIO, "no such device any more")

    async def _map(self, client: _Client, offset: int, length: int, write: bool, fd: int, trusted: bool) -> None:
        if not trusted or not client.pid:
            await self._send(client.sock, ["fuse"])
            return
        try:
            dev = await self._device_of(fd)
            if write and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY:
                raise DaxError(errno.EACCES, "the device was opened read-only")
            with self.core.read_locked():
                if not self.core.dax_alive(dev.dax_dev):
                    raise DaxError(errno.ENXIO, f"{dev.name} is disabled")
                segments = list(dev.segments(offset, length))
                minor = dev.dax_dev.minor
                gen = int(self._table[minor])
                self._hold(client, minor, gen, dev)
            memory = self.bus.memory.reopen(write)
        except DaxError as e:
            await self._send(client.sock, ["err", e.errno])
            return
        try:
            await self._send(client.sock, ["ok", gen, dev.align, dev.size, *(f"{p}:{n}" for p, n in segments)],
                             [memory])
        finally:
            os.close(memory)

    def _hold(self, client: _Client, minor: int, gen: int, dev: DevDax) -> None:
        grant = client.grants.get(minor)
        if grant is None or grant[0] != gen:
            if grant is not None:
                self.core.put_dax(grant[1])
            grant = client.grants[minor] = [gen, self.core.get_dax(dev.dax_dev), 0]
        grant[2] += 1

    def _inherit(self, client: _Client, minor: int, gen: int) -> None:
        if int(self._table[minor]) != gen:
            return  # already revoked: the child kills its copy itself
        for dev in self.bus.devices():
            if dev.dax_dev.minor == minor:
                self._hold(client, minor, gen, dev)

    def _release(self, client: _Client, minor: int, gen: int) -> None:
        grant = client.grants.get(minor)
        if grant is not None and grant[0] == gen:
            grant[2] -= 1
            if grant[2] <= 0:
                del client.grants[minor]
                self.core.put_dax(grant[1])

    # --- revocation -----------------------------------------------------------------------------
    async def _on_change(self, event: str, dev: DevDax) -> None:
        if event == "disabled":  # dead: kill_dax returned, no new grant can start
            await self.revoke(dev)
        elif event in ("poisoned", "cleared"):
            await self.poison(dev)

    async def poison(self, dev: DevDax) -> None:
        """Publish the poisoned ranges; mappers of dev map the dead file over
        the poisoned pages (the rest of the mapping lives on)."""
        bad = [(s * SECTOR, c * SECTOR) for s, c in self.bus.badblocks.ranges()][:MAX_POISON]
        base = self._seq_at + 1
        for i, (start, length) in enumerate(bad):
            self._table[base + 1 + 2 * i:base + 3 + 2 * i] = (start, length)
        self._table[base] = len(bad)
        await self._signal([c for c in self.clients if dev.dax_dev.minor in c.grants], dev)

    @staticmethod
    def _revoked_meanwhile(client: _Client) -> bool:
        """Signal the threads not signalled yet (new ones too: a thread made
        before its maker took the signal has no signal of its own); true
        when none of them can run a user instruction before the remap."""
        threads = _threads(client.pid)
        for tid in threads:
            if tid not in client.signalled:
                _tgkill(client.pid, tid, client.signal)
                client.signalled.add(tid)
        return all(_cannot_run_unrevoked(client.pid, t, client.signal) for t in threads)

    async def revoke_all(self) -> None:
        """A clean shutdown: every direct mapping goes, as the devices do."""
        for dev in list(self.bus.devices()):
            await self.revoke(dev)

    async def revoke(self, dev: DevDax) -> None:
        """Once this returns, no process loads from or stores to dev's
        memory through a direct mapping, and its next access raises SIGBUS."""
        minor = dev.dax_dev.minor
        if not any(minor in c.grants for c in self.clients):
            self._table[minor] += 1  # a grant in flight sees it is stale
            return
        self._table[minor] += 1
        holders = [c for c in self.clients if minor in c.grants]
        for client in holders:
            gen, dax_dev, _ = client.grants.pop(minor)
            self.core.put_dax(dax_dev)
        await self._signal(holders, dev)

    async def _signal(self, holders: list[_Client], dev: DevDax) -> None:
        """Have every holder apply the table as it now is (see the module)."""
        self.seq += 1
        self._table[self._seq_at] = self.seq
        seq = self.seq
        for client in holders:
            client.signalled = set()
        waiting = set(holders)
        with trio.move_on_after(KILL_AFTER):
            while waiting:
                waiting = {c for c in waiting if c.acked < seq and not self._revoked_meanwhile(c)}
                if waiting:
                    await trio.sleep(_POLL)
        for client in waiting:
            log.warning("pid %d neither revoked its mapping of %s nor can run: killed", client.pid, dev.name)
            try:
                os.kill(client.pid, 9)
            except ProcessLookupError:
                continue
            while _threads(client.pid) and not all(_cannot_run_unrevoked(client.pid, t, 9)
                                                   for t in _threads(client.pid)):
                await trio.sleep(_POLL)
