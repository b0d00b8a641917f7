"""`switchyard models`: the catalog, as an operator reads it."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from switchyard.catalog import load_catalog


def models() -> None:
    """List catalog models with prices (USD per 1M tokens) and limits."""
    table = Table("model", "provider", "input", "cached", "output", "context", "max out")
    for spec in load_catalog():
        p = spec.prices
        table.add_row(
            spec.id, spec.provider, str(p.input), str(p.cached_input if p.cached_input is not None else "-"),
            str(p.output), f"{spec.context_window:,}", f"{spec.max_output_tokens:,}",
        )
    Console().print(table)
