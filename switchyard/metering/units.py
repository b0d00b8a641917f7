"""Exact cost of what the media endpoints meter: text tokens at the model's `prices` plus
quantities in other units (milliseconds of audio, characters, images, image or audio tokens)
at the catalog's `units` prices.

Token units (`image_input_token`, `audio_input_token`) name the part of `input_tokens` billed
at their own price, as OpenAI's usage counts every input token in `input_tokens`;
`audio_output_token` likewise is the part of `output_tokens` that is audio. Everything is
computed exactly (fractions) and rounded once, half up, to whole nano-dollars.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction

from switchyard.catalog import ModelSpec
from switchyard.metering.cost import NANOS_PER_USD, TokenUsage

__all__ = ["INPUT_TOKEN_UNITS", "OUTPUT_TOKEN_UNITS", "Metered", "media_cost_nanos"]

INPUT_TOKEN_UNITS = ("image_input_token", "audio_input_token")
OUTPUT_TOKEN_UNITS = ("audio_output_token",)
_PER_MILLION = 1_000_000


@dataclass(frozen=True, slots=True)
class Metered:
    """What one media request used: its tokens (every input and output token) and its units."""

    usage: TokenUsage
    units: Mapping[str, int] = field(default_factory=dict)

    @property
    def image_tokens(self) -> int:
        return self.units.get("image_input_token", 0)


def media_cost_nanos(
    spec: ModelSpec, usage: TokenUsage, units: Mapping[str, int], price_multiplier: Decimal = Decimal(1),
) -> int:
    """Cost in nano-dollars of `usage` (every input and output token) and `units` at `spec`.
    A unit the catalog does not price raises `ValueError`: a bill is never silently zero."""
    prices = spec.prices
    special_in = sum(units.get(name, 0) for name in INPUT_TOKEN_UNITS)
    special_out = sum(units.get(name, 0) for name in OUTPUT_TOKEN_UNITS)
    cached = min(usage.cached_input_tokens, max(usage.input_tokens - special_in, 0))
    text_in = max(usage.input_tokens - special_in - cached, 0)
    text_out = max(usage.output_tokens - special_out, 0)
    cached_price = prices.input if prices.cached_input is None else prices.cached_input
    usd = (Fraction(text_in) * Fraction(prices.input) + Fraction(cached) * Fraction(cached_price)
           + Fraction(text_out) * Fraction(prices.output)) / _PER_MILLION
    for name, quantity in units.items():
        price = spec.units.get(name)
        if price is None:
            raise ValueError(f"model {spec.id} has no price for unit {name!r}")
        usd += Fraction(quantity) * Fraction(price.usd) / price.per
    nanos = usd * Fraction(price_multiplier) * NANOS_PER_USD
    return int((nanos * 2 + 1) // 2)
