"""Every response carries `x-request-id`, errors included (the SDK exposes it as `request_id`)."""

from __future__ import annotations

import os
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send


def new_request_id() -> str:
    """Time-ordered (milliseconds first), then random: ids sort by arrival, and the usage
    table's primary key grows at its end instead of splitting pages at random."""
    return f"req_{int(time.time() * 1000):012x}{os.urandom(8).hex()}"


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        await self.app(scope, receive, send_with_id)
