"""The lean Redis client of the request path, against a real redis-server of its own: replies in
order for concurrent calls on one connection, scripts loaded on first use, errors as redis-py's,
a restarted server reconnected to, a silent one timed out (every waiting call failed)."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from switchyard.store.redis_pipe import RedisPipe
from tests.fleet import OwnRedis

SCRIPT = "return {tonumber(ARGV[1]) * 2, KEYS[1]}"
SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()


def test_concurrent_calls_share_one_connection_in_order(tmp_path: Path) -> None:
    redis = OwnRedis(tmp_path)
    redis.start()

    async def scenario() -> None:
        pipe = RedisPipe(redis.url + "1", timeout=2)  # database 1: SELECT on connect
        try:
            results = await asyncio.gather(*(pipe.call("INCRBY", "n", i) for i in range(1, 201)))
            assert results == [sum(range(1, i + 1)) for i in range(1, 201)]
            assert await pipe.evalsha(SHA, SCRIPT, ["k"], [21]) == [42, b"k"]  # NOSCRIPT, then EVAL
            assert await pipe.evalsha(SHA, SCRIPT, ["k"], [5]) == [10, b"k"]  # cached now
            with pytest.raises(ResponseError):
                await pipe.call("INCRBY", "n", "not-a-number")
            assert await pipe.call("GET", "n") == str(sum(range(1, 201))).encode()  # still usable
        finally:
            await pipe.close()
        assert redis.cli("-n", "1", "GET", "n") == str(sum(range(1, 201)))

    try:
        asyncio.run(scenario())
    finally:
        redis.stop()


def test_a_restarted_server_is_reconnected_and_a_silent_one_times_out(tmp_path: Path) -> None:
    redis = OwnRedis(tmp_path)
    redis.start()

    async def scenario() -> None:
        pipe = RedisPipe(redis.url, timeout=1)
        try:
            assert await pipe.call("PING") == b"PONG"
            redis.stop()
            with pytest.raises(RedisConnectionError):
                await pipe.call("PING")
            with pytest.raises(RedisConnectionError):
                await pipe.call("PING")  # nothing listening: a clear error, at once
            redis.start()
            assert await pipe.call("PING") == b"PONG"
            with redis.silent():
                waiting = [asyncio.ensure_future(pipe.call("PING")) for _ in range(3)]
                done = await asyncio.gather(*waiting, return_exceptions=True)
                assert all(isinstance(e, RedisTimeoutError) for e in done), done
            assert await pipe.call("PING") == b"PONG"
        finally:
            await pipe.close()

    try:
        asyncio.run(scenario())
    finally:
        redis.stop()


def test_dispatched_calls_are_answered_without_being_awaited_and_close_waits_for_them(tmp_path: Path) -> None:
    """What settlement sends and does not wait for: the first call of a script unknown to the
    server is loaded (NOSCRIPT, then EVAL), a call before any connection opens one, replies
    resolve the futures, close() lets the replies in flight arrive, a silent server fails them."""
    redis = OwnRedis(tmp_path)
    redis.start()
    incr = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
    incr_sha = hashlib.sha1(incr.encode()).hexdigest()

    async def scenario() -> None:
        pipe = RedisPipe(redis.url, timeout=1)
        try:
            first = pipe.dispatch(SHA, SCRIPT, ["k"], [4])  # no connection yet, script unknown
            assert await first == [8, b"k"]
            futures = [pipe.dispatch(incr_sha, incr, ["n"], [i]) for i in range(1, 301)]
            assert not any(f.done() for f in futures)  # sent at the end of this loop iteration
        finally:
            await pipe.close()  # waits for the 300 replies
        assert all(f.done() and not f.exception() for f in futures)
        assert [f.result() for f in futures] == [sum(range(1, i + 1)) for i in range(1, 301)]
        assert redis.cli("GET", "n") == str(sum(range(1, 301)))

        pipe = RedisPipe(redis.url, timeout=1)
        try:
            assert await pipe.call("PING") == b"PONG"
            with redis.silent():
                silent = pipe.dispatch(incr_sha, incr, ["n"], [1])
                with pytest.raises(RedisTimeoutError):
                    await silent
        finally:
            await pipe.close()

    try:
        asyncio.run(scenario())
    finally:
        redis.stop()
