"""Fast JSON and SSE responses."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import orjson
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from switchyard.wire.errors import GatewayError


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(exc: GatewayError) -> Response:
    return Response(exc.to_json(), status_code=exc.status, media_type="application/json", headers=exc.headers)


class SSEResponse(StreamingResponse):
    """An event stream that runs `finish` however the response ends (client gone included)."""

    def __init__(
        self, frames: AsyncIterator[bytes], headers: Mapping[str, str] | None = None,
        finish: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(
            frames, media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no", **(headers or {})},
        )
        self._finish = finish

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if self._finish is not None:
                await self._finish()


def sse_response(
    frames: AsyncIterator[bytes], headers: Mapping[str, str] | None = None,
    finish: Callable[[], Awaitable[None]] | None = None,
) -> SSEResponse:
    return SSEResponse(frames, headers, finish)
