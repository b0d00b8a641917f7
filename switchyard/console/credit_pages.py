"""Credits in the console: a customer redeems a code and shares the referral link (and sees what
it earned); an operator makes batches of codes (downloaded once, as CSV) and sees how many
each batch has had redeemed."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response
from starlette.routing import Route

from switchyard.accounts.admin import now_ms, to_nanos
from switchyard.credits.codes import codes_csv
from switchyard.console.web import Visit, page, render
from switchyard.metering.cost import usd
from switchyard.server.routes.credits import redeem_attempt_allowed
from switchyard.wire.errors import GatewayError, invalid_request


def _state(visit: Visit) -> Any:
    return visit.request.app.state.sy


async def credits(visit: Visit) -> Response:
    """GET: the redeem form and the referral program; POST: redeem a code for this organisation."""
    assert visit.org is not None
    state = _state(visit)
    message, error, status = None, None, 200
    if visit.request.method == "POST":
        client = visit.request.client.host if visit.request.client else "-"
        try:
            await redeem_attempt_allowed(state, f"user:{visit.user['id']}", client)
            done = await state.codes.redeem(str(visit.form.get("code") or ""), visit.org["id"], visit.user["id"])
            await state.directory.refresh()
            message = f"Redeemed: {usd(done.amount_nanos)} USD added from '{done.batch_name}'."
            visit.org = await state.admin.get_org(visit.org["id"])
        except GatewayError as err:
            error, status = err.message, err.status
    summary = await state.admin.referrals.summary(state.admin.engine, visit.org["id"])
    summary["link"] = f"{str(visit.request.base_url).rstrip('/')}/console/signup?ref={summary['code']}"
    data = {"balance_nanos": visit.org["balance_nanos"], "referrals": summary, "message": message, "error": error,
            "program_on": summary["percent"] != "0"}
    return render(visit, "credits.html", data, status=status)


async def code_batches(visit: Visit) -> Response:
    """GET: every batch; POST: a new batch, answered with its codes as a CSV download (the only
    time they are shown: switchyard keeps their hashes)."""
    state = _state(visit)
    error = None
    if visit.request.method == "POST":
        form = visit.form
        try:
            days = str(form.get("expires_in_days") or "").strip()
            if days and (not days.isdigit() or int(days) < 1):
                raise invalid_request("Expiry must be a whole number of days.", param="expires_in_days")
            count = str(form.get("count") or "")
            batch, codes = await state.codes.create_batch(
                form.get("name"), to_nanos(str(form.get("value_usd") or ""), "value_usd"),
                int(count) if count.isdigit() else count, now_ms() + int(days) * 86_400_000 if days else None,
                str(form.get("org_id") or "") or None, str(form.get("tier") or "") or None)
        except GatewayError as err:
            error = err.message
        else:
            return Response(codes_csv(batch, codes), media_type="text/csv", headers={
                "content-disposition": f'attachment; filename="{batch["id"]}.csv"', "cache-control": "no-store"})
    data = {"batches": await state.codes.list_batches(), "tiers": sorted(state.admin.tiers), "error": error,
            "orgs": await state.admin.list_orgs()}
    return render(visit, "operator/codes.html", data, status=400 if error else 200)


def routes() -> list[Route]:
    return [
        Route("/console/o/{org}/credits", page(credits, need="billing"), methods=["GET", "POST"]),
        Route("/console/operator/codes", page(code_batches, org=False, operator=True), methods=["GET", "POST"]),
    ]
