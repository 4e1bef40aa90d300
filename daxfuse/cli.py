"""The daxfuse command: mount / umount, and daxctl-like management commands
that speak the control-file grammar."""
import argparse
import errno
import logging
import os
import signal
import stat
import subprocess
import sys
import time

from . import client
from .client import listing, mountinfo, personality, runfiles
from .core import NR_DAX
from .views.devdir import HOST_DEV, HOST_MOUNTED
from .core.errors import DaxError, shown
from .core.units import format_size, parse_id, parse_size
from .dax import ALIGNS, DEFAULT_ALIGN, DEFAULT_SIZE
from .dax.users import parse_group, parse_mode, parse_owner

MOUNT_TIMEOUT = 60.0
# Exit statuses, one per class of failure, for scripts to tell them apart.
EXIT_FAILED = 1       # the request failed: an errno, which the line names
EXIT_USAGE = 2        # the command line is wrong (argparse's own status)
EXIT_UNREACHABLE = 3  # no daemon to ask: no such mount, or its daemon gone or not answering
# a mount whose daemon died (ENOTCONN), or a socket nobody listens on
UNREACHABLE_ERRNOS = {errno.ENOTCONN, errno.ECONNREFUSED, errno.ECONNABORTED}


class CliError(Exception):
    """One line for the user, no traceback: the request failed."""
    status = EXIT_FAILED


class UsageError(CliError):
    status = EXIT_USAGE


class Unreachable(CliError):
    status = EXIT_UNREACHABLE


# --- finding mounts and talking to them ---------------------------------------------------
def _canonical(path: str) -> str:
    """path as the mount table spells it, without touching the mount itself
    (a hung daemon would hang a stat of it)."""
    path = os.path.abspath(path)
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def find_mount(mountpoint: str | None) -> str:
    """A daxfuse mount point, decided by the mount table: -m MOUNTPOINT, or
    the only one this user mounted (the only one at all, if none)."""
    every = mountinfo.daxfuse_mounts()
    if mountpoint:
        if _canonical(mountpoint) not in [m.point for m in every]:
            raise Unreachable(f"{mountpoint} is not a daxfuse mount")
        return _canonical(mountpoint)
    mounts = [m.point for m in every if m.user_id == os.getuid()] or [m.point for m in every]
    if len(mounts) != 1:
        found = ", ".join(mounts) if mounts else "none"
        raise Unreachable(f"cannot choose a daxfuse mount (found: {found}); pass -m MOUNTPOINT")
    return mounts[0]


def usable_mount(mountpoint: str | None) -> str:
    """find_mount, and one this user may use."""
    mountpoint = find_mount(mountpoint)
    try:
        os.stat(os.path.join(mountpoint, "control"))
    except PermissionError:
        raise CliError(f"{mountpoint}: permission denied (a daxfuse mount of another user, "
                       f"not shared with -o allow_other)") from None
    return mountpoint


def control(mountpoint: str, command: str) -> str:
    """Apply command as one batch; its result line."""
    try:
        return client.control(mountpoint, command)
    except client.ControlError as e:
        raise (Unreachable if e.errno in UNREACHABLE_ERRNOS else CliError)(e.strerror) from None


# --- mount / umount ------------------------------------------------------------------------------
def _cxl_topology(value: str | None):
    """--cxl-topology: a JSON file, "none", or (not given) the default, cxl_test's shape."""
    from . import cxl
    if value == "none":
        return None
    if value is None:
        return cxl.DEFAULT
    try:
        with open(value) as f:
            return cxl.parse(f.read())
    except OSError as e:
        raise CliError(f"--cxl-topology {value}: {e.strerror}") from None


def _mount_config(args):
    from .dax import Access
    from .daemon.mount import MountConfig
    return MountConfig(mountpoint=args.mountpoint, memory_file=args.memory_file, size=args.size,
                       align=args.align, default_device=not args.no_default_device,
                       nr_dax=args.nr_dax, options=args.o,
                       access=Access(args.owner, args.group, args.mode), fresh=args.fresh,
                       cxl_topology=_cxl_topology(args.cxl_topology))


def cmd_mount(args) -> None:
    if not os.path.exists(args.mountpoint):
        raise CliError(f"mount point {args.mountpoint} does not exist")
    if not os.path.isdir(args.mountpoint):
        raise CliError(f"mount point {args.mountpoint} is not a directory")
    point = _canonical(args.mountpoint)
    for m in mountinfo.daxfuse_mounts():
        if point == m.point:
            raise CliError(f"{args.mountpoint} is already a daxfuse mount")
        if point.startswith(m.point.rstrip("/") + "/"):
            raise CliError(f"{args.mountpoint} is inside the daxfuse mount {m.point}: it would hide that "
                           f"mount's devices; mount elsewhere")
    if args.foreground:
        from .daemon.mount import run
        logging.basicConfig(level=logging.INFO, format="daxfuse[%(process)d] %(levelname)s: %(message)s")
        run(_mount_config(args))
        return
    _mount_detached(args)
    print(args.mountpoint)


def _mount_detached(args) -> None:
    """Start the daemon in its own session and wait for its READY=1; a
    daemon that failed leaves no log behind (its last line is the error)."""
    runfiles.make_run_dir()
    log_path = runfiles.run_file(args.mountpoint, "log")
    argv = [sys.executable, "-m", "daxfuse", *args.raw_argv, "--foreground"]
    with client.Readiness() as readiness, open(log_path, "wb") as log:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                 start_new_session=True, env={**os.environ, "NOTIFY_SOCKET": readiness.address})
        if readiness.wait(lambda: child.poll() is None, MOUNT_TIMEOUT):
            return
    if child.poll() is not None:
        error = _failure(log_path)
        os.unlink(log_path)
        raise CliError(error or f"daemon exited with status {child.returncode}")
    child.kill()
    raise Unreachable(f"daemon did not become ready within {MOUNT_TIMEOUT:.0f}s (log: {log_path})")


def _failure(path: str) -> str:
    """Why the daemon whose log is path failed: its last line, unless
    fusermount3 said more than libfuse's "fuse_session_mount failed"."""
    with open(path, errors="replace") as f:
        lines = [ln.strip() for ln in f if ln.strip()]
    said = [ln for ln in lines if ln.startswith("fusermount3: ")]
    return said[-1] if said else lines[-1].removeprefix("daxfuse: ") if lines else ""


def cmd_umount(args) -> None:
    """Stop the mount's daemon and wait for it; say what went wrong if its
    stop was not clean (the line it left)."""
    mountpoint = find_mount(args.mountpoint)
    pid = runfiles.daemon_pid(mountpoint)
    if pid is None:  # no daemon we know of (another user's, or gone): remove the mount itself
        owner = next((m.user_id for m in mountinfo.daxfuse_mounts() if m.point == mountpoint), None)
        if os.geteuid() and owner not in (None, os.getuid()):
            raise CliError(f"{mountpoint}: permission denied (a daxfuse mount of uid {owner})")
        r = subprocess.run(["fusermount3", "-u", "-z", mountpoint], capture_output=True, text=True)
        if r.returncode:
            raise CliError(r.stderr.strip() or f"fusermount3 failed with status {r.returncode}")
        return
    runfiles.take_error(mountpoint)  # a stale one, of a daemon before this one
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while runfiles.running(pid):
        if time.monotonic() > deadline:
            raise Unreachable(f"daemon {pid} did not exit within 30s")
        time.sleep(0.05)
    error = runfiles.take_error(mountpoint)
    if error:
        raise CliError(f"the daemon of {mountpoint} did not stop cleanly: {error}")


# --- exec in a namespace with the emulated /sys and /dev -----------------------------------
# host /dev goes to dev/.host first (recursively: pts, shm), and the nodes of
# HOST_MOUNTED onto their names in dev/, so that the rbind of dev/ over /dev
# carries them along and dev/'s links into .host/ resolve; the personality's
# library is preloaded into COMMAND alone. $3 is "" for root; for anyone
# else, "UID:GID": they are root only in the user namespace made for the
# mounts, and COMMAND runs under their own uid and gid again (an inner user
# namespace). Root's /dev allows device nodes (a FUSE mount does not), as
# devtmpfs: the ones root makes there with mknod (views/tree.py).
# --root DIR ($4): a tmpfs on DIR/proc (in this namespace only) holds an
# overlay of DIR, writable and thrown away at exit, under a top layer, skel,
# of the mount points DIR lacks (and their parents, in DIR's modes), made
# from the arguments that follow $4 up to "--" (MODE:PATH, or f:PATH for a
# file). The binds follow, up to a second "--", each KIND SOURCE PATH (PATH
# inside DIR, its links resolved as inside DIR: _in_root); COMMAND runs
# chrooted there. The overlay's own mounter is the user namespace's root for
# anyone but root: its writes into DIR's directories, root's own, fail.
_EXEC = (f'mount --bind "$1/sys" /sys && mount --rbind /dev "$1/dev/{HOST_DEV}" && '
         f'for n in {" ".join(HOST_MOUNTED)}; do if [ -e "/dev/$n" ] && [ ! -L "/dev/$n" ]; then '
         'mount --bind "/dev/$n" "$1/dev/$n" || exit; fi; done && '
         'mount --rbind "$1/dev" /dev && if [ -z "$3" ]; then mount -o remount,bind,nosuid,dev /dev; fi && '
         'preload=$2 && user=$3 && root=$4 && shift 4 && '
         'if [ -n "$root" ]; then t=$root/proc && new=$t/root && '
         'mount -t tmpfs -o mode=755 daxfuse-root "$t" && mkdir "$t/skel" "$t/upper" "$t/work" "$new" || exit; '
         'while [ "$1" != -- ]; do case $1 in f:*) : >"$t/skel${1#f:}" ;; '
         '*) mkdir -m "${1%%:*}" "$t/skel${1#*:}" ;; esac || exit; shift; done; shift && '
         'mount -t overlay daxfuse-root -o '
         '"lowerdir=$t/skel:$root,upperdir=$t/upper,workdir=$t/work${user:+,userxattr}" "$new" || '
         '{ echo "daxfuse: cannot mount an overlay of $root (overlayfs, in a user namespace since Linux 5.11)" >&2; '
         'exit 1; }; '
         'while [ "$1" != -- ]; do case $1 in '
         'proc) mount -t proc proc "$new$3" 2>/dev/null || mount --rbind /proc "$new$3" ;; '
         'file) mount --bind "$2" "$new$3" ;; '
         '*) mount --rbind "$2" "$new$3" ;; '
         'esac || exit; shift 3; done; else shift; fi && shift && '
         'if [ -n "$preload" ]; then set -- env LD_PRELOAD="$preload${LD_PRELOAD:+:$LD_PRELOAD}" "$@"; fi && '
         'if [ -n "$root" ]; then set -- --root="$new" -- "$@"; elif [ -n "$user" ]; then set -- -- "$@"; fi && '
         'if [ -n "$user" ]; then exec unshare --user --map-user="${user%:*}" --map-group="${user#*:}" "$@"; fi && '
         'if [ -n "$root" ]; then exec unshare "$@"; fi && exec "$@"')


def _in_root(root: str, path: str) -> str:
    """path as a process chrooted into root finds it: root's own links
    followed inside root (an absolute one from root itself), so that a
    mount made on root + the result is where path leads there."""
    parts, done, hops = [p for p in path.split("/") if p], [], 0
    while parts:
        name = parts.pop(0)
        if name in (".", ".."):
            if name == ".." and done:
                done.pop()
            continue
        here = os.path.join(root, *done, name)
        if os.path.islink(here):
            hops += 1
            if hops > 40:
                raise CliError(f"--root {root}: too many levels of symbolic links in {path}")
            target = os.readlink(here)
            if target.startswith("/"):
                done = []
            parts = [p for p in target.split("/") if p] + parts
            continue
        done.append(name)
    return "/" + "/".join(done)


def _check_root(root: str) -> None:
    """A directory that `exec --root` can chroot into, or a one-line error."""
    if not os.path.isdir(root):
        raise CliError(f"--root {root}: no such directory")
    if os.path.realpath(root) == "/":
        raise UsageError("--root / is the host's own root: leave --root out")
    if any(c in root for c in ",:\\\n"):  # overlayfs's option syntax
        raise CliError(f"--root {root}: a path with ',', ':' or '\\' cannot be an overlay's lower directory")
    if not os.path.lexists(os.path.join(root, "bin", "sh")) or os.path.islink(os.path.join(root, "proc")) \
            or not os.path.isdir(os.path.join(root, "proc")):
        raise CliError(f"--root {root} is not a root filesystem (no /bin/sh and /proc directory): "
                       f"make one with scripts/tools-root or debootstrap")


def _root_plan(root: str, mountpoint: str, preload: str) -> list[str]:
    """What `exec --root` mounts in the overlay of root, for _EXEC: the
    mount points root lacks (skel), "--", then KIND SOURCE PATH triples: the
    emulated /sys and /dev, /proc, the run directory of the mount's direct
    mappings, the preload library and the mount itself, each at its own path."""
    binds = [("dir", "/sys"), ("dir", "/dev"), ("proc", "/proc")]
    try:
        sockets = os.path.dirname(os.readlink(os.path.join(mountpoint, ".direct")))
    except OSError:
        sockets = runfiles.run_dir()
    if os.path.isdir(sockets):
        binds.append(("dir", sockets))
    if preload:
        binds.append(("file", preload))
    binds.append(("dir", mountpoint))
    skel: dict[str, str] = {}
    triples: list[str] = []
    for kind, source in binds:
        path = _in_root(root, source)
        triples += [kind, source, path]
        parts = path.strip("/").split("/")
        prefixes = ["/" + "/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        missing = [p for p in prefixes if not os.path.lexists(root + p)]
        if not missing:
            continue
        for p in prefixes[:prefixes.index(missing[0])]:  # in skel too, with their modes: the top layer's rule
            skel.setdefault(p, f"{stat.S_IMODE(os.stat(root + p).st_mode):o}:{p}")
        for p in missing:
            skel.setdefault(p, f"f:{p}" if kind == "file" and p == path else f"755:{p}")
    return [*skel.values(), "--", *triples]


def cmd_exec(args) -> None:
    if not args.argv:
        raise UsageError("exec needs a command: daxfuse exec [-m MOUNTPOINT] [--root DIR] -- COMMAND...")
    root = os.path.realpath(args.root) if args.root else ""
    if root:
        _check_root(root)
    if not mountinfo.mounted("/"):  # unshare's --propagation private would fail with EINVAL
        raise CliError("/ is not a mount point here (a chroot?), so exec cannot keep its mounts private: "
                       "bind-mount the root directory onto itself first (mount --bind DIR DIR), "
                       "as container runtimes do")
    mountpoint = usable_mount(args.mount)
    preload = ""
    if args.personality:
        preload = personality.library()
        os.environ["DAXFUSE_PERSONALITY"] = personality.settings(mountpoint, args.read_write,
                                                                 not args.fuse_mappings)
    if root and preload:
        preload = os.path.realpath(preload)  # as the chroot finds it: host links may be missing there
    plan = _root_plan(root, mountpoint, preload) if root else ["--"]
    namespaces, user = ["--mount"], ""
    if os.geteuid():
        namespaces = ["--user", "--map-root-user", "--mount"]
        user = f"{os.geteuid()}:{os.getegid()}"
    os.execvp("unshare", ["unshare", *namespaces, "--propagation", "private", "sh", "-c", _EXEC,
                          "daxfuse-exec", mountpoint, preload, user, root, *plan, "--", *args.argv])


# --- management ------------------------------------------------------------------------------
def cmd_list(args) -> None:
    layout = client.read_layout(usable_mount(args.mount))
    found = listing.daxctl_list(layout, regions=args.regions, devices=args.devices,
                                mappings=args.mappings, idle=args.idle, media_errors=args.media_errors)
    if found:  # daxctl prints nothing at all when nothing matches
        print(listing.dumps(found))


def cmd_inject_error(args) -> None:
    """ndctl inject-error's interface, on a device."""
    mountpoint = usable_mount(args.mount)
    if args.status:
        devices = [d for r in client.read_layout(mountpoint) for d in r["devices"] if d["name"] == args.device]
        if not devices:
            raise CliError(f"ENXIO: no device {args.device!r}")
        print(listing.dumps({"badblocks": devices[0]["badblocks"]}))
        return
    if args.block is None:
        raise UsageError("inject-error needs -B BLOCK (or --status)")
    command = "clear-error" if args.uninject else "inject-error"
    control(mountpoint, _line(command, args.device, block=args.block, count=args.count))


def _run(args, command: str) -> None:
    print(control(usable_mount(args.mount), command).removeprefix("ok ").strip())


def _line(command: str, *names: str, **keys) -> str:
    """One control-file command line; keys given as None are left out. A
    word with a space or a line break in it would be more than the one
    command asked for: EINVAL."""
    words = [*names, *(f"{k}={v}" for k, v in keys.items() if v is not None)]
    for word in words:
        if not word or any(c.isspace() for c in str(word)):
            raise CliError(f"EINVAL: invalid argument {shown(str(word))}")
    return " ".join([command, *words])


def _each(command: str, **keys):
    """A batch: command for every device named, all or nothing."""
    def run(args) -> None:
        _run(args, "\n".join(_line(command, name, **{k: getattr(args, a) for k, a in keys.items()})
                             for name in args.devices))
    return run


def _typed(parse):
    """An argparse type from a parser of the control grammar."""
    def convert(text: str):
        try:
            return parse(text)
        except DaxError as e:
            raise argparse.ArgumentTypeError(e.message) from None
    convert.__name__ = parse.__name__.removeprefix("parse_")
    return convert


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="daxfuse", description="Userspace emulator of Linux device-dax")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    m = sub.add_parser("mount", help="mount an emulator")
    m.add_argument("mountpoint")
    m.add_argument("--memory-file", metavar="PATH", help="back memory with PATH and keep it (default: /dev/shm, removed)")
    m.add_argument("--size", type=_typed(parse_size), help=f"size of region 0 of a new layout (default {format_size(DEFAULT_SIZE)})")
    m.add_argument("--align", type=_typed(parse_size), help=f"align of region 0 of a new layout: {', '.join(map(format_size, ALIGNS))} "
                        f"(default {format_size(DEFAULT_ALIGN)})")
    m.add_argument("--no-default-device", action="store_true", help="do not create dax0.0")
    m.add_argument("--cxl-topology", metavar="FILE",
                   help="the CXL bus's host bridges, switches, memdevs and windows, as JSON (README, \"The CXL bus\"); "
                        "none: no CXL bus (default: cxl_test's shape)")
    m.add_argument("--fresh", action="store_true",
                   help="a --memory-file that holds data and no layout record becomes new memory (its data lost)")
    m.add_argument("--nr-dax", type=_typed(parse_id), default=NR_DAX, help=f"most dax devices at once (default {NR_DAX})")
    m.add_argument("--foreground", action="store_true", help="serve in this process")
    m.add_argument("-o", action="append", default=[], metavar="OPT",
                   help="extra FUSE mount option (allow_other: let other users in)")
    m.add_argument("--owner", type=_typed(parse_owner), default=os.getuid(), metavar="USER",
                   help="owner of new devices (default: who mounts)")
    m.add_argument("--group", type=_typed(parse_group), default=os.getgid(), metavar="GROUP",
                   help="group of new devices (default: who mounts)")
    m.add_argument("--mode", type=_typed(parse_mode), default=0o600, metavar="MODE",
                   help="octal mode of new devices (default 0600)")
    m.set_defaults(func=cmd_mount)

    u = sub.add_parser("umount", help="unmount an emulator; its daemon exits")
    u.add_argument("mountpoint", nargs="?")
    u.set_defaults(func=cmd_umount)

    # A managed command's numbers and names go to the daemon as typed: the
    # control grammar judges them (one line, errno EINVAL), not argparse.
    def managed(name: str, help_: str, func) -> argparse.ArgumentParser:
        s = sub.add_parser(name, help=help_)
        s.add_argument("-m", "--mount", metavar="MOUNTPOINT", help="daxfuse mount (default: the only one)")
        s.set_defaults(func=func)
        return s

    ex = managed("exec", "run a command where /sys and /dev show the emulated devices, which are "
                         "character devices with device-dax's mmap rules (daxctl, fio, PMDK work)", cmd_exec)
    ex.add_argument("--no-personality", dest="personality", action="store_false",
                    help="no preload library: devices stay regular files, read/write work")
    ex.add_argument("--read-write", action="store_true",
                    help="let read/write/pread/pwrite reach devices (the kernel's device-dax refuses them)")
    ex.add_argument("--fuse-mappings", action="store_true",
                    help="map devices through FUSE, not their memory itself (faults as FUSE READs)")
    ex.add_argument("--root", metavar="DIR",
                    help="run COMMAND chrooted into DIR, another root filesystem (scripts/tools-root makes "
                         "one with newer ndctl and daxctl), with the same /sys, /dev and personality; DIR "
                         "is seen through an overlay whose writes vanish at exit")
    ex.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND...")

    ls = managed("list", "list regions and devices as daxctl list JSON", cmd_list)
    ls.add_argument("-R", "--regions", action="store_true", help="include regions")
    ls.add_argument("-D", "--devices", action="store_true", help="include devices")
    ls.add_argument("-M", "--mappings", action="store_true", help="include device mappings")
    ls.add_argument("-i", "--idle", action="store_true", help="include size-0 devices")
    ls.add_argument("--media-errors", action="store_true", help="include each device's bad blocks")

    ie = managed("inject-error", "poison 512-byte blocks of a device (media errors), clear or list them",
                 cmd_inject_error)
    ie.add_argument("device", metavar="NAME")
    ie.add_argument("-B", "--block", help="first 512-byte block")
    ie.add_argument("-n", "--count", default="1", help="blocks (default 1)")
    ie.add_argument("--uninject", action="store_true", help="clear them")
    ie.add_argument("--status", action="store_true", help="list the device's bad blocks")

    cr = managed("create-region", "create a region",
                 lambda a: _run(a, _line("create-region", size=a.size, align=a.align, id=a.id, type=a.type,
                                         target_node=a.target_node, numa_node=a.numa_node)))
    cr.add_argument("-s", "--size", required=True)
    cr.add_argument("-a", "--align")
    cr.add_argument("--id")
    cr.add_argument("-t", "--type", help="device (a pmem region, the default) or kmem (as hmem and CXL RAM "
                                         "regions: its devices come up as system RAM)")
    cr.add_argument("--target-node", help="the node its memory goes online in (-1: none)")
    cr.add_argument("--numa-node", help="the node closest to it (-1: none)")

    dr = managed("destroy-region", "destroy a region without devices",
                 lambda a: _run(a, _line("destroy-region", str(a.id))))
    dr.add_argument("id")

    cd = managed("create-device", "create a device in a region",
                 lambda a: _run(a, _line("create-device", region=a.region, size=a.size, align=a.align,
                                         owner=a.owner, group=a.group, mode=a.mode)))
    cd.add_argument("-r", "--region", required=True)
    cd.add_argument("-s", "--size")
    cd.add_argument("-a", "--align")
    cd.add_argument("--owner", metavar="USER", help="its owner (default: the mount's --owner)")
    cd.add_argument("--group", metavar="GROUP", help="its group (default: the mount's --group)")
    cd.add_argument("--mode", metavar="MODE", help="its octal mode (default: the mount's --mode)")

    rd = managed("reconfigure-device", "resize disabled devices", _each("resize-device", size="size"))
    rd.add_argument("devices", nargs="+", metavar="NAME")
    rd.add_argument("-s", "--size", required=True)

    for name, help_ in (("disable-device", "disable devices (hot-unplug: mappings revoked)"),
                        ("enable-device", "enable devices"),
                        ("destroy-device", "destroy disabled devices")):
        s = managed(name, help_, _each(name))
        s.add_argument("devices", nargs="+", metavar="NAME")
    for name, help_ in (("pin-memory", "make a memory block kmem added refuse to go offline (EBUSY), "
                                       "as unmovable pages make it"),
                        ("unpin-memory", "let it go offline again")):
        s = managed(name, help_, lambda a, name=name: _run(a, _line(name, a.block)))
        s.add_argument("block", metavar="memoryN")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.raw_argv = sys.argv[1:] if argv is None else argv  # the detached daemon's own command line
    if args.command == "exec" and args.argv[:1] == ["--"]:
        args.argv = args.argv[1:]
    if args.command == "list" and not (args.regions or args.devices):
        args.devices = True  # as daxctl list: devices, unless regions are asked for
    try:
        args.func(args)
    except CliError as e:
        print(f"daxfuse: {e}", file=sys.stderr)
        return e.status
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        name = errno.errorcode.get(e.errno, "")
        said = e.strerror or str(e)
        print(f"daxfuse: {where}{said if not name or said.startswith(('error ', name)) else f'{name}: {said}'}",
              file=sys.stderr)
        return EXIT_UNREACHABLE if e.errno in UNREACHABLE_ERRNOS else EXIT_FAILED
    except (DaxError, RuntimeError) as e:
        print(f"daxfuse: {e}", file=sys.stderr)
        return EXIT_FAILED
    return 0
