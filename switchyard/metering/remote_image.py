"""Exact image tokens for every image of a request, remote URLs included.

For a remote image only its header is fetched: a ranged GET for the first 64 KiB, grown (up
to a cap) only when a JPEG's size marker sits behind large metadata. A server that ignores
Range is read as a stream and dropped as soon as the size is known. Fetches go through
`fetch.GuardedSession` (public addresses only), at most `fetch.max_images_per_request` per
request; whatever goes wrong, the client hears one generic error (the reason is logged).
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from switchyard.catalog import ImageTokenSpec
from switchyard.config import FetchPolicy
from switchyard.fetch import FetchRefused, GuardedSession
from switchyard.metering.image_size import data_url_image_size, image_size
from switchyard.metering.images import image_tokens
from switchyard.wire.chat import ChatRequest, ImagePart, ImageURL
from switchyard.wire.errors import invalid_request

__all__ = ["MeasuredImage", "fetch_image_size", "measure_images", "remote_image_count"]

log = logging.getLogger("switchyard.fetch")
# One answer for every failed fetch: it must not tell a port scan what it found.
FETCH_FAILED = "the image at this URL could not be fetched or is not an image switchyard can read"

_FIRST_RANGE = 64 * 1024
_GROWTH = 4
# image_size decides every format except JPEG from this many leading bytes; only a JPEG
# (whose size marker follows its metadata segments) can need more.
_HEADER_BYTES = 30
_JPEG = b"\xff\xd8"
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-")
_PARALLEL_FETCHES = 8


@dataclass(frozen=True, slots=True)
class MeasuredImage:
    index: int  # order of the image in the request
    param: str  # where it is, for error messages
    width: int
    height: int
    detail: str
    tokens: int

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "width": self.width, "height": self.height,
                "detail": self.detail, "tokens": self.tokens}


async def fetch_image_size(
    session: GuardedSession, url: str, *, timeout: float = 10, max_bytes: int = 1 << 20
) -> tuple[int, int]:
    """(width, height) of the image at an http(s) URL, reading as few bytes as its header needs.

    Raises FetchRefused with a reason for the operator's log (it never repeats the URL, which
    may carry a signed token)."""
    buf = bytearray()
    try:
        async with asyncio.timeout(timeout):
            while len(buf) < max_bytes:
                end = min(max(_FIRST_RANGE, _GROWTH * len(buf)), max_bytes)
                # identity: byte ranges must address the file, not a compressed form of it
                headers = {"Range": f"bytes={len(buf)}-{end - 1}", "Accept-Encoding": "identity"}
                async with session.get(url, headers) as resp:
                    if resp.status == 200:  # Range ignored: the whole file from the start
                        buf.clear()
                        end = max_bytes
                    elif resp.status == 206:
                        if _range_start(resp.headers.get("Content-Range")) != len(buf):
                            raise FetchRefused("the server sent a different byte range than was asked for")
                    elif resp.status == 416:  # nothing past what we hold: the file ends there
                        break
                    else:
                        raise FetchRefused(f"the server answered HTTP {resp.status}")
                    size = await _read_until_size(resp, buf, end)
                    if size is not None:
                        return size
                    if len(buf) < end:  # end of file
                        break
    except TimeoutError:
        raise FetchRefused(f"the image did not arrive within {timeout:g} s") from None
    except aiohttp.ClientError as exc:
        raise FetchRefused(f"downloading the image failed ({type(exc).__name__})") from None
    except ValueError as exc:
        raise FetchRefused(f"not an image: {exc}") from None
    try:
        return image_size(bytes(buf))
    except ValueError as exc:
        raise FetchRefused(f"no image size in its first {len(buf):,} bytes ({exc})") from None


async def _read_until_size(resp: aiohttp.ClientResponse, buf: bytearray, end: int) -> tuple[int, int] | None:
    """Append the body to `buf` until the size is known (returned) or `end` bytes are held."""
    async for chunk in resp.content.iter_any():
        buf += chunk[: end - len(buf)]
        size = _size_so_far(buf)
        if size is not None or len(buf) >= end:
            return size
    return None


def _size_so_far(buf: bytearray) -> tuple[int, int] | None:
    try:
        return image_size(bytes(buf))
    except ValueError:
        if len(buf) < _HEADER_BYTES or buf.startswith(_JPEG):
            return None  # more bytes may complete the header
        raise


def _range_start(content_range: str | None) -> int | None:
    m = _CONTENT_RANGE.match(content_range or "")
    return int(m.group(1)) if m else None


# ---- every image of a request ------------------------------------------------------------


def remote_image_count(request: ChatRequest) -> int:
    return sum(
        1 for msg in request.messages if isinstance(msg.content, list)
        for part in msg.content if isinstance(part, ImagePart) and not _is_data_url(part.image_url.url)
    )


async def measure_images(
    request: ChatRequest, spec: ImageTokenSpec | None, policy: FetchPolicy = FetchPolicy(),
    session: GuardedSession | None = None,
) -> list[MeasuredImage]:
    """Size and tokens of each image, in request order; remote ones fetched concurrently.

    With no image pricing in the catalog (`spec` None) images are sized but cost 0 tokens.
    Errors are 400s naming the image's place in the request.
    """
    parts = [
        (f"messages[{i}].content[{j}].image_url", part.image_url)
        for i, msg in enumerate(request.messages) if isinstance(msg.content, list)
        for j, part in enumerate(msg.content) if isinstance(part, ImagePart)
    ]
    remote = remote_image_count(request)
    if remote > policy.max_images_per_request:
        raise invalid_request(f"At most {policy.max_images_per_request} remote images can be measured per request; "
                              f"this one has {remote}.", param="messages", code="too_many_images")
    if session is None and remote:
        async with GuardedSession(policy) as own:
            return await _measure(parts, spec, own, policy)
    return await _measure(parts, spec, session, policy)


async def _measure(
    parts: list[tuple[str, ImageURL]], spec: ImageTokenSpec | None, session: GuardedSession | None,
    policy: FetchPolicy,
) -> list[MeasuredImage]:
    gate = asyncio.Semaphore(_PARALLEL_FETCHES)

    async def size_of(url: str) -> tuple[int, int]:
        if _is_data_url(url):
            return data_url_image_size(url)
        assert session is not None
        async with gate:
            return await fetch_image_size(session, url, timeout=policy.timeout_seconds, max_bytes=policy.max_bytes)

    # Wait for all, then report the first failure in request order: the same error every time.
    sizes = await asyncio.gather(*(size_of(u.url) for _, u in parts), return_exceptions=True)
    out: list[MeasuredImage] = []
    for index, ((param, image), size) in enumerate(zip(parts, sizes)):
        if isinstance(size, FetchRefused):
            log.info("remote image %s (host %s) not measured: %s", param, urlsplit(image.url).hostname, size)
            raise invalid_request(f"Invalid image: {FETCH_FAILED}.", param=f"{param}.url", code="invalid_image_url")
        if isinstance(size, ValueError):
            raise invalid_request(f"Invalid image: {size}", param=f"{param}.url", code="invalid_image_url")
        if isinstance(size, BaseException):
            raise size
        width, height = size
        try:
            tokens = image_tokens(spec, width, height, image.detail) if spec is not None else 0
        except ValueError as exc:
            raise invalid_request(f"Invalid image: {exc}", param=f"{param}.detail", code="invalid_value") from None
        out.append(MeasuredImage(index, param, width, height, image.detail, tokens))
    return out


def _is_data_url(url: str) -> bool:
    return url[:5].lower() == "data:"
