"""A response's head goes out with its first body piece, and a stream's last frame with the end
of its body: one write where uvicorn makes two.

Driven through uvicorn's own RequestResponseCycle with a transport that records each write,
so what is checked is the bytes a client would receive, write by write."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator

from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from switchyard.server.protocol import HeadWithBody
from switchyard.server.responses import SSEResponse
from switchyard.wire.sse import LastFrame


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.events: list[str] = []

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.writes.append(bytes(data))
        self.events.append("write")

    def close(self) -> None:
        self.events.append("close")

    def is_closing(self) -> bool:
        return "close" in self.events


def _cycle(transport: RecordingTransport, keep_alive: bool = True) -> RequestResponseCycle:
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "http_version": "1.1",
             "headers": [], "query_string": b"", "state": {}}
    log = logging.getLogger("test")
    return RequestResponseCycle(scope=scope, transport=transport, flow=FlowControl(transport), logger=log,
                                access_logger=log, access_log=False, default_headers=[], message_event=asyncio.Event(),
                                expect_100_continue=False, keep_alive=keep_alive, on_response=lambda: None)


def test_a_json_answer_is_one_write() -> None:
    async def go() -> None:
        transport = RecordingTransport()
        send = HeadWithBody(_cycle(transport))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"11")]})
        assert transport.writes == []  # held until the body
        await send({"type": "http.response.body", "body": b'{"ok":true}'})
        assert len(transport.writes) == 1
        head, _, body = transport.writes[0].partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"content-length: 11" in head
        assert body == b'{"ok":true}'

    asyncio.run(go())


def test_a_stream_sends_its_head_with_the_first_frame_then_one_write_per_frame() -> None:
    async def go() -> None:
        transport = RecordingTransport()
        cycle = _cycle(transport)
        send = HeadWithBody(cycle)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        first = transport.writes[0]
        assert b"transfer-encoding: chunked" in first and first.endswith(b"\r\n\r\n9\r\ndata: 1\n\n\r\n")
        assert transport.writes[1:] == [b"e\r\ndata: [DONE]\n\n\r\n", b"0\r\n\r\n"]
        assert cycle.response_complete

    asyncio.run(go())


def test_a_closing_connection_is_closed_after_the_answer_is_written() -> None:
    async def go() -> None:
        transport = RecordingTransport()
        send = HeadWithBody(_cycle(transport, keep_alive=False))
        await send({"type": "http.response.start", "status": 404, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"no"})
        assert transport.events == ["write", "close"]
        assert b"connection: close" in transport.writes[0] and transport.writes[0].endswith(b"\r\n\r\nno")

    asyncio.run(go())


def test_a_head_without_a_body_is_still_sent_when_the_application_returns() -> None:
    async def go() -> None:
        transport = RecordingTransport()
        cycle = _cycle(transport)
        send = HeadWithBody(cycle)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        assert not cycle.response_started  # nothing has left yet: a failure now still gets uvicorn's 500
        await send.flush()
        assert cycle.response_started and transport.writes[0].startswith(b"HTTP/1.1 204 No Content\r\n")

    asyncio.run(go())


def _streamed(frames: list[bytes]) -> tuple[RecordingTransport, RequestResponseCycle, list[str]]:
    async def source() -> AsyncGenerator[bytes, None]:
        for frame in frames:
            yield frame

    async def go() -> tuple[RecordingTransport, RequestResponseCycle, list[str]]:
        transport = RecordingTransport()
        cycle = _cycle(transport)
        finished: list[str] = []

        async def finish() -> None:
            finished.append("finish")

        send = HeadWithBody(cycle)
        await SSEResponse(source(), finish=finish)(cycle.scope, cycle.receive, send)
        await send.flush()
        return transport, cycle, finished

    return asyncio.run(go())


def test_a_streams_last_frame_ends_the_body_in_the_same_write() -> None:
    transport, cycle, finished = _streamed([b"data: 1\n\n", LastFrame(b"data: [DONE]\n\n")])
    assert len(transport.writes) == 2
    assert transport.writes[0].endswith(b"\r\n\r\n9\r\ndata: 1\n\n\r\n")
    assert transport.writes[1] == b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"
    assert cycle.response_complete and finished == ["finish"]


def test_nothing_is_written_after_a_last_frame() -> None:
    transport, cycle, _ = _streamed([LastFrame(b"data: 1\n\n"), b"data: late\n\n"])
    assert len(transport.writes) == 1 and transport.writes[0].endswith(b"9\r\ndata: 1\n\n\r\n0\r\n\r\n")
    assert b"late" not in b"".join(transport.writes) and cycle.response_complete


def test_a_stream_without_a_last_frame_is_ended_after_its_frames() -> None:
    transport, cycle, _ = _streamed([b"data: 1\n\n", b"data: 2\n\n"])
    assert transport.writes[1:] == [b"9\r\ndata: 2\n\n\r\n", b"0\r\n\r\n"] and cycle.response_complete
