"""The response cache (opt-in): a repeated non-stream request may be answered without an upstream call.

The gateway consults it before admission, keyed by the request: `cache_key` hashes the body
without the fields that do not change the answer (or that control the cache itself), plus the
public model and a scope (the organisation id, so one organisation never sees another's cached
answers). `cache_ttl` says whether and for how long a request may be cached: per request with
`"cache": true | false | {"ttl": seconds}` (or the same shapes in `switchyard_cache`), else the
key's default. `strip_cache_fields` removes those fields before the body goes upstream.

Two stores: `MemoryCache` (one process, bounded by bytes, LRU) and `RedisCache` (shared by every
worker and replica). A cache outage never fails a request: `RedisCache` then misses and drops
writes, with a warning at most every 30 s.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import orjson

from switchyard.store.redis_client import bounded_client

from switchyard.wire.errors import invalid_request

__all__ = [
    "CACHE_FIELDS",
    "DEFAULT_TTL",
    "IGNORED_FIELDS",
    "MAX_TTL",
    "MemoryCache",
    "RedisCache",
    "ResponseCache",
    "cache_key",
    "cache_namespace",
    "cache_ttl",
    "make_cache",
    "strip_cache_fields",
]

log = logging.getLogger("switchyard.cache")

DEFAULT_TTL = 300  # seconds, for `"cache": true`
MAX_TTL = 24 * 3600
CACHE_FIELDS = ("cache", "switchyard_cache")
# Fields that do not change the answer; `model` is replaced by the resolved public model name, so
# aliases of one model share entries.
IGNORED_FIELDS = frozenset(
    {"model", "stream", "stream_options", "user", "metadata", "service_tier", "store", *CACHE_FIELDS}
)
_VERSION = "v1"  # bump when the key derivation changes


def cache_key(public_model: str, body: Mapping[str, Any], scope: str) -> str:
    """SHA-256 hex of the canonical request: same key iff same scope, model and answer-relevant fields.

    Top-level fields set to null are dropped (the API treats them as absent); nested values are
    hashed as sent, with object keys sorted at every level.
    """
    relevant = {k: v for k, v in body.items() if k not in IGNORED_FIELDS and v is not None}
    canonical = orjson.dumps(
        {"v": _VERSION, "scope": scope, "model": public_model, "body": relevant},
        option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS,
    )
    return hashlib.sha256(canonical).hexdigest()


def cache_ttl(body: Mapping[str, Any], key_default_ttl: int | None) -> int | None:
    """Seconds to cache this request's answer, or None for no caching.

    The request's `cache` (or `switchyard_cache`) wins over the key's default: `true` is
    `DEFAULT_TTL`, `false` is never, `{"ttl": n}` is n seconds (0 = never), `{}` or
    `{"ttl": null}` is `DEFAULT_TTL`, null or absent falls back to the key's default. TTLs are
    capped at `MAX_TTL`.
    """
    given = [(name, body[name]) for name in CACHE_FIELDS if body.get(name) is not None]
    if len(given) == 2 and given[0][1] != given[1][1]:
        raise invalid_request("Send only one of `cache` and `switchyard_cache`.", param="cache")
    if not given:
        return _cap(key_default_ttl)
    name, value = given[0]
    if isinstance(value, bool):
        return DEFAULT_TTL if value else None
    if isinstance(value, Mapping):
        unknown = sorted(str(k) for k in value if k != "ttl")
        if unknown:
            raise invalid_request(f"Unknown field `{unknown[0]}` in `{name}`: only `ttl` is accepted.", param="cache")
        ttl = value.get("ttl")
        if ttl is None:
            return DEFAULT_TTL
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not math.isfinite(ttl) or ttl < 0:
            raise invalid_request(f"`{name}.ttl` must be a number of seconds, 0 or more.", param="cache")
        return _cap(math.ceil(ttl))
    raise invalid_request(f'`{name}` must be true, false or {{"ttl": <seconds>}}.', param="cache")


def _cap(ttl: int | None) -> int | None:
    if ttl is None or ttl <= 0:
        return None
    return min(int(ttl), MAX_TTL)


def strip_cache_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    """The body without the cache-control fields, which must not be forwarded upstream."""
    return {k: v for k, v in body.items() if k not in CACHE_FIELDS}


class ResponseCache(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes, ttl: int) -> None: ...

    async def close(self) -> None: ...


class MemoryCache:
    """In-process: LRU bounded by total bytes (keys + values), per-entry expiry; O(1), never blocks."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()  # oldest use first
        self._bytes = 0

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._clock() >= entry[1]:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry[0]

    async def put(self, key: str, value: bytes, ttl: int) -> None:
        self._drop(key)
        size = len(key) + len(value)
        if ttl <= 0 or size > self.max_bytes:
            return
        self._entries[key] = (bytes(value), self._clock() + ttl)
        self._bytes += size
        while self._bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    async def close(self) -> None:
        self._entries.clear()
        self._bytes = 0

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= len(key) + len(entry[0])


class RedisCache:
    """Shared by every worker and replica. Errors are never raised: a miss, a dropped write, a rare warning."""

    WARN_EVERY = 30.0

    def __init__(
        self,
        url: str,
        prefix: str,
        *,
        timeout: float = 1.0,
        max_connections: int = 64,
        clock: Callable[[], float] = time.monotonic,
        client: Any = None,
    ) -> None:
        self._owned = client is None
        self._redis = client if client is not None else bounded_client(url, timeout=timeout, max_connections=max_connections)
        self._prefix = prefix
        self._clock = clock
        self._last_warning: float | None = None
        kwargs = self._redis.connection_pool.connection_kwargs
        # Host and port only: the URL may carry a password.
        self._where = kwargs.get("path") or f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"

    async def get(self, key: str) -> bytes | None:
        try:
            value = await self._redis.get(self._prefix + key)
        except Exception as exc:
            self._warn("read", exc)
            return None
        return bytes(value) if value is not None else None

    async def put(self, key: str, value: bytes, ttl: int) -> None:
        if ttl <= 0:
            return
        try:
            await self._redis.set(self._prefix + key, value, ex=int(ttl))
        except Exception as exc:
            self._warn("write", exc)

    async def close(self) -> None:
        if not self._owned:
            return
        try:
            await self._redis.aclose()
        except Exception as exc:
            self._warn("close", exc)

    def _warn(self, op: str, exc: BaseException) -> None:
        now = self._clock()
        if self._last_warning is None or now - self._last_warning >= self.WARN_EVERY:
            self._last_warning = now
            log.warning("response cache: %s at Redis %s failed, serving without cache: %r", op, self._where, exc)


def cache_namespace(database_url: str) -> str:
    """A prefix per database: gateways on different databases (whose org ids may collide) never share entries."""
    return "sy:" + hashlib.sha256(database_url.encode()).hexdigest()[:12] + ":cache:"


def make_cache(
    redis_url: str | None, prefix: str, *, max_bytes: int = 64 * 1024 * 1024, client: Any = None,
) -> ResponseCache:
    """Redis when configured (shared by replicas), else an in-process cache."""
    if redis_url:
        return RedisCache(redis_url, prefix, client=client)
    return MemoryCache(max_bytes=max_bytes)
