"""The HTTP/1.1 protocol uvicorn runs, with the guards a public endpoint needs against slow clients.

uvicorn closes idle keep-alive connections but will wait forever for a request's headers or
for the rest of its body, so a few thousand slow clients could hold every connection of a
worker. Here:
- a request's headers must arrive within `limits.header_seconds` (else 408, closed);
- a body may pause at most `limits.body_idle_seconds` between two pieces (else closed);
- past `limits.max_connections` connections in this worker, the connection that has waited
  longest for its headers (nobody authenticated yet) is cut first; only when every connection
  is busy with a request is the newcomer refused with 503.
"""

from __future__ import annotations

import asyncio
import time
from functools import lru_cache
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from switchyard.config import ServerLimits, load_settings
from switchyard.wire.errors import GatewayError



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
    """uvicorn's httptools protocol with header and body timeouts and a connection cap."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._guard_limits = _limits()
        self._awaiting_headers_since: float | None = None  # set while a request's headers are incomplete
        self._quiet_since: float | None = time.monotonic()  # set while no request is being served
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None

    # -- connection
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self._guard_limits.max_connections and not self._make_room():
            transport.write(_REFUSED)
            transport.close()
            return
        self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def _make_room(self) -> bool:
        """Cut the connection that has been quiet longest (sending headers nobody has authenticated
        yet, or idle between requests); False if every other one is serving a request."""
        quiet = [c for c in self.connections if c is not self and getattr(c, "_quiet_since", None) is not None]
        if not quiet:
            return False
        oldest = min(quiet, key=lambda c: c._quiet_since)
        oldest.transport.close()
        return True

    # -- headers
    def _await_headers(self) -> None:
        if self._awaiting_headers_since is None:
            self._awaiting_headers_since = time.monotonic()
            self._header_timer = self.loop.call_later(self._guard_limits.header_seconds, self._headers_late)

    def _headers_late(self) -> None:
        self._header_timer = None
        if self._awaiting_headers_since is not None and not self.transport.is_closing():
            self.transport.write(_TIMED_OUT)
            self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._await_headers()  # a keep-alive connection's next request starts its own clock

    def on_headers_complete(self) -> None:
        self._awaiting_headers_since = self._quiet_since = None
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().on_headers_complete()
        self._arm_body_timer()  # cancelled at once by on_message_complete when there is no body

    # -- body
    def _arm_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
        self._body_timer = self.loop.call_later(self._guard_limits.body_idle_seconds, self._body_stalled)

    def _body_stalled(self) -> None:
        self._body_timer = None
        if not self.transport.is_closing():
            self.transport.close()  # the application sees a disconnect and answers nobody

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self._arm_body_timer()

    def on_message_complete(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # The keep-alive timer uvicorn arms now covers the idle wait; the header clock starts
        # when the next request's first byte arrives (on_message_begin).
        self._quiet_since = time.monotonic()

    def _cancel_timers(self) -> None:
        for timer in (self._header_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = None
