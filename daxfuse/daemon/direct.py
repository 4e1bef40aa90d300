"""Direct mappings: the socket through which the personality library asks
for a device's window (memory/window.py), to map the device's memory itself.

The protocol's wire format is daxfuse/preload/daxfuse_wire.h (views/wire.py). A
connection carries one request and its reply. Trust comes from the kernel:

- the socket lives in the daemon's run directory (mode 0700), so only the
  daemon's user and root reach it, and each peer's uid and pid come from
  SO_PEERCRED, with a pidfd (SO_PEERPIDFD) that tells whether that pid was
  reused meanwhile. Only the daemon's own user and root are served;
- MAP proves the device was opened: the peer names an fd of its own, which
  the daemon reads in /proc/PID/fdinfo (mount, inode, open flags) without
  touching the file. No fd ever reaches the daemon: the socket refuses
  them (SO_PASSRIGHTS), so nothing of another filesystem is ever closed here;
- REVIVE proves an earlier grant: a token (an HMAC of the device's serial,
  minor and mode under a key of this daemon's) that came with it, so that a
  mapping made before a disable works again after the enable, as on the
  kernel, whether or not the process still holds an fd of the device;
- a malformed request closes its connection and logs one line (at most a
  few a second); connections are bounded per user and in all; a peer that
  sends nothing is dropped after CLIENT_TIMEOUT.

What a grant reaches, and who may have one, is the Device DAX layer's rule
(dax/grant.py). Revocation is the kernel's: a window that closes is
truncated, and every mapping of it faults (memory/window.py). The table
that comes with each grant lets the library answer mmap of a device it has
mapped before without asking (alive, and which window is current).
"""
import errno
import fcntl
import hashlib
import hmac
import logging
import mmap
import os
import select
import socket
import struct
import time

import numpy as np
import trio

from ..views import wire
from ..dax import DaxBus, DevDax, Event
from ..dax.grant import Peer, grant, poison
from ..client import mountinfo
from ..core.devt import DAX_INO_BASE, dev_text
from ..core.errors import DaxError

log = logging.getLogger(__name__)

CLIENT_TIMEOUT = 5.0
MAX_CONNECTIONS = 128
MAX_PER_USER = 32
SO_PEERPIDFD = 77   # Linux 6.5
SO_PASSRIGHTS = 83  # Linux 6.16
_O_PATH = 0o10000000
_F_ADD_SEALS = 1033
_F_SEAL_SEAL, _F_SEAL_SHRINK, _F_SEAL_GROW, _F_SEAL_FUTURE_WRITE = 0x1, 0x2, 0x4, 0x10


class _Quiet:
    """Log warnings, at most a few a second: a flood of bad requests must not flood the log."""

    def __init__(self, per_second: int = 5) -> None:
        self.per_second, self.window, self.count, self.dropped = per_second, 0, 0, 0

    def warning(self, message: str, *args) -> None:
        now = int(time.monotonic())
        if now != self.window:
            if self.dropped:
                log.warning("direct: %d more lines like these left out", self.dropped)
            self.window, self.count, self.dropped = now, 0, 0
        self.count += 1
        if self.count <= self.per_second:
            log.warning("direct: " + message, *args)
        else:
            self.dropped += 1


class _Refused(Exception):
    """Close the connection: the request was no request, or from no one served."""


def _peer(sock) -> tuple[Peer, int | None]:
    """Who is at the other end, and a pidfd of it (None before Linux 6.5)."""
    pid, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    try:
        pidfd = sock.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD)
    except OSError:
        pidfd = None
    try:
        with open(f"/proc/{pid}/status") as f:
            groups = next((line.split()[1:] for line in f if line.startswith("Groups:")), [])
    except OSError:
        groups = []
    return Peer(pid, uid, frozenset(map(int, groups))), pidfd


def _alive(pidfd: int | None) -> bool:
    """Whether the process the pidfd names still runs (so its pid was not reused)."""
    if pidfd is None:
        return True
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return not poller.poll(0)


def _opened(pid: int, fd: int, mount_dev: int) -> tuple[int, int] | None:
    """(inode number, open flags) of peer pid's fd, which must be a file of
    this mount: read from /proc alone, without a request to any filesystem.
    None for a process whose fds the daemon may not read."""
    try:
        with open(f"/proc/{pid}/fdinfo/{fd}") as f:
            info = dict(line.split(":", 1) for line in f if ":" in line)
        flags, mnt_id, ino = int(info["flags"], 8), info["mnt_id"].strip(), int(info["ino"])
        dev = next((m.dev for m in mountinfo.mounts(pid) if m.mnt_id == mnt_id), None)
    except FileNotFoundError:
        raise DaxError(errno.EBADF, f"no fd {fd}") from None
    except PermissionError:
        return None
    if flags & _O_PATH:
        raise DaxError(errno.EBADF, f"fd {fd} is an O_PATH fd")
    if dev != dev_text(mount_dev) or ino < DAX_INO_BASE:
        raise DaxError(errno.ENODEV, f"fd {fd} is not a device of this mount")
    return ino, flags


class DirectServer:
    def __init__(self, bus: DaxBus, mount_dev: int, path: str) -> None:
        self.bus = bus
        self.mount_dev = mount_dev
        self.path = path
        self._key = os.urandom(32)
        self._users: dict[int, int] = {}  # connections open, per uid
        self._quiet = _Quiet()
        nr = bus.core.nr_dax
        fd = os.memfd_create("daxfuse-table", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        os.ftruncate(fd, 8 * nr)
        self._table = np.frombuffer(mmap.mmap(fd, 8 * nr), dtype=np.uint64)
        # readers only from now on, whatever they reopen it as
        fcntl.fcntl(fd, _F_ADD_SEALS, _F_SEAL_SHRINK | _F_SEAL_GROW | _F_SEAL_FUTURE_WRITE | _F_SEAL_SEAL)
        self._table_fd = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
        os.close(fd)
        for dev in bus.devices():
            self._publish(dev)
        bus.listeners.append(self._on_change)

    # --- the table --------------------------------------------------------------------------------
    def _publish(self, dev: DevDax, gone: bool = False) -> None:
        gen = 0 if gone or dev.window is None else dev.window.serial
        self._table[dev.dax_dev.minor] = gen << 1 | (not gone and dev.dax_dev.alive)

    async def _on_change(self, event: Event, dev) -> None:
        if event in (Event.ADDED, Event.ENABLED, Event.DISABLED, Event.WINDOW, Event.REMOVED):
            self._publish(dev, gone=event is Event.REMOVED)

    # --- serving ------------------------------------------------------------------------------------
    async def serve(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            listener.setsockopt(socket.SOL_SOCKET, SO_PASSRIGHTS, 0)
        except OSError:
            log.warning("direct: this kernel cannot refuse fds on a socket (SO_PASSRIGHTS, Linux 6.16); "
                        "fds sent to it are dropped unread")
        try:
            os.unlink(self.path)  # a daemon killed before left it (the run directory is ours)
        except FileNotFoundError:
            pass
        await listener.bind(self.path)
        listener.listen(MAX_CONNECTIONS)
        task_status.started()
        try:
            async with trio.open_nursery() as nursery:
                while True:
                    try:
                        sock, _ = await listener.accept()
                    except OSError as e:  # EMFILE, ENFILE, ENOMEM: wait for room
                        self._quiet.warning("cannot accept: %s", e.strerror)
                        await trio.sleep(0.1)
                        continue
                    nursery.start_soon(self._connection, sock)
        finally:
            listener.close()
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    async def _connection(self, sock) -> None:
        with sock:
            peer, pidfd = _peer(sock)
            try:
                if sum(self._users.values()) >= MAX_CONNECTIONS or self._users.get(peer.uid, 0) >= MAX_PER_USER:
                    return  # too many already: closed at once
                self._users[peer.uid] = self._users.get(peer.uid, 0) + 1
                try:
                    await self._one(sock, peer, pidfd)
                finally:
                    self._users[peer.uid] -= 1
            except _Refused as e:
                self._quiet.warning("pid %d uid %d: %s", peer.pid, peer.uid, e)
            except OSError as e:  # it went away
                log.debug("direct: pid %d: %s", peer.pid, e)
            finally:
                if pidfd is not None:
                    os.close(pidfd)

    async def _one(self, sock, peer: Peer, pidfd: int | None) -> None:
        if peer.uid not in (0, os.geteuid()):
            await sock.send(wire.reply(errno.EACCES))
            raise _Refused("not the daemon's user, nor root")
        with trio.move_on_after(CLIENT_TIMEOUT):
            data = await sock.recv(wire.REQUEST.size + 1)
            req = wire.request(data)
            if req is None:
                raise _Refused(f"malformed request ({len(data)} bytes)")
            try:
                message, fds = await self._answer(req, peer, pidfd)
            except DaxError as e:
                message, fds = wire.reply(e.errno), []
            try:
                await sock.sendmsg([message], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))]
                                   if fds else [])
            finally:
                for fd in fds[:1]:  # the window's, opened for this grant; the table's stays
                    os.close(fd)
            return
        raise _Refused(f"nothing sent within {CLIENT_TIMEOUT:.0f} s")

    async def _answer(self, req, peer: Peer, pidfd: int | None) -> tuple[bytes, list[int]]:
        write = bool(req.write)
        if req.op == wire.OP_MAP:
            opened = _opened(peer.pid, req.fd, self.mount_dev)
            if not _alive(pidfd):
                raise _Refused("gone before its fd was read")
            if opened is None:  # a process the daemon may not look into (not dumpable): through FUSE
                return wire.reply(wire.STATUS_FUSE), []
            ino, flags = opened
            dev = self._device(ino - DAX_INO_BASE, None)
            opened_for_write = flags & os.O_ACCMODE != os.O_RDONLY
        elif req.op == wire.OP_REVIVE:
            if not hmac.compare_digest(req.token, self._token(req.serial, req.minor, write)):
                raise _Refused("a revival with a token this daemon never gave")
            dev, opened_for_write = self._device(req.minor, req.serial), write
        else:
            raise _Refused(f"unknown operation {req.op}")
        window = await grant(self.bus, dev, peer, write, opened_for_write)
        if window is None:
            return wire.reply(wire.STATUS_FUSE), []
        bad = poison(self.bus, dev)
        if len(bad) > wire.MAX_POISON:
            return wire.reply(wire.STATUS_FUSE), []
        serial, minor = dev.dax_dev.serial, dev.dax_dev.minor
        fd = window.reopen(write)
        return (wire.reply(0, minor, serial, window.serial, dev.align, dev.size,
                           self._token(serial, minor, write), bad), [fd, self._table_fd])

    def _device(self, minor: int, serial: int | None) -> DevDax:
        """The device of minor (and of serial, when given: the one granted before)."""
        dev = self.bus.device_of_minor(minor)
        if dev is None or serial not in (None, dev.dax_dev.serial):
            raise DaxError(errno.ENXIO, f"no device of minor {minor} any more")
        return dev

    def _token(self, serial: int, minor: int, write: bool) -> bytes:
        return hmac.new(self._key, struct.pack("<QQI", serial, minor, write), hashlib.sha256).digest()
