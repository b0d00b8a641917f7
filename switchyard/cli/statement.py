"""`switchyard statement ORG MONTH`: an organisation's monthly statement, as a table, JSON or CSV."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from switchyard.accounts.statements import statement_csv
from switchyard.cli.remote import operations
from switchyard.cli.admin import Json, add_row, emit, money, run, show
from switchyard.metering.cost import usd


def render(st: dict[str, Any]) -> None:
    table = Table("date", "what", "amount", title=f"statement {st['month']} for {st['org']['name']}")
    table.columns[2].justify = "right"
    add_row(table, "", "opening balance", money(st["opening_usd"]))
    for m in st["movements"]:
        day = datetime.fromtimestamp(m["created_at"], UTC).strftime("%Y-%m-%d %H:%M")
        add_row(table, day, f"{m['kind']}{': ' + m['note'] if m['note'] else ''}", money(m["amount_usd"]))
    for r in st["by_model"]:
        add_row(table, "", f"usage: {r['model']} ({r['requests']:,} requests)", money(usd(-r["cost_nanos"])))
    add_row(table, "", "closing balance", money(st["closing_usd"]))
    show(table)
    typer.echo("adds up to the ledger: " + ("yes" if st["adds_up"] else "NO"))


def statement(
    org: Annotated[str, typer.Argument(help="Organisation id or name.")],
    month: Annotated[str, typer.Argument(help="YYYY-MM (UTC).")],
    csv: Annotated[bool, typer.Option("--csv", help="Print it as CSV.")] = False,
    as_json: Json = False,
) -> None:
    """An organisation's money in a month: opening, every movement, usage by model, closing."""
    async def go(admin: Any) -> dict[str, Any]:
        return await operations(admin).statement(org, month)

    result = run(go)
    if csv:
        typer.echo(statement_csv(result), nl=False)
        return
    emit(result, as_json, render)
