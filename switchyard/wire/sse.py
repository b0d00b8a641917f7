"""Server-sent events: framing what we send, parsing what upstreams send."""

from __future__ import annotations

from collections.abc import AsyncIterator

DONE = b"data: [DONE]\n\n"


def data_frame(payload: bytes) -> bytes:
    """A `data:` frame as Chat Completions streams use (no `event:` line)."""
    return b"data: " + payload + b"\n\n"


def event_frame(event: str, payload: bytes) -> bytes:
    """An `event:` + `data:` frame as the Responses API streams use."""
    return b"event: " + event.encode() + b"\ndata: " + payload + b"\n\n"


class SSEEvent:
    """One parsed upstream event: its `event:` name (or None) and its joined `data:` payload."""

    __slots__ = ("event", "data")

    def __init__(self, event: str | None, data: bytes) -> None:
        self.event = event
        self.data = data


async def parse_events(lines: AsyncIterator[bytes]) -> AsyncIterator[SSEEvent]:
    """Turn a stream of raw lines into events, per the SSE spec (comments and ids ignored)."""
    event: str | None = None
    data: list[bytes] = []
    async for raw in lines:
        line = raw.rstrip(b"\r\n")
        if not line:
            if data:
                yield SSEEvent(event, b"\n".join(data))
            event, data = None, []
            continue
        if line.startswith(b":"):
            continue
        field, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if field == b"data":
            data.append(value)
        elif field == b"event":
            event = value.decode("utf-8", "replace")
    if data:
        yield SSEEvent(event, b"\n".join(data))
