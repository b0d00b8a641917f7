"""The model routes most traffic takes, dispatched without Starlette's router and middleware.

Through Starlette a request walks the route table and three exception-handling layers, each
wrapping `send` (called again for every chunk of a stream) and each a frame that every resume of
the request's coroutine passes through: about 5% of the gateway's CPU per request (measured in
turns with bench/cpu_per_request.py --compare). Here `POST /v1/chat/completions` and
`POST /v1/responses` go straight to their endpoint; errors are rendered by the same handlers the
app uses. Every other request goes to the app unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from switchyard.wire.errors import GatewayError

Endpoint = Callable[[Request], Awaitable[Response]]
Handler = Callable[[Request, Exception], Awaitable[Response]]


class HotRoutes:
    """`routes`: path -> endpoint, for POST; `app`: the Starlette app (the endpoints read its
    state); `handlers`: the app's exception handlers, by class (Exception: the last resort)."""

    def __init__(self, app: ASGIApp, routes: Mapping[str, Endpoint], handlers: Mapping[type[Exception], Handler]) -> None:
        self.app = app
        self.routes = dict(routes)
        self.gateway_error = handlers[GatewayError]
        self.http_error = handlers[HTTPException]
        self.unexpected = handlers[Exception]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self.routes.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        scope["app"] = self.app
        request = Request(scope, receive, send)
        try:
            response = await endpoint(request)
        except Exception as exc:
            response = await self._render(request, exc)
        # An exception from here on comes once the answer has started (these endpoints' responses
        # send their head first): nothing more can be said, and the server closes the connection.
        await response(scope, receive, send)

    async def _render(self, request: Request, exc: Exception) -> Response:
        if isinstance(exc, GatewayError):
            return await self.gateway_error(request, exc)
        if isinstance(exc, HTTPException):
            return await self.http_error(request, exc)
        return await self.unexpected(request, exc)
