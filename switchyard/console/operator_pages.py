"""The operator's pages: every organisation, people and invitations, deployments' health,
platform-wide usage and top spenders, and a live feed of requests."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from switchyard.accounts.admin import now_ms, to_nanos
from switchyard.console.pages import charts, day_start
from switchyard.console.web import Visit, event_stream, page, render
from switchyard.metering import rollups
from switchyard.metering.rollups import DAY, HOUR, MINUTE
from switchyard.wire.errors import invalid_request


def _state(visit: Visit) -> Any:
    return visit.request.app.state.sy


def _base_url(visit: Visit) -> str:
    return str(visit.request.base_url).rstrip("/")


async def dashboard(visit: Visit) -> Response:
    state = _state(visit)
    engine = state.admin.engine
    now = now_ms()
    month_from = day_start(now) - 29 * DAY
    hour_start = now - now % MINUTE - 59 * MINUTE
    today, top_orgs, last_hour, days = await asyncio.gather(
        rollups.totals(engine, org_id=None, start=day_start(now), end=now + HOUR),
        rollups.top(engine, by="org", start=month_from, end=now + HOUR),
        rollups.series(engine, org_id=None, span=MINUTE, bucket=MINUTE, start=hour_start, end=now + MINUTE, group="model"),
        rollups.series(engine, org_id=None, span=HOUR, bucket=DAY, start=month_from, end=now + HOUR, group="model"),
    )
    names = {o["id"]: o["name"] for o in await state.admin.list_orgs()}
    data = {"today": today, "top_spenders": [{**t, "org_name": names.get(t["group"], t["group"])} for t in top_orgs],
            "last_hour": charts(last_hour, hour_start, now - now % MINUTE + MINUTE, MINUTE),
            "last_30_days": charts(days, month_from, day_start(now) + DAY, DAY),
            "deployments": deployments_health(visit)}
    return render(visit, "operator/dashboard.html", data)


def deployments_health(visit: Visit) -> list[dict[str, Any]]:
    state = _state(visit)
    router = state.gateway.router
    out = []
    for dep in state.table.deployments():
        h = router.health_of(dep)
        breaker = "closed" if h.consecutive_failures < h.failure_threshold else ("half-open" if h.allows() else "open")
        out.append({"id": dep.id, "model": dep.public_name, "provider": dep.config.provider,
                    "upstream_model": dep.config.model, "breaker": breaker, "in_flight": h.in_flight,
                    "consecutive_failures": h.consecutive_failures,
                    "latency_ms": round(h.ttft_ewma * 1000, 1) if h.ttft_ewma is not None else None})
    return out


async def deployments(visit: Visit) -> Response:
    engine = _state(visit).admin.engine
    now = now_ms()
    recent = await rollups.top(engine, by="deployment", start=now - now % HOUR - HOUR, end=now + HOUR, limit=1000)
    rates = {r["group"]: r for r in recent}
    rows = []
    for d in deployments_health(visit):
        r = rates.get(d["id"])
        total = (r["requests"] + r["errors"]) if r else 0
        rows.append({**d, "requests_last_hours": r["requests"] if r else 0,
                     "error_rate": round(r["errors"] / total, 4) if r and total else None})
    return render(visit, "operator/deployments.html", {"data": rows})


async def orgs(visit: Visit) -> Response:
    state = _state(visit)
    if visit.request.method == "POST":
        form = visit.form
        assert form is not None
        body: dict[str, Any] = {"name": str(form.get("name") or ""), "tier": str(form.get("tier") or "tier-1"),
                                "price_multiplier": str(form.get("price_multiplier") or "1"),
                                "prepaid": form.get("billing_mode", "prepaid") == "prepaid",
                                "overdraft_usd": str(form.get("overdraft_usd") or "0")}
        org = await state.admin.create_org(body)
        await state.directory.refresh()
        return RedirectResponse(f"/console/operator/orgs/{org['id']}", status_code=303)
    return render(visit, "operator/orgs.html", {"data": await state.admin.list_orgs()}, tiers=sorted(state.admin.tiers))


async def org_detail(visit: Visit) -> Response:
    state = _state(visit)
    org_id = visit.request.path_params["org_id"]
    org = await state.admin.get_org(org_id)
    invitation = None
    if visit.request.method == "POST":
        form = visit.form
        assert form is not None
        action = form.get("action")
        if action in ("topup", "adjustment"):
            amount = to_nanos(str(form.get("amount_usd") or ""), "amount_usd")
            note = str(form.get("note") or "").strip()[:500] or None
            if action == "adjustment" and not note:
                raise invalid_request("An adjustment needs a reason.", param="note")
            if action == "topup" and amount <= 0:
                raise invalid_request("A top-up must be a positive amount.", param="amount_usd")
            await state.admin.move_money(org_id, amount, action, note)
        elif action == "update":
            await state.admin.update_org(org_id, {
                "tier": str(form.get("tier")), "price_multiplier": str(form.get("price_multiplier")),
                "prepaid": form.get("billing_mode") == "prepaid", "overdraft_usd": str(form.get("overdraft_usd") or "0")})
        elif action in ("member_role", "member_remove"):
            people = state.console.people
            user = await people.get_user(str(form.get("user_id") or ""))
            if action == "member_role":
                await people.add_membership(user["id"], org_id, str(form.get("role")))
            else:
                await people.remove_membership(user["id"], org_id)
        elif action == "invite":
            email = str(form.get("email") or "").strip() or None
            token, invitation = await visit.request.app.state.sy.console.people.invite(
                org_id, str(form.get("role") or "member"), email, visit.user["id"],
                state.console.settings.setup_link_hours * 7)
            invitation["link"] = f"{_base_url(visit)}/console/invite/{token}"
        else:
            raise invalid_request("Unknown action.", param="action")
        await state.directory.refresh()
        if invitation is None:
            return RedirectResponse(visit.request.url.path, status_code=303)
        org = await state.admin.get_org(org_id)
    data = {"org": org, "members": await state.console.people.org_members(org_id),
            "invitations": await state.console.people.list_invitations(org_id),
            "api_keys": await state.admin.list_keys(org_id), "new_invitation": invitation}
    return render(visit, "operator/org.html", data, tiers=sorted(state.admin.tiers))


async def users(visit: Visit) -> Response:
    people = _state(visit).console.people
    return render(visit, "operator/users.html", {"data": await people.list_users()})


async def feed(visit: Visit) -> Response:
    return render(visit, "operator/feed.html", {})


async def feed_events(visit: Visit) -> Response:
    """Every request on the platform as it is billed (server-sent events)."""
    state = _state(visit)
    return event_stream(state.events, lambda event: True)


def routes() -> list[Route]:
    op = "/console/operator"
    return [
        Route(op, page(dashboard, org=False, operator=True), methods=["GET"]),
        Route(op + "/orgs", page(orgs, org=False, operator=True), methods=["GET", "POST"]),
        Route(op + "/orgs/{org_id}", page(org_detail, org=False, operator=True), methods=["GET", "POST"]),
        Route(op + "/users", page(users, org=False, operator=True), methods=["GET"]),
        Route(op + "/deployments", page(deployments, org=False, operator=True), methods=["GET"]),
        Route(op + "/feed", page(feed, org=False, operator=True), methods=["GET"]),
        Route(op + "/feed/events", page(feed_events, org=False, operator=True), methods=["GET"]),
    ]
