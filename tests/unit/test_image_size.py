"""Image sizes from headers: real images written by Pillow (test-only dependency) must
read back at the size Pillow wrote, from bytes and from base64 data URLs."""

from __future__ import annotations

import base64
import io
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from switchyard.metering import image_size as image_size_module
from switchyard.metering.image_size import data_url_image_size, image_size

import PIL  # noqa: E402  (a dev dependency: tests make real images with it)
from PIL import Image  # noqa: E402

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def sizes(draw: st.DrawFn) -> tuple[int, int]:
    """Sides up to 5000 px (both header byte widths matter), area kept small so
    encoding stays fast; either side may be the long one."""
    long_side = draw(st.integers(min_value=1, max_value=5000))
    short_side = draw(st.integers(min_value=1, max_value=max(1, min(long_side, 200_000 // long_side))))
    return (long_side, short_side) if draw(st.booleans()) else (short_side, long_side)


def encode(width: int, height: int, fmt: str, mode: str = "RGB", **params: Any) -> bytes:
    # Solid colour: encoding cost stays small even for large sizes.
    out = io.BytesIO()
    Image.new(mode, (width, height), 1 if mode in ("1", "L", "P") else (40, 90, 200, 255)[: len(mode)]).save(
        out, fmt, **params
    )
    return out.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def exif(size: int) -> Image.Exif:
    tags = Image.Exif()
    tags[0x010E] = "x" * size  # ImageDescription: pads the EXIF segment
    return tags


# Format variants, each as Pillow writes them; the WebP ones cover VP8, VP8L and VP8X.
VARIANTS: dict[str, dict[str, Any]] = {
    "png-rgb": {"fmt": "PNG"},
    "png-rgba": {"fmt": "PNG", "mode": "RGBA"},
    "png-1bit": {"fmt": "PNG", "mode": "1"},
    "png-palette": {"fmt": "PNG", "mode": "P"},
    "jpeg": {"fmt": "JPEG"},
    "jpeg-gray": {"fmt": "JPEG", "mode": "L"},
    "jpeg-progressive": {"fmt": "JPEG", "progressive": True},
    "jpeg-cmyk": {"fmt": "JPEG", "mode": "CMYK"},
    "jpeg-exif": {"fmt": "JPEG", "exif": exif(20_000)},
    "jpeg-exif-icc": {"fmt": "JPEG", "exif": exif(60_000), "icc_profile": b"\0" * 200_000},
    "gif": {"fmt": "GIF"},
    "gif-palette": {"fmt": "GIF", "mode": "P"},
    "webp-vp8": {"fmt": "WEBP", "quality": 10},
    "webp-vp8l": {"fmt": "WEBP", "lossless": True},
    "webp-vp8x-alpha": {"fmt": "WEBP", "mode": "RGBA"},
    "webp-vp8x-exif": {"fmt": "WEBP", "exif": exif(100)},
    "bmp": {"fmt": "BMP"},
    "bmp-1bit": {"fmt": "BMP", "mode": "1"},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@SETTINGS
@given(size=sizes())
def test_agrees_with_pillow(variant: str, size: tuple[int, int]) -> None:
    width, height = size
    data = encode(width, height, **VARIANTS[variant])
    with Image.open(io.BytesIO(data)) as img:
        assert img.size == (width, height)
    assert image_size(data) == (width, height)
    assert data_url_image_size(data_url(data)) == (width, height)


def test_webp_chunk_kinds() -> None:
    # The variants above really are the three WebP layouts.
    kinds = {name: encode(7, 5, **VARIANTS[name])[12:16] for name in VARIANTS if name.startswith("webp")}
    assert set(kinds.values()) == {b"VP8 ", b"VP8L", b"VP8X"}


@pytest.mark.parametrize(("width", "height"), [(16383, 3), (3, 16383)])
def test_webp_largest(width: int, height: int) -> None:
    assert image_size(encode(width, height, "WEBP", lossless=True)) == (width, height)


def test_gif_and_png_large_sizes() -> None:
    assert image_size(encode(65535, 1, "GIF")) == (65535, 1)
    assert image_size(encode(1, 70000, "PNG", mode="1")) == (1, 70000)


def test_jpeg_skips_thumbnail_inside_exif() -> None:
    """An EXIF segment carrying a whole thumbnail JPEG (with its own SOF) comes first."""
    main = encode(640, 480, "JPEG")
    thumb = encode(160, 120, "JPEG")
    payload = b"Exif\0\0" + thumb
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    data = main[:2] + app1 + main[2:]
    with Image.open(io.BytesIO(data)) as img:
        assert img.size == (640, 480)
    assert image_size(data) == (640, 480)
    assert data_url_image_size(data_url(data, "image/jpeg")) == (640, 480)


def test_jpeg_fill_bytes_before_marker() -> None:
    main = encode(33, 44, "JPEG")
    assert image_size(main[:2] + b"\xff\xff\xff" + main[2:]) == (33, 44)


def test_bmp_core_header_and_top_down() -> None:
    # OS/2 BITMAPCOREHEADER: 12-byte DIB header with 16-bit sizes.
    core = b"BM" + struct.pack("<IHHI", 0, 0, 0, 26) + struct.pack("<IHHHH", 12, 300, 200, 1, 24)
    assert image_size(core) == (300, 200)
    # BITMAPINFOHEADER with a negative height stores rows top-down.
    info = b"BM" + struct.pack("<IHHI", 0, 0, 0, 54) + struct.pack("<IiiHH", 40, 640, -480, 1, 24) + b"\0" * 24
    assert image_size(info) == (640, 480)


def test_data_url_decodes_only_the_header(monkeypatch: pytest.MonkeyPatch) -> None:
    """A JPEG whose SOF lies ~270 KB in (60 KB EXIF + 200 KB ICC): only the segment
    headers on the way are base64-decoded, not the payload before them."""
    data = encode(1234, 567, **VARIANTS["jpeg-exif-icc"])
    url = data_url(data, "image/jpeg")
    decoded: list[int] = []
    real = image_size_module._b64decode

    def counting(chars: str) -> bytes:
        decoded.append(len(chars))
        return real(chars)

    monkeypatch.setattr(image_size_module, "_b64decode", counting)
    assert data_url_image_size(url) == (1234, 567)
    assert len(url) > 350_000
    assert sum(decoded) < 200  # a handful of 8-16 character groups
    decoded.clear()
    assert data_url_image_size(data_url(encode(4000, 3000, "PNG"))) == (4000, 3000)
    assert sum(decoded) <= 48


@pytest.mark.parametrize(
    "url",
    [
        "",
        "http://example.com/a.png",
        "data:image/png,iVBORw0KGgo",  # not base64
        "data:text/plain;base64,aGVsbG8=",  # not an image type
        "data:;base64,iVBORw0KGgo=",
        "data:image/png;base64",  # no comma
        "data:image/png;base64,",  # empty payload
        "data:image/png;base64,!!!!notbase64",
        "data:image/png;base64,iVBORw0K Ggo=",  # whitespace inside
        "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n").decode(),  # truncated
        "data:image/png;base64," + base64.b64encode(b"hello world, not an image").decode(),
        "data:image/png;base64,A",  # one stray character cannot be base64
        "data:image/png;" + "x" * 1000 + ";base64,AAAA",  # header too long
    ],
)
def test_malformed_data_urls(url: str) -> None:
    with pytest.raises(ValueError):
        data_url_image_size(url)


def test_data_url_variants() -> None:
    png = encode(12, 34, "PNG")
    b64 = base64.b64encode(png).decode()
    assert data_url_image_size(f"DATA:IMAGE/PNG;BASE64,{b64}") == (12, 34)
    assert data_url_image_size(f"data:image/png;name=a.png;base64,{b64}") == (12, 34)
    assert data_url_image_size(f"data:image/jpeg;base64,{b64}") == (12, 34)  # declared type may lie
    assert data_url_image_size(f"data:image/png;base64,{b64.rstrip('=')}") == (12, 34)  # no padding


@pytest.mark.parametrize(
    "data",
    [b"", b"\x89PNG", b"\xff\xd8", b"\xff\xd8\xff\xd9", b"\xff\xd8\xff\xda\x00\x02", b"GIF89a\x01",
     b"RIFF\0\0\0\0WEBPVP8 ", b"RIFF\0\0\0\0WEBPXXXX" + b"\0" * 20, b"BM" + b"\0" * 30, b"not an image"],
)
def test_corrupt_or_unsupported(data: bytes) -> None:
    with pytest.raises(ValueError, match="unsupported or corrupt image"):
        image_size(data)


def test_zero_sized_header_is_corrupt() -> None:
    gif = encode(5, 5, "GIF")
    with pytest.raises(ValueError, match="unsupported or corrupt image"):
        image_size(gif[:6] + b"\0\0\0\0" + gif[10:])


@pytest.mark.parametrize("variant", ["png-rgb", "jpeg-exif", "gif", "webp-vp8", "webp-vp8l", "webp-vp8x-exif", "bmp"])
@SETTINGS
@given(cut=st.integers(min_value=0, max_value=400))
def test_truncated_images_are_right_or_rejected(variant: str, cut: int) -> None:
    data = encode(321, 123, **VARIANTS[variant])
    prefix = data[: min(cut, len(data))] if variant != "jpeg-exif" else data[: cut * 60]
    try:
        assert image_size(prefix) == (321, 123)
    except ValueError as exc:
        assert str(exc) == "unsupported or corrupt image"


@settings(max_examples=200, deadline=None)
@given(st.one_of(
    st.binary(max_size=64),
    st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8", b"GIF89a", b"RIFF\0\0\0\0WEBP", b"BM"]).flatmap(
        lambda magic: st.binary(max_size=64).map(lambda rest: magic + rest)
    ),
))
def test_random_bytes_never_crash(data: bytes) -> None:
    try:
        width, height = image_size(data)
    except ValueError:
        return
    assert width >= 1 and height >= 1
    assert data_url_image_size(data_url(data)) == (width, height)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_random_data_urls_never_crash(tail: str) -> None:
    for url in (tail, "data:image/png;base64," + tail, "data:" + tail):
        try:
            data_url_image_size(url)
        except ValueError:
            pass
