"""`daxctl list` JSON from the emulator's layout: same keys, omissions, order
(daxctl lists regions, devices and mappings in reverse discovery order) and
formatting (json-c: no space after ':', '/' escaped)."""
import json

REGION_PATH = "/platform/daxfuse.{id}"


def _device(dev: dict, mappings: bool, media_errors: bool) -> dict:
    out = {"chardev": dev["name"], "size": dev["size"], "target_node": 0,
           "align": dev["align"], "mode": "devdax"}
    if dev["state"] == "disabled":
        out["state"] = "disabled"
    if mappings and dev["ranges"]:
        out["mappings"] = [{"page_offset": r["page_offset"] // 4096, "start": r["start"],
                            "end": r["end"], "size": r["end"] + 1 - r["start"]}
                           for r in reversed(dev["ranges"])]
    if media_errors and dev["badblocks"]:  # as ndctl list --media-errors, for namespaces
        out["badblocks"] = dev["badblocks"]
    return out


def daxctl_list(layout: list[dict], regions: bool, devices: bool, mappings: bool, idle: bool,
                media_errors: bool = False) -> list[dict]:
    def devs(region: dict) -> list[dict]:
        return [_device(d, mappings, media_errors) for d in reversed(region["devices"]) if idle or d["size"]]

    layout = list(reversed(layout))
    if not regions:
        return [d for region in layout for d in devs(region)]
    out = []
    for region in layout:
        r = {"path": REGION_PATH.format(id=region["id"]), "id": region["id"], "size": region["size"]}
        if region["available_size"]:
            r["available_size"] = region["available_size"]
        r["align"] = region["align"]
        if devices and devs(region):
            r["devices"] = devs(region)
        out.append(r)
    return out


def dumps(listing: list[dict]) -> str:
    return json.dumps(listing, indent=2, separators=(",", ":")).replace("/", "\\/")
