"""One way to open Redis for the request path: a bounded pool with short timeouts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError


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
    """Lua script calls gathered to reach Redis in one round trip (a pipeline, not a transaction:
    each script is atomic on its own). At settlement a request's hold release and its rate-limit
    correction go together this way. `add` takes a failure callback, run if that call fails."""

    def __init__(self, client: Any) -> None:
        """`client`: the worker's lean client (redis_pipe.RedisPipe) or a redis-py client."""
        self._client = client
        self._calls: list[tuple[str, str, list[Any], list[Any], Callable[[], None] | None]] = []

    def add(self, sha: str, script: str, keys: list[Any], args: list[Any],
            on_error: Callable[[], None] | None = None) -> None:
        self._calls.append((sha, script, keys, args, on_error))

    async def run(self) -> None:
        """Send everything; raises the first failure (after each failed call's callback ran)."""
        calls, self._calls = self._calls, []
        if not calls:
            return
        if hasattr(self._client, "evalsha") and not isinstance(self._client, aioredis.Redis):
            # The lean client pipelines on its own: every call is written before any is awaited.
            results = await asyncio.gather(*(self._client.evalsha(sha, script, keys, args)
                                             for sha, script, keys, args, _ in calls), return_exceptions=True)
        elif len(calls) == 1:
            results: list[Any] = [await _one(self._client, *calls[0][:4])]
        else:
            pipe = self._client.pipeline(transaction=False)
            for sha, _, keys, args, _ in calls:
                pipe.evalsha(sha, len(keys), *keys, *args)
            try:
                results = await pipe.execute(raise_on_error=False)
            except RedisError:
                for *_, on_error in calls:
                    if on_error is not None:
                        on_error()
                raise
            for i, result in enumerate(results):
                if isinstance(result, NoScriptError):  # Redis restarted: EVAL loads it again
                    sha, script, keys, args, _ = calls[i]
                    results[i] = await _one(self._client, sha, script, keys, args)
        failure = next((r for r in results if isinstance(r, Exception)), None)
        for (*_, on_error), result in zip(calls, results):
            if isinstance(result, Exception) and on_error is not None:
                on_error()
        if failure is not None:
            raise failure


async def _one(client: aioredis.Redis, sha: str, script: str, keys: list[Any], args: list[Any]) -> Any:
    try:
        return await client.evalsha(sha, len(keys), *keys, *args)
    except NoScriptError:
        return await client.eval(script, len(keys), *keys, *args)
