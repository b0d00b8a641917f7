"""One way to open Redis for the request path: a bounded pool with short timeouts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from switchyard.store.redis_pipe import RedisPipe


def bounded_client(
    url: str, *, timeout: float = 1.0, max_connections: int = 64, pool_timeout: float | None = None,
) -> aioredis.Redis:
    """A burst of requests queues for one of `max_connections` connections (up to `pool_timeout`
    seconds, default `timeout`) instead of opening one per request in flight; each command then
    has `timeout` seconds. One quick reconnect on a dropped pooled connection; no retry on
    timeouts, where a script may already have run and a retry would apply it twice.

    A gateway worker opens one such client and shares it between rate limits, money holds and
    the response cache (`redis.max_connections`, `redis.pool_timeout` in the config)."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout if pool_timeout is None else pool_timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 1, (RedisConnectionError,)),
    )
    return aioredis.Redis.from_pool(pool)


class ScriptBatch:
    """Lua script calls gathered to reach Redis together (each script atomic on its own): at
    settlement a request's hold release and its rate-limit correction. Through the worker's lean
    client (redis_pipe.RedisPipe) the calls are queued in one loop iteration, so they share one
    write and one round trip; the request does not wait for them. `add` takes a failure
    callback, run if that call fails."""

    def __init__(self, client: RedisPipe) -> None:
        self._client = client
        self._calls: list[tuple[str, str, list[Any], list[Any], Callable[[], None] | None]] = []

    def add(self, sha: str, script: str, keys: list[Any], args: list[Any],
            on_error: Callable[[], None] | None = None) -> None:
        self._calls.append((sha, script, keys, args, on_error))

    def dispatch(self, on_failure: Callable[[BaseException], None]) -> None:
        """Send everything without waiting: each failed call's callback runs when its reply
        comes, and `on_failure` with the first failure."""
        calls, self._calls = self._calls, []
        failed: list[BaseException] = []
        for sha, script, keys, args, on_error in calls:
            def done(reply: asyncio.Future[Any], on_error: Callable[[], None] | None = on_error) -> None:
                exc = None if reply.cancelled() else reply.exception()
                if exc is None:
                    return
                if on_error is not None:
                    on_error()
                if not failed:
                    failed.append(exc)
                    on_failure(exc)

            self._client.dispatch(sha, script, keys, args).add_done_callback(done)
