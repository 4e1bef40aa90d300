"""`daxctl list` JSON from the emulator's layout: same keys, omissions, order
(daxctl lists regions, devices and mappings in reverse discovery order,
which follows kernfs's listing order) and
formatting (json-c: no space after ':', '/' escaped)."""
import json

from ..views.sysfs import kernfs_order

REGION_PATH = "/platform/daxfuse.{id}"


MODES = {"kmem": "system-ram", "fsdev_dax": "famfs"}  # by the driver's name; devdax else (85: famfs)


def _device(dev: dict, region: dict, mappings: bool, media_errors: bool) -> dict:
    out = {"chardev": dev["name"], "size": dev["size"]}
    if region["target_node"] >= 0:  # hidden, so -1 to libdaxctl
        out["target_node"] = region["target_node"]
    out |= {"align": dev["align"], "mode": MODES.get(dev["driver"], "devdax")}
    if dev["driver"] == "kmem":
        out |= _memory(dev["memory_blocks"])
    base = region["resource"] - region["start"]  # the physical address of offset 0
    if dev["state"] == "disabled":
        out["state"] = "disabled"
    if mappings and dev["ranges"]:
        out["mappings"] = [{"page_offset": r["page_offset"] // 4096, "start": base + r["start"],
                            "end": base + r["end"], "size": r["end"] + 1 - r["start"]}
                           for r in reversed(dev["ranges"])]  # mappingN by index, each to the head
    if media_errors and dev["badblocks"]:  # as ndctl list --media-errors, for namespaces
        out["badblocks"] = dev["badblocks"]
    return out


def _memory(blocks: list[dict]) -> dict:
    """A system-ram device's blocks as daxctl counts them: movable only
    while every block is online (a zone of each to compare)."""
    zones = {b["zone"] for b in blocks}
    out = {"online_memblocks": sum(b["zone"] is not None for b in blocks), "total_memblocks": len(blocks)}
    if None not in zones:
        out["movable"] = zones == {"Movable"}
    return out


def _discovered(names) -> list[str]:
    """Names in the order libdaxctl keeps what it found under them: it reads
    a directory in readdir order (kernfs's) and adds each to the head of its
    list."""
    return kernfs_order(names)[::-1]


def daxctl_list(layout: list[dict], regions: bool, devices: bool, mappings: bool, idle: bool,
                media_errors: bool = False) -> list[dict]:
    """libdaxctl finds regions through the devices in /sys/bus/dax/devices
    (a region without one is not seen), and a region's devices in its own
    directory."""
    by_name = {d["name"]: region for region in layout for d in region["devices"]}
    found = {}
    for name in kernfs_order(by_name):
        found.setdefault(by_name[name]["id"], by_name[name])
    layout = [found[i] for i in list(found)[::-1]]

    def devs(region: dict) -> list[dict]:
        named = {d["name"]: d for d in region["devices"]}
        return [_device(named[n], region, mappings, media_errors) for n in _discovered(named)
                if idle or named[n]["size"]]

    if not regions:
        return [d for region in layout for d in devs(region)]
    out = []
    for region in layout:
        r = {"path": REGION_PATH.format(id=region["id"]), "id": region["id"], "size": region["size"]}
        if region["available_size"]:
            r["available_size"] = region["available_size"]
        r["align"] = region["align"]
        if devices and (listed := devs(region)):
            r["devices"] = listed
        out.append(r)
    return out


def dumps(listing: list[dict]) -> str:
    return json.dumps(listing, indent=2, separators=(",", ":")).replace("/", "\\/")
