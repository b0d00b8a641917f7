"""`switchyard alerts show | set ORG`: an organisation's alert settings, straight on the database
(the admin API's /admin/v1/organizations/{org}/alerts does the same over HTTP)."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from switchyard.cli.remote import operations
from switchyard.cli.admin import Json, emit, run, show, vertical

alerts = typer.Typer(no_args_is_help=True, add_completion=False,
                     help="Alerts: where an organisation is told of its balance, budgets and spend spikes.")


def render(rules: dict[str, Any]) -> None:
    rows = [("org", rules["org_id"]), ("webhook", rules["webhook_url"] or "-"), ("email", rules["email"] or "-"),
            ("balance below", rules["balance_below_usd"] or "-"),
            ("budgets at", ", ".join(f"{p}%" for p in rules["budget_percents"]) or "-"),
            ("key hourly spend", rules["key_hourly_usd"] or "-")]
    if rules.get("webhook_secret"):
        rows.append(("webhook secret (shown once)", rules["webhook_secret"]))
    show(vertical("alerts", rows))


@alerts.command("show")
def show_alerts(org: Annotated[str, typer.Argument(help="Organisation id or name.")], as_json: Json = False) -> None:
    """What an organisation watches and where it is told."""
    async def go(admin: Any) -> dict[str, Any]:
        return await operations(admin).get_rules(org)

    emit(run(go), as_json, render)


@alerts.command("set")
def set_alerts(
    org: Annotated[str, typer.Argument(help="Organisation id or name.")],
    webhook: Annotated[Optional[str], typer.Option(help="An https URL to POST signed alerts to.")] = None,
    email: Annotated[Optional[str], typer.Option(help="An address to mail alerts to (alerts.smtp_host set).")] = None,
    balance_below_usd: Annotated[Optional[str], typer.Option(help="Alert when the balance drops below this.")] = None,
    budget_percents: Annotated[str, typer.Option(help="Alert when a budget reaches these percentages.")] = "80,100",
    key_hourly_usd: Annotated[Optional[str], typer.Option(help="Alert when a key spends this much in an hour.")] = None,
    as_json: Json = False,
) -> None:
    """Replace an organisation's alert settings (a new webhook's secret is printed once)."""
    percents = [int(p) for p in budget_percents.split(",") if p.strip().isdigit()]
    body = {"webhook_url": webhook, "email": email, "balance_below_usd": balance_below_usd,
            "budget_percents": percents, "key_hourly_usd": key_hourly_usd}

    async def go(admin: Any) -> dict[str, Any]:
        return await operations(admin).set_rules(org, body)

    emit(run(go), as_json, render)
