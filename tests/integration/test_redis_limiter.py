"""The Redis limiter against the real Redis at 127.0.0.1:6379: same behaviour as the local one, shared and atomic."""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
import redis.asyncio as aioredis

from switchyard.limits import Limits, LocalRateLimiter, RedisRateLimiter, Scope, format_reset
from switchyard.limits import redis_limiter as redis_limiter_module

REDIS_URL = "redis://127.0.0.1:6379/0"
T = TypeVar("T")


@pytest.fixture(autouse=True, scope="module")
def _redis_is_required() -> None:
    """Redis runs on every dev machine and in CI (.ci/run starts it): its absence is a failure."""
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=2).close()
    except OSError as exc:
        pytest.fail(f"no Redis server at 127.0.0.1:6379 ({exc}); start it as .ci/run does")

Factory = Callable[[], RedisRateLimiter]


def run(main: Callable[[Factory, str], Awaitable[T]]) -> T:
    """Run ``main(make_limiter, prefix)`` with a fresh random key prefix, then delete its keys."""

    async def wrapper() -> T:
        prefix = f"sy:rl:test:{secrets.token_hex(6)}:"
        made: list[RedisRateLimiter] = []

        def make() -> RedisRateLimiter:
            lim = RedisRateLimiter(REDIS_URL, prefix=prefix)
            made.append(lim)
            return lim

        admin = aioredis.Redis.from_url(REDIS_URL)
        try:
            return await main(make, prefix)
        finally:
            for lim in made:
                await lim.close()
            keys = [k async for k in admin.scan_iter(match=prefix + "*")]
            if keys:
                await admin.delete(*keys)
            await admin.aclose()

    return asyncio.run(wrapper())


async def _keys(prefix: str) -> list[bytes]:
    admin = aioredis.Redis.from_url(REDIS_URL)
    try:
        return [k async for k in admin.scan_iter(match=prefix + "*")]
    finally:
        await admin.aclose()


def test_first_request_headers_match_local() -> None:
    scope = Scope("key:key_abc", Limits(rpm=60, tpm=150_000))

    async def main(make: Factory, prefix: str) -> None:
        shared = await make().admit([scope], 16)
        local = await LocalRateLimiter().admit([scope], 16)
        assert shared == local
        assert shared.headers == {
            "x-ratelimit-limit-requests": "60",
            "x-ratelimit-remaining-requests": "59",
            "x-ratelimit-reset-requests": "1s",
            "x-ratelimit-limit-tokens": "150000",
            "x-ratelimit-remaining-tokens": "149984",
            "x-ratelimit-reset-tokens": "7ms",
        }

    run(main)


def test_same_decisions_as_local() -> None:
    # Limits refill slowly (1 token per 60 ms, 1 request per 12 s), so a run of a few
    # milliseconds cannot move any decision or whole-unit remaining value.
    key = Scope("key:a", Limits(rpm=5, tpm=1000))
    org = Scope("org:b", Limits(rpm=None, tpm=700))
    calls = [([key, org], 400), ([key], 400), ([key, org], 300), ([key, org], 150), ([key], 100),
             ([key, org], 2000), ([org], 1), ([key], 0), ([key], 0), ([key], 0)]

    async def main(make: Factory, prefix: str) -> None:
        shared, local = make(), LocalRateLimiter()
        for scopes, tokens in calls:
            a, b = await shared.admit(scopes, tokens), await local.admit(scopes, tokens)
            assert (a.allowed, a.scope, a.retry_after is None) == (b.allowed, b.scope, b.retry_after is None)
            for name in ("x-ratelimit-remaining-requests", "x-ratelimit-remaining-tokens"):
                assert a.headers.get(name) == b.headers.get(name)
            if a.message and b.message:
                assert a.message.split(" Please")[0] == b.message.split(" Please")[0]

    run(main)


def test_all_or_nothing_and_retry_after() -> None:
    key = Scope("key:a", Limits(rpm=1000, tpm=1000))
    org = Scope("org:b", Limits(rpm=None, tpm=6000))  # 100 tokens/s

    async def main(make: Factory, prefix: str) -> None:
        lim = make()
        assert (await lim.admit([key, org], 1001)).retry_after is None  # too large for the key: nothing taken
        assert (await lim.admit([org], 5100)).allowed
        assert (await lim.admit([key, org], 900)).allowed
        refused = await lim.admit([key, org], 50)
        assert not refused.allowed and refused.scope == "org:b"
        assert refused.retry_after is not None and 0.3 < refused.retry_after <= 0.5
        assert refused.message is not None
        assert refused.message.startswith("Rate limit reached for tokens on org:b: Limit 6000, Used ")
        assert refused.message.endswith(f"Requested 50. Please try again in {format_reset(refused.retry_after)}.")
        # The key was charged nothing for the refusal (900 used; it refills 1 token per 60 ms).
        after = await lim.admit([key], 0)
        assert 100 <= int(after.headers["x-ratelimit-remaining-tokens"]) < 140
        await asyncio.sleep(refused.retry_after)
        assert (await lim.admit([key, org], 50)).allowed

    run(main)


def test_too_large_is_refused_without_retry() -> None:
    scope = Scope("key:small", Limits(rpm=10, tpm=100))

    async def main(make: Factory, prefix: str) -> None:
        a = await make().admit([scope], 101)
        assert not a.allowed and a.retry_after is None
        assert a.message == (
            "Request too large for tokens on key:small: Limit 100, Requested 101. "
            "The input or output tokens must be reduced in order to run successfully."
        )
        assert a.headers["x-ratelimit-remaining-requests"] == "10"  # nothing consumed
        assert await _keys(prefix) == []  # and nothing written

    run(main)


def test_correct_both_directions() -> None:
    scope = Scope("key:c", Limits(rpm=None, tpm=1000))

    async def main(make: Factory, prefix: str) -> None:
        lim = make()
        assert (await lim.admit([scope], 500)).allowed
        await lim.correct([scope], estimated=500, actual=100)
        remaining = int((await lim.admit([scope], 0)).headers["x-ratelimit-remaining-tokens"])
        assert 900 <= remaining < 940
        await lim.correct([scope], estimated=100, actual=1600)  # ~ -600: into debt
        refused = await lim.admit([scope], 10)
        assert not refused.allowed
        assert refused.headers["x-ratelimit-remaining-tokens"] == "0"
        assert refused.retry_after is not None and 36 < refused.retry_after <= 36.6  # (600 + 10) * 60 / 1000

    run(main)


def test_keys_expire_and_unlimited_scopes_keep_nothing() -> None:
    async def main(make: Factory, prefix: str) -> None:
        lim = make()
        unlimited = (await lim.admit([Scope("key:free", Limits(None, None))], 10**9)).headers
        assert unlimited["x-ratelimit-remaining-tokens"] == unlimited["x-ratelimit-limit-requests"] == "1000000000"
        assert await _keys(prefix) == []
        await lim.admit([Scope("key:t", Limits(rpm=10, tpm=None))], 0)
        admin = aioredis.Redis.from_url(REDIS_URL)
        try:
            ttl = await admin.pttl(prefix + "key:t")
        finally:
            await admin.aclose()
        assert 170_000 < ttl <= 180_000

    run(main)


def test_tier_change_applies_on_next_request() -> None:
    async def main(make: Factory, prefix: str) -> None:
        lim = make()
        for _ in range(10):
            await lim.admit([Scope("key:t", Limits(rpm=100, tpm=None))], 0)
        a = await lim.admit([Scope("key:t", Limits(rpm=5, tpm=1000))], 10)
        assert a.headers["x-ratelimit-limit-requests"] == "5"
        assert a.headers["x-ratelimit-remaining-requests"] == "4"
        assert a.headers["x-ratelimit-remaining-tokens"] == "990"

    run(main)


def test_falls_back_to_eval_when_script_is_not_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    # An unknown SHA behaves like a server that restarted or ran SCRIPT FLUSH, without flushing a shared server.
    monkeypatch.setattr(redis_limiter_module, "_SHA", "0" * 40)

    async def main(make: Factory, prefix: str) -> None:
        a = await make().admit([Scope("key:n", Limits(rpm=3, tpm=None))], 0)
        assert a.allowed and a.headers["x-ratelimit-remaining-requests"] == "2"

    run(main)


def test_concurrent_workers_admit_exactly_the_limit() -> None:
    scope = Scope("key:burst", Limits(rpm=50, tpm=None))

    async def main(make: Factory, prefix: str) -> None:
        workers = [make(), make()]  # two pools of connections, like two worker processes
        # Open the pools first: the burst must finish well inside the 1.2 s one request takes to refill.
        warm = Scope("key:warm-up", Limits(rpm=10_000, tpm=None))
        await asyncio.gather(*(workers[i % 2].admit([warm], 0) for i in range(200)))
        results = await asyncio.gather(*(workers[i % 2].admit([scope], 1) for i in range(200)))
        assert sum(r.allowed for r in results) == 50
        refused = [r for r in results if not r.allowed]
        assert all(r.retry_after is not None and 0 < r.retry_after <= 1.2 for r in refused)

    run(main)


def test_unreachable_redis_raises_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def main() -> None:
        lim = RedisRateLimiter(f"redis://:hunter2-secret@127.0.0.1:{port}/0", timeout=0.5)
        try:
            with pytest.raises(RuntimeError, match=f"Redis at 127.0.0.1:{port} is unreachable") as info:
                await lim.admit([Scope("key:x", Limits(rpm=1, tpm=None))], 0)
            assert "hunter2" not in str(info.value)
        finally:
            await lim.close()

    asyncio.run(main())
