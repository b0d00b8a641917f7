"""The HTTP/1.1 protocol uvicorn runs, with what a public endpoint needs against slow and vanishing clients.

uvicorn closes idle keep-alive connections but will wait forever for a request's headers or
for the rest of its body, and goes on serving a request whose client has left. Here:
- a request's headers must arrive within `limits.header_seconds` (else 408, closed);
- a body may pause at most `limits.body_idle_seconds` between two pieces (else closed);
- past `limits.max_connections` connections in this worker, the connection that has been
  quiet longest (still sending headers nobody has authenticated, or idle) is cut first; only
  when every connection is busy with a request is the newcomer refused with 503;
- a client that disconnects before its response has started cancels its request (the
  upstream call stops, a local model stops generating, the money hold is released); the
  request's task ends quietly (`client_gone` in the request state). So does a started response
  that asked for it (`cancel_when_gone`: event streams, which then need no task of their own
  listening for the disconnect); other started responses are left to finish;
- a response's status line and headers go out in the same write as its first body piece
  (uvicorn writes them apart: one more send and one more wake-up of the client per response).
Deadlines are plain numbers checked by one sweep per worker, so a request costs no timers.
"""

from __future__ import annotations

import asyncio
from functools import lru_cache
from collections.abc import Awaitable, Generator
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from switchyard.config import ServerLimits, load_settings
from switchyard.wire.errors import GatewayError

SWEEP_SECONDS = 0.5


def _canned(status: str, error: GatewayError) -> bytes:
    body = error.to_json()
    head = f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {len(body)}\r\n\r\n"
    return head.encode() + body


_REFUSED = _canned("503 Service Unavailable", GatewayError(
    503, "The server has too many open connections; retry shortly.", type="server_error", code="overloaded"))
_TIMED_OUT = _canned("408 Request Timeout", GatewayError(
    408, "The request headers did not arrive in time.", code="request_timeout"))


@lru_cache(maxsize=1)
def _limits() -> ServerLimits:
    return load_settings().limits


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header and body deadlines, a connection cap, and
    cancellation of requests whose client left."""

    _sweeping: ClassVar[set[int]] = set()  # ids of the connection sets a sweep already watches

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._guard = _limits()
        now = self.loop.time()
        self._quiet_since: float | None = now  # set while no request is being served
        self._headers_due: float | None = None  # while a request's headers are incomplete
        self._body_due: float | None = None  # while a request's body is incomplete
        self._request_task: asyncio.Task[None] | None = None
        self._request_cycle: RequestResponseCycle | None = None

    # -- connection
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._sweep_start()
        if len(self.connections) > self._guard.max_connections and not self._make_room():
            transport.write(_REFUSED)
            transport.close()
            return
        self._headers_due = self.loop.time() + self._guard.header_seconds

    def connection_lost(self, exc: Exception | None) -> None:
        cycle, task = self._request_cycle, self._request_task
        if (cycle is not None and task is not None and not task.done() and cycle is self.cycle
                and not cycle.response_complete
                and (not cycle.response_started or cycle.scope.get("state", {}).get("cancel_when_gone"))):
            # Nobody will read the answer: stop working on it (a started response only if it asked
            # to; an answer already sent whole is left to finish its cleanup).
            cycle.scope["state"]["client_gone"] = True
            task.cancel()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        """Graceful shutdown: finish requests in flight, but end endless event streams (a
        console's live usage) at once rather than waiting out the grace period for them."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and cycle.scope.get("state", {}).get("endless"):
            self.transport.close()
            return
        super().shutdown()

    def _make_room(self) -> bool:
        """Cut the connection that has been quiet longest; False if every other one is serving a request."""
        quiet = [c for c in self.connections if c is not self and getattr(c, "_quiet_since", None) is not None]
        if not quiet:
            return False
        min(quiet, key=lambda c: c._quiet_since).transport.close()
        return True

    # -- requests
    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._headers_due is None:  # a keep-alive connection's next request starts its own clock
            self._headers_due = self.loop.time() + self._guard.header_seconds

    def on_headers_complete(self) -> None:
        self._headers_due = self._quiet_since = None
        self._body_due = self.loop.time() + self._guard.body_idle_seconds
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self._body_due = self.loop.time() + self._guard.body_idle_seconds

    def on_message_complete(self) -> None:
        self._body_due = None
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._quiet_since = self.loop.time()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        async def tracked(scope: Any, receive: Any, send: Any) -> None:
            self._request_cycle, self._request_task = cycle, asyncio.current_task()  # type: ignore[assignment]
            head_with_body = HeadWithBody(cycle)
            await app(scope, receive, head_with_body)
            await head_with_body.flush()

        super()._start_asgi_task(cycle, tracked)

    # -- the sweep: one per worker, every SWEEP_SECONDS
    def _sweep_start(self) -> None:
        key = id(self.connections)
        if key not in GuardedHttpToolsProtocol._sweeping:
            GuardedHttpToolsProtocol._sweeping.add(key)
            self.loop.call_later(SWEEP_SECONDS, _sweep, self.loop, self.connections)

    def _overdue(self, now: float) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if self._headers_due is not None and now > self._headers_due:
            self.transport.write(_TIMED_OUT)
            self.transport.close()
        elif self._body_due is not None and now > self._body_due:
            self.transport.close()  # the application sees a disconnect and answers nobody


class _Done:
    """An awaitable that is already done (what `send` returns when it holds a message back)."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield  # a generator that returns at once


_DONE = _Done()


class HeadWithBody:
    """The ASGI `send` of one request: holds `http.response.start` until the first body
    message and has uvicorn write both in one `transport.write`. Until then the response has
    not started, for uvicorn as for the client: an application that fails in between gets
    uvicorn's 500, and a client that leaves cancels the request."""

    __slots__ = ("_cycle", "_start")

    def __init__(self, cycle: RequestResponseCycle) -> None:
        self._cycle = cycle
        self._start: Any = None

    def __call__(self, message: Any) -> Awaitable[None]:
        # A plain function handing back uvicorn's own awaitable: a stream's every frame comes
        # through here, and a coroutine of ours around uvicorn's would be one more per frame.
        cycle = self._cycle
        if message["type"] == "http.response.start" and self._start is None and not cycle.response_started:
            self._start = message
            return _DONE
        start, self._start = self._start, None
        if start is None:
            return cycle.send(message)
        return self._send_both(start, message)

    async def _send_both(self, start: Any, message: Any) -> None:
        cycle = self._cycle
        transport = cycle.transport
        batch = _Batched(transport)
        cycle.transport = batch  # type: ignore[assignment]
        try:
            await cycle.send(start)
            await cycle.send(message)
        finally:
            cycle.transport = transport
            batch.flush()

    async def flush(self) -> None:
        """A start the application sent with no body after it: sent as uvicorn would have."""
        start, self._start = self._start, None
        if start is not None:
            await self._cycle.send(start)


class _Batched:
    """A transport stand-in for the length of one `HeadWithBody` send: writes are joined, a
    close waits until they are out."""

    __slots__ = ("_transport", "_parts", "_close")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._parts: list[bytes] = []
        self._close = False

    def write(self, data: bytes) -> None:
        self._parts.append(data)

    def close(self) -> None:
        self._close = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def flush(self) -> None:
        if self._parts:
            self._transport.write(b"".join(self._parts))
        if self._close:
            self._transport.close()


def _sweep(loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
    now = loop.time()
    for conn in list(connections):
        overdue = getattr(conn, "_overdue", None)
        if overdue is not None:
            overdue(now)
    loop.call_later(SWEEP_SECONDS, _sweep, loop, connections)
