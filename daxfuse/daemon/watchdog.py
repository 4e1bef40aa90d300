"""The daemon's watchdog: aborts the mount's FUSE connection once the daemon
dies, so that a SIGKILL never leaves it hung.

A SIGKILL that lands while a worker thread is inside FUSE_NOTIFY_INVAL_INODE
(a disable or a shutdown writing mapped pages back) leaves that thread in
the kernel for good: it waits for the writeback of dirty pages, and the
WRITE requests that writeback sent are for the trio thread, which is dead.
The process never exits, so the connection never closes, and its clients
stay in D state: only an abort frees them. The watchdog is a shell that
gets SIGTERM when the daemon's main thread ends (PR_SET_PDEATHSIG, through
setpriv) and then aborts the connection if it is still mounted: through
fusectl's abort file (writable by the mounter) when it is mounted, else
umount -f (root). Then it detaches the mount (fusermount3 -u -z): the
auto_unmount that fusermount3 does wants ENOTCONN from an open of the mount
point, and gets ECONNABORTED when that open was sent before the dying
daemon's /dev/fuse fd closed (it closes the socket fusermount3 waits on
first), so it leaves the mount, and umount -f cannot take it while clients
hold files in it (EBUSY). On a clean stop the daemon kills the watchdog first.
"""
import os
import signal
import subprocess

from ..core.devt import dev_text

_SCRIPT = r'''
trap 'kill $! 2>/dev/null
      if grep -q "^[0-9]* [0-9]* $2 " /proc/self/mountinfo; then
          { [ -w "$3" ] && echo 1 >"$3"; } 2>/dev/null || umount -f "$1" 2>/dev/null
          fusermount3 -u -z -q "$1" 2>/dev/null
      fi
      exit 0' TERM
while :; do sleep 86400 & wait $!; done
'''


def start(mountpoint: str, st_dev: int) -> subprocess.Popen:
    """The watchdog of the mount at mountpoint (st_dev: its device)."""
    abort = f"/sys/fs/fuse/connections/{(os.major(st_dev) << 20) | os.minor(st_dev)}/abort"
    return subprocess.Popen(["setpriv", "--pdeathsig", "TERM", "sh", "-c", _SCRIPT, "daxfuse-watchdog",
                             mountpoint, dev_text(st_dev), abort],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def stop(watchdog: subprocess.Popen) -> None:
    """A clean stop: the watchdog and its sleep go without aborting anything."""
    try:
        os.killpg(watchdog.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    watchdog.wait()
