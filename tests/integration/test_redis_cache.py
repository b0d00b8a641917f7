"""RedisCache against the real Redis at 127.0.0.1:6379, and against nothing at all."""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import time
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from switchyard.routing.cache import RedisCache, cache_key

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(autouse=True, scope="module")
def _redis_is_required() -> None:
    """Redis runs on every dev machine and in CI (.ci/run starts it): its absence is a failure."""
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=2).close()
    except OSError as exc:
        pytest.fail(f"no Redis server at 127.0.0.1:6379 ({exc}); start it as .ci/run does")


def run(main: Callable[[RedisCache, str, aioredis.Redis], Awaitable[None]]) -> None:
    """Run ``main(cache, prefix, admin)`` with a fresh random prefix, then delete its keys."""

    async def wrapper() -> None:
        prefix = f"sy:cache:test:{secrets.token_hex(6)}:"
        cache = RedisCache(REDIS_URL, prefix)
        admin = aioredis.Redis.from_url(REDIS_URL)
        try:
            await main(cache, prefix, admin)
        finally:
            await cache.close()
            keys = [k async for k in admin.scan_iter(match=prefix + "*")]
            if keys:
                await admin.delete(*keys)
            await admin.aclose()

    asyncio.run(wrapper())


def test_put_get_under_prefix_with_ttl() -> None:
    async def main(cache: RedisCache, prefix: str, admin: aioredis.Redis) -> None:
        key = cache_key("gpt-5.2", {"messages": [{"role": "user", "content": "hi"}]}, "org_a")
        assert await cache.get(key) is None
        value = b'{"object":"chat.completion","choices":[]}' + bytes(range(256))
        await cache.put(key, value, 60)
        assert await cache.get(key) == value
        assert await admin.get(prefix + key) == value
        assert 0 < await admin.ttl(prefix + key) <= 60
        await cache.put(key, b"other", 120)  # overwrite
        assert await cache.get(key) == b"other"
        await cache.put("zero", b"x", 0)  # ttl 0: nothing stored
        assert await admin.exists(prefix + "zero") == 0

    run(main)


def test_entries_expire() -> None:
    async def main(cache: RedisCache, prefix: str, admin: aioredis.Redis) -> None:
        await cache.put("k", b"v", 1)
        assert await cache.get("k") == b"v"
        await asyncio.sleep(1.3)
        assert await cache.get("k") is None

    run(main)


def test_two_caches_with_the_same_prefix_share_entries_and_other_prefixes_do_not() -> None:
    async def main(cache: RedisCache, prefix: str, admin: aioredis.Redis) -> None:
        other_replica = RedisCache(REDIS_URL, prefix)
        elsewhere = RedisCache(REDIS_URL, prefix + "other-db:")
        try:
            await cache.put("k", b"v", 60)
            assert await other_replica.get("k") == b"v"
            assert await elsewhere.get("k") is None
        finally:
            await other_replica.close()
            await elsewhere.close()

    run(main)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # released on close: nothing listens there


def test_unreachable_redis_is_a_miss_and_a_dropped_write(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        cache = RedisCache(f"redis://127.0.0.1:{_closed_port()}/0", "sy:cache:test:")
        start = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="switchyard.cache"):
            assert await cache.get("k") is None
            await cache.put("k", b"v", 60)
            assert await cache.get("k") is None
        await cache.close()
        assert time.monotonic() - start < 5
        warnings = [r for r in caplog.records if r.name == "switchyard.cache"]
        assert len(warnings) == 1  # at most one warning per 30 s
        assert "127.0.0.1" in warnings[0].getMessage()

    asyncio.run(main())


def test_outage_warnings_are_rate_limited_by_clock(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        now = [0.0]
        cache = RedisCache(f"redis://127.0.0.1:{_closed_port()}/0", "p:", clock=lambda: now[0])
        with caplog.at_level(logging.WARNING, logger="switchyard.cache"):
            await cache.get("k")
            now[0] = 29.0
            await cache.put("k", b"v", 5)
            now[0] = 30.0
            await cache.get("k")
        await cache.close()
        assert len([r for r in caplog.records if r.name == "switchyard.cache"]) == 2

    asyncio.run(main())
