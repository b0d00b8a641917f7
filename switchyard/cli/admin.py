"""`switchyard orgs | keys | topup | balance | usage`: operator actions on the database, or on a
running server's admin API with --base-url (see remote.py).

On the database it is the same `AccountsAdmin` as the admin API, without HTTP, so these work with
the server stopped; a running server picks every change up from the change feed within a second.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, NoReturn, Optional, TypeVar

import orjson
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy.exc import SQLAlchemyError

from switchyard.accounts.shared_funds import SharedFunds
from switchyard.accounts.admin import AccountsAdmin, to_nanos
from switchyard.cli import remote
from switchyard.accounts.periods import Periods
from switchyard.config import load_settings
from switchyard.credits.referrals import Referrals, referral_policy
from switchyard.limits import load_tiers
from switchyard.metering.cost import usd
from switchyard.store.database import default_url, make_engine
from switchyard.store.prepare import prepare_store
from switchyard.wire.errors import GatewayError

T = TypeVar("T")

orgs = typer.Typer(no_args_is_help=True, add_completion=False, help="Organisations: create, list, show, update.")
keys = typer.Typer(no_args_is_help=True, add_completion=False, help="API keys: create (shown once), list, revoke.")

Json = Annotated[bool, typer.Option("--json", help="Print the raw object instead of a table.")]
Limit = Annotated[Optional[int], typer.Option(min=0, help="Per-minute limit.")]
ReserveCap = Annotated[Optional[int], typer.Option(
    min=1, help="Output tokens reserved (and allowed) for a request that sets no max_tokens; "
                "default: the model's max output.")]
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


# ---- plumbing ----------------------------------------------------------------------------


def run(action: Callable[[AccountsAdmin], Awaitable[T]]) -> T:
    """Open the configured database (migrated), run one action, close; errors as one line."""
    where = remote.target()
    if where is not None:
        return _run_remote(action, where)
    try:
        settings = load_settings()
        tiers = load_tiers(settings.tiers)
    except ValueError as exc:  # ConfigError, or a bad tier in the config
        fail(str(exc), 2)

    async def go() -> T:
        if settings.database_url is None:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        await prepare_store(settings)
        url = settings.database_url or default_url(settings.data_dir)
        engine = make_engine(url, settings.sqlite_synchronous)
        # With Redis configured, running gateways share holds there: changes must reach it too.
        funds = SharedFunds(settings.redis_url, url) if settings.redis_url else None
        try:
            return await action(AccountsAdmin(engine, tiers, funds, served=settings.served_models,
                                              referrals=Referrals(referral_policy(settings.referral)),
                                              price_groups=settings.price_groups,
                                              periods=Periods(settings.budgets.timezone)))
        finally:
            if funds is not None:
                await funds.close()
            await engine.dispose()

    try:
        return asyncio.run(go())
    except GatewayError as exc:
        fail(exc.message)
    except (SQLAlchemyError, OSError) as exc:
        # SQLAlchemy messages carry the SQL and a help link on further lines: keep the first.
        fail(f"database error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")


def _run_remote(action: Callable[[Any], Awaitable[T]], where: remote.Target) -> T:
    """The same action against a running server's admin API."""
    async def go() -> T:
        client = remote.Remote(where)  # no admin key: refused here, before any request
        try:
            return await action(client)
        finally:
            await client.close()

    try:
        return asyncio.run(go())
    except GatewayError as exc:
        fail(exc.message)


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"switchyard: {message}", err=True)
    raise typer.Exit(code)


def emit(obj: Any, as_json: bool, render: Callable[[Any], None]) -> None:
    if as_json:
        typer.echo(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode())
    else:
        render(obj)


def show(table: Table) -> None:
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 200  # piped to a file or a program: whole rows, not 80-column folds
    console.print(table)


def add_row(table: Table, *cells: str | Text) -> None:
    # Names come from operators and clients: plain Text, so "[...]" is never read as markup.
    table.add_row(*[Text(c) if isinstance(c, str) else c for c in cells])


def money(amount: str | None) -> str:
    """An exact usd() string shown as dollars, with at least cents: "12.5" -> "$12.50"."""
    if amount is None:
        return "-"
    sign, digits = ("-", amount[1:]) if amount.startswith("-") else ("", amount)
    whole, _, frac = digits.partition(".")
    return f"{sign}${whole}.{frac.ljust(2, '0')}"


def when(ts: int | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M") if ts else "-"


def limit_text(value: int | None) -> str:
    return "tier" if value is None else f"{value:,}"


def vertical(title: str, rows: Iterable[tuple[str, str | Text]]) -> Table:
    table = Table(title=Text(title), show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for name, value in rows:
        add_row(table, name, value)
    return table


def since_to_start(since: str | None) -> int | None:
    if since is None:
        return None
    m = _DURATION.match(since)
    if m is None:
        raise typer.BadParameter("use a number and a unit: 30m, 24h, 7d (s, m, h, d, w).", param_hint="--since")
    return int(time.time()) - int(m.group(1)) * _SECONDS[m.group(2)]


def split_list(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


# ---- organisations -----------------------------------------------------------------------


def org_rows(org: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [
        ("id", org["id"]), ("name", org["name"]), ("tier", org["tier"]),
        ("price multiplier", org["price_multiplier"]), ("billing", "prepaid" if org["prepaid"] else "postpaid"),
        ("balance", money(org["balance_usd"])), ("overdraft", money(org["overdraft_usd"])),
        ("rpm", limit_text(org["rpm_limit"])), ("tpm", limit_text(org["tpm_limit"])),
        ("output reserved", "model max" if org.get("max_reserve_tokens") is None else f"{org['max_reserve_tokens']:,} tokens"),
        ("created", when(org["created_at"])),
    ]


def render_org(org: Mapping[str, Any]) -> None:
    show(vertical(f"organization {org['name']}", org_rows(org)))


def render_orgs(listing: Mapping[str, Any]) -> None:
    table = Table("id", "name", "tier", "mult.", "billing", "balance", "rpm", "tpm", "created")
    table.columns[0].overflow = "fold"
    for org in listing["data"]:
        add_row(
            table, org["id"], org["name"], org["tier"], org["price_multiplier"], "prepaid" if org["prepaid"] else "postpaid",
            money(org["balance_usd"]), limit_text(org["rpm_limit"]), limit_text(org["tpm_limit"]), when(org["created_at"]),
        )
    show(table)


@orgs.command("create")
def orgs_create(
    name: Annotated[str, typer.Argument(help="A unique name; usable wherever ORG is asked for.")],
    tier: Annotated[str, typer.Option(help="Rate-limit tier.")] = "tier-1",
    price_multiplier: Annotated[str, typer.Option(help="Discount or markup on catalog prices, e.g. 0.7.")] = "1",
    postpaid: Annotated[bool, typer.Option("--postpaid", help="Meter but never refuse for funds.")] = False,
    overdraft_usd: Annotated[str, typer.Option(help="How far below zero a prepaid balance may go.")] = "0",
    rpm: Limit = None,
    tpm: Limit = None,
    max_reserve_tokens: ReserveCap = None,
    as_json: Json = False,
) -> None:
    """Create an organisation (prepaid, balance 0, unless --postpaid)."""
    body = {"name": name, "tier": tier, "price_multiplier": price_multiplier, "prepaid": not postpaid,
            "overdraft_usd": overdraft_usd, "rpm_limit": rpm, "tpm_limit": tpm,
            "max_reserve_tokens": max_reserve_tokens}
    emit(run(lambda admin: admin.create_org(body)), as_json, render_org)


@orgs.command("list")
def orgs_list(as_json: Json = False) -> None:
    """List organisations."""
    emit({"object": "list", "data": run(lambda admin: admin.list_orgs())}, as_json, render_orgs)


@orgs.command("show")
def orgs_show(org: Annotated[str, typer.Argument(help="Organisation id or name.")], as_json: Json = False) -> None:
    """Show one organisation."""
    emit(run(lambda admin: admin.get_org(org)), as_json, render_org)


def parse_limit(value: str, option: str) -> int | None:
    if value.strip().lower() in ("none", "null", "tier"):
        return None
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise typer.BadParameter("a non-negative integer, or 'none' to follow the tier.", param_hint=option)
    return number


@orgs.command("update")
def orgs_update(
    org: Annotated[str, typer.Argument(help="Organisation id or name.")],
    tier: Annotated[Optional[str], typer.Option(help="Rate-limit tier.")] = None,
    price_multiplier: Annotated[Optional[str], typer.Option(help="Discount or markup, e.g. 0.7.")] = None,
    rpm: Annotated[Optional[str], typer.Option(help="Requests per minute, or 'none' to follow the tier.")] = None,
    tpm: Annotated[Optional[str], typer.Option(help="Tokens per minute, or 'none' to follow the tier.")] = None,
    prepaid: Annotated[Optional[bool], typer.Option("--prepaid/--postpaid", help="Billing mode.")] = None,
    overdraft_usd: Annotated[Optional[str], typer.Option(help="Allowed overdraft in USD.")] = None,
    max_reserve_tokens: Annotated[Optional[str], typer.Option(
        help="Output tokens reserved for requests without max_tokens, or 'none' for the model's max.")] = None,
    price_group: Annotated[Optional[str], typer.Option(help="A price group of the config, or 'none'.")] = None,
    budget_usd: Annotated[Optional[str], typer.Option(help="A spending cap of its own in USD, or 'none'.")] = None,
    budget_period: Annotated[Optional[str], typer.Option(
        help="The cap resets daily, weekly or monthly, or 'none' (never).")] = None,
    as_json: Json = False,
) -> None:
    """Change an organisation's tier, price multiplier, limits, billing mode, price group or budget."""
    body: dict[str, Any] = {}
    for field, value in (("price_group", price_group), ("budget_usd", budget_usd), ("budget_period", budget_period)):
        if value is not None:
            body[field] = None if value.lower() == "none" else value
    if max_reserve_tokens is not None:
        body["max_reserve_tokens"] = parse_limit(max_reserve_tokens, "--max-reserve-tokens")
    for field, value in (("tier", tier), ("price_multiplier", price_multiplier), ("prepaid", prepaid),
                         ("overdraft_usd", overdraft_usd)):
        if value is not None:
            body[field] = value
    if rpm is not None:
        body["rpm_limit"] = parse_limit(rpm, "--rpm")
    if tpm is not None:
        body["tpm_limit"] = parse_limit(tpm, "--tpm")
    emit(run(lambda admin: admin.update_org(org, body)), as_json, render_org)


# ---- money -------------------------------------------------------------------------------


def topup(
    org: Annotated[str, typer.Argument(help="Organisation id or name.")],
    amount_usd: Annotated[str, typer.Argument(help="Exact decimal amount, e.g. 12.50 (at most 9 decimals).")],
    note: Annotated[Optional[str], typer.Option(help="Kept with the ledger entry.")] = None,
    as_json: Json = False,
) -> None:
    """Add prepaid funds to an organisation (one ledger entry)."""
    try:
        nanos = to_nanos(amount_usd.strip(), "amount_usd")
    except GatewayError as exc:
        fail(exc.message)
    emit(run(lambda admin: admin.move_money(org, nanos, "topup", note)), as_json, render_org)


def render_balance(b: Mapping[str, Any]) -> None:
    agree = Text("yes", "green") if b["consistent"] else Text("NO: the balance differs from the ledger", "bold red")
    show(vertical("balance", [
        ("org", b["org_id"]), ("balance", money(b["balance_usd"])), ("ledger sum", money(usd(b["ledger_sum_nanos"]))),
        ("consistent", agree),
    ]))


def balance(org: Annotated[str, typer.Argument(help="Organisation id or name.")], as_json: Json = False) -> None:
    """An organisation's balance beside its ledger sum: they must agree to the nano-dollar."""
    emit(run(lambda admin: admin.balance(org)), as_json, render_balance)


# ---- keys --------------------------------------------------------------------------------


def key_status(key: Mapping[str, Any]) -> str:
    if key["revoked_at"]:
        return "revoked"
    if key["expires_at"] and key["expires_at"] <= time.time():
        return "expired"
    return "active"


def render_keys(listing: Mapping[str, Any]) -> None:
    table = Table("id", "org", "name", "key", "models", "budget", "spent", "status", "expires")
    for col in (0, 1, 3):
        table.columns[col].overflow = "fold"
    for k in listing["data"]:
        models = ",".join(k["allowed_models"]) if k["allowed_models"] is not None else "all"
        add_row(table, k["id"], k["org_id"], k["name"], k["key_hint"], models, money(k["budget_usd"]),
                      money(k["spent_usd"]), key_status(k), when(k["expires_at"]))
    show(table)


def render_new_key(key: Mapping[str, Any]) -> None:
    for warning in key.get("warnings") or ():
        typer.secho(f"warning: {warning}", err=True, fg="yellow")
    typer.echo(f"Created API key {key['id']} ('{key['name']}') for {key['org_id']}:")
    typer.echo("")
    typer.secho(f"    {key['key']}", bold=True)  # plain echo: never wrapped or cut by a table
    typer.echo("")
    typer.echo("Store it now: this is the only time it is shown. switchyard keeps only its hash.")


def render_key(key: Mapping[str, Any]) -> None:
    show(vertical(f"API key {key['id']}", [
        ("id", key["id"]), ("org", key["org_id"]), ("name", key["name"]), ("key", key["key_hint"]),
        ("status", key_status(key)), ("revoked", when(key["revoked_at"])),
    ]))


@keys.command("create")
def keys_create(
    org: Annotated[str, typer.Option("--org", help="Organisation id or name.")],
    name: Annotated[Optional[str], typer.Option(help="A label for lists.")] = None,
    models: Annotated[Optional[str], typer.Option(help="Allowed models, comma-separated (default: all).")] = None,
    budget_usd: Annotated[Optional[str], typer.Option(help="Most this key may spend, in USD.")] = None,
    budget_period: Annotated[Optional[str], typer.Option(
        help="The budget resets daily, weekly or monthly (calendar, in budgets.timezone); default: never.")] = None,
    expires_in_days: Annotated[Optional[int], typer.Option(min=1, help="Expire after this many days.")] = None,
    rpm: Limit = None,
    tpm: Limit = None,
    max_reserve_tokens: ReserveCap = None,
    as_json: Json = False,
) -> None:
    """Create an API key. It is printed once; only its hash is stored."""
    body = {
        "org": org, "name": name, "allowed_models": split_list(models), "budget_usd": budget_usd,
        "budget_period": budget_period,
        "expires_at": int(time.time()) + expires_in_days * 86400 if expires_in_days else None,
        "rpm_limit": rpm, "tpm_limit": tpm, "max_reserve_tokens": max_reserve_tokens,
    }
    emit(run(lambda admin: admin.create_key(body)), as_json, render_new_key)


@keys.command("list")
def keys_list(
    org: Annotated[Optional[str], typer.Option("--org", help="Only this organisation's keys.")] = None,
    as_json: Json = False,
) -> None:
    """List keys (hints only: the keys themselves are never stored)."""
    emit({"object": "list", "data": run(lambda admin: admin.list_keys(org))}, as_json, render_keys)


@keys.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key's id (key_...), not the key.")],
                as_json: Json = False) -> None:
    """Revoke a key; running servers refuse it within a second."""
    emit(run(lambda admin: admin.revoke_key(key_id)), as_json, render_key)


# ---- usage -------------------------------------------------------------------------------


def render_usage(report: Mapping[str, Any]) -> None:
    rows = report["data"]
    groups = [c for c in ("org_id", "key_id", "model", "deployment", "bucket_start") if rows and c in rows[0]]
    measures = ("requests", "input_tokens", "cached_tokens", "output_tokens", "image_tokens")
    table = Table(*[g.removesuffix("_id").replace("_start", "") for g in groups],
                  *[m.removesuffix("_tokens") for m in measures], "cost")
    for r in rows:
        cells = [when(r[g]) if g == "bucket_start" else str(r[g]) for g in groups]
        add_row(table, *cells, *[f"{r[m]:,}" for m in measures], money(r["cost_usd"]))
    show(table)


def usage(
    org: Annotated[Optional[str], typer.Option("--org", help="Organisation id or name.")] = None,
    key: Annotated[Optional[str], typer.Option("--key", help="A key id.")] = None,
    group_by: Annotated[Optional[str], typer.Option(help="Comma-separated: org, key, model, deployment.")] = None,
    bucket: Annotated[Optional[str], typer.Option(help="Time buckets: minute, hour or day.")] = None,
    since: Annotated[Optional[str], typer.Option(help="Only the last 30m, 24h, 7d, ...")] = None,
    as_json: Json = False,
) -> None:
    """Requests, tokens and cost, grouped and bucketed."""
    start = since_to_start(since)

    async def report(admin: AccountsAdmin) -> dict[str, Any]:
        org_id = (await admin.get_org(org))["id"] if org else None  # names work too; unknown ones fail
        return await admin.usage(org_id=org_id, key_id=key, group_by=split_list(group_by) or [],
                                 bucket=bucket, start=start)

    emit(run(report), as_json, render_usage)
