"""Image width and height from the file header, without decoding the image.

Pure Python (no Pillow in the gateway process): PNG, JPEG, GIF, WebP (VP8, VP8L,
VP8X) and BMP. For ``data:`` URLs only the base64 characters covering the bytes the
header walk actually reads are decoded; base64 is positional (4 characters ↔ 3
bytes), so a JPEG whose SOF sits behind a large EXIF or ICC segment costs a few
small decodes, not a decode of everything before it.

EXIF orientation is ignored on purpose: a 90° rotation swaps width and height, and
both image-token methods are symmetric in the two.
"""

from __future__ import annotations

import binascii
import struct
from collections.abc import Callable

__all__ = ["data_url_image_size", "image_size"]

_ERROR = "unsupported or corrupt image"
# Real JPEGs have a few dozen segments before SOF (ICC profiles split into at most
# 255); the cap stops a crafted file of tiny segments from costing a long walk.
_MAX_JPEG_SEGMENTS = 1024
_MAX_DATA_URL_HEADER = 256  # "data:image/png;base64," plus any parameters

# Reads up to ``size`` bytes at ``offset`` (fewer at the end of the image).
_Read = Callable[[int, int], bytes]


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) in pixels of a PNG, JPEG, GIF, WebP or BMP image."""
    view = memoryview(data)
    return _size(lambda offset, size: bytes(view[offset : offset + size]))


def data_url_image_size(url: str) -> tuple[int, int]:
    """(width, height) of a ``data:image/...;base64,...`` URL's image."""
    comma = url.find(",", 0, _MAX_DATA_URL_HEADER)
    if not url[:5].lower() == "data:" or comma < 0:
        raise ValueError("malformed image data URL: expected data:image/<type>;base64,<data>")
    params = url[5:comma].split(";")
    if not params[0].strip().lower().startswith("image/") or params[-1].strip().lower() != "base64":
        raise ValueError("malformed image data URL: expected data:image/<type>;base64,<data>")
    return _size(_Base64Reader(url, comma + 1).read)


class _Base64Reader:
    """Random access to the bytes of a base64 payload inside ``text`` from ``start``,
    decoding only the 4-character groups that cover what is asked for."""

    __slots__ = ("_text", "_start")

    def __init__(self, text: str, start: int) -> None:
        self._text = text
        self._start = start

    def read(self, offset: int, size: int) -> bytes:
        first_group, end_group = offset // 3, -(-(offset + size) // 3)
        chars = self._text[self._start + 4 * first_group : self._start + 4 * end_group]
        if len(chars) % 4:  # the payload's last group, without its "=" padding
            chars += "=" * (-len(chars) % 4)
        try:
            decoded = _b64decode(chars)
        except (binascii.Error, ValueError):
            raise ValueError("malformed image data URL: invalid base64") from None
        skip = offset - 3 * first_group
        return decoded[skip : skip + size]


def _b64decode(chars: str) -> bytes:
    # strict: only the base64 alphabet, padding only at the very end.
    return binascii.a2b_base64(chars, strict_mode=True)


def _size(read: _Read) -> tuple[int, int]:
    head = read(0, 30)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        size = _png(head)
    elif head.startswith(b"\xff\xd8"):
        size = _jpeg(read)
    elif head.startswith((b"GIF87a", b"GIF89a")):
        size = _unpack("<HH", head, 6)
    elif head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        size = _webp(head)
    elif head.startswith(b"BM"):
        size = _bmp(head)
    else:
        raise ValueError(_ERROR)
    width, height = size
    if width < 1 or height < 1:
        raise ValueError(_ERROR)
    return width, height


def _unpack(fmt: str, data: bytes, offset: int) -> tuple[int, ...]:
    try:
        return struct.unpack_from(fmt, data, offset)
    except struct.error:  # truncated
        raise ValueError(_ERROR) from None


def _png(head: bytes) -> tuple[int, int]:
    # The first chunk must be IHDR: length(4) "IHDR" width(4) height(4), big-endian.
    if head[12:16] != b"IHDR":
        raise ValueError(_ERROR)
    width, height = _unpack(">II", head, 16)
    return width, height


def _webp(head: bytes) -> tuple[int, int]:
    chunk = head[12:16]
    if chunk == b"VP8 ":
        # Key-frame header: 3-byte frame tag, start code 9d 01 2a, 14-bit sizes (+2 scale bits).
        if head[23:26] != b"\x9d\x01\x2a":
            raise ValueError(_ERROR)
        width, height = _unpack("<HH", head, 26)
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":
        # Signature 0x2f, then 14 bits width-1 and 14 bits height-1, little-endian.
        if head[20:21] != b"\x2f":
            raise ValueError(_ERROR)
        (bits,) = _unpack("<I", head, 21)
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        # Flags(4), then 24-bit canvas width-1 and height-1, little-endian.
        raw = head[24:30]
        if len(raw) < 6:
            raise ValueError(_ERROR)
        return int.from_bytes(raw[:3], "little") + 1, int.from_bytes(raw[3:], "little") + 1
    raise ValueError(_ERROR)


def _bmp(head: bytes) -> tuple[int, int]:
    (header_size,) = _unpack("<I", head, 14)
    if header_size == 12:  # OS/2 BITMAPCOREHEADER: unsigned 16-bit sizes
        width, height = _unpack("<HH", head, 18)
        return width, height
    if header_size < 40:
        raise ValueError(_ERROR)
    width, height = _unpack("<ii", head, 18)
    return width, abs(height)  # negative height = rows stored top-down


# Start-of-frame markers carry the size; C4 (DHT), C8 (JPG) and CC (DAC) do not.
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
# Markers without a length field.
_STANDALONE = frozenset({0x01, 0xD8, *range(0xD0, 0xD8)})


def _jpeg(read: _Read) -> tuple[int, int]:
    """Walk the marker segments by their lengths to the first SOF, so thumbnails
    embedded in EXIF (which carry their own SOF) are skipped, not misread."""
    pos = 2
    for _ in range(_MAX_JPEG_SEGMENTS):
        # Read the marker, its length and (if SOF) the size in one go.
        seg = read(pos, 9)
        if len(seg) < 2 or seg[0] != 0xFF:
            raise ValueError(_ERROR)
        marker = seg[1]
        if marker == 0xFF:  # fill byte before the marker
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame
            raise ValueError(_ERROR)
        (length,) = _unpack(">H", seg, 2)
        if length < 2:
            raise ValueError(_ERROR)
        if marker in _SOF:
            # length(2) precision(1) height(2) width(2)
            height, width = _unpack(">HH", seg, 5)
            return width, height
        pos += 2 + length
    raise ValueError(_ERROR)
