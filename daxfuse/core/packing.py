"""Binary areas (label storage) kept in a layout record's JSON: zlib, then base64."""
import base64
import zlib


def pack(data: bytes) -> str:
    return base64.b64encode(zlib.compress(bytes(data))).decode()


def unpack(text: str, limit: int) -> bytes:
    """What pack made, at most limit bytes long: ValueError for anything else."""
    stream = zlib.decompressobj()
    try:
        data = stream.decompress(base64.b64decode(text, validate=True), limit + 1)
    except (TypeError, ValueError, zlib.error):
        raise ValueError("not zlib and base64") from None
    if len(data) > limit or not stream.eof:
        raise ValueError(f"not one zlib stream of at most {limit} bytes")
    return data
