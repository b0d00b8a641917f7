"""RPM/TPM admission: the limiter interface and the in-process token-bucket implementation.

Every scope (a key, an org, ...) has up to two token buckets: requests and tokens. A
bucket's capacity is the per-minute limit and it refills continuously at limit/60 per
second; a scope seen for the first time starts full, so at most ``2 x limit`` fits in
any 60 s window. Admission is all-or-nothing across the scopes of one request.

Arithmetic is exact integers, shared with the Redis implementation so both agree to
the unit: time is whole milliseconds and a bucket level is kept in units of 1/60000 of
a request or token, so one millisecond refills exactly ``limit`` units.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from switchyard.limits.tiers import Limits

__all__ = ["Admission", "LocalRateLimiter", "RateLimiter", "Scope", "format_reset"]

UNIT = 60_000  # level units per request/token: refill is `limit` units per millisecond
IDLE_TTL = 180.0  # seconds an untouched, full bucket is kept before it is dropped
_SWEEP_MAX = 8  # buckets examined for eviction per call, so each call stays O(scopes)


@dataclass(frozen=True, slots=True)
class Scope:
    """One thing that is limited, e.g. ``Scope("key:key_abc", Limits(60, 150000))``.

    The name is the identity of the bucket; limits travel with every call so a tier
    change applies on the scope's next request.
    """

    name: str
    limits: Limits


@dataclass(slots=True)
class Admission:
    allowed: bool
    headers: dict[str, str]  # x-ratelimit-{limit,remaining,reset}-{requests,tokens}
    retry_after: float | None  # seconds until the request would fit; None if allowed or never fits
    message: str | None  # OpenAI-like 429 message when refused
    scope: str | None  # name of the scope that refused the request


class RateLimiter(Protocol):
    async def admit(self, scopes: Sequence[Scope], tokens: int) -> Admission:
        """Consume 1 request and ``tokens`` tokens from every scope, or nothing if any would be exceeded."""
        ...

    async def correct(self, scopes: Sequence[Scope], estimated: int, actual: int, batch: Any = None) -> None:
        """At settlement: give back or take the difference between estimated and actual tokens
        (`batch`: a Redis limiter queues it there, to go with the hold's release)."""
        ...

    async def close(self) -> None: ...


def format_reset(seconds: float) -> str:
    """A Go ``time.Duration`` string at millisecond resolution, rounded up: ``1s``, ``6m0s``, ``20ms``."""
    # The tiny subtraction keeps float noise (1.2 -> 1200.0000000000002 ms) from rounding up a whole ms.
    ms = max(0, math.ceil(seconds * 1000 - 1e-6))
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, frac = divmod(rest, 1000)
    sec_text = f"{secs}.{frac:03d}".rstrip("0") if frac else str(secs)
    if hours:
        return f"{hours}h{minutes}m{sec_text}s"
    if minutes:
        return f"{minutes}m{sec_text}s"
    return f"{sec_text}s"


# ---------------------------------------------------------------- shared bucket math


def unique_limited(scopes: Sequence[Scope]) -> list[Scope]:
    """Scopes that limit something, first occurrence of each name (a duplicate would be charged twice)."""
    seen: set[str] = set()
    out: list[Scope] = []
    for scope in scopes:
        if scope.name in seen:
            continue
        seen.add(scope.name)
        if scope.limits.rpm is not None or scope.limits.tpm is not None:
            out.append(scope)
    return out


def check_tokens(tokens: int) -> None:
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
        raise ValueError(f"tokens must be a non-negative int, got {tokens!r}")


def refill(level: int | None, limit: int | None, elapsed_ms: int) -> int | None:
    """The level after ``elapsed_ms``; ``None`` level means full (new scope or newly limited dimension)."""
    if limit is None:
        return None
    cap = limit * UNIT
    if level is None:
        return cap
    return min(cap, level + elapsed_ms * limit)


def ms_until(level: int, target: int, limit: int) -> int:
    """Whole milliseconds (rounded up) until a bucket at ``level`` refilled at ``limit`` reaches ``target``."""
    if level >= target or limit <= 0:
        return 0
    return -((level - target) // limit)  # ceil division on ints


# A dimension no scope limits still gets its three headers (clients parse them as integers):
# a limit nothing reaches, all of it remaining, nothing to wait for.
UNLIMITED = 1_000_000_000
_UNLIMITED = {
    dim: {f"x-ratelimit-limit-{dim}": str(UNLIMITED), f"x-ratelimit-remaining-{dim}": str(UNLIMITED),
          f"x-ratelimit-reset-{dim}": "0s"}
    for dim in ("requests", "tokens")
}


def unlimited_admission() -> Admission:
    """Admission where no scope limits anything: allowed, with the six headers saying so."""
    return Admission(True, {**_UNLIMITED["requests"], **_UNLIMITED["tokens"]}, None, None, None)


def build_admission(
    scopes: Sequence[Scope], tokens: int, levels: Sequence[tuple[int | None, int | None]], allowed: bool
) -> Admission:
    """Headers, and the refusal reason, from bucket levels (after refill; after consumption if allowed)."""
    headers: dict[str, str] = {}
    for dim, idx in (("requests", 0), ("tokens", 1)):
        best: tuple[int, int, int] | None = None  # (remaining, -reset_ms, limit): smallest is most constraining
        for scope, level_pair in zip(scopes, levels, strict=True):
            limit = scope.limits.rpm if idx == 0 else scope.limits.tpm
            if limit is None:
                continue
            cap = limit * UNIT
            level = level_pair[idx]
            level = cap if level is None else level
            candidate = (max(0, level // UNIT), -ms_until(level, cap, limit), limit)
            if best is None or candidate[:2] < best[:2]:
                best = candidate
        if best is not None:
            headers[f"x-ratelimit-limit-{dim}"] = str(best[2])
            headers[f"x-ratelimit-remaining-{dim}"] = str(best[0])
            headers[f"x-ratelimit-reset-{dim}"] = format_reset(-best[1] / 1000)
        else:
            headers.update(_UNLIMITED[dim])
    if allowed:
        return Admission(True, headers, None, None, None)

    # Refused: a dimension the request can never fit wins; otherwise the longest wait, since
    # the request fits only once every bucket has refilled enough.
    wait: tuple[int, Scope, str, int, int, int] | None = None  # (ms, scope, dim, limit, level, requested)
    for scope, (req_level, tok_level) in zip(scopes, levels, strict=True):
        for dim, limit, level, requested in (
            ("requests", scope.limits.rpm, req_level, 1),
            ("tokens", scope.limits.tpm, tok_level, tokens),
        ):
            if limit is None:
                continue
            if requested > limit:
                return Admission(False, headers, None, _too_large(dim, scope.name, limit, requested), scope.name)
            level = limit * UNIT if level is None else level
            ms = ms_until(level, requested * UNIT, limit)
            if ms > 0 and (wait is None or ms > wait[0]):
                wait = (ms, scope, dim, limit, level, requested)
    if wait is None:  # cannot happen with consistent levels; refuse briefly rather than crash
        return Admission(False, headers, 0.001, "Rate limit reached. Please try again in 1ms.", None)
    ms, scope, dim, limit, level, requested = wait
    used = limit - level // UNIT
    message = (
        f"Rate limit reached for {dim} on {scope.name}: Limit {limit}, Used {used}, Requested {requested}. "
        f"Please try again in {format_reset(ms / 1000)}."
    )
    return Admission(False, headers, ms / 1000, message, scope.name)


def _too_large(dim: str, scope: str, limit: int, requested: int) -> str:
    advice = (
        "The input or output tokens must be reduced in order to run successfully."
        if dim == "tokens"
        else "This scope admits no requests."
    )
    return f"Request too large for {dim} on {scope}: Limit {limit}, Requested {requested}. {advice}"


def time_to_full_ms(levels: tuple[int | None, int | None], limits: Limits) -> int:
    out = 0
    for level, limit in zip(levels, (limits.rpm, limits.tpm), strict=True):
        if level is not None and limit is not None:
            out = max(out, ms_until(level, limit * UNIT, limit))
    return out


# ---------------------------------------------------------------- in-process limiter


class _Bucket:
    __slots__ = ("expires", "last", "req", "tok")

    def __init__(self, now: int) -> None:
        self.req: int | None = None
        self.tok: int | None = None
        self.last = now
        self.expires = now


class LocalRateLimiter:
    """Token buckets in this process's memory: right for one worker, not shared across workers.

    admit/correct never await inside check-and-consume, so concurrent asyncio tasks cannot
    interleave there. Buckets untouched for ``idle_ttl`` seconds (and refilled to full, so
    dropping them forgives nothing) are evicted a few per call.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, idle_ttl: float = IDLE_TTL) -> None:
        self._clock = clock
        self._idle_ms = round(idle_ttl * 1000)
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()  # least recently used first

    def __len__(self) -> int:
        """Number of buckets held (for tests and metrics)."""
        return len(self._buckets)

    async def admit(self, scopes: Sequence[Scope], tokens: int) -> Admission:
        return self.admit_sync(scopes, tokens)

    async def correct(self, scopes: Sequence[Scope], estimated: int, actual: int, batch: Any = None) -> None:
        self.correct_sync(scopes, estimated, actual)

    async def close(self) -> None:
        self._buckets.clear()

    def admit_sync(self, scopes: Sequence[Scope], tokens: int) -> Admission:
        check_tokens(tokens)
        limited = unique_limited(scopes)
        if not limited:
            return unlimited_admission()
        now = self._now()
        self._evict(now)
        buckets = [self._touch(scope, now) for scope in limited]
        need = tokens * UNIT
        allowed = all(
            (b.req is None or b.req >= UNIT) and (b.tok is None or b.tok >= need) for b in buckets
        )
        if allowed:
            for b in buckets:
                if b.req is not None:
                    b.req -= UNIT
                if b.tok is not None:
                    b.tok -= need
        for scope, b in zip(limited, buckets, strict=True):
            self._set_expiry(b, scope.limits)
        return build_admission(limited, tokens, [(b.req, b.tok) for b in buckets], allowed)

    def correct_sync(self, scopes: Sequence[Scope], estimated: int, actual: int) -> None:
        delta = (estimated - actual) * UNIT
        if delta == 0:
            return
        now = self._now()
        self._evict(now)
        for scope in unique_limited(scopes):
            tpm = scope.limits.tpm
            if tpm is None:
                continue
            b = self._touch(scope, now)
            assert b.tok is not None
            # Giving back never overfills; taking may go below zero (debt the bucket refills through).
            b.tok = min(tpm * UNIT, b.tok + delta)
            self._set_expiry(b, scope.limits)

    def _now(self) -> int:
        return round(self._clock() * 1000)

    def _touch(self, scope: Scope, now: int) -> _Bucket:
        b = self._buckets.get(scope.name)
        if b is None:
            b = self._buckets[scope.name] = _Bucket(now)
        else:
            self._buckets.move_to_end(scope.name)
        elapsed = max(0, now - b.last)
        b.req = refill(b.req, scope.limits.rpm, elapsed)
        b.tok = refill(b.tok, scope.limits.tpm, elapsed)
        b.last = now
        return b

    def _set_expiry(self, b: _Bucket, limits: Limits) -> None:
        b.expires = b.last + max(self._idle_ms, time_to_full_ms((b.req, b.tok), limits))

    def _evict(self, now: int) -> None:
        for _ in range(_SWEEP_MAX):
            if not self._buckets:
                return
            name, b = next(iter(self._buckets.items()))
            if now - b.last < self._idle_ms:
                return  # the least recently used bucket is still fresh
            if now >= b.expires:
                del self._buckets[name]
            else:
                self._buckets.move_to_end(name)  # idle but still in debt: keep until refilled
