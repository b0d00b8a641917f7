"""Exact request cost in nano-dollars (1e-9 USD).

Prices are Decimal USD per 1M tokens. Every product and sum is computed exactly in
Decimal and rounded once, half up, to whole nano-dollars at the very end, so a cost
never depends on the order of terms and never touches a float.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from decimal import Decimal, Inexact, localcontext
from functools import lru_cache
from types import MappingProxyType

from switchyard.catalog import Prices

__all__ = ["NANOS_PER_USD", "TokenUsage", "cost_nanos", "usd"]

NANOS_PER_USD = 10**9
_TOKENS_PER_PRICE_UNIT = 1_000_000  # prices are per 1M tokens
_NANOS_PER_PRICE_UNIT_TOKEN = NANOS_PER_USD // _TOKENS_PER_PRICE_UNIT  # exact: 1000
_NO_TIERS: Mapping[str, Decimal] = MappingProxyType({})
_STANDARD_TIERS = frozenset({"default", "auto"})
_TIER_ALIASES = {"fast": "priority"}  # OpenAI bills and echoes `fast` as `priority`
_START_PREC = 50
_MAX_PREC = 10_000


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Tokens one request used, in OpenAI's accounting.

    ``input_tokens`` is the whole prompt, including cached and cache-write tokens
    (like ``prompt_tokens`` includes ``cached_tokens``); ``output_tokens`` includes
    reasoning tokens (like ``completion_tokens``). ``reasoning_tokens`` is only
    informational: it is already paid for inside ``output_tokens``.
    """

    input_tokens: int
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if type(value) is not int:  # rejects bool and float too
                raise ValueError(f"{field.name} must be an integer, got {type(value).__name__} {value!r}")
            if value < 0:
                raise ValueError(f"{field.name} must not be negative, got {value}")
        if self.cached_input_tokens + self.cache_write_tokens > self.input_tokens:
            raise ValueError(
                f"cached_input_tokens ({self.cached_input_tokens}) + cache_write_tokens "
                f"({self.cache_write_tokens}) exceed input_tokens ({self.input_tokens})"
            )
        if self.reasoning_tokens > self.output_tokens:
            raise ValueError(
                f"reasoning_tokens ({self.reasoning_tokens}) exceed output_tokens ({self.output_tokens})"
            )

    @property
    def uncached_input_tokens(self) -> int:
        """Prompt tokens billed at the full input price."""
        return self.input_tokens - self.cached_input_tokens - self.cache_write_tokens


def cost_nanos(
    prices: Prices,
    usage: TokenUsage,
    *,
    service_tier: str | None = None,
    tier_multipliers: Mapping[str, Decimal] = _NO_TIERS,
    price_multiplier: Decimal = Decimal(1),
) -> int:
    """Cost of ``usage`` in nano-dollars, rounded once (half up).

    ``service_tier`` is the tier the request was actually processed at (OpenAI
    reports it in the response); ``tier_multipliers`` are the model's
    (``ModelSpec.multipliers``); ``price_multiplier`` is the organisation's discount
    or markup. A tier the model does not offer raises ``ValueError``.
    """
    tier = _tier_multiplier(service_tier, tier_multipliers)
    org = _factor("price_multiplier", price_multiplier)
    rates, scale = _scaled_rates(prices, tier, org)
    numerator = (
        usage.uncached_input_tokens * rates[0] + usage.cached_input_tokens * rates[1]
        + usage.cache_write_tokens * rates[2] + usage.output_tokens * rates[3]
    )
    # Integer half-up division: the one rounding, same as the Decimal path below.
    return (2 * numerator + scale) // (2 * scale)


@lru_cache(maxsize=4096)
def _scaled_rates(prices: Prices, tier: Decimal, org: Decimal) -> tuple[tuple[int, int, int, int], int]:
    """Per-token nano-dollar rates as integers over one power-of-ten scale, computed exactly once
    per (prices, tier, multiplier): a request's cost is then integer arithmetic only."""
    nanos = [_exact_cost(prices, usage, tier, org) for usage in _UNIT_USAGES]
    exponent = min(n.as_tuple().exponent for n in nanos)  # type: ignore[type-var]
    scale = 10 ** max(0, -int(exponent))
    scaled = tuple(int(n * scale) for n in nanos)
    return scaled, scale  # type: ignore[return-value]


_UNIT_USAGES = (
    TokenUsage(input_tokens=1),
    TokenUsage(input_tokens=1, cached_input_tokens=1),
    TokenUsage(input_tokens=1, cache_write_tokens=1),
    TokenUsage(input_tokens=0, output_tokens=1),
)


def _exact_cost(prices: Prices, usage: TokenUsage, tier: Decimal, org: Decimal) -> Decimal:
    """The unrounded cost in nano-dollars, exact in Decimal."""
    # No cached / cache-write price means those tokens are billed as plain input.
    cached_price = prices.input if prices.cached_input is None else prices.cached_input
    write_price = prices.input if prices.cache_write is None else prices.cache_write
    terms = (
        (usage.uncached_input_tokens, _factor("prices.input", prices.input)),
        (usage.cached_input_tokens, _factor("prices.cached_input", cached_price)),
        (usage.cache_write_tokens, _factor("prices.cache_write", write_price)),
        (usage.output_tokens, _factor("prices.output", prices.output)),
    )

    def total() -> Decimal:
        per_million = sum((Decimal(tokens) * price for tokens, price in terms), Decimal(0))
        return per_million * tier * org * _NANOS_PER_PRICE_UNIT_TOKEN

    return _exactly(total)


def usd(nanos: int) -> str:
    """Nano-dollars as a plain decimal USD string: 45500000 -> "0.0455", 10**9 -> "1"."""
    if type(nanos) is not int:
        raise TypeError(f"nanos must be an int, got {type(nanos).__name__}")
    sign = "-" if nanos < 0 else ""
    whole, frac = divmod(abs(nanos), NANOS_PER_USD)
    digits = f"{frac:09d}".rstrip("0")
    return f"{sign}{whole}.{digits}" if digits else f"{sign}{whole}"


def _exactly(compute: Callable[[], Decimal]) -> Decimal:
    """Run ``compute`` with Inexact trapped, raising the precision until nothing was
    rounded: products and sums of finite decimals are always exact at some precision,
    and ordinary prices need far less than the starting 50 digits."""
    prec = _START_PREC
    while prec <= _MAX_PREC:
        with localcontext() as ctx:
            ctx.prec = prec
            ctx.traps[Inexact] = True
            try:
                return compute()
            except Inexact:
                pass
        prec *= 4
    raise ValueError("cost inputs need more than 10,000 significant digits to compute exactly")


def _tier_multiplier(tier: str | None, multipliers: Mapping[str, Decimal]) -> Decimal:
    if tier is None or tier in _STANDARD_TIERS:
        return Decimal(1)
    factor = multipliers.get(_TIER_ALIASES.get(tier, tier))
    if factor is None:
        offered = ", ".join(["auto", "default", *sorted(multipliers)])
        raise ValueError(f"service tier {tier!r} is not offered for this model (offered: {offered})")
    return _factor(f"multipliers.{tier}", factor)


def _factor(name: str, value: Decimal | int) -> Decimal:
    """A finite, non-negative Decimal (ints accepted; floats never)."""
    if type(value) is int:
        value = Decimal(value)
    if not isinstance(value, Decimal):
        raise TypeError(f"{name} must be a Decimal, got {type(value).__name__} {value!r}")
    if not value.is_finite() or value < 0:
        raise ValueError(f"{name} must be a finite, non-negative number, got {value}")
    return value
