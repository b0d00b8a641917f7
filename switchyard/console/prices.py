"""The price list the console shows (a customer's, at their multiplier, or the public one):
token prices per 1M, and the catalog's other units in words a customer reads."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from switchyard.catalog import ModelSpec, UnitPrice
from switchyard.routing.table import ModelTable

_TOKEN_UNITS = {"image_input_token": "image input tokens", "audio_input_token": "audio input tokens",
                "audio_output_token": "audio output tokens"}


def price_rows(table: ModelTable, multiplier: Callable[[str], Decimal] = lambda model: Decimal(1)) -> list[dict[str, Any]]:
    """Every served model at what the viewer pays: `multiplier(model)` of its list prices (an
    organisation's own multiplier and its price group's factor)."""
    rows = []
    for name, spec in table.names():
        factor = multiplier(name)

        def price(value: Decimal | None) -> str | None:
            return None if value is None else format((value * factor).normalize(), "f")

        rows.append({
            "id": name, "owned_by": spec.owned_by, "input_per_million_usd": price(spec.prices.input),
            "cached_input_per_million_usd": price(spec.prices.cached_input),
            "output_per_million_usd": price(spec.prices.output), "context_window": spec.context_window,
            "max_output_tokens": spec.max_output_tokens, "capabilities": sorted(spec.capabilities),
            "image_tokens": spec.image_tokens.method if spec.image_tokens else None,
            "other_prices": unit_prices(spec, factor), "multiplier": format(factor.normalize(), "f"),
        })
    return rows


def unit_prices(spec: ModelSpec, multiplier: Decimal = Decimal(1)) -> list[str]:
    """`$0.006 / minute of audio`, `$0.04 / image (standard, 1024x1024)`, `$15 / 1M characters`."""
    return [_describe(name, unit, multiplier) for name, unit in sorted(spec.units.items())]


def _describe(name: str, unit: UnitPrice, multiplier: Decimal) -> str:
    usd = unit.usd * multiplier
    if name == "audio_ms":
        return f"${_plain(usd * 60_000 / unit.per)} / minute of audio"
    if name.startswith("image.") and name.count(".") == 2:
        _, quality, size = name.split(".")
        return f"${_plain(usd / unit.per)} / image ({quality}, {size})"
    what = "characters" if name == "character" else _TOKEN_UNITS.get(name, name)
    return f"${_plain(usd * 1_000_000 / unit.per)} / 1M {what}"


def _plain(value: Decimal) -> str:
    return format(value.normalize(), "f")
