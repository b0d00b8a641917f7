"""The response cache: key canonicalisation and separation, TTL opt-in parsing, the in-process store."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from switchyard.routing.cache import (
    DEFAULT_TTL,
    MAX_TTL,
    MemoryCache,
    RedisCache,
    cache_key,
    cache_ttl,
    make_cache,
    strip_cache_fields,
)
from switchyard.wire.errors import GatewayError

BODY: dict[str, Any] = {
    "model": "gpt-5.2",
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    "temperature": 0.2,
    "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "a": 1}}},
}


def key(body: dict[str, Any] = BODY, model: str = "gpt-5.2", scope: str = "org_a") -> str:
    return cache_key(model, body, scope)


# --- keys -------------------------------------------------------------------------------------


def test_key_is_sha256_hex_and_stable() -> None:
    k = key()
    assert len(k) == 64 and int(k, 16) >= 0
    assert key() == k


def test_key_ignores_key_order_at_every_level() -> None:
    reordered = {
        "response_format": {"json_schema": {"schema": {"a": 1, "type": "object"}, "name": "x"}, "type": "json_schema"},
        "temperature": 0.2,
        "messages": [{"content": "Be brief.", "role": "system"}, {"content": "Hi", "role": "user"}],
        "model": "gpt-5.2",
    }
    assert key(reordered) == key()


@pytest.mark.parametrize("extra", [
    {"stream": True},
    {"stream": True, "stream_options": {"include_usage": True}},
    {"user": "alice"},
    {"metadata": {"trace": "1"}},
    {"service_tier": "flex"},
    {"store": True},
    {"cache": True},
    {"cache": {"ttl": 60}},
    {"switchyard_cache": False},
    {"temperature": 0.2, "seed": None},  # null is the same as absent
])
def test_key_ignores_fields_that_do_not_change_the_answer(extra: dict[str, Any]) -> None:
    assert key({**BODY, **extra}) == key()


def test_key_uses_public_model_not_the_alias_in_the_body() -> None:
    assert key({**BODY, "model": "default"}) == key()
    assert key(model="gpt-5-mini") != key()


def test_key_separates_organisations() -> None:
    assert key(scope="org_b") != key(scope="org_a")
    # No ambiguity from concatenation: scope and model are separate fields of the hashed document.
    assert cache_key("b", BODY, "a") != cache_key("", BODY, "ab")


@pytest.mark.parametrize("change", [
    {"messages": [{"role": "user", "content": "Hi"}]},
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]},
    {"temperature": 0.3},
    {"top_p": 0.9},
    {"seed": 7},
    {"max_tokens": 10},
    {"max_completion_tokens": 10},
    {"n": 2},
    {"stop": ["\n"]},
    {"tools": [{"type": "function", "function": {"name": "f"}}]},
    {"tool_choice": "required"},
    {"response_format": {"type": "json_object"}},
    {"logprobs": True},
    {"reasoning_effort": "high"},
    {"some_future_param": 1},
])
def test_key_changes_with_anything_else(change: dict[str, Any]) -> None:
    assert key({**BODY, **change}) != key()


def test_strip_cache_fields() -> None:
    body = {**BODY, "cache": {"ttl": 5}, "switchyard_cache": True, "user": "u"}
    stripped = strip_cache_fields(body)
    assert stripped == {**BODY, "user": "u"}
    assert "cache" in body  # the input is not modified


# --- TTL ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fields", "default", "expected"), [
    ({}, None, None),
    ({}, 120, 120),
    ({}, 0, None),
    ({}, MAX_TTL * 2, MAX_TTL),
    ({"cache": None}, 120, 120),
    ({"cache": True}, None, DEFAULT_TTL),
    ({"cache": True}, 60, DEFAULT_TTL),
    ({"cache": False}, 60, None),
    ({"cache": {"ttl": 30}}, None, 30),
    ({"cache": {"ttl": 30}}, 600, 30),
    ({"cache": {"ttl": 0}}, 600, None),
    ({"cache": {"ttl": 1.5}}, None, 2),
    ({"cache": {"ttl": 10**9}}, None, MAX_TTL),
    ({"cache": {}}, None, DEFAULT_TTL),
    ({"cache": {"ttl": None}}, None, DEFAULT_TTL),
    ({"switchyard_cache": True}, None, DEFAULT_TTL),
    ({"switchyard_cache": False}, 60, None),
    ({"switchyard_cache": {"ttl": 45}}, None, 45),
    ({"cache": {"ttl": 45}, "switchyard_cache": {"ttl": 45}}, None, 45),
    ({"cache": None, "switchyard_cache": {"ttl": 45}}, None, 45),
])
def test_ttl(fields: dict[str, Any], default: int | None, expected: int | None) -> None:
    assert cache_ttl({**BODY, **fields}, default) == expected


@pytest.mark.parametrize("fields", [
    {"cache": "yes"},
    {"cache": 60},
    {"cache": [60]},
    {"cache": {"ttl": -1}},
    {"cache": {"ttl": "60"}},
    {"cache": {"ttl": True}},
    {"cache": {"ttl": float("inf")}},
    {"cache": {"ttl": float("nan")}},
    {"cache": {"tll": 60}},
    {"switchyard_cache": "on"},
    {"switchyard_cache": {"ttl": -5}},
    {"cache": True, "switchyard_cache": False},
])
def test_invalid_ttl_is_a_400_on_param_cache(fields: dict[str, Any]) -> None:
    with pytest.raises(GatewayError) as info:
        cache_ttl({**BODY, **fields}, None)
    assert info.value.status == 400
    assert info.value.param == "cache"
    assert info.value.type == "invalid_request_error"


# --- MemoryCache ----------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_memory_cache_hit_miss_and_expiry() -> None:
    async def main() -> None:
        clock = Clock()
        cache = MemoryCache(clock=clock)
        assert await cache.get("k") is None
        await cache.put("k", b"value", 10)
        assert await cache.get("k") == b"value"
        clock.now += 9.9
        assert await cache.get("k") == b"value"
        clock.now += 0.1
        assert await cache.get("k") is None
        assert len(cache) == 0 and cache.size_bytes == 0
        await cache.put("z", b"v", 0)  # a ttl of 0 stores nothing
        assert await cache.get("z") is None
        await cache.close()

    asyncio.run(main())


def test_memory_cache_overwrite_refreshes_value_ttl_and_size() -> None:
    async def main() -> None:
        clock = Clock()
        cache = MemoryCache(clock=clock)
        await cache.put("k", b"a" * 10, 5)
        await cache.put("k", b"bb", 100)
        assert cache.size_bytes == len("k") + 2 and len(cache) == 1
        clock.now += 50
        assert await cache.get("k") == b"bb"

    asyncio.run(main())


def test_memory_cache_evicts_least_recently_used_by_bytes() -> None:
    async def main() -> None:
        cache = MemoryCache(max_bytes=300, clock=Clock())
        for name in ("a", "b", "c"):  # 1-byte keys + 99-byte values: 100 bytes each, full
            await cache.put(name, name.encode() * 99, 60)
        assert cache.size_bytes == 300
        assert await cache.get("a") is not None  # "a" is now the most recent; "b" the least
        await cache.put("d", b"d" * 99, 60)
        assert await cache.get("b") is None
        assert [await cache.get(n) is not None for n in "acd"] == [True, True, True]
        # A big entry evicts as many as it needs, oldest use first.
        await cache.put("e", b"e" * 199, 60)
        assert await cache.get("a") is None and await cache.get("c") is None
        assert await cache.get("d") is not None and await cache.get("e") is not None
        assert cache.size_bytes == 300

    asyncio.run(main())


def test_memory_cache_never_stores_an_entry_larger_than_the_bound() -> None:
    async def main() -> None:
        cache = MemoryCache(max_bytes=100, clock=Clock())
        await cache.put("small", b"x", 60)
        await cache.put("huge", b"x" * 200, 60)
        assert await cache.get("huge") is None
        assert await cache.get("small") == b"x"  # nothing was evicted for it
        await cache.put("small", b"x" * 200, 60)  # an oversize overwrite drops the old value
        assert await cache.get("small") is None and cache.size_bytes == 0

    asyncio.run(main())


def test_make_cache_picks_the_store() -> None:
    async def main() -> None:
        mem = make_cache(None, "p:")
        assert isinstance(mem, MemoryCache)
        red = make_cache("redis://127.0.0.1:6379/0", "p:")
        assert isinstance(red, RedisCache)  # lazy: no connection is made until used
        await red.close()
        await mem.close()

    asyncio.run(main())
