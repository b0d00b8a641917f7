"""A pull-style multipart/form-data reader over the request stream.

Starlette's `request.form()` spools file parts to the temp directory and has no size limit on
them; an upload route instead reads part by part and streams a file's bytes wherever it wants
(e.g. straight into the data directory), with its own limits, never holding a file in memory.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from switchyard.wire.errors import GatewayError, invalid_request

try:
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import MultipartParser, parse_options_header
except ModuleNotFoundError:  # python-multipart before 0.0.13
    from multipart.exceptions import FormParserError  # type: ignore[no-redef]
    from multipart.multipart import MultipartParser, parse_options_header  # type: ignore[no-redef]

MAX_HEADER_BYTES = 16 * 1024  # per part: names and dispositions are small


@dataclass(frozen=True, slots=True)
class PartInfo:
    name: str
    filename: str | None  # None for a plain form field
    content_type: str | None


def is_multipart(content_type: str | None) -> bool:
    return (content_type or "").split(";", 1)[0].strip().lower() == "multipart/form-data"


class MultipartReader:
    """`while (part := await reader.next_part()) is not None:` then read its bytes with
    `chunks()` or `read(limit)` (or not at all: the next `next_part` skips them)."""

    def __init__(self, content_type: str, body: AsyncIterator[bytes]) -> None:
        _, params = parse_options_header(content_type)
        boundary = params.get(b"boundary")
        if not boundary:
            raise invalid_request("The multipart/form-data body has no boundary in its Content-Type header.")
        self._body = body
        self._events: deque[tuple[str, object]] = deque()
        self._done = False  # the body is fully read
        self._ended = False  # the closing boundary was seen
        self._in_part = False
        self._header_name = b""
        self._header_value = b""
        self._header_bytes = 0
        self._headers: dict[bytes, bytes] = {}
        self._parser = MultipartParser(boundary, {
            "on_part_begin": self._on_part_begin,
            "on_part_data": self._on_part_data,
            "on_part_end": lambda: self._events.append(("end", None)),
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
            "on_end": self._on_end,
        })

    # -- parser callbacks (synchronous): they only queue events for the async side

    def _on_part_begin(self) -> None:
        self._headers = {}
        self._header_bytes = 0

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        self._events.append(("data", data[start:end]))

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]
        self._count_header(end - start)

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]
        self._count_header(end - start)

    def _count_header(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > MAX_HEADER_BYTES:
            raise invalid_request("A multipart part has headers larger than 16 KiB.")

    def _on_header_end(self) -> None:
        self._headers[self._header_name.lower()] = self._header_value
        self._header_name = self._header_value = b""

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name")
        if name is None:
            raise invalid_request('Every multipart part needs a Content-Disposition header with a "name".')
        filename = options.get(b"filename")
        content_type = self._headers.get(b"content-type")
        self._events.append(("begin", PartInfo(
            name=name.decode("utf-8", "replace"),
            filename=filename.decode("utf-8", "replace") if filename is not None else None,
            content_type=content_type.decode("latin-1") if content_type is not None else None,
        )))

    def _on_end(self) -> None:
        self._ended = True

    # -- the pull side

    async def _next_event(self) -> tuple[str, object] | None:
        while not self._events:
            if self._done:
                return None
            chunk = await anext(self._body, None)
            try:
                if chunk is None:
                    self._done = True
                    self._parser.finalize()
                    if not self._ended:
                        raise invalid_request("The multipart/form-data body ended before its closing boundary.")
                else:
                    self._parser.write(chunk)
            except FormParserError:
                raise invalid_request("The request body is not valid multipart/form-data.") from None
        return self._events.popleft()

    async def next_part(self) -> PartInfo | None:
        while (event := await self._next_event()) is not None:
            kind, value = event
            if kind == "begin":
                self._in_part = True
                assert isinstance(value, PartInfo)
                return value
        return None

    async def chunks(self) -> AsyncIterator[bytes]:
        """The current part's bytes, as they arrive."""
        while self._in_part:
            event = await self._next_event()
            if event is None:
                raise invalid_request("The multipart/form-data body ended inside a part.")
            kind, value = event
            if kind == "end":
                self._in_part = False
            elif kind == "data":
                assert isinstance(value, bytes)
                if value:
                    yield value

    async def read(self, limit: int, name: str) -> bytes:
        """The current part whole, for small form fields."""
        out = bytearray()
        async for chunk in self.chunks():
            out += chunk
            if len(out) > limit:
                raise invalid_request(f"The form field '{name[:100]}' is longer than {limit} bytes.", param=name[:100])
        return bytes(out)


async def limited(body: AsyncIterator[bytes], limit: int, error: GatewayError) -> AsyncIterator[bytes]:
    """The body, failing with `error` once more than `limit` bytes arrive (whatever the
    Content-Length said, or if there was none)."""
    total = 0
    async for chunk in body:
        total += len(chunk)
        if total > limit:
            raise error
        yield chunk
