"""The in-process RPM/TPM limiter and tier loading, driven by a fake clock."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Coroutine
from fractions import Fraction
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from switchyard.limits import (
    Admission,
    Limits,
    LocalRateLimiter,
    RateLimiter,
    Scope,
    Tier,
    format_reset,
    load_tiers,
)
from switchyard.limits.limiter import UNLIMITED


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def limiter(clock: FakeClock) -> LocalRateLimiter:
    return LocalRateLimiter(clock=clock)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Drive a limiter coroutine that must finish without suspending: check-and-consume has no awaits."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise AssertionError("the limiter suspended inside admit/correct")


def admit(lim: LocalRateLimiter, scopes: list[Scope], tokens: int) -> Admission:
    return run(lim.admit(scopes, tokens))


T = TypeVar("T")

KEY = Scope("key:key_abc", Limits(rpm=60, tpm=150_000))


# ---------------------------------------------------------------- format_reset


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (-3, "0s"),
        (0.02, "20ms"),
        (0.0004, "1ms"),  # rounded up: never tell a client to come back too early
        (0.999, "999ms"),
        (1, "1s"),
        (1.2, "1.2s"),
        (7.324, "7.324s"),
        (59.5, "59.5s"),
        (60, "1m0s"),
        (90, "1m30s"),
        (360, "6m0s"),
        (3600, "1h0m0s"),
        (3723.5, "1h2m3.5s"),
    ],
)
def test_format_reset_is_go_duration(seconds: float, text: str) -> None:
    assert format_reset(seconds) == text


# ---------------------------------------------------------------- admission and headers


def test_protocol_is_satisfied(limiter: LocalRateLimiter) -> None:
    lim: RateLimiter = limiter
    assert lim is limiter


def test_first_request_headers_exact(limiter: LocalRateLimiter) -> None:
    a = admit(limiter, [KEY], 16)
    assert a.allowed and a.retry_after is None and a.message is None and a.scope is None
    assert a.headers == {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-reset-requests": "1s",  # one request refills in 60/60 s
        "x-ratelimit-limit-tokens": "150000",
        "x-ratelimit-remaining-tokens": "149984",
        "x-ratelimit-reset-tokens": "7ms",  # 16 tokens at 2500/s = 6.4 ms, rounded up
    }


def test_no_limits_still_means_all_six_headers(limiter: LocalRateLimiter) -> None:
    a = admit(limiter, [Scope("key:free", Limits(None, None))], 10**9)
    unlimited = str(UNLIMITED)
    assert a == Admission(True, {
        "x-ratelimit-limit-requests": unlimited, "x-ratelimit-remaining-requests": unlimited,
        "x-ratelimit-reset-requests": "0s", "x-ratelimit-limit-tokens": unlimited,
        "x-ratelimit-remaining-tokens": unlimited, "x-ratelimit-reset-tokens": "0s"}, None, None, None)
    assert len(limiter) == 0  # unlimited scopes keep no state
    assert admit(limiter, [], 5).allowed


def test_a_dimension_without_a_limit_reports_unlimited(limiter: LocalRateLimiter) -> None:
    a = admit(limiter, [Scope("org:o", Limits(60, None))], 10**9)
    assert a.headers["x-ratelimit-limit-requests"] == "60"
    assert a.headers["x-ratelimit-remaining-tokens"] == str(UNLIMITED)
    assert a.headers["x-ratelimit-reset-tokens"] == "0s"


def test_dimension_without_limit_reports_it_unlimited(limiter: LocalRateLimiter) -> None:
    a = admit(limiter, [Scope("key:r", Limits(rpm=10, tpm=None))], 10**9)
    assert a.allowed
    assert a.headers["x-ratelimit-remaining-requests"] == "9"
    assert (a.headers["x-ratelimit-limit-tokens"], a.headers["x-ratelimit-remaining-tokens"],
            a.headers["x-ratelimit-reset-tokens"]) == (str(UNLIMITED), str(UNLIMITED), "0s")
    a = admit(limiter, [Scope("key:t", Limits(rpm=None, tpm=1000))], 10)
    assert a.headers == {
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "990",
        "x-ratelimit-reset-tokens": "600ms",
        "x-ratelimit-limit-requests": str(UNLIMITED),
        "x-ratelimit-remaining-requests": str(UNLIMITED),
        "x-ratelimit-reset-requests": "0s",
    }


def test_headers_describe_most_constraining_scope_per_dimension(limiter: LocalRateLimiter) -> None:
    key = Scope("key:k", Limits(rpm=5, tpm=None))
    org = Scope("org:o", Limits(rpm=1000, tpm=600))
    a = admit(limiter, [key, org], 100)
    assert a.headers == {
        "x-ratelimit-limit-requests": "5",  # key: 4 left beats org's 999
        "x-ratelimit-remaining-requests": "4",
        "x-ratelimit-reset-requests": "12s",
        "x-ratelimit-limit-tokens": "600",  # only the org limits tokens
        "x-ratelimit-remaining-tokens": "500",
        "x-ratelimit-reset-tokens": "10s",
    }


def test_remaining_is_whole_units_and_reset_counts_partial_refill(limiter: LocalRateLimiter, clock: FakeClock) -> None:
    s = Scope("key:p", Limits(rpm=60, tpm=None))
    for _ in range(3):
        admit(limiter, [s], 0)
    clock.advance(0.5)  # half a request refilled: 57.5 in the bucket
    a = admit(limiter, [s], 0)
    assert a.headers["x-ratelimit-remaining-requests"] == "56"  # 56.5 after this one
    assert a.headers["x-ratelimit-reset-requests"] == "3.5s"


def test_refill_over_time(limiter: LocalRateLimiter, clock: FakeClock) -> None:
    s = Scope("key:r", Limits(rpm=60, tpm=None))
    assert all(admit(limiter, [s], 0).allowed for _ in range(60))  # a new scope starts full
    refused = admit(limiter, [s], 0)
    assert not refused.allowed and refused.retry_after == 1.0
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-ratelimit-reset-requests"] == "1m0s"
    clock.advance(0.999)
    assert admit(limiter, [s], 0).retry_after == pytest.approx(0.001)
    clock.advance(0.001)
    assert admit(limiter, [s], 0).allowed
    assert not admit(limiter, [s], 0).allowed
    clock.advance(10)
    assert sum(admit(limiter, [s], 0).allowed for _ in range(20)) == 10
    clock.advance(3600)  # never more than capacity
    assert sum(admit(limiter, [s], 0).allowed for _ in range(100)) == 60


def test_all_or_nothing_across_scopes(limiter: LocalRateLimiter) -> None:
    key = Scope("key:a", Limits(rpm=10, tpm=1000))
    org = Scope("org:b", Limits(rpm=None, tpm=100))
    assert admit(limiter, [key, org], 90).allowed
    refused = admit(limiter, [key, org], 20)
    assert not refused.allowed and refused.scope == "org:b"
    assert refused.message is not None and "for tokens on org:b" in refused.message
    # The key was charged nothing for the refused request: 1000 - 90 - 10 left, 10 - 1 - 1 requests.
    a = admit(limiter, [key], 10)
    assert a.headers["x-ratelimit-remaining-tokens"] == "900"
    assert a.headers["x-ratelimit-remaining-requests"] == "8"


def test_retry_after_is_exact_and_message_openai_like(limiter: LocalRateLimiter, clock: FakeClock) -> None:
    s = Scope("key:key_abc", Limits(rpm=None, tpm=600))  # refills 10 tokens/s
    assert admit(limiter, [s], 600).allowed
    refused = admit(limiter, [s], 12)
    assert not refused.allowed
    assert refused.retry_after == 1.2
    assert refused.scope == "key:key_abc"
    assert refused.message == (
        "Rate limit reached for tokens on key:key_abc: Limit 600, Used 600, Requested 12. Please try again in 1.2s."
    )
    assert refused.headers == {
        "x-ratelimit-limit-tokens": "600",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "1m0s",
        "x-ratelimit-limit-requests": str(UNLIMITED),
        "x-ratelimit-remaining-requests": str(UNLIMITED),
        "x-ratelimit-reset-requests": "0s",
    }
    clock.advance(1.199)
    assert not admit(limiter, [s], 12).allowed
    clock.advance(0.001)
    assert admit(limiter, [s], 12).allowed


def test_requests_message(limiter: LocalRateLimiter) -> None:
    for _ in range(60):
        admit(limiter, [KEY], 1)
    refused = admit(limiter, [KEY], 1)
    assert refused.message == (
        "Rate limit reached for requests on key:key_abc: Limit 60, Used 60, Requested 1. Please try again in 1s."
    )


def test_retry_after_is_longest_wait_across_scopes(limiter: LocalRateLimiter, clock: FakeClock) -> None:
    fast = Scope("key:fast", Limits(rpm=None, tpm=6000))  # 100 tokens/s
    slow = Scope("org:slow", Limits(rpm=None, tpm=600))  # 10 tokens/s
    assert admit(limiter, [fast, slow], 600).allowed
    refused = admit(limiter, [fast, slow], 50)
    assert refused.scope == "org:slow" and refused.retry_after == 5.0
    clock.advance(5.0)
    assert admit(limiter, [fast, slow], 50).allowed


def test_too_large_request_never_fits(limiter: LocalRateLimiter) -> None:
    a = admit(limiter, [KEY], 150_001)
    assert not a.allowed and a.retry_after is None and a.scope == "key:key_abc"
    assert a.message == (
        "Request too large for tokens on key:key_abc: Limit 150000, Requested 150001. "
        "The input or output tokens must be reduced in order to run successfully."
    )
    assert a.headers["x-ratelimit-remaining-tokens"] == "150000"  # nothing consumed
    assert a.headers["x-ratelimit-remaining-requests"] == "60"
    assert admit(limiter, [KEY], 150_000).allowed  # exactly the limit fits a full bucket


def test_too_large_wins_over_a_wait(limiter: LocalRateLimiter) -> None:
    busy = Scope("key:busy", Limits(rpm=1, tpm=None))
    small = Scope("org:small", Limits(rpm=None, tpm=10))
    assert admit(limiter, [busy], 0).allowed
    a = admit(limiter, [busy, small], 11)
    assert a.retry_after is None and a.scope == "org:small"


def test_zero_rpm_blocks_everything(limiter: LocalRateLimiter) -> None:
    a = admit(limiter, [Scope("key:blocked", Limits(rpm=0, tpm=None))], 0)
    assert not a.allowed and a.retry_after is None
    assert a.message is not None and a.message.startswith("Request too large for requests on key:blocked: Limit 0")


def test_invalid_tokens_rejected(limiter: LocalRateLimiter) -> None:
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="tokens"):
            admit(limiter, [KEY], bad)  # type: ignore[arg-type]


def test_duplicate_scope_is_charged_once(limiter: LocalRateLimiter) -> None:
    a = admit(limiter, [KEY, KEY], 16)
    assert a.headers["x-ratelimit-remaining-requests"] == "59"
    assert a.headers["x-ratelimit-remaining-tokens"] == "149984"


def test_tier_change_applies_on_next_request(limiter: LocalRateLimiter, clock: FakeClock) -> None:
    old = Scope("key:t", Limits(rpm=100, tpm=None))
    for _ in range(10):
        admit(limiter, [old], 0)
    lower = Scope("key:t", Limits(rpm=5, tpm=None))
    a = admit(limiter, [lower], 0)  # 90 left is clamped to the new capacity 5, then one is used
    assert a.allowed and a.headers["x-ratelimit-limit-requests"] == "5"
    assert a.headers["x-ratelimit-remaining-requests"] == "4"
    with_tokens = Scope("key:t", Limits(rpm=5, tpm=1000))  # a newly limited dimension starts full
    assert admit(limiter, [with_tokens], 10).headers["x-ratelimit-remaining-tokens"] == "990"
    unlimited = Scope("key:t", Limits(None, None))
    assert all(admit(limiter, [unlimited], 0).allowed for _ in range(50))


def test_concurrent_tasks_cannot_overrun() -> None:
    async def main() -> int:
        lim = LocalRateLimiter(clock=FakeClock())
        s = Scope("key:c", Limits(rpm=50, tpm=None))
        results = await asyncio.gather(*(lim.admit([s], 1) for _ in range(200)))
        await lim.close()
        return sum(r.allowed for r in results)

    assert asyncio.run(main()) == 50


# ---------------------------------------------------------------- correct


def test_correct_gives_back_unused_tokens(limiter: LocalRateLimiter) -> None:
    s = Scope("key:c", Limits(rpm=None, tpm=1000))
    assert admit(limiter, [s], 500).allowed
    run(limiter.correct([s], estimated=500, actual=100))
    assert admit(limiter, [s], 0).headers["x-ratelimit-remaining-tokens"] == "900"
    run(limiter.correct([s], estimated=900, actual=0))  # never above capacity
    assert admit(limiter, [s], 0).headers["x-ratelimit-remaining-tokens"] == "1000"


def test_correct_takes_extra_tokens_into_debt(limiter: LocalRateLimiter, clock: FakeClock) -> None:
    s = Scope("key:d", Limits(rpm=None, tpm=600))  # 10 tokens/s
    assert admit(limiter, [s], 100).allowed
    run(limiter.correct([s], estimated=100, actual=1100))  # 500 - 1000 = -500
    refused = admit(limiter, [s], 10)
    assert not refused.allowed
    assert refused.retry_after == 51.0  # from -500 up to 10 at 10/s
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"
    assert refused.headers["x-ratelimit-reset-tokens"] == "1m50s"
    assert refused.message is not None and "Used 1100" in refused.message
    clock.advance(51)
    assert admit(limiter, [s], 10).allowed


def test_correct_ignores_scopes_without_token_limit(limiter: LocalRateLimiter) -> None:
    s = Scope("key:r", Limits(rpm=10, tpm=None))
    run(limiter.correct([s], estimated=0, actual=10**6))
    run(limiter.correct([Scope("key:none", Limits(None, None))], 0, 5))
    assert len(limiter) == 0
    assert admit(limiter, [s], 0).allowed


def test_correct_on_unseen_scope_starts_from_full(limiter: LocalRateLimiter) -> None:
    s = Scope("key:new", Limits(rpm=None, tpm=1000))
    run(limiter.correct([s], estimated=100, actual=300))
    assert admit(limiter, [s], 0).headers["x-ratelimit-remaining-tokens"] == "800"


# ---------------------------------------------------------------- eviction


def test_idle_scopes_are_dropped(clock: FakeClock) -> None:
    lim = LocalRateLimiter(clock=clock, idle_ttl=180)
    for i in range(5):
        admit(lim, [Scope(f"key:{i}", Limits(rpm=10, tpm=100))], 1)
    assert len(lim) == 5
    clock.advance(179)
    admit(lim, [Scope("key:fresh", Limits(rpm=10, tpm=None))], 0)
    assert len(lim) == 6
    clock.advance(1)
    admit(lim, [Scope("key:fresh", Limits(rpm=10, tpm=None))], 0)
    assert len(lim) == 1


def test_eviction_is_bounded_per_call_but_drains(clock: FakeClock) -> None:
    lim = LocalRateLimiter(clock=clock, idle_ttl=60)
    for i in range(100):
        admit(lim, [Scope(f"key:{i}", Limits(rpm=10, tpm=None))], 0)
    clock.advance(61)
    admit(lim, [Scope("key:x", Limits(rpm=10, tpm=None))], 0)
    assert 1 < len(lim) < 101  # a few per call, so one call stays cheap
    for _ in range(20):
        admit(lim, [Scope("key:x", Limits(rpm=10, tpm=None))], 0)
    assert len(lim) == 1


def test_scope_in_debt_is_kept_until_refilled(clock: FakeClock) -> None:
    lim = LocalRateLimiter(clock=clock, idle_ttl=180)
    s = Scope("key:debt", Limits(rpm=None, tpm=60))  # 1 token/s
    run(lim.correct([s], estimated=0, actual=300))  # -240: full again after 300 s
    other = Scope("key:other", Limits(rpm=10, tpm=None))
    clock.advance(200)
    admit(lim, [other], 0)
    assert len(lim) == 2  # idle, but dropping it would forgive the debt
    a = admit(lim, [s], 0)
    assert a.headers["x-ratelimit-remaining-tokens"] == "0"  # -40 left
    clock.advance(301)
    admit(lim, [other], 0)
    assert len(lim) == 1


# ---------------------------------------------------------------- properties

# Times are whole milliseconds (the limiter's resolution); gaps include long idles.
_GAP_MS = st.one_of(st.integers(0, 50), st.integers(0, 5_000), st.integers(0, 200_000))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rpm=st.integers(1, 30),
    tpm=st.integers(1, 2_000),
    ops=st.lists(st.tuples(_GAP_MS, st.integers(0, 2_100)), min_size=1, max_size=80),
)
def test_admitted_never_exceed_bucket_bound(rpm: int, tpm: int, ops: list[tuple[int, int]]) -> None:
    clock = FakeClock(0.0)
    lim = LocalRateLimiter(clock=clock)
    s = Scope("key:p", Limits(rpm=rpm, tpm=tpm))
    now_ms = 0
    admitted: list[tuple[int, int]] = []  # (ms, tokens)
    for gap, tokens in ops:
        now_ms += gap
        clock.now = now_ms / 1000
        if admit(lim, [s], tokens).allowed:
            admitted.append((now_ms, tokens))
    for i, (start, _) in enumerate(admitted):
        total_tokens = 0
        for count, (t, tokens) in enumerate(admitted[i:], start=1):
            total_tokens += tokens
            span = Fraction(t - start, 60_000)  # minutes
            # A bucket can release at most its capacity plus what refilled during the span...
            assert total_tokens <= tpm + span * tpm
            assert count <= rpm + span * rpm
            # ...so any 60 s window holds at most twice the per-minute limit.
            if t - start <= 60_000:
                assert total_tokens <= 2 * tpm and count <= 2 * rpm


class _Reference:
    """The bucket math written plainly with exact fractions, per second."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.req = Fraction(limits.rpm or 0)
        self.tok = Fraction(limits.tpm or 0)
        self.last = Fraction(0)

    def refill(self, now: Fraction) -> None:
        dt = now - self.last
        self.last = now
        if self.limits.rpm is not None:
            self.req = min(Fraction(self.limits.rpm), self.req + dt * self.limits.rpm / 60)
        if self.limits.tpm is not None:
            self.tok = min(Fraction(self.limits.tpm), self.tok + dt * self.limits.tpm / 60)

    def fits(self, tokens: int) -> bool:
        return (self.limits.rpm is None or self.req >= 1) and (self.limits.tpm is None or self.tok >= tokens)

    def wait(self, tokens: int) -> Fraction:
        waits = [Fraction(0)]
        if self.limits.rpm and self.req < 1:
            waits.append((1 - self.req) * 60 / self.limits.rpm)
        if self.limits.tpm and self.tok < tokens:
            waits.append((tokens - self.tok) * 60 / self.limits.tpm)
        return max(waits)


_LIMIT = st.one_of(st.none(), st.integers(1, 1_000))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    limits=st.tuples(_LIMIT, _LIMIT, _LIMIT, _LIMIT),
    ops=st.lists(
        st.tuples(
            _GAP_MS,
            st.sampled_from(["a", "b", "ab", "correct"]),
            st.integers(0, 1_100),
            st.integers(0, 1_100),
        ),
        min_size=1,
        max_size=60,
    ),
)
def test_matches_exact_bucket_math(
    limits: tuple[int | None, int | None, int | None, int | None], ops: list[tuple[int, str, int, int]]
) -> None:
    clock = FakeClock(0.0)
    lim = LocalRateLimiter(clock=clock)
    scopes = {"a": Scope("key:a", Limits(limits[0], limits[1])), "b": Scope("org:b", Limits(limits[2], limits[3]))}
    refs = {name: _Reference(s.limits) for name, s in scopes.items()}
    now_ms = 0
    for gap, which, tokens, actual in ops:
        now_ms += gap
        clock.now = now_ms / 1000
        now = Fraction(now_ms, 1000)
        if which == "correct":
            run(lim.correct(list(scopes.values()), tokens, actual))
            for ref in refs.values():
                ref.refill(now)
                if ref.limits.tpm is not None:
                    ref.tok = min(Fraction(ref.limits.tpm), ref.tok + tokens - actual)
            continue
        chosen = [refs[n] for n in which]
        for ref in chosen:
            ref.refill(now)
        a = admit(lim, [scopes[n] for n in which], tokens)
        expected = all(ref.fits(tokens) for ref in chosen)
        assert a.allowed == expected
        too_large = any(ref.limits.tpm is not None and tokens > ref.limits.tpm for ref in chosen)
        if expected:
            for ref in chosen:
                ref.req -= 1
                ref.tok -= tokens
        elif too_large:
            assert a.retry_after is None
        else:
            wait_ms = math.ceil(max(ref.wait(tokens) for ref in chosen) * 1000)
            assert a.retry_after == wait_ms / 1000
        for dim, attr, limit_of in (
            ("requests", "req", lambda r: r.limits.rpm),
            ("tokens", "tok", lambda r: r.limits.tpm),
        ):
            remaining = [max(0, math.floor(getattr(r, attr))) for r in chosen if limit_of(r) is not None]
            key = f"x-ratelimit-remaining-{dim}"
            if remaining:
                assert int(a.headers[key]) == min(remaining)
            else:
                assert a.headers[key] == str(UNLIMITED)


# ---------------------------------------------------------------- tiers


def test_packaged_tiers_match_seed_table() -> None:
    tiers = load_tiers()
    assert {name: (t.limits.rpm, t.limits.tpm) for name, t in tiers.items()} == {
        "tier-1": (500, 500_000),
        "tier-2": (5_000, 1_000_000),
        "tier-3": (5_000, 2_000_000),
        "tier-4": (10_000, 4_000_000),
        "tier-5": (15_000, 40_000_000),
        "unlimited": (None, None),
    }
    assert tiers["tier-1"] == Tier("tier-1", Limits(500, 500_000))


def test_overrides_add_and_replace_tiers() -> None:
    tiers = load_tiers({"tier-1": {"rpm": 60, "tpm": None}, "gold": {"rpm": 0, "tpm": 10}})
    assert tiers["tier-1"].limits == Limits(60, None)
    assert tiers["gold"] == Tier("gold", Limits(0, 10))
    assert tiers["tier-5"].limits == Limits(15_000, 40_000_000)


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ({"rpm": -1, "tpm": 5}, "rpm"),
        ({"rpm": 5, "tpm": "1000"}, "tpm"),
        ({"rpm": 1.5, "tpm": 5}, "rpm"),
        ({"rpm": True, "tpm": 5}, "rpm"),
        ({"rpm": 5}, "tpm"),
        ({"rpm": 5, "tpm": 5, "rph": 1}, "rph"),
    ],
)
def test_bad_override_names_tier_and_field(entry: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=rf"tier 'gold'.*field '{field}'"):
        load_tiers({"gold": entry})


def test_override_must_be_a_mapping() -> None:
    with pytest.raises(ValueError, match="tier 'gold'"):
        load_tiers({"gold": 500})  # type: ignore[dict-item]
