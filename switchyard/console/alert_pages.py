"""Alerts in the console: where an organisation is told (webhook, email), what it watches
(balance, budgets, a key's hourly spend), and the log of every delivery."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response
from starlette.routing import Route

from switchyard.alerts.rules import delivery_log, get_rules, set_rules
from switchyard.console.web import Visit, page, render
from switchyard.wire.errors import GatewayError


async def alerts(visit: Visit) -> Response:
    assert visit.org is not None
    engine = visit.request.app.state.sy.admin.engine
    org_id = visit.org["id"]
    error, secret, status = None, None, 200
    if visit.request.method == "POST":
        form = visit.form
        percents = [int(p) for p in str(form.get("budget_percents") or "").replace(" ", "").split(",") if p.isdigit()]
        body = {"webhook_url": str(form.get("webhook_url") or "").strip() or None,
                "email": str(form.get("email") or "").strip() or None,
                "balance_below_usd": str(form.get("balance_below_usd") or "").strip() or None,
                "key_hourly_usd": str(form.get("key_hourly_usd") or "").strip() or None,
                "budget_percents": percents, "rotate_secret": bool(form.get("rotate_secret"))}
        try:
            saved = await set_rules(engine, org_id, body)
            secret = saved.get("webhook_secret")
        except GatewayError as err:
            error, status = err.message, err.status
    data: dict[str, Any] = {"rules": await get_rules(engine, org_id), "deliveries": await delivery_log(engine, org_id, 50),
                            "error": error, "secret": secret}
    return render(visit, "alerts.html", data, status=status)


def routes() -> list[Route]:
    return [Route("/console/o/{org}/alerts", page(alerts, need="billing"), methods=["GET", "POST"])]
