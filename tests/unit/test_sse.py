"""The SSE parser: however an upstream's bytes are split into reads, the same events come out."""

from __future__ import annotations

import random

import pytest

from switchyard.wire.sse import SSEDecoder


def _events(reads: list[bytes]) -> list[tuple[str | None, bytes]]:
    decoder = SSEDecoder()
    out = []
    for read in reads:
        out += [(e.event, e.data) for e in decoder.feed(read)]
    out += [(e.event, e.data) for e in decoder.close()]
    return out


STREAMS = [
    # Chat Completions: one-line data events (the fast path's case), then [DONE].
    b'data: {"a":1}\n\ndata: {"b":2}\n\ndata: [DONE]\n\n',
    # Responses / Anthropic: an event line before each data line.
    b'event: response.created\ndata: {"x":1}\n\nevent: response.done\ndata: {}\n\n',
    # CRLF line ends, a comment, a multi-line data field, data without its space, blank runs.
    b': keep-alive\r\n\r\ndata: one\r\ndata: two\r\n\r\ndata:{"c":3}\n\n\n\ndata: {"d":4}\n\n',
    # An id line and a retry line (ignored), an event with no data (dropped).
    b'id: 7\nretry: 100\ndata: z\n\nevent: ping\n\ndata: last\n\n',
]


@pytest.mark.parametrize("stream", STREAMS)
def test_every_split_gives_the_events_of_a_byte_by_byte_read(stream: bytes) -> None:
    expected = _events([stream[i:i + 1] for i in range(len(stream))])
    assert expected  # the reference itself parsed something
    assert _events([stream]) == expected
    rng = random.Random(len(stream))
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(stream)), rng.randint(1, 6)))
        reads = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]
        assert _events(reads) == expected, reads


def test_whole_data_events_in_one_read() -> None:
    assert _events([b'data: {"a":1}\n\ndata: [DONE]\n\n']) == [(None, b'{"a":1}'), (None, b"[DONE]")]


def test_an_event_name_read_apart_from_its_data_is_kept() -> None:
    # The event line ends one read; the next read is a plain-looking `data:` block.
    assert _events([b"event: message_start\n", b'data: {"type":"message_start"}\n\n']) == [
        ("message_start", b'{"type":"message_start"}')]


def test_data_split_across_reads_is_joined() -> None:
    assert _events([b'data: {"a":', b'1}\n\n', b"data: x\n\n"]) == [(None, b'{"a":1}'), (None, b"x")]
