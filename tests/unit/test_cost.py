"""Exact cost: the seed's worked examples, an exact Fraction oracle, and properties."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchyard.catalog import Prices, load_catalog
from switchyard.metering.cost import NANOS_PER_USD, TokenUsage, cost_nanos, usd

CATALOG = load_catalog()
MODELS = sorted(m.id for m in CATALOG)
FAST = settings(max_examples=200, deadline=None)


def model_cost(model: str, usage: TokenUsage, **kwargs: object) -> int:
    spec = CATALOG.get(model)
    return cost_nanos(spec.prices, usage, tier_multipliers=spec.multipliers, **kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------- worked examples


def test_seed_examples() -> None:
    # 10,000 × $1.75/M + 2,000 × $14/M = $0.0175 + $0.028 = $0.0455
    assert model_cost("gpt-5.2", TokenUsage(10_000, output_tokens=2_000)) == 45_500_000
    # 300,000 cached × $0.175/M + 10,000 × $14/M = $0.0525 + $0.14 = $0.1925
    usage = TokenUsage(300_000, cached_input_tokens=300_000, output_tokens=10_000)
    assert model_cost("gpt-5.2", usage) == 192_500_000
    # Seed's "100,000 in + 5,000 out = $0.245".
    assert usd(model_cost("gpt-5.2", TokenUsage(100_000, output_tokens=5_000))) == "0.245"


def test_batch_and_flex_are_half_priority_double() -> None:
    usage = TokenUsage(10_000, output_tokens=2_000)
    assert model_cost("gpt-5.2", usage, service_tier="batch") == 22_750_000
    assert model_cost("gpt-5.2", usage, service_tier="flex") == 22_750_000
    assert model_cost("gpt-5.2", usage, service_tier="priority") == 91_000_000
    assert model_cost("gpt-5.2", usage, service_tier="fast") == 91_000_000  # billed as priority
    for standard in (None, "default", "auto"):
        assert model_cost("gpt-5.2", usage, service_tier=standard) == 45_500_000


def test_reference_tier_table() -> None:
    """Section 7: per-1M prices by tier, as 1M tokens of each kind."""
    million = 1_000_000
    for tier, (inp, cached, out) in {
        None: ("1.75", "0.175", "14"), "batch": ("0.875", "0.0875", "7"),
        "flex": ("0.875", "0.0875", "7"), "priority": ("3.50", "0.35", "28"),
    }.items():
        assert usd(model_cost("gpt-5.2", TokenUsage(million), service_tier=tier)) == usd(_nanos(inp))
        usage = TokenUsage(million, cached_input_tokens=million)
        assert usd(model_cost("gpt-5.2", usage, service_tier=tier)) == usd(_nanos(cached))
        assert usd(model_cost("gpt-5.2", TokenUsage(0, output_tokens=million), service_tier=tier)) == usd(_nanos(out))


def _nanos(dollars: str) -> int:
    return int(Decimal(dollars) * NANOS_PER_USD)


def test_pro_with_org_multiplier() -> None:
    # ($21 + $168) × 0.7 = $132.30
    usage = TokenUsage(1_000_000, output_tokens=1_000_000)
    assert model_cost("gpt-5.2-pro", usage, price_multiplier=Decimal("0.7")) == 132_300_000_000
    assert usd(132_300_000_000) == "132.3"
    # Batch: ($10.50 + $84) = $94.50
    assert usd(model_cost("gpt-5.2-pro", usage, service_tier="batch")) == "94.5"


def test_no_cached_price_bills_cached_tokens_as_input() -> None:
    usage = TokenUsage(1_000_000, cached_input_tokens=400_000)
    assert model_cost("gpt-5.2-pro", usage) == 21 * NANOS_PER_USD


def test_cache_write_price() -> None:
    # claude-haiku-4-5: $1 input, $0.10 cache read, $1.25 cache write.
    usage = TokenUsage(1_000_000, cached_input_tokens=500_000, cache_write_tokens=300_000, output_tokens=1_000)
    # 200k × 1 + 500k × 0.10 + 300k × 1.25 + 1k × 5 = 0.2 + 0.05 + 0.375 + 0.005 = $0.63
    assert usd(model_cost("claude-haiku-4-5", usage)) == "0.63"
    # No cache_write price (OpenAI): writes bill as plain input.
    write = TokenUsage(1_000_000, cache_write_tokens=1_000_000)
    assert model_cost("gpt-5.2", write) == model_cost("gpt-5.2", TokenUsage(1_000_000))


def test_reasoning_tokens_are_not_billed_twice() -> None:
    plain = TokenUsage(1_000, output_tokens=500)
    with_reasoning = TokenUsage(1_000, output_tokens=500, reasoning_tokens=400)
    assert model_cost("gpt-5.2", plain) == model_cost("gpt-5.2", with_reasoning)


def test_rounds_once_half_up() -> None:
    prices = Prices(input=Decimal("0.0005"), cached_input=None, output=Decimal("0.0005"), cache_write=None)
    # Each token costs 0.5 nano: rounding per part would give 1 + 1 = 2; once gives 1.
    assert cost_nanos(prices, TokenUsage(1, output_tokens=1)) == 1
    assert cost_nanos(prices, TokenUsage(1)) == 1  # 0.5 -> 1 (half up, not half even)
    assert cost_nanos(prices, TokenUsage(3)) == 2  # 1.5 -> 2
    assert cost_nanos(prices, TokenUsage(5)) == 3  # 2.5 -> 3 (half even would give 2)
    # A multiplier with many digits still rounds only once, at the end.
    third = Decimal(1) / Decimal(3)
    assert cost_nanos(prices, TokenUsage(6), price_multiplier=third) == 1  # exactly 1 × (0.333…·3)


def test_zero_and_free() -> None:
    assert model_cost("gpt-5.2", TokenUsage(0)) == 0
    assert model_cost("smollm2-135m-instruct", TokenUsage(10_000, output_tokens=10_000)) == 0


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs",
    [
        {"input_tokens": -1},
        {"input_tokens": 10, "output_tokens": -1},
        {"input_tokens": 10, "cached_input_tokens": 11},
        {"input_tokens": 10, "cached_input_tokens": 6, "cache_write_tokens": 5},
        {"input_tokens": 10, "output_tokens": 5, "reasoning_tokens": 6},
        {"input_tokens": 1.0},
        {"input_tokens": True},
        {"input_tokens": "10"},
    ],
)
def test_usage_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        TokenUsage(**kwargs)  # type: ignore[arg-type]


def test_unknown_or_unoffered_tier() -> None:
    usage = TokenUsage(10)
    with pytest.raises(ValueError, match="'priority'.*offered: auto, default, batch"):
        model_cost("gpt-5.2-pro", usage, service_tier="priority")
    with pytest.raises(ValueError, match="'turbo'"):
        model_cost("gpt-5.2", usage, service_tier="turbo")
    with pytest.raises(ValueError):  # no tier table given at all
        cost_nanos(CATALOG.get("gpt-5.2").prices, usage, service_tier="batch")


def test_multiplier_validation() -> None:
    prices = CATALOG.get("gpt-5.2").prices
    with pytest.raises(TypeError):
        cost_nanos(prices, TokenUsage(10), price_multiplier=0.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        cost_nanos(prices, TokenUsage(10), price_multiplier=Decimal("-1"))
    with pytest.raises(ValueError):
        cost_nanos(prices, TokenUsage(10), price_multiplier=Decimal("NaN"))
    assert cost_nanos(prices, TokenUsage(10), price_multiplier=2) == 2 * cost_nanos(prices, TokenUsage(10))


@pytest.mark.parametrize(
    ("nanos", "text"),
    [(0, "0"), (1, "0.000000001"), (45_500_000, "0.0455"), (10**9, "1"), (132_300_000_000, "132.3"),
     (-45_500_000, "-0.0455"), (123_456_789_012, "123.456789012"), (10**30, "1" + "0" * 21)],
)
def test_usd(nanos: int, text: str) -> None:
    assert usd(nanos) == text


def test_usd_rejects_non_int() -> None:
    with pytest.raises(TypeError):
        usd(1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        usd(Decimal(1))  # type: ignore[arg-type]


# ---------------------------------------------------------------- properties

money = st.decimals(min_value=0, max_value=1000, places=5, allow_nan=False, allow_infinity=False)
factors = st.decimals(min_value=0, max_value=10, places=4, allow_nan=False, allow_infinity=False)


@st.composite
def usages(draw: st.DrawFn, max_tokens: int = 50_000_000) -> TokenUsage:
    input_tokens = draw(st.integers(0, max_tokens))
    cached = draw(st.integers(0, input_tokens))
    write = draw(st.integers(0, input_tokens - cached))
    output = draw(st.integers(0, max_tokens))
    return TokenUsage(input_tokens, cached, write, output, draw(st.integers(0, output)))


@st.composite
def price_tables(draw: st.DrawFn) -> Prices:
    return Prices(
        input=draw(money), output=draw(money),
        cached_input=draw(st.none() | money), cache_write=draw(st.none() | money),
    )


def exact_nanos(prices: Prices, usage: TokenUsage, tier: Decimal, org: Decimal) -> Fraction:
    cached = prices.input if prices.cached_input is None else prices.cached_input
    write = prices.input if prices.cache_write is None else prices.cache_write
    uncached = usage.input_tokens - usage.cached_input_tokens - usage.cache_write_tokens
    usd_total = (
        uncached * Fraction(prices.input) + usage.cached_input_tokens * Fraction(cached)
        + usage.cache_write_tokens * Fraction(write) + usage.output_tokens * Fraction(prices.output)
    ) / 1_000_000
    return usd_total * Fraction(tier) * Fraction(org) * NANOS_PER_USD


@FAST
@given(price_tables(), usages(), factors, factors)
def test_matches_exact_fraction_rounded_half_up(prices: Prices, usage: TokenUsage, tier: Decimal, org: Decimal) -> None:
    cost = cost_nanos(prices, usage, service_tier="batch", tier_multipliers={"batch": tier}, price_multiplier=org)
    assert type(cost) is int and cost >= 0
    assert cost == math.floor(exact_nanos(prices, usage, tier, org) + Fraction(1, 2))


@FAST
@given(st.sampled_from(MODELS), usages(), usages())
def test_additive_within_one_nano_per_part(model: str, a: TokenUsage, b: TokenUsage) -> None:
    both = TokenUsage(
        a.input_tokens + b.input_tokens, a.cached_input_tokens + b.cached_input_tokens,
        a.cache_write_tokens + b.cache_write_tokens, a.output_tokens + b.output_tokens,
        a.reasoning_tokens + b.reasoning_tokens,
    )
    # Each part is within half a nano of exact, the whole too: the gap is at most 1.
    assert abs(model_cost(model, a) + model_cost(model, b) - model_cost(model, both)) <= 1


@FAST
@given(st.sampled_from(MODELS), usages(), st.integers(0, 1000), st.integers(1, 1000))
def test_linear_in_org_multiplier(model: str, usage: TokenUsage, num: int, den: int) -> None:
    org = Decimal(num) / Decimal(den)  # often 28 significant digits: still exact arithmetic
    base = model_cost(model, usage)
    scaled = model_cost(model, usage, price_multiplier=org)
    # |scaled - org·exact| <= 1/2 and |org·base - org·exact| <= org/2.
    assert abs(Fraction(scaled) - Fraction(org) * base) <= Fraction(1, 2) + Fraction(org) / 2
    assert model_cost(model, usage, price_multiplier=Decimal(0)) == 0


@FAST
@given(st.sampled_from(MODELS), usages())
def test_cached_never_costs_more_than_uncached(model: str, usage: TokenUsage) -> None:
    prices = CATALOG.get(model).prices
    if prices.cached_input is not None and prices.cached_input > prices.input:
        return
    uncached = TokenUsage(usage.input_tokens, 0, usage.cache_write_tokens, usage.output_tokens)
    assert model_cost(model, usage) <= model_cost(model, uncached)


@FAST
@given(st.sampled_from(MODELS), usages(), st.sampled_from(["batch", "flex", "priority", "scale", None, "default"]))
def test_tiers_scale_the_whole_cost(model: str, usage: TokenUsage, tier: str | None) -> None:
    spec = CATALOG.get(model)
    factor = Decimal(1) if tier in (None, "default") else spec.multipliers.get(tier)
    if factor is None:
        with pytest.raises(ValueError):
            model_cost(model, usage, service_tier=tier)
        return
    base = model_cost(model, usage)
    assert abs(Fraction(model_cost(model, usage, service_tier=tier)) - Fraction(factor) * base) <= (
        Fraction(1, 2) + Fraction(factor) / 2
    )


@FAST
@given(st.integers(-(10**20), 10**20))
def test_usd_round_trips(nanos: int) -> None:
    text = usd(nanos)
    assert Decimal(text) * NANOS_PER_USD == nanos
    assert "e" not in text.lower() and not text.endswith(".")
    if "." in text:
        assert not text.endswith("0") and len(text.split(".")[1]) <= 9
