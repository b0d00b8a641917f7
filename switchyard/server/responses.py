"""Fast JSON and SSE responses."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import orjson
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from switchyard.accounts.events import UsageEvents
from switchyard.wire.errors import GatewayError
from switchyard.wire.sse import LastFrame, data_frame

# A comment this often keeps proxies from closing a quiet event stream.
KEEP_ALIVE_SECONDS = 15


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(exc: GatewayError) -> Response:
    return Response(exc.to_json(), status_code=exc.status, media_type="application/json", headers=exc.headers)


class SSEResponse(StreamingResponse):
    """An event stream (or another streamed body: speech audio) that runs `finish` however the
    response ends (client gone included). The protocol cancels it when its client leaves
    (`cancel_when_gone`), so no second task listens for the disconnect and each frame goes
    straight to `send`."""

    def __init__(
        self, frames: AsyncIterator[bytes], headers: Mapping[str, str] | None = None,
        finish: Callable[[], Awaitable[None]] | None = None, media_type: str = "text/event-stream",
    ) -> None:
        super().__init__(
            frames, media_type=media_type,
            headers={"cache-control": "no-cache", "x-accel-buffering": "no", **(headers or {})},
        )
        self._finish = finish

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Each frame as it comes; a `LastFrame` ends the body in the same message (whatever
        the frames' cleanup does after it, the client already has its whole answer). The loop
        is here, not in a method of its own: every frame resumes each frame of the call chain."""
        scope.setdefault("state", {})["cancel_when_gone"] = True
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            ended = False
            async for frame in self.body_iterator:
                if ended:
                    continue  # nothing may follow a stream's last frame
                ended = isinstance(frame, LastFrame)
                await send({"type": "http.response.body", "body": frame, "more_body": not ended})
            if not ended:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            if self._finish is not None:
                await self._finish()


def sse_response(
    frames: AsyncIterator[bytes], headers: Mapping[str, str] | None = None,
    finish: Callable[[], Awaitable[None]] | None = None, media_type: str = "text/event-stream",
) -> SSEResponse:
    return SSEResponse(frames, headers, finish, media_type)


class UsageEventStream(Response):
    """Billed requests as server-sent events, for as long as the client listens: it ends when
    the client goes (watched, not noticed at the next write) or when the worker shuts down
    (the protocol closes endless streams first, so a restart does not wait for them)."""

    media_type = "text/event-stream"

    def __init__(self, events: UsageEvents, keep: Callable[[dict[str, Any]], bool],
                 headers: Mapping[str, str] | None = None) -> None:
        # No body, so no Content-Length: the response is a stream (as StreamingResponse does it).
        self.status_code, self.background = 200, None
        self.init_headers({"cache-control": "no-cache", "x-accel-buffering": "no", **(headers or {})})
        self._events, self._keep = events, keep

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope.setdefault("state", {})["endless"] = True
        queue = self._events.subscribe()
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            await send({"type": "http.response.body", "body": b": connected\n\n", "more_body": True})
            pump = asyncio.ensure_future(self._pump(queue, send))
            gone = asyncio.ensure_future(_disconnected(receive))
            try:
                await asyncio.wait((pump, gone), return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (pump, gone):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, OSError):
                        await task
        finally:
            self._events.unsubscribe(queue)

    async def _pump(self, queue: asyncio.Queue[dict[str, Any]], send: Send) -> None:
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), KEEP_ALIVE_SECONDS)
            except TimeoutError:
                await send({"type": "http.response.body", "body": b": keep-alive\n\n", "more_body": True})
                continue
            if self._keep(event):
                await send({"type": "http.response.body", "body": data_frame(orjson.dumps(event)), "more_body": True})


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
