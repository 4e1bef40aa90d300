"""fuzz: seeded control-file and sysfs input, valid and near misses of the
grammar; after each write the layout's invariants hold, and a write that
failed changed nothing."""
import errno
import random
import time

from daxfuse.dax import ALIGNS
from daxfuse.dax.device import alloc_granule

from .harness import MiB, MAX_VIOLATIONS, Daemon, Hung, Stats, ename, layout_violations, shown, view_violations


CONTROL_ERRNOS = {0, errno.EINVAL, errno.ENOSPC, errno.EBUSY, errno.ENXIO, errno.EEXIST}
SYSFS_ERRNOS = CONTROL_ERRNOS | {errno.ERANGE, errno.ENOENT, errno.ENOMEM}  # ENOMEM: mapping_store
HUGE_SYSFS = {errno.ERANGE, errno.EINVAL, errno.ENXIO}  # as the kernel's stores
CONTROL_MAX = 1044480  # the largest control write applied whole; past it E2BIG
BAD_VALUES = ["", "-1", "0x", "x10", "1.5M", "4Q", "1e3", "0b1", "4097", "3M", "+4K", "4K4", "K", "0o7",
              "18446744073709551616", "0x10000000000000000", "17179869184T", "\u0661\u0662", "4\u00a0K"]
ODD_SPACES = ["\t", "  ", "\r", "\v", "\f", "\x1c", "\x85", "\u00a0", "\u2028", "\u3000", " \n "]
UNKNOWN = ["create-regions", "Create-region", "create_region", "destroy", "enable", "rm", "resize-device2",
           "disable-devices", "create-region=1", "\u0441reate-region"]
NON_UTF8 = [b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\x80", b"\xf5\x80\x80\x80", b"\xe2\x82"]
DEVICE_ATTRS = ("size", "align", "mapping", "uevent")
REGION_ATTRS = ("create", "delete")
DRIVER_ATTRS = ("bind", "unbind", "new_id", "remove_id")
DRIVERS = ("device_dax", "kmem", "fsdev_dax")


def huge(rng: random.Random) -> str:
    """A number of thousands of digits."""
    n = rng.randint(1000, 6000)
    return rng.choice(["9" * n, "0x" + "f" * n, "1" + "0" * n])


def spell(rng: random.Random, n: int) -> str:
    """n in one of the spellings the control grammar takes."""
    forms = [str(n), hex(n), "00" + str(n), f"{n}B"]
    for shift, s in ((10, "K"), (20, "M"), (30, "G")):
        if n and n % (1 << shift) == 0:
            m = n >> shift
            forms += [f"{m}{s}", f"{m}{s.lower()}", f"{m}{s}iB", f"{m:#x}{s}"]
    return rng.choice(forms)


def valid_line(rng: random.Random, layout: list) -> str:
    """A command naming what exists, with values of the right form; the bus
    may still refuse it (EBUSY, ENOSPC, EEXIST)."""
    devices = [d for r in layout for d in r["devices"]]
    commands = ["create-region"] * 2 + ["create-device"] * 4 + ["destroy-region"] * (len(layout) > 0)
    commands += ["resize-device", "disable-device", "enable-device", "destroy-device"] * 2 * (len(devices) > 0)
    command = rng.choice(commands)
    if command == "create-region":
        align = rng.choice(ALIGNS[:2] * 4 + ALIGNS[2:])
        words = [f"size={spell(rng, align * rng.randint(1, 4 if align == ALIGNS[2] else 32))}"]
        if align != ALIGNS[1] or rng.random() < 0.3:
            words.append(f"align={spell(rng, align)}")
        if rng.random() < 0.5:
            words.append(f"id={rng.randrange(8)}")
    elif command == "destroy-region":
        words = [str(rng.choice(layout)["id"])]
    elif command == "create-device":
        region = rng.choice(layout) if layout and rng.random() < 0.9 else {"id": rng.randrange(8), "align": ALIGNS[1]}
        words = [f"region={region['id']}"]
        if rng.random() < 0.8:
            words.append(f"size={spell(rng, alloc_granule(region['align']) * rng.randint(0, 8))}")
        if rng.random() < 0.2:
            words.append(f"align={spell(rng, rng.choice(ALIGNS[:2]))}")
    else:
        device = rng.choice(devices)
        words = [device["name"]]
        if command == "resize-device":
            words.append(f"size={spell(rng, alloc_granule(device['align']) * rng.randint(0, 16))}")
    head, keyed = ([], words) if command.startswith("create-") else (words[:1], words[1:])
    return " ".join([command] + head + rng.sample(keyed, len(keyed)))  # keys in any order


def near_miss(rng: random.Random, line: str) -> tuple[bytes, bool]:
    """line with one thing wrong, and whether the parser must refuse it
    (EINVAL before anything runs, whatever else the batch holds)."""
    words = line.split(" ")
    keyed = [i for i, w in enumerate(words) if "=" in w]
    numbers = keyed + ([1] if words[0] == "destroy-region" else [])
    how = rng.choice(["huge", "bad value", "space", "nul", "non-utf8", "unknown command", "unknown key",
                      "twice", "missing", "upper key", "cut"])
    if how == "huge" and numbers:
        i = rng.choice(numbers)
        words[i] = words[i].partition("=")[0] + "=" + huge(rng) if "=" in words[i] else huge(rng)
        return " ".join(words).encode(), True
    if how == "bad value" and numbers:
        i = rng.choice(numbers)
        value = rng.choice(BAD_VALUES + ["0" * rng.randint(1000, 5000) + "1"])  # long, yet small
        words[i] = (words[i].partition("=")[0] + "=" if "=" in words[i] else "") + value
        return " ".join(words).encode(), False
    if how == "non-utf8":
        data = line.encode()
        i = rng.randrange(len(data) + 1)
        return data[:i] + rng.choice(NON_UTF8) + data[i:], True
    if how == "unknown command":
        return " ".join([rng.choice(UNKNOWN)] + words[1:]).encode(), True
    if how == "twice" and keyed:
        return " ".join(words + [words[rng.choice(keyed)]]).encode(), True
    if how == "missing" and words[0] == "create-region":
        return " ".join(w for w in words if not w.startswith("size=")).encode(), True
    if how == "upper key" and keyed:
        i = rng.choice(keyed)
        words[i] = words[i].partition("=")[0].upper() + "=" + words[i].partition("=")[2]
        return " ".join(words).encode(), True
    if how == "space":
        return rng.choice(ODD_SPACES).join(words).encode(), False
    if how == "nul":
        i = rng.randrange(len(line) + 1)
        return (line[:i] + "\0" + line[i:]).encode(), False
    if how == "cut":
        return line[:rng.randrange(1, len(line) + 1)].encode(), False
    return (line + rng.choice([" sise=4K", " name=x", " =", " size", " region=0=1"])).encode(), True


def control_input(rng: random.Random, layout: list) -> tuple[bytes, set[int]]:
    """A control write and the errnos it may end with (0: success)."""
    r = rng.random()
    if r < 0.01:  # past the largest write applied whole: refused whole
        line = valid_line(rng, layout).encode() + b"\n"
        size = CONTROL_MAX + rng.choice([1, 4096, MiB])
        return b"#" * (size - len(line) - 1) + b"\n" + line, {errno.E2BIG}
    if r < 0.02:  # the largest write applied whole
        line = valid_line(rng, layout).encode() + b"\n"
        return b"#" * (CONTROL_MAX - len(line) - 1) + b"\n" + line, CONTROL_ERRNOS
    lines, must_fail = [], False
    for _ in range(1 if rng.random() < 0.6 else rng.randint(2, 8)):
        line = valid_line(rng, layout)
        if rng.random() < 0.5:
            data, refused = near_miss(rng, line)
            lines.append(data)
            must_fail |= refused
        else:
            lines.append(line.encode())
    data = rng.choice([b"\n", b"\n", b"\r\n", b"\n\n", b"\n# a comment\n"]).join(lines)
    data += rng.choice([b"", b"\n", b" # trailing\n", b"\n\n"])
    return data, {errno.EINVAL} if must_fail else CONTROL_ERRNOS


def holes(region: dict) -> list[tuple[int, int]]:
    """The [start, end) spans of a region no device range covers."""
    busy = sorted((x["start"], x["end"] + 1) for d in region["devices"] for x in d["ranges"])
    out, cursor = [], region["start"]
    for start, end in busy + [(region["start"] + region["size"],) * 2]:
        if start > cursor:
            out.append((cursor, start))
        cursor = max(cursor, end)
    return out


def sysfs_value(rng: random.Random, attr: str, region: dict | None, device: dict | None,
                names: list[str]) -> str:
    """A value of the right form for attr (the store may still refuse it)."""
    align = device["align"] if device else ALIGNS[0]
    if attr == "size":
        n = alloc_granule(align) * rng.randint(0, 16)
        return rng.choice([str(n), hex(n), oct(n).replace("0o", "0"), f"+{n}"])
    if attr == "align":
        return str(rng.choice(ALIGNS + (8192,)))
    if attr == "mapping":  # physical addresses: the region's resource, not its offset
        step, base = alloc_granule(align), region["resource"] - region["start"] if region else 0
        spans = [(s, e) for s, e in holes(region) if e - s >= step] if region else []
        start, end = rng.choice(spans) if spans else (0, step)
        start = -(-start // align) * align
        end = start + step * rng.randint(1, max(1, (end - start) // step))
        start, end = base + start, base + end
        text = f"{start:x}-{end - 1:x}"
        return rng.choice([text, f"{start:#x}-{end - 1:#x}", f"{start:x}-{end:x}"])
    if attr == "create":
        return rng.choice(["1", "1", "0", "2", "01", "0x1"])
    if attr == "uevent":
        return rng.choice(["add", "change", "remove", "online", ""])
    return rng.choice(names) if names else "dax0.0"


def sysfs_input(rng: random.Random, layout: list) -> tuple[str, bytes, set[int], str]:
    """A write to one of the writable sysfs attributes: (path in the mount,
    data, the errnos it may end with, the attribute)."""
    pairs = [(r, d) for r in layout for d in r["devices"]]
    names = [d["name"] for _, d in pairs]
    attr = rng.choice(DEVICE_ATTRS + REGION_ATTRS + DRIVER_ATTRS)
    region = device = None
    if attr in DEVICE_ATTRS:
        if pairs and rng.random() < 0.95:
            region, device = rng.choice(pairs)
        name = device["name"] if device else f"dax{rng.randrange(9)}.{rng.randrange(9)}"
        path = f"sys/bus/dax/devices/{name}/{attr}"
    elif attr in REGION_ATTRS:
        region = rng.choice(layout) if layout and rng.random() < 0.95 else None
        path = f"sys/devices/platform/daxfuse.{region['id'] if region else rng.randrange(9)}/dax_region/{attr}"
        names = [d["name"] for d in region["devices"]] if region and rng.random() < 0.8 else names
    else:
        path = f"sys/bus/dax/drivers/{rng.choice(DRIVERS)}/{attr}"
    value, allowed = sysfs_value(rng, attr, region, device, names), SYSFS_ERRNOS
    how = rng.random()
    if how < 0.1:
        value, allowed = huge(rng) + rng.choice(["", "-0x1", "\n"]), HUGE_SYSFS | {errno.ENOENT}
    elif how < 0.15:
        value = rng.choice(["abc", "-1", "0x", " ", "1-2-3", "\t5", "0x-1", "dax", "dax0.", "dax.0", "dax00.0"])
    elif how < 0.2:
        i = rng.randrange(len(value) + 1)
        value = value[:i] + "\0" + value[i:]
    data = (value + rng.choice(["", "\n", "\n", "\0", "\n\0"])).encode()
    if attr == "uevent":  # stores nothing: any text is taken
        allowed = {0, errno.ENOENT}
    if attr in ("bind", "unbind"):  # bind_store and unbind_store: a device the driver does not drive
        allowed = allowed | {errno.ENODEV}
    if rng.random() < 0.05:
        i = rng.randrange(min(len(data), 64) + 1)
        data, allowed = data[:i] + rng.choice(NON_UTF8) + data[i:], {errno.EINVAL, errno.ENOENT}
    return path, data, allowed, attr


def reset_batch(layout: list) -> bytes:
    """A valid batch back to region 0 alone: it must succeed."""
    devices = [d for r in layout for d in r["devices"]]
    lines = [f"disable-device {d['name']}" for d in devices if d["state"] == "enabled"]
    lines += [f"destroy-device {d['name']}" for d in devices]
    lines += [f"destroy-region {r['id']}" for r in layout if r["id"] != 0]
    return "\n".join(lines).encode()


def result_violation(err: int, result: str) -> str | None:
    """The control file's result line agrees with the write's outcome."""
    want = "ok" if not err else f"error {ename(err)}: "
    if not result.startswith(want) or result.count("\n") != 1 or len(result) > 1024:
        return f"result {result[:200]!r} after {ename(err)}"
    return None


def fuzz(stats: Stats, seconds: float, rng: random.Random, workdir: str) -> None:
    """Seeded input to the control file and every writable sysfs attribute;
    after each write the layout's invariants, a failed write changed nothing,
    the result line says what happened, and (every 25 inputs) dax/ and sys/
    agree with the layout."""
    d = Daemon(workdir, "fuzz", stats, "--size", "256M", "--nr-dax", "64")
    end, n, first = time.monotonic() + seconds, 0, len(stats.violations)
    try:
        before = d.layout()
        while time.monotonic() < end and len(stats.violations) - first < MAX_VIOLATIONS:
            n += 1
            if n % 250 == 0 or sum(len(r["devices"]) for r in before) > 48:
                rel, data, allowed, label = "control", reset_batch(before), {0}, "control reset"
            elif rng.random() < 0.55:
                rel, label = "control", "control"
                data, allowed = control_input(rng, before)
            else:
                rel, data, allowed, attr = sysfs_input(rng, before)
                label = f"sysfs {attr}"
            if not data:
                continue
            err, result = d.write(rel, data)
            stats.inputs[f"fuzz {label}"] += 1
            if err:
                stats.error(f"fuzz {label}", err)
            if not d.alive():
                stats.violation(f"fuzz: the daemon died ({d.proc.returncode}) after {shown(data)} to {rel}")
                break
            after = d.layout()
            what = f"fuzz: {shown(data)} to {rel}"
            if err not in allowed:
                stats.violation(f"{what}: {ename(err)}, expected one of {sorted(map(ename, allowed))}")
            if err and after != before:
                stats.violation(f"{what}: failed ({ename(err)}) but changed the layout")
            problem = result_violation(err, result) if rel == "control" else None
            for v in ([problem] if problem else []) + layout_violations(after):
                stats.violation(f"{what}: {v}")
            if n % 25 == 0:
                for v in view_violations(d, after):
                    stats.violation(f"fuzz: after {shown(data)} to {rel}: {v}")
            before = after
        d.finish()
    except Hung:
        pass
    finally:
        d.close()
