"""One way to open Redis for the request path: a bounded pool with short timeouts."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError


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
