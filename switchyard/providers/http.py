"""A lean HTTP/1.1 client for upstream calls: keep-alive pool, streaming bodies, timeouts.

Every provider sends the same few requests thousands of times a second, so this client does
only that: one pre-rendered header block per deployment, one write per request, llhttp (via
httptools, which uvicorn already uses) to parse responses, and pooled connections. It uses a
fraction of a general-purpose client's CPU per request, which is most of a gateway's cost.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
import ssl
import time
import urllib.request
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import httptools

from switchyard.wire.errors import GatewayError, upstream_error

log = logging.getLogger("switchyard.providers.http")

_MAX_BUFFER = 1 << 20  # pause reading a streamed body when the consumer is this far behind


class UpstreamConnectError(ConnectionError):
    """The upstream could not be reached (refused, DNS, TLS, connect timeout)."""


class UpstreamTimeout(TimeoutError):
    """The upstream stopped sending for longer than the read timeout."""


class UpstreamProtocolError(ConnectionError):
    """The upstream broke the connection or sent something that is not HTTP."""


class UpstreamTooLarge(UpstreamProtocolError):
    """The upstream's answer grew past the size this deployment allows."""


class _Connection(asyncio.Protocol):
    __slots__ = (
        "transport", "parser", "response", "closed", "idle_since", "_paused", "_loop",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.closed = False
        self.idle_since = time.monotonic()
        self._paused = False

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.response is None:  # bytes while idle: the server is misbehaving; drop the connection
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamProtocolError(f"invalid HTTP response: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.response is not None and not self.response.complete:
            self._fail(UpstreamProtocolError("the upstream closed the connection mid-response"))

    # -- httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.response is not None
        self.response.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        response = self.response
        assert response is not None
        response.status = self.parser.get_status_code()
        if not response.headers_ready.done():
            response.headers_ready.set_result(None)

    def on_body(self, body: bytes) -> None:
        response = self.response
        assert response is not None
        response.chunks.append(body)
        response.buffered += len(body)
        response.wake()
        if response.buffered > _MAX_BUFFER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        response = self.response
        assert response is not None
        response.complete = True
        response.keep_alive = self.parser.should_keep_alive()
        if not response.headers_ready.done():
            response.headers_ready.set_result(None)
        response.wake()

    # -- helpers
    def resume(self) -> None:
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    def _fail(self, exc: BaseException) -> None:
        response = self.response
        if response is None:
            return
        response.error = exc
        if not response.headers_ready.done():
            response.headers_ready.set_exception(exc)
        response.wake()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Response:
    """An upstream response: status and headers now, the body as it arrives."""

    __slots__ = (
        "status", "headers", "chunks", "buffered", "complete", "keep_alive", "error",
        "headers_ready", "_waiter", "_conn", "_pool", "_read_timeout", "_released", "_deadline", "_left",
        "_waiting_since", "_timer",
    )

    def __init__(
        self, conn: _Connection, pool: HTTPPool, read_timeout: float, deadline: float | None = None,
        max_bytes: int | None = None,
    ) -> None:
        loop = conn._loop
        self.status = 0
        self.headers: dict[str, str] = {}
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.complete = False
        self.keep_alive = False
        self.error: BaseException | None = None
        self.headers_ready: asyncio.Future[None] = loop.create_future()
        self._waiter: asyncio.Future[None] | None = None
        self._conn = conn
        self._pool = pool
        self._read_timeout = read_timeout
        self._released = False
        self._deadline = deadline  # loop time by which the whole answer must be in
        self._left = max_bytes  # body bytes still allowed
        self._waiting_since = 0.0
        self._timer: asyncio.TimerHandle | None = None

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _timeout(self) -> tuple[float, bool]:
        """Seconds to wait now, and whether the total deadline (not the read timeout) is what ends it."""
        if self._deadline is None:
            return self._read_timeout, False
        left = self._deadline - self._conn._loop.time()
        return (left, True) if left < self._read_timeout else (self._read_timeout, False)

    def _arm(self) -> None:
        due = self._waiting_since + self._read_timeout
        if self._deadline is not None and self._deadline < due:
            due = self._deadline
        self._timer = self._conn._loop.call_at(due, self._expire)

    def _expire(self) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done() or self._released:
            return  # not waiting now: the next wait arms the timer again
        now = self._conn._loop.time()
        if self._deadline is not None and now >= self._deadline:
            waiter.set_exception(UpstreamTimeout("the upstream did not finish within the deployment's total timeout"))
        elif now - self._waiting_since >= self._read_timeout:
            waiter.set_exception(UpstreamTimeout(f"no data from the upstream for {self._read_timeout:g}s"))
        else:
            self._arm()

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """Body bytes (de-chunked) as they arrive; raises on a broken or stalled upstream."""
        try:
            while True:
                while self.chunks:
                    chunk = self.chunks.popleft()
                    self.buffered -= len(chunk)
                    if self._left is not None:
                        self._left -= len(chunk)
                        if self._left < 0:
                            raise UpstreamTooLarge("the upstream's answer is larger than this deployment allows")
                    self._conn.resume()
                    yield chunk
                if self.error is not None:
                    raise self.error
                if self.complete:
                    return
                # Until more of the body arrives (inline: a coroutine per chunk costs). One timer
                # per response, re-armed only when it fires: a stream of small chunks must not
                # pay for a timeout scope per chunk.
                loop = self._conn._loop
                self._waiter = waiter = loop.create_future()
                self._waiting_since = loop.time()
                if self._timer is None:
                    self._arm()
                try:
                    await waiter
                finally:
                    self._waiter = None
        finally:
            self.release()

    async def read(self) -> bytes:
        parts = [chunk async for chunk in self.iter_chunks()]
        return b"".join(parts)

    def release(self) -> None:
        """Give the connection back if the response was read to its end, else close it."""
        if self._released:
            return
        self._released = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        conn = self._conn
        conn.response = None
        if self.complete and self.keep_alive and self.error is None and not conn.closed:
            self._pool._put_back(conn)
        else:
            conn.close()


@dataclass(frozen=True, slots=True)
class Proxy:
    """An HTTP proxy on the way out (companies reach the internet through one)."""

    host: str
    port: int
    authorization: str | None = None  # a Proxy-Authorization value, from credentials in its URL

    @classmethod
    def parse(cls, url: str) -> Proxy:
        parts = urlsplit(url if "://" in url else "http://" + url)
        if parts.scheme not in ("http", "") or not parts.hostname:
            raise ValueError(f"proxy must be http://[user:password@]host:port, got {url!r}")
        auth = None
        if parts.username is not None:
            token = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            auth = "Basic " + base64.b64encode(token).decode()
        return cls(parts.hostname, parts.port or 8080, auth)


def proxy_for(base_url: str, configured: str | None) -> Proxy | None:
    """The proxy to reach `base_url` through: the deployment's own (`none` for no proxy), else
    HTTPS_PROXY / HTTP_PROXY from the environment, unless NO_PROXY exempts the host."""
    if configured is not None:
        return None if configured.strip().lower() in ("", "none", "direct") else Proxy.parse(configured)
    parts = urlsplit(base_url)
    env = urllib.request.getproxies_environment()
    url = env.get(parts.scheme)
    if not url or (parts.hostname and urllib.request.proxy_bypass_environment(parts.hostname, env)):
        return None
    return Proxy.parse(url)


def tls_context(ca_file: str | None = None, cert_file: str | None = None, key_file: str | None = None) -> ssl.SSLContext:
    """Certificates checked against the system's CAs, or `ca_file`'s (a company CA); with `cert_file`
    (and `key_file`), the gateway presents a client certificate. Verification is never turned off."""
    context = ssl.create_default_context(cafile=ca_file)
    if cert_file:
        context.load_cert_chain(cert_file, key_file)
    return context


class HTTPPool:
    """Keep-alive connections to one upstream origin, directly or through an HTTP proxy."""

    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 600.0,
        max_idle: int = 256,
        idle_seconds: float = 30.0,
        headers: Mapping[str, str] | None = None,
        tls: ssl.SSLContext | None = None,
        proxy: Proxy | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"upstream URL must be http(s)://host[:port][/path], got {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.base_path = parts.path.rstrip("/")
        self._ssl = (tls or tls_context()) if parts.scheme == "https" else None
        self._proxy = proxy
        # Plain http through a proxy: the request names the whole URL and the proxy forwards it;
        # https goes through a CONNECT tunnel, so the proxy sees only where, never what.
        self._forward_prefix = f"http://{self.host}:{self.port}" if proxy is not None and self._ssl is None else ""
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._idle: deque[_Connection] = deque()
        self._max_idle = max_idle
        self._idle_seconds = idle_seconds
        default_port = (parts.scheme == "https" and self.port == 443) or (parts.scheme == "http" and self.port == 80)
        host_header = self.host if default_port else f"{self.host}:{self.port}"
        lines = [f"Host: {host_header}", "Connection: keep-alive"]
        if self._forward_prefix and proxy is not None and proxy.authorization:
            lines.append(f"Proxy-Authorization: {proxy.authorization}")
        given = list((headers or {}).items())
        self._header_block = ("\r\n".join(lines + [f"{k}: {v}" for k, v in given]) + "\r\n").encode("latin-1")
        # For bodies that are not JSON (multipart uploads): the same headers but the content type.
        self._untyped_block = ("\r\n".join(lines + [f"{k}: {v}" for k, v in given if k.lower() != "content-type"])
                               + "\r\n").encode("latin-1")

    def _put_back(self, conn: _Connection) -> None:
        conn.idle_since = time.monotonic()
        if len(self._idle) < self._max_idle:
            self._idle.append(conn)
        else:
            conn.close()

    def _take_idle(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()  # most recently used: the one least likely to be stale
            if not conn.closed and now - conn.idle_since < self._idle_seconds:
                return conn
            conn.close()
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        server_hostname = self.host if self._ssl else None
        try:
            async with asyncio.timeout(self.connect_timeout):
                if self._proxy is None:
                    _, conn = await loop.create_connection(
                        lambda: _Connection(loop), self.host, self.port, ssl=self._ssl, server_hostname=server_hostname)
                else:
                    sock = await _dial(loop, self._proxy.host, self._proxy.port)
                    try:
                        if self._ssl is not None:
                            await _tunnel(loop, sock, self.host, self.port, self._proxy.authorization)
                        _, conn = await loop.create_connection(
                            lambda: _Connection(loop), sock=sock, ssl=self._ssl, server_hostname=server_hostname)
                    except BaseException:
                        sock.close()
                        raise
        except TimeoutError:
            raise UpstreamConnectError(f"connect timed out after {self.connect_timeout:g}s") from None
        except ssl.SSLError as exc:
            # A certificate nobody vouches for is an error, never a quiet downgrade to plain text.
            raise UpstreamConnectError(f"TLS with {self.host} failed: {exc.reason or exc}") from None
        except OSError as exc:
            raise UpstreamConnectError(f"{type(exc).__name__}: {exc.strerror or exc}") from None
        return conn

    async def request(
        self, method: str, path: str, body: bytes, extra_headers: bytes = b"", *,
        deadline: float | None = None, max_bytes: int | None = None, from_root: bool = False,
        content_type: str | None = None,
    ) -> Response:
        """Send a request; returns once the response headers are in. `deadline` (loop time): when
        the whole answer must be in; `max_bytes`: the largest body accepted; `from_root`: `path`
        is from the server's root, not below the base URL's path (a server's own endpoints);
        `content_type`: the body's, in place of the pool's default."""
        target = self._forward_prefix + (path if from_root else self.base_path + path)
        block = self._header_block
        if content_type is not None:
            block = self._untyped_block + f"Content-Type: {content_type}\r\n".encode("latin-1")
        head = (
            f"{method} {target} HTTP/1.1\r\n".encode("latin-1")
            + block + extra_headers + b"Content-Length: %d\r\n\r\n" % len(body)
        )
        for attempt in (0, 1):
            conn = self._take_idle() if attempt == 0 else None
            reused = conn is not None
            if conn is None:
                conn = await self._connect()
            response = Response(conn, self, self.read_timeout, deadline, max_bytes)
            conn.response = response
            conn.parser = httptools.HttpResponseParser(conn)
            assert conn.transport is not None
            conn.transport.write(head + body)
            wait, total = response._timeout()
            try:
                async with asyncio.timeout(max(wait, 0)):
                    await response.headers_ready
            except TimeoutError:
                response.release()
                if total:
                    raise UpstreamTimeout("the upstream did not answer within the deployment's total timeout") from None
                raise UpstreamTimeout(f"no response from the upstream within {self.read_timeout:g}s") from None
            except UpstreamProtocolError:
                response.release()
                # A kept-alive connection the server had already closed: the request never
                # reached it, so sending it once more on a fresh connection is safe.
                if reused and response.status == 0 and not response.chunks:
                    continue
                raise
            return response
        raise UpstreamProtocolError("the upstream closed the connection")  # unreachable: loop returns or raises

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


async def _dial(loop: asyncio.AbstractEventLoop, host: str, port: int) -> socket.socket:
    """A connected, non-blocking TCP socket (to a proxy)."""
    last: OSError | None = None
    for family, kind, proto, _, address in await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    raise last or OSError(f"cannot resolve proxy {host}")


async def _tunnel(loop: asyncio.AbstractEventLoop, sock: socket.socket, host: str, port: int,
                  authorization: str | None) -> None:
    """Ask the proxy for a tunnel to host:port (CONNECT); TLS then runs end to end through it."""
    head = f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n"
    if authorization:
        head += f"Proxy-Authorization: {authorization}\r\n"
    await loop.sock_sendall(sock, (head + "\r\n").encode("latin-1"))
    answer = b""
    while b"\r\n\r\n" not in answer:
        piece = await loop.sock_recv(sock, 4096)
        if not piece or len(answer) > 16384:
            raise UpstreamConnectError("the proxy closed the connection instead of answering CONNECT")
        answer += piece
    status_line = answer.split(b"\r\n", 1)[0].decode("latin-1")
    if status_line.split(" ")[1:2] != ["200"]:
        raise UpstreamConnectError(f"the proxy refused the tunnel: {status_line}")


def transport_error(exc: BaseException, dep_id: str) -> GatewayError:
    """What a client sees when the connection to a deployment failed, for every provider."""
    if isinstance(exc, UpstreamTimeout):
        return upstream_error(504, f"Deployment {dep_id} timed out.", code="upstream_timeout")
    if isinstance(exc, UpstreamTooLarge):
        return upstream_error(502, f"Deployment {dep_id} sent an answer larger than it is allowed to.",
                              code="upstream_response_too_large")
    if isinstance(exc, UpstreamProtocolError):
        return upstream_error(502, f"Deployment {dep_id} broke off its response.", code="upstream_stream_broken")
    # The detail (addresses, TLS errors) is for the operator's log, not for clients.
    log.warning("deployment %s unreachable: %s", dep_id, exc)
    return upstream_error(502, f"Could not reach deployment {dep_id}.", code="upstream_connection_error")
