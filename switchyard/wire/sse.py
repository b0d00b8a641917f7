"""Server-sent events: framing what we send, parsing what upstreams send."""

from __future__ import annotations

DONE = b"data: [DONE]\n\n"


class LastFrame(bytes):
    """A stream's final frame: nothing follows it, so the server sends it together with the
    end of the body (one write, and one read for the client, where there would be two)."""

    __slots__ = ()


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


class SSEDecoder:
    """Incremental SSE parser (per the spec; comments and ids ignored).

    Fed network reads as they come, it returns every event they completed, so a burst of
    events that arrived together can be relayed together.
    """

    __slots__ = ("_buffer", "_event", "_data")

    def __init__(self) -> None:
        self._buffer = b""
        self._event: str | None = None
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if chunk[-2:] == b"\n\n" and not self._buffer and not self._data and self._event is None and b"\r" not in chunk:
            # The usual read: whole one-line `data:` events and nothing pending; one split, no
            # line loop (a stream relays thousands of these a second).
            events = []
            for block in chunk[:-2].split(b"\n\n"):
                if block[:6] != b"data: " or b"\n" in block:
                    break
                events.append(SSEEvent(None, block[6:]))
            else:
                return events
        self._buffer += chunk
        if b"\n" not in chunk:
            return []
        *lines, self._buffer = self._buffer.split(b"\n")
        events: list[SSEEvent] = []
        for raw in lines:
            line = raw[:-1] if raw.endswith(b"\r") else raw
            if not line:
                if self._data:
                    events.append(SSEEvent(self._event, b"\n".join(self._data)))
                self._event, self._data = None, []
                continue
            if line[:1] == b":":
                continue
            field, _, value = line.partition(b":")
            if value[:1] == b" ":
                value = value[1:]
            if field == b"data":
                self._data.append(value)
            elif field == b"event":
                self._event = value.decode("utf-8", "replace")
        return events

    def close(self) -> list[SSEEvent]:
        """Events left when the body ends without a final blank line."""
        events = self.feed(b"\n\n") if self._buffer or self._data else []
        return events
