"""A lean Redis client for the request path: one connection per worker, commands pipelined on it.

Each request makes two or three script calls (limits, the money hold, their settlement). Through
redis-py each costs a pool checkout and return, a retry wrapper, command packing in Python and
a reply read: about as much CPU as the rest of the request. Here a call packs its command,
writes it at once and waits on a future; the connection's protocol feeds replies to hiredis and
resolves the futures in order, so concurrent requests share one socket, and the commands of one
event-loop iteration one write (and, when they meet at Redis, one round trip).

Errors are redis-py's (`ConnectionError`, `TimeoutError`, `ResponseError`, `NoScriptError`), so
callers treat both clients alike. A call unanswered after `timeout` seconds closes the connection
and fails every call waiting on it (a script may still have run: no call is ever retried here);
the next call reconnects.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError


def _pack(args: tuple[Any, ...]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    append = out.append
    for arg in args:
        kind = type(arg)  # exact types first: this runs for every argument of every call
        if kind is str:
            data = arg.encode()
        elif kind is int:
            data = b"%d" % arg
        elif kind is bytes:
            data = arg
        elif isinstance(arg, bool):
            raise TypeError("a Redis argument cannot be a bool")
        elif isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, bytes):
            data = bytes(arg)
        elif isinstance(arg, int):
            data = b"%d" % arg
        elif isinstance(arg, float):
            data = repr(arg).encode()
        else:
            raise TypeError(f"a Redis argument cannot be a {kind.__name__}")
        append(b"$%d\r\n" % len(data))
        append(data)
        append(b"\r\n")
    return b"".join(out)


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader()
        self.waiting: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self.lost: Exception | None = None
        self.unsent: list[bytes] = []  # commands of this loop iteration, written together at its end

    def flush(self) -> None:
        unsent, self.unsent = self.unsent, []
        if self.transport is not None and unsent and self.lost is None:
            self.transport.write(b"".join(unsent))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            reply = self.reader.gets()
            if reply is False:
                return
            if not self.waiting:
                self.fail(RedisConnectionError("Redis sent a reply nobody asked for"))
                return
            future, _ = self.waiting.popleft()
            if future.done():
                continue
            if isinstance(reply, hiredis.ReplyError):
                text = str(reply)
                future.set_exception(NoScriptError(text) if text.startswith("NOSCRIPT") else ResponseError(text))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisConnectionError(f"the connection to Redis was lost: {exc or 'closed by the server'}"))

    def fail(self, error: Exception) -> None:
        self.lost = self.lost or error
        while self.waiting:
            future, _ = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)
        if self.transport is not None:
            self.transport.close()


class RedisPipe:
    def __init__(self, url: str, timeout: float = 1.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", ""):
            raise ValueError(f"the lean client speaks redis:// only, not {parts.scheme}://")
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 6379
        self._db = int(parts.path.strip("/") or 0)
        self._user = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        self._timeout = timeout
        self._conn: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None
        self._watch: asyncio.TimerHandle | None = None
        self._dispatched: set[asyncio.Future[Any]] = set()  # sent, nobody waiting: close() lets them finish

    async def call(self, *args: Any) -> Any:
        conn = self._conn
        if conn is None or conn.lost is not None:
            conn = await self._connect()
        return await self._send(conn, args)

    async def evalsha(self, sha: str, script: str, keys: list[Any], args: list[Any]) -> Any:
        """A script by its digest; loaded with EVAL the first time a server has not seen it."""
        try:
            return await self.call("EVALSHA", sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self.call("EVAL", script, len(keys), *keys, *args)

    def dispatch(self, sha: str, script: str, keys: list[Any], args: list[Any]) -> asyncio.Future[Any]:
        """`evalsha` without a coroutine: the call is queued now (written at the end of this loop
        iteration) and its reply resolves the returned future. For work nobody waits on, such
        as settlement's releases: the caller goes on at once and no task is created unless the
        connection must first be opened."""
        conn = self._conn
        if conn is None or conn.lost is not None:
            return self._dispatched_as(asyncio.ensure_future(self.evalsha(sha, script, keys, args)))
        first = self._send(conn, ("EVALSHA", sha, len(keys), *keys, *args))
        result: asyncio.Future[Any] = self._dispatched_as(asyncio.get_running_loop().create_future())

        def answered(reply: asyncio.Future[Any]) -> None:
            if result.done():
                return
            exc = None if reply.cancelled() else reply.exception()
            if isinstance(exc, NoScriptError):  # first use on this server: EVAL also caches it there
                again = asyncio.ensure_future(self.call("EVAL", script, len(keys), *keys, *args))
                again.add_done_callback(lambda done: _copy(done, result))
            else:
                _copy(reply, result)

        first.add_done_callback(answered)
        return result

    def _dispatched_as(self, future: asyncio.Future[Any]) -> asyncio.Future[Any]:
        self._dispatched.add(future)
        future.add_done_callback(self._dispatched.discard)
        return future

    def _send(self, conn: _Connection, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        assert conn.transport is not None
        conn.waiting.append((future, time.monotonic()))
        if not conn.unsent:
            # Requests resumed in the same loop iteration share one write (one syscall).
            asyncio.get_running_loop().call_soon(conn.flush)
        conn.unsent.append(_pack(args))
        return future

    async def _connect(self) -> _Connection:
        if self._connecting is not None:
            return await asyncio.shield(self._connecting)
        loop = asyncio.get_running_loop()
        self._connecting = loop.create_future()
        try:
            try:
                _, conn = await asyncio.wait_for(
                    loop.create_connection(_Connection, self._host, self._port), self._timeout)
            except (OSError, asyncio.TimeoutError) as exc:
                raise RedisConnectionError(f"cannot connect to Redis at {self._host}:{self._port}: {exc}") from None
            hello = []
            if self._password is not None:
                auth = ("AUTH", self._user, self._password) if self._user else ("AUTH", self._password)
                hello.append(self._send(conn, auth))
            if self._db:
                hello.append(self._send(conn, ("SELECT", self._db)))
            if hello:
                try:
                    await asyncio.wait_for(asyncio.gather(*hello), self._timeout)
                except BaseException:
                    conn.fail(RedisConnectionError("Redis refused the connection's AUTH or SELECT"))
                    raise
            self._conn = conn
            self._connecting.set_result(conn)
            if self._watch is None:
                self._watch = loop.call_later(self._timeout / 2, self._check)
            return conn
        except BaseException as exc:
            self._connecting.set_exception(exc)
            self._connecting.exception()  # retrieved: callers sharing it raise their own
            raise
        finally:
            self._connecting = None

    def _check(self) -> None:
        """Every half timeout: a call waiting longer than the timeout fails the connection."""
        conn = self._conn
        if conn is not None and conn.lost is None and conn.waiting:
            if time.monotonic() - conn.waiting[0][1] > self._timeout:
                conn.fail(RedisTimeoutError(f"Redis did not answer within {self._timeout} s"))
        self._watch = asyncio.get_running_loop().call_later(self._timeout / 2, self._check)

    async def drain(self) -> None:
        """Until the dispatched calls (settlement's releases) are answered, or have timed out."""
        if self._dispatched:
            await asyncio.wait(list(self._dispatched), timeout=2 * self._timeout)

    async def close(self) -> None:
        await self.drain()
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self._conn is not None and self._conn.transport is not None:
            self._conn.transport.close()
        self._conn = None


def _copy(source: asyncio.Future[Any], target: asyncio.Future[Any]) -> None:
    if target.done():
        return
    if source.cancelled():
        target.cancel()
    elif source.exception() is not None:
        target.set_exception(source.exception())  # type: ignore[arg-type]
    else:
        target.set_result(source.result())
