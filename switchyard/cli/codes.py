"""`switchyard codes create | list | revoke`: redemption codes, on the database or over --base-url (the
admin API's /admin/v1/code-batches does the same over HTTP). A batch's codes print once, as CSV."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from switchyard.accounts.admin import now_ms, to_nanos
from switchyard.cli.admin import Json, add_row, emit, fail, money, run, show
from switchyard.cli.remote import operations
from switchyard.credits.codes import codes_csv
from switchyard.wire.errors import GatewayError

codes = typer.Typer(no_args_is_help=True, add_completion=False,
                    help="Redemption codes: make a batch (printed once, as CSV), list batches, withdraw one.")


@codes.command("create")
def create(
    name: Annotated[str, typer.Option(help="The batch's name (shown in every redeemer's ledger).")],
    value_usd: Annotated[str, typer.Option(help="What each code is worth, e.g. 10 or 2.50.")],
    count: Annotated[int, typer.Option(min=1, max=10_000, help="How many codes.")],
    expires_in_days: Annotated[Optional[int], typer.Option(min=1, help="Codes expire after this many days.")] = None,
    org: Annotated[Optional[str], typer.Option(help="Only this organisation (id) may redeem them.")] = None,
    tier: Annotated[Optional[str], typer.Option(help="Only organisations on this tier may redeem them.")] = None,
    output: Annotated[Optional[str], typer.Option(help="Write the CSV here instead of printing it.")] = None,
) -> None:
    """Make a batch of codes and print them once as CSV (switchyard keeps only their hashes)."""
    try:
        nanos = to_nanos(value_usd.strip(), "value_usd")
    except GatewayError as exc:
        fail(exc.message)
    expires = now_ms() + expires_in_days * 86_400_000 if expires_in_days else None
    batch, made = run(lambda admin: operations(admin).create_batch(name, nanos, count, expires, org, tier))
    text = codes_csv(batch, made)
    if output:
        with open(output, "w", encoding="utf-8") as out:
            out.write(text)
        typer.echo(f"{len(made)} codes of batch {batch['id']} written to {output}", err=True)
    else:
        typer.echo(text, nl=False)


def render_batches(batches: list[dict[str, Any]]) -> None:
    table = Table("id", "name", "value", "codes", "redeemed", "expires (UTC)", "for", "status", title="code batches")
    for b in batches:
        expires = datetime.fromtimestamp(b["expires_at"], UTC).strftime("%Y-%m-%d %H:%M") if b["expires_at"] else "never"
        add_row(table, b["id"], b["name"], money(b["value_usd"]), f"{b['count']:,}", f"{b['redeemed']:,}", expires,
                b["org_id"] or b["tier"] or "anyone", "withdrawn" if b["revoked_at"] else "open")
    show(table)


@codes.command("list")
def list_batches(as_json: Json = False) -> None:
    """Every batch, newest first, with how many of its codes have been redeemed."""
    emit(run(lambda admin: operations(admin).list_batches()), as_json, render_batches)


@codes.command("revoke")
def revoke(batch_id: Annotated[str, typer.Argument(help="The batch's id (cb_...).")], as_json: Json = False) -> None:
    """Withdraw a batch: its codes can no longer be redeemed (redeemed ones stay credited)."""
    emit(run(lambda admin: operations(admin).revoke_batch(batch_id)), as_json, lambda b: render_batches([b]))
