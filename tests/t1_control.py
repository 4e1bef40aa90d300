"""The control-file grammar (control.parse / control.execute), sizes, and
`daxctl list` output built from a layout."""
import errno
import json

import pytest
import trio
from hypothesis import example, given, settings, strategies as st

from daxfuse.views import control
from daxfuse.core import DaxCore
from daxfuse.memory import phys_base
from daxfuse.core.errors import DaxError
from daxfuse.dax import DaxBus
from daxfuse.client.listing import REGION_PATH, daxctl_list
from daxfuse.core.units import format_size, parse_id, parse_size

pytestmark = pytest.mark.timeout(60)

K = 1 << 10
M = 1 << 20
G = 1 << 30
T = 1 << 40


def execute(bus, text):
    return trio.run(control.execute, bus, text)


def refused(bus, text, err=errno.EINVAL):
    """execute() must fail with err and leave the bus as it was."""
    before = bus.layout()
    with pytest.raises(DaxError) as ei:
        execute(bus, text)
    assert ei.value.errno == err, ei.value
    assert bus.layout() == before
    return ei.value.message


def one(bus, line):
    ((op, _),) = control.parse(bus, line)
    return op.func.__name__, op.args, op.keywords


# --- parse: every command ---------------------------------------------------------------


@pytest.mark.parametrize("line,expected", [
    ("create-region size=8M", ("create_region", (), {"size": 8 * M})),
    ("create-region size=1G align=1G id=3", ("create_region", (), {"size": G, "align": G, "id_": 3})),
    ("create-region id=0x10 align=4K size=64K", ("create_region", (), {"size": 64 * K, "align": 4 * K,
                                                                       "id_": 16})),
    ("destroy-region 2", ("destroy_region", (2,), {})),
    ("destroy-region 0x2", ("destroy_region", (2,), {})),
    ("create-device region=0", ("create_device", (), {"region_id": 0})),
    ("create-device region=1 size=2M align=4K", ("create_device", (), {"region_id": 1, "size": 2 * M,
                                                                       "align": 4 * K})),
    ("create-device region=0 owner=root group=0 mode=0660", ("create_device", (), {"region_id": 0, "uid": 0,
                                                                                   "gid": 0, "mode": 0o660})),
    ("create-device region=0 owner=4294967294 mode=600", ("create_device", (), {"region_id": 0,
                                                                              "uid": (1 << 32) - 2, "mode": 0o600})),
    ("resize-device dax0.1 size=0", ("resize_device", ("dax0.1",), {"size": 0})),
    ("disable-device dax0.0", ("disable_device", ("dax0.0",), {})),
    ("enable-device dax1.2", ("enable_device", ("dax1.2",), {})),
    ("destroy-device dax0.3", ("destroy_device", ("dax0.3",), {})),
    ("  create-region \t size=2M   ", ("create_region", (), {"size": 2 * M})),
])
def test_parse_commands(bus, line, expected):
    assert one(bus, line) == expected


def test_parse_binds_to_the_bus(bus):
    ((op, _),) = control.parse(bus, "disable-device dax0.0")
    assert op.func.__self__ is bus
    assert bus.layout() == [], "parse runs nothing"


@pytest.mark.parametrize("text,value", [
    ("0", 0), ("4096", 4096), ("0x1000", 4096), ("0X1f", 31), ("0xfF", 255),
    ("4K", 4 * K), ("2M", 2 * M), ("1G", G), ("3T", 3 * T), ("0x10M", 16 * M), ("0K", 0),
    ("4KiB", 4 * K), ("4KB", 4 * K), ("1GiB", G), ("512B", 512), (" 2M ", 2 * M),
    ("0", 0), ("00", 0), ("18446744073709551615", (1 << 64) - 1), ("0xffffffffffffffff", (1 << 64) - 1),
    ("0" * 5000 + "7", 7), ("16777215T", 16777215 * T),
])
def test_size_forms(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", " ", "K", "M2", "2MM", "2 M", "-4K", "+4K", "1.5M", "0x",
                                  "0xG", "2P", "4Ki", "4iK", "x10", "1e3", "４K", "٣", "2M#"])
def test_size_rejects(text):
    with pytest.raises(DaxError) as ei:
        parse_size(text)
    assert ei.value.errno == errno.EINVAL
    assert repr(text) in ei.value.message


@pytest.mark.parametrize("text", ["18446744073709551616", "0x10000000000000000", "16777216T",
                                  "9" * 4301, "0x" + "f" * 3600, "1" * 100000 + "K"])
def test_size_out_of_u64_is_einval_and_cut_short_in_the_message(text):
    with pytest.raises(DaxError) as ei:
        parse_size(text)
    assert ei.value.errno == errno.EINVAL and "out of range" in ei.value.message
    assert len(ei.value.message) < 120


@pytest.mark.parametrize("text,value", [("0", 0), ("7", 7), ("0x10", 16), ("2147483647", (1 << 31) - 1)])
def test_ids_are_ints(text, value):
    assert parse_id(text) == value


@pytest.mark.parametrize("text", ["2147483648", "0x80000000", "9" * 4299, "0x" + "f" * 3600, "1_0", "0b1",
                                  "-1", "", "٣"])
def test_ids_out_of_int_or_malformed_are_einval(text):
    with pytest.raises(DaxError) as ei:
        parse_id(text)
    assert ei.value.errno == errno.EINVAL
    assert len(ei.value.message) < 120


@pytest.mark.parametrize("text,n", [("010", 10), ("08", 8), ("0755K", 755 * K), ("01M", M), ("4k", 4 * K),
                                    ("2MiB", 2 * M), ("0x10", 16)])
def test_size_leading_zero_is_decimal_and_suffixes_any_case(text, n):
    assert parse_size(text) == n


def test_control_leading_zero_size_is_parsed_as_decimal(bus):
    op, _ = control.parse(bus, "create-region size=02M")[0]
    assert op.keywords["size"] == 2 * M


@pytest.mark.parametrize("n,text", [
    (0, "0"), (1, "1"), (4095, "4095"), (4096, "4K"), (6 * K, "6K"), (1536 * K, "1536K"),
    (2 * M, "2M"), (3 * G, "3G"), (G + M, "1025M"), (5 * T, "5T"), (1 << 50, "1024T"),
])
def test_format_size(n, text):
    assert format_size(n) == text


@given(st.integers(min_value=0, max_value=(1 << 64) - 1))
@example(0)
@example(1 << 40)
def test_size_round_trip(n):
    assert parse_size(format_size(n)) == n


@given(st.integers(min_value=0, max_value=1 << 66), st.sampled_from(["", "K", "M", "G", "T"]),
       st.booleans())
def test_size_hex_and_suffix_within_u64(n, suffix, hexa):
    text = (hex(n) if hexa else str(n)) + suffix
    unit = {"": 1, "K": K, "M": M, "G": G, "T": T}[suffix]
    if n * unit < 1 << 64:
        assert parse_size(text) == n * unit
    else:
        with pytest.raises(DaxError):
            parse_size(text)



size_garbage = st.one_of(
    st.text(max_size=20),
    st.from_regex(r"[0-9xXa-fA-F+\-._ KMGTPkmgtiB]{0,12}", fullmatch=True),
    # near misses of the grammar
    st.from_regex(r"\s?[+-]?(0[xXbo])?[0-9a-fA-F_]{0,5}[KMGTPkmgt]?(i?B)?\s?", fullmatch=True),
)


@settings(max_examples=200)
@given(size_garbage)
def test_size_garbage_only_raises_dax_error(text):
    try:
        value = parse_size(text)
    except DaxError as e:
        assert e.errno == errno.EINVAL
    else:
        assert isinstance(value, int) and value >= 0


COMMANDS = ["create-region", "destroy-region", "create-device", "resize-device",
            "disable-device", "enable-device", "destroy-device"]
word = st.one_of(
    st.sampled_from(COMMANDS + ["dax0.0", "0", "#", "size=", "size=2M", "align=4K", "id=1",
                                "region=0", "size=size=", "=", "align=0x", "id=-1"]),
    st.text(max_size=8),
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(["size", "align", "id", "region", "x"]),
              st.one_of(st.text(max_size=6), size_garbage)),
)
command_garbage = st.one_of(
    st.text(max_size=40),
    st.lists(st.lists(word, max_size=5).map(" ".join), max_size=4).map("\n".join),
)


@settings(max_examples=200)
@given(command_garbage)
def test_parse_garbage_only_raises_dax_error(text):
    core = DaxCore()
    bus = DaxBus(core, memory=None)
    try:
        ops = control.parse(bus, text)
    except DaxError as e:
        assert e.errno == errno.EINVAL
    else:
        assert ops and all(callable(op) and callable(report) for op, report in ops)


# --- parse: errors ------------------------------------------------------------------------------


@pytest.mark.parametrize("line,message", [
    ("frobnicate", "unknown command 'frobnicate'"),
    ("Create-Region size=2M", "unknown command 'Create-Region'"),
    ("size=2M", "unknown command 'size=2M'"),
    ("create-region", "create-region needs size="),
    ("create-region align=2M id=1", "create-region needs size="),
    ("create-device size=2M", "create-device needs region="),
    ("resize-device dax0.0", "resize-device needs size="),
    ("destroy-region", "destroy-region needs an argument"),
    ("disable-device", "disable-device needs an argument"),
    ("enable-device", "enable-device needs an argument"),
    ("destroy-device", "destroy-device needs an argument"),
    ("resize-device size=2M", "resize-device needs an argument"),
    ("create-region size=2M size=4M", "create-region: size given twice"),
    ("create-device region=0 align=4K align=4K", "create-device: align given twice"),
    ("create-device region=0 region=1", "create-device: region given twice"),
    ("create-region size=2M bogus=1", "create-region: unexpected argument 'bogus=1'"),
    ("create-region size=2M 4K", "create-region: unexpected argument '4K'"),
    ("create-region 2M", "create-region: unexpected argument '2M'"),
    ("disable-device dax0.0 dax0.1", "disable-device: unexpected argument 'dax0.1'"),
    ("destroy-region 0 size=2M", "destroy-region: unexpected argument 'size=2M'"),
    ("resize-device dax0.0 size=2M align=4K", "resize-device: unexpected argument 'align=4K'"),
    ("destroy-region x", "invalid number 'x'"),
    ("destroy-region -1", "invalid number '-1'"),
    ("create-device region=abc", "invalid number 'abc'"),
    ("create-device region=", "invalid number ''"),
    ("create-region size=2M id=-3", "invalid number '-3'"),
    ("create-region size=", "invalid size ''"),
    ("create-region size=2Q", "invalid size '2Q'"),
    ("create-region size=-4K", "invalid size '-4K'"),
    ("create-device region=0 align=big", "invalid size 'big'"),
    ("create-region\u00a0size=2M", "unknown command 'create-region\\xa0size=2M'"),
    ("create-region size=2M\u2028", "invalid size '2M\\u2028'"),
    ("create-region size=2M\x1c", "invalid size '2M\\x1c'"),
    ("create-device region=0 owner=no-such-user", "no user named 'no-such-user'"),
    ("create-device region=0 owner=4294967295", "user '4294967295' is out of range (0 to 4294967294)"),
    ("create-device region=0 group=-1", "no group named '-1'"),
    ("create-device region=0 mode=0778", "invalid mode '0778' (octal, at most 0777)"),
    ("create-device region=0 mode=1000", "invalid mode '1000' (octal, at most 0777)"),
    ("create-device region=0 mode=", "invalid mode '' (octal, at most 0777)"),
])
def test_parse_errors(bus, line, message):
    with pytest.raises(DaxError) as ei:
        control.parse(bus, line)
    assert ei.value.errno == errno.EINVAL
    assert ei.value.message == message, "single lines carry no line prefix"


@pytest.mark.parametrize("text", ["", "   ", "\n\n", "# just a comment", "  # a\n\n# b\n"])
def test_empty_command(bus, text):
    with pytest.raises(DaxError) as ei:
        control.parse(bus, text)
    assert ei.value.errno == errno.EINVAL and ei.value.message == "empty command"


def test_batch_parse_error_has_line_prefix(bus):
    text = "create-region size=8M\ncreate-device region=0 size=2M\ncreate-device region=0 size=3Q\n"
    msg = refused(bus, text)
    assert msg == "line 3: invalid size '3Q'"
    assert bus.layout() == [], "nothing ran: parse precedes apply"
    msg = refused(bus, "frob\ncreate-region size=2M")
    assert msg == "line 1: unknown command 'frob'"


def test_comment_lines_do_not_make_a_batch(bus):
    with pytest.raises(DaxError) as ei:
        control.parse(bus, "# only one command here\n\nfrob  # trailing\n")
    assert ei.value.message == "unknown command 'frob'"


def test_batch_line_number_counts_every_line(bus):
    text = "# set up region 0\n\ncreate-region size=8M\nbogus\n"
    with pytest.raises(DaxError) as ei:
        control.parse(bus, text)
    assert ei.value.message == "line 4: unknown command 'bogus'"


# --- execute: results and errors ----------------------------------------------------------------------


def test_execute_every_command(bus):
    assert execute(bus, "create-region size=8M") == "ok region0"
    assert execute(bus, "create-region size=2M align=4K id=7") == "ok region7"
    assert execute(bus, "create-device region=0 size=2M") == "ok dax0.0"
    assert execute(bus, "create-device region=0 size=0 align=2M") == "ok dax0.1"
    assert execute(bus, "disable-device dax0.0") == "ok dax0.0"
    assert execute(bus, "resize-device dax0.0 size=4M") == "ok dax0.0"
    assert execute(bus, "enable-device dax0.0") == "ok dax0.0"
    assert execute(bus, "destroy-device dax0.1") == "ok dax0.1"
    assert execute(bus, "destroy-region 7") == "ok region7"
    layout = bus.layout()
    assert [r["id"] for r in layout] == [0]
    (dev,) = layout[0]["devices"]  # region 7's seed went with it
    assert (dev["name"], dev["size"], dev["state"]) == ("dax0.0", 4 * M, "enabled")
    text = control.Control(bus).layout_text()
    assert json.loads(text) == layout and text.endswith(b"\n")


def test_execute_batch_with_comments(bus):
    text = """
        # build region 0 and two devices
        create-region size=8M align=2M id=0   # region 0

        create-device region=0 size=2M        # configures the seed dax0.0
        create-device region=0 size=0x0       # no seed left: a new one, dax0.1
        create-device region=0                # configures it: all that is left
    """
    assert execute(bus, text) == "ok region0 dax0.0 dax0.1 dax0.1"
    sizes = [d["size"] for d in bus.layout()[0]["devices"]]
    assert sizes == [2 * M, 6 * M]


def test_execute_batch_is_atomic(bus):
    execute(bus, "create-region size=8M\ncreate-device region=0 size=2M")
    refused(bus, "create-device region=0 size=2M\ncreate-device region=0 size=2M\n"
                 "destroy-region 0", errno.EBUSY)
    refused(bus, "create-region size=2M\ndestroy-region 5", errno.ENXIO)
    refused(bus, "create-device region=0\ncreate-device region=0 size=2M", errno.ENOSPC)
    assert execute(bus, "create-device region=0 size=0") == "ok dax0.1"


def test_error_line(bus):
    execute(bus, "create-region size=8M\ncreate-device region=0 size=2M")
    with pytest.raises(DaxError) as ei:
        execute(bus, "destroy-region 0")
    assert control.error_line(ei.value) == "error EBUSY: region 0 still has devices: dax0.0 (2 MiB (0x200000))"
    with pytest.raises(DaxError) as ei:
        execute(bus, "resize-device dax0.0 size=4M")
    assert control.error_line(ei.value) == "error EBUSY: dax0.0 is enabled; disable it first"
    with pytest.raises(DaxError) as ei:
        execute(bus, "x\ny")
    assert control.error_line(ei.value) == "error EINVAL: line 1: unknown command 'x'"
    with pytest.raises(DaxError) as ei:
        execute(bus, "enable-device dax3.3")
    assert control.error_line(ei.value) == "error ENXIO: no device 'dax3.3'"
    assert control.error_line(DaxError(9999, "odd")) == "error 9999: odd"


# --- daxctl list ----------------------------------------------------------------------------------------
# daxctl prints regions, devices and mappings in reverse discovery order,
# and discovers them in kernfs's listing order (by name hash).


@pytest.fixture
def listing_bus(bus):
    execute(bus, """
        create-region size=8M
        create-device region=0 size=2M      # the region's seed, dax0.0
        create-device region=0 size=2M
        create-device region=0 size=2M
        disable-device dax0.1
        resize-device dax0.1 size=0
        disable-device dax0.2
        create-region size=2M align=4K
        create-device region=1
        create-region size=2M               # with an unconfigured seed, dax2.0
    """)
    return bus


def dev(name, size, align, disabled=False, mappings=None):
    d = {"chardev": name, "size": size, "target_node": 0, "align": align, "mode": "devdax"}
    if disabled:
        d["state"] = "disabled"
    if mappings is not None:
        d["mappings"] = mappings
    return d


def test_daxctl_list_regions_and_devices(listing_bus):
    # kernfs lists dax0.2, dax0.0, dax2.0, dax0.1, dax1.0: regions are found
    # in the order 0, 2, 1, and each is put first
    out = daxctl_list(listing_bus.layout(), regions=True, devices=True, mappings=False, idle=False)
    assert out == [
        {"path": "/platform/daxfuse.1", "id": 1, "size": 2 * M, "align": 4 * K,
         "devices": [dev("dax1.0", 2 * M, 4 * K)]},
        {"path": "/platform/daxfuse.2", "id": 2, "size": 2 * M, "available_size": 2 * M,
         "align": 2 * M},
        {"path": REGION_PATH.format(id=0), "id": 0, "size": 8 * M, "available_size": 4 * M,
         "align": 2 * M, "devices": [dev("dax0.0", 2 * M, 2 * M),
                                     dev("dax0.2", 2 * M, 2 * M, disabled=True)]},
    ]
    assert "available_size" not in out[0], "omitted when 0"
    assert "devices" not in out[1], "no devices key for a region without devices"
    assert "state" not in out[0]["devices"][0], "state only when disabled"


def test_daxctl_list_idle_shows_size_zero(listing_bus):
    out = daxctl_list(listing_bus.layout(), regions=True, devices=True, mappings=False, idle=True)
    assert out[2]["devices"] == [dev("dax0.1", 0, 2 * M, disabled=True),
                                 dev("dax0.0", 2 * M, 2 * M),
                                 dev("dax0.2", 2 * M, 2 * M, disabled=True)]


def test_daxctl_list_idle_only_region(bus):
    execute(bus, "create-region size=2M")  # with its seed dax0.0
    assert "devices" not in daxctl_list(bus.layout(), True, True, False, idle=False)[0]
    assert daxctl_list(bus.layout(), True, True, False, idle=True)[0]["devices"] == [
        dev("dax0.0", 0, 2 * M, disabled=True)]
    # a size-0 device has no mappings to list, even when asked
    assert daxctl_list(bus.layout(), False, True, mappings=True, idle=True) == [
        dev("dax0.0", 0, 2 * M, disabled=True)]


def test_daxctl_list_devices_only(listing_bus):
    out = daxctl_list(listing_bus.layout(), regions=False, devices=True, mappings=False, idle=False)
    assert out == [dev("dax1.0", 2 * M, 4 * K), dev("dax0.0", 2 * M, 2 * M),
                   dev("dax0.2", 2 * M, 2 * M, disabled=True)]
    idle = daxctl_list(listing_bus.layout(), regions=False, devices=True, mappings=False, idle=True)
    assert [d["chardev"] for d in idle] == ["dax1.0", "dax2.0", "dax0.1", "dax0.0", "dax0.2"]


def test_daxctl_list_regions_without_devices(listing_bus):
    out = daxctl_list(listing_bus.layout(), regions=True, devices=False, mappings=False, idle=True)
    assert [r["id"] for r in out] == [1, 2, 0]
    assert all("devices" not in r for r in out)


def test_daxctl_list_mappings(bus):
    execute(bus, """
        create-region size=8M
        create-device region=0 size=2M
        create-device region=0 size=2M
        disable-device dax0.0
        disable-device dax0.1
        destroy-device dax0.0
        resize-device dax0.1 size=4M
    """)
    layout = bus.layout()
    without = daxctl_list(layout, regions=False, devices=True, mappings=False, idle=False)
    assert "mappings" not in without[0]
    (d,) = daxctl_list(layout, regions=False, devices=True, mappings=True, idle=False)
    # dax0.1 is [2M, 4M) at device offset 0, then [0, 2M) at device offset 2M,
    # in physical addresses: from the region's resource
    base = layout[0]["resource"]
    assert base == phys_base()
    assert d == dev("dax0.1", 4 * M, 2 * M, disabled=True, mappings=[
        {"page_offset": 2 * M // 4096, "start": base, "end": base + 2 * M - 1, "size": 2 * M},
        {"page_offset": 0, "start": base + 2 * M, "end": base + 4 * M - 1, "size": 2 * M},
    ])
    (r,) = daxctl_list(layout, regions=True, devices=True, mappings=True, idle=False)
    assert r["devices"] == [d]


def test_daxctl_dumps_format():
    from daxfuse.client.listing import dumps
    text = dumps([{"path": "/platform/daxfuse.0", "id": 0}])
    assert text == '[\n  {\n    "path":"\\/platform\\/daxfuse.0",\n    "id":0\n  }\n]'
    assert json.loads(text) == [{"path": "/platform/daxfuse.0", "id": 0}]
