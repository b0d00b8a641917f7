"""Every response carries `x-request-id`, errors included (the SDK exposes it as `request_id`)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from switchyard.observability import logs, tracing


_log = logging.getLogger("switchyard.requests")


def printable(value: object) -> str:
    """A client-given string as one log token: escaped (no forged lines), cut to 100 characters."""
    return value[:100].encode("unicode_escape").decode() if isinstance(value, str) and value else "-"


def new_request_id() -> str:
    """Time-ordered (milliseconds first), then random: ids sort by arrival, and the usage
    table's primary key grows at its end instead of splitting pages at random."""
    return f"req_{int(time.time() * 1000):012x}{os.urandom(8).hex()}"


class RequestIdMiddleware:
    """Outermost: gives every request its id, and (when on) its trace span and its JSON log line."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        header = (b"x-request-id", request_id.encode())
        span = tracing.start_request(scope.get("method", ""), scope.get("path", ""), scope.get("headers", ())) \
            if tracing.enabled() else None
        fields = logs.request_fields.set(state) if logs.json_lines() else None
        started = time.perf_counter()
        status = 500

        def send_with_id(message: Message) -> Awaitable[None]:
            # Not a coroutine: it hands back the inner send's awaitable, so a stream's frames
            # pass through no frame of this middleware.
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            return send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except asyncio.CancelledError:
            if not state.get("client_gone"):
                raise
            # The protocol cancelled it because its client left: nobody to answer, nothing wrong.
            status, state["error_code"] = 499, "client_disconnected"
            if fields is None:
                _log.info("%s %s %s status=499 code=client_disconnected param=- key=%s model=%s", request_id,
                          scope.get("method"), scope.get("path"), state.get("key_id") or "-",
                          printable(state.get("model")))
        finally:
            if span is not None:
                tracing.end_request(span, status, request_id)
            if fields is not None:
                logs.request_line(scope.get("method", ""), scope.get("path", ""), status, state, started)
                logs.request_fields.reset(fields)
