"""A persistent memory file carries its layout in a record beside it
(PATH.layout): restored exactly at the next mount, whatever killed the
daemon before. On a disk (/var/tmp), not a tmpfs."""
import errno
import json
import os
import random
import shutil
import subprocess
import tempfile
import threading
import time

import pytest
import trio

from conftest import dirty_shutdowns, mounted_paths
from daxfuse.testing import DAXFUSE, DaxMount
from daxfuse.views import control
from daxfuse.core import DaxCore
from daxfuse.dax import DaxBus
from daxfuse.dax.layout import LayoutStore
from daxfuse.core.errors import DaxError
from daxfuse.memory import MemoryFile

pytestmark = [pytest.mark.mounted, pytest.mark.timeout(300)]

MiB = 1 << 20


@pytest.fixture(scope="module")
def disk():
    """A directory on /var/tmp, removed once every daemon of the module is stopped."""
    path = tempfile.mkdtemp(prefix="daxfuse-test-", dir="/var/tmp")
    yield path
    shutil.rmtree(path)


@pytest.fixture
def memory_file(disk, tmp_path):
    return os.path.join(disk, tmp_path.name)


def daxfuse(*args, check=True):
    r = subprocess.run([*DAXFUSE, *args], capture_output=True, text=True, timeout=60)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def test_the_layout_comes_back_exactly(daxfuse_factory, memory_file, tmp_path):
    d = daxfuse_factory("--size", "64M", "--memory-file", memory_file, name="first")
    d.control("create-region size=32M align=4K target_node=-1 numa_node=2\n"
              "create-device region=1 size=8M\ncreate-device region=1 size=4M\n"
              "create-device region=1 size=2M\ndisable-device dax1.1\ndisable-device dax1.0\n"
              "destroy-device dax1.0\nresize-device dax1.1 size=12M\ninject-error dax1.1 block=9 count=3")
    with pytest.raises(OSError) as disabled:
        os.open(d.path("dax", "dax1.1"), os.O_RDWR)
    assert disabled.value.errno == errno.ENXIO
    d.control("enable-device dax1.1")
    fd = os.open(d.path("dax", "dax1.1"), os.O_RDWR)
    os.pwrite(fd, b"kept", 8 * MiB)
    os.fsync(fd)
    os.close(fd)
    listing = daxfuse("list", "-m", d.mountpoint, "-RDMi", "--media-errors").stdout
    assert d.stop() == 0
    record = json.load(open(memory_file + ".layout"))
    assert record["version"] == 2 and not os.path.exists(memory_file + ".running"), "a clean stop"
    again = daxfuse_factory("--memory-file", memory_file, name="second")
    assert daxfuse("list", "-m", again.mountpoint, "-RDMi", "--media-errors").stdout == listing
    assert [(r["target_node"], r["numa_node"]) for r in again.layout()] == [(0, 0), (-1, 2)]
    fd = os.open(again.path("dax", "dax1.1"), os.O_RDONLY)
    assert os.pread(fd, 4, 8 * MiB) == b"kept"
    os.close(fd)
    assert dirty_shutdowns(again.mountpoint) == 0, "a clean shutdown is no unsafe one"


def test_options_that_disagree_with_the_layout_are_refused(daxfuse_factory, memory_file, tmp_path):
    d = daxfuse_factory("--size", "64M", "--align", "4K", "--memory-file", memory_file, name="first")
    assert d.stop() == 0
    mnt = tmp_path / "second"
    mnt.mkdir()
    for args, word in ((["--size", "128M"], "--size"), (["--align", "2M"], "--align"),
                       (["--no-default-device"], "--no-default-device")):
        r = daxfuse("mount", str(mnt), "--memory-file", memory_file, *args, check=False)
        assert r.returncode == 1 and r.stderr.startswith(f"daxfuse: EINVAL: {word} ") and r.stderr.count("\n") == 1
    assert str(mnt) not in mounted_paths()
    again = daxfuse_factory("--memory-file", memory_file, "--size", "64M", name="third")  # agreeing is fine
    assert again.layout()[0]["size"] == 64 * MiB


@pytest.mark.parametrize("damage,what", [
    (lambda raw: raw.replace(b'"size":67108864', b'"size":67108865', 1), "checksum mismatch"),
    (lambda raw: raw[:len(raw) // 2], "truncated or corrupt"),
    (lambda raw: raw.replace(b'"version":2', b'"version":3', 1), "layout version 3"),
    (lambda raw: b'{"format":"something else"}', "not a daxfuse-layout record"),
])
def test_a_corrupt_or_foreign_record_fails_the_mount_and_touches_nothing(daxfuse_factory, memory_file, tmp_path,
                                                                         damage, what):
    d = daxfuse_factory("--size", "64M", "--memory-file", memory_file, name="first")
    fd = os.open(d.path("dax", "dax0.0"), os.O_RDWR)
    os.pwrite(fd, b"precious", 0)
    os.fsync(fd)
    os.close(fd)
    assert d.stop() == 0
    with open(memory_file + ".layout", "rb") as f:
        raw = damage(f.read())
    with open(memory_file + ".layout", "wb") as f:
        f.write(raw)
    before = open(memory_file, "rb").read(), os.stat(memory_file).st_mtime_ns
    mnt = tmp_path / "second"
    mnt.mkdir()
    r = daxfuse("mount", str(mnt), "--memory-file", memory_file, check=False)
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert memory_file + ".layout" in r.stderr and what in r.stderr
    assert (open(memory_file, "rb").read(), os.stat(memory_file).st_mtime_ns) == before
    assert open(memory_file + ".layout", "rb").read() == raw, "nothing written"
    assert str(mnt) not in mounted_paths()


def test_sigkill_counts_an_unsafe_shutdown_and_a_clean_one_does_not(daxfuse_factory, memory_file, tmp_path):
    (tmp_path / "a").mkdir()
    d = DaxMount(str(tmp_path / "a"), "--size", "64M", "--memory-file", memory_file)
    try:
        assert dirty_shutdowns(d.mountpoint) == 0
        d.proc.kill()
        d.proc.wait(30)
    finally:
        d.kill()
    again = daxfuse_factory("--memory-file", memory_file, name="b")
    assert dirty_shutdowns(again.mountpoint) == 1
    assert again.stop() == 0
    third = daxfuse_factory("--memory-file", memory_file, name="c")
    assert dirty_shutdowns(third.mountpoint) == 1


BATCHES = [
    "create-device region=1 size=2M", "create-device region=1 size=4M\ncreate-device region=1 size=2M",
    "disable-device dax1.{i}", "enable-device dax1.{i}", "disable-device dax1.{i}\nresize-device dax1.{i} size=6M",
    "disable-device dax1.{i}\ndestroy-device dax1.{i}", "inject-error dax1.{i} block=1", "clear-error dax1.{i} block=1",
    "create-region size=2M align=4K id=2", "destroy-region 2",
]


def strip(layout) -> str:
    """A layout without what a restart changes (minors)."""
    return json.dumps([{**r, "devices": [{k: v for k, v in dev.items() if k != "minor"} for dev in r["devices"]]}
                       for r in layout], sort_keys=True)


def replayed(record: dict, batch: str) -> str:
    """The layout the batch makes of the recorded one (or the same, if it fails)."""
    memory = MemoryFile()
    bus = DaxBus(DaxCore(), memory)
    try:
        LayoutStore("unused").restore(bus, record)
        try:
            trio.run(control.execute, bus, batch)
        except DaxError:
            pass
        return strip(bus.layout())
    finally:
        memory.close()


def test_sigkill_at_random_points_restores_a_layout_that_was_reached(memory_file, tmp_path):
    """A bounded loop kills the daemon at random moments amid create, resize,
    disable, destroy and media-error changes. Each next mount restores the
    last acknowledged layout or the one the change in flight was producing,
    never a mix, and never fails; data fsynced before the kill is intact."""
    rng = random.Random(20261201)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    allowed, kills, changes = None, 0, 0
    for round_ in range(15):
        d = DaxMount(str(mnt), "--size", "64M", "--memory-file", memory_file)
        try:
            if allowed is not None:
                assert strip(d.layout()) in allowed, f"round {round_}: restored a layout never reached"
                fd = os.open(d.path("dax", "dax0.0"), os.O_RDONLY)
                assert os.pread(fd, 16, 0) == b"synced %08d " % (round_ - 1)
                os.close(fd)
            if not any(r["id"] == 1 for r in d.layout()):
                d.control("create-region size=8M align=4K id=1")
            fd = os.open(d.path("dax", "dax0.0"), os.O_RDWR)
            os.pwrite(fd, b"synced %08d " % round_, 0)
            os.fsync(fd)
            os.close(fd)
            while True:
                layout = d.layout()
                with open(memory_file + ".layout") as f:
                    record = json.load(f)
                ids = [dev["id"] for r in layout if r["id"] == 1 for dev in r["devices"]] or [0]
                batch = rng.choice(BATCHES).format(i=rng.choice(ids))
                writer = threading.Thread(target=write_quietly, args=(d.path("control"), batch))
                writer.start()
                time.sleep(rng.random() * 0.004)
                changes += 1
                if rng.random() < 0.25:
                    d.proc.kill()
                    d.proc.wait(30)
                    writer.join(30)
                    kills += 1
                    allowed = {strip(layout), replayed(record, batch)}
                    break
                writer.join(30)
        finally:
            d.kill()
    print(f"{kills} kills amid {changes} changes")
    assert kills == 15


def write_quietly(path: str, batch: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, batch.encode())
        finally:
            os.close(fd)
    except OSError:
        pass  # refused, or the daemon was killed under it


def test_a_memory_file_with_data_and_no_record_is_refused_until_fresh(daxfuse_factory, memory_file, tmp_path):
    """Its data would be reused as new memory (and the file grown) by
    accident: refused in one line that names --fresh, which starts afresh."""
    with open(memory_file, "wb") as f:
        f.write(b"someone's data")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = daxfuse("mount", str(mnt), "--memory-file", memory_file, check=False)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "--fresh" in r.stderr, r.stderr
    assert open(memory_file, "rb").read() == b"someone's data" and not os.path.exists(memory_file + ".layout")
    d = daxfuse_factory("--size", "16M", "--memory-file", memory_file, "--fresh", name="fresh")
    assert os.pread(os.open(d.path("dax", "dax0.0"), os.O_RDONLY), 14, 0) == bytes(14), "new memory"


def test_a_truncated_or_swapped_memory_file_is_refused(daxfuse_factory, memory_file, tmp_path):
    d = daxfuse_factory("--size", "16M", "--memory-file", memory_file, name="a")
    other = memory_file + "-other"
    e = daxfuse_factory("--size", "16M", "--memory-file", other, name="b")
    assert d.stop() == 0 and e.stop() == 0
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    os.rename(memory_file + ".layout", memory_file + ".saved")
    shutil.copy(other + ".layout", memory_file + ".layout")  # the other file's record, beside this one
    r = daxfuse("mount", str(mnt), "--memory-file", memory_file, check=False)
    assert r.returncode == 1 and "belongs to another memory file" in r.stderr and r.stderr.count("\n") == 1
    os.replace(memory_file + ".saved", memory_file + ".layout")
    os.truncate(memory_file, 8 * MiB)
    r = daxfuse("mount", str(mnt), "--memory-file", memory_file, check=False)
    assert r.returncode == 1 and "it was truncated" in r.stderr, r.stderr
    assert os.path.getsize(memory_file) == 8 * MiB, "left as it was"
    for path in (other, other + ".layout"):
        os.unlink(path)


@pytest.mark.parametrize("what", ["fifo", "huge"])
def test_a_record_that_is_no_file_of_a_record_fails_at_once(daxfuse_factory, memory_file, tmp_path, what):
    """A FIFO hung the mount; a 512 MiB file cost a gigabyte of RAM before
    it was refused: both are refused before a byte is read."""
    d = daxfuse_factory("--size", "16M", "--memory-file", memory_file, name="a")
    assert d.stop() == 0
    os.unlink(memory_file + ".layout")
    if what == "fifo":
        os.mkfifo(memory_file + ".layout")
    else:
        with open(memory_file + ".layout", "wb") as f:
            f.truncate(512 * MiB)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run([*DAXFUSE, "mount", str(mnt), "--memory-file", memory_file], capture_output=True,
                       text=True, timeout=20)
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert ("not a regular file" if what == "fifo" else "more than a layout record holds") in r.stderr
    os.unlink(memory_file + ".layout")


def test_a_failed_mount_leaves_nothing_it_made(tmp_path, memory_file):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    for args in (["--size", "0"], ["--align", "0"], ["--size", "3M"]):
        r = daxfuse("mount", str(mnt), "--memory-file", memory_file, *args, check=False)
        assert r.returncode == 1 and "EINVAL" in r.stderr and r.stderr.count("\n") == 1, r.stderr
        assert [p for p in os.listdir(os.path.dirname(memory_file)) if p.startswith(os.path.basename(memory_file))] \
            == [], "the memory file, its record or its marker, left behind"


def test_umount_says_what_went_wrong_when_a_stop_is_not_clean(memory_file, tmp_path):
    """A daemon whose clean stop failed exits non-zero with its line in its
    log, which `daxfuse umount` said nothing of: it says it, and fails."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    daxfuse("mount", str(mnt), "--size", "16M", "--memory-file", memory_file)
    subprocess.run(["chattr", "+i", memory_file + ".running"], check=True)  # the clean mark cannot be made
    try:
        r = daxfuse("umount", str(mnt), check=False)
        assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
        assert "did not stop cleanly" in r.stderr and "Operation not permitted" in r.stderr, r.stderr
        assert str(mnt) not in mounted_paths()
    finally:
        subprocess.run(["chattr", "-i", memory_file + ".running"], check=True)
