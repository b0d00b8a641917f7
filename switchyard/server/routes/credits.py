"""Credit a customer buys elsewhere and brings here: POST /v1/credits/redeem (a redemption code),
GET /v1/referrals (the organisation's referral code, link and earnings), and the operator's
code batches under /admin/v1/code-batches (made, listed, withdrawn; codes shown once, as CSV)."""

from __future__ import annotations

import math
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchyard.accounts.admin import to_nanos
from switchyard.credits.codes import codes_csv
from switchyard.limits import Limits, Scope
from switchyard.metering.cost import usd
from switchyard.server.auth import caller
from switchyard.server.responses import JSONResponse
from switchyard.server.routes.admin import admin_only, object_body
from switchyard.server.state import AppState
from switchyard.wire.errors import GatewayError, invalid_request


async def redeem_attempt_allowed(state: AppState, who: str, ip: str) -> None:
    """Against guessing: so many attempts a minute per key (or user) and per address, shared by
    every worker when limits live in Redis. Past it, a 429 with Retry-After."""
    settings = state.settings.credits
    admission = await state.gateway.billing.limiter.admit([
        Scope(f"redeem:{who}", Limits(settings.redeem_per_minute, None)),
        Scope(f"redeem:ip:{ip}", Limits(settings.redeem_per_minute_per_ip, None))], 0)
    if not admission.allowed:
        raise GatewayError(429, "Too many redemption attempts; wait a minute before trying again.", type="requests",
                           code="rate_limit_exceeded",
                           headers={"retry-after": str(max(1, math.ceil(admission.retry_after or 60)))})


async def redeem(request: Request) -> Response:
    state: AppState = request.app.state.sy
    principal = caller(request)
    body = await object_body(request)
    await redeem_attempt_allowed(state, f"key:{principal.key_id}", request.client.host if request.client else "-")
    done = await state.codes.redeem(body.get("code"), principal.org.id)
    await state.directory.refresh()
    balance = (await state.admin.get_org(principal.org.id))["balance_usd"]
    return JSONResponse({"object": "credit.redemption", "org_id": done.org_id, "amount_usd": usd(done.amount_nanos),
                         "batch": done.batch_name, "ledger_entry_id": done.entry_id, "balance_usd": balance})


async def referrals(request: Request) -> Response:
    state: AppState = request.app.state.sy
    principal = caller(request)
    summary = await state.admin.referrals.summary(state.admin.engine, principal.org.id)
    summary["link"] = f"{str(request.base_url).rstrip('/')}/console/signup?ref={summary['code']}"
    return JSONResponse(summary)


# ---- the operator's side --------------------------------------------------------------------


async def create_batch(request: Request, state: AppState) -> Any:
    body = await object_body(request)
    expires = body.get("expires_at")
    if expires is not None and (type(expires) is not int or expires <= 0):
        raise invalid_request("'expires_at' must be a Unix time in seconds.", param="expires_at")
    org_id = body.get("org_id")
    tier = body.get("tier")
    if tier is not None and tier not in state.admin.tiers:
        raise invalid_request(f"Unknown tier '{tier}'.", param="tier")
    batch, codes = await state.codes.create_batch(
        body.get("name"), to_nanos(body.get("value_usd"), "value_usd"), body.get("count"),
        expires * 1000 if expires is not None else None, str(org_id) if org_id else None, tier)
    if request.query_params.get("format") == "csv" or "text/csv" in request.headers.get("accept", ""):
        return Response(codes_csv(batch, codes), media_type="text/csv", headers={
            "content-disposition": f'attachment; filename="{batch["id"]}.csv"', "cache-control": "no-store"})
    return {**batch, "codes": codes}  # shown this once: only their hashes are kept


async def list_batches(request: Request, state: AppState) -> Any:
    return {"object": "list", "data": await state.codes.list_batches()}


async def get_batch(request: Request, state: AppState) -> Any:
    return await state.codes.get_batch(request.path_params["batch_id"])


async def revoke_batch(request: Request, state: AppState) -> Any:
    return await state.codes.revoke_batch(request.path_params["batch_id"])


async def reverse_entry(request: Request, state: AppState) -> Any:
    body = await object_body(request) if int(request.headers.get("content-length") or 0) else {}
    try:
        entry_id = int(request.path_params["entry_id"])
    except ValueError:
        raise invalid_request("The entry id must be a number.", param="entry_id") from None
    note = body.get("note")
    return await state.admin.reverse_entry(request.path_params["org"], entry_id, note if isinstance(note, str) else None)


async def org_referrals(request: Request, state: AppState) -> Any:
    org = await state.admin.get_org(request.path_params["org"])
    return await state.admin.referrals.summary(state.admin.engine, org["id"])


def routes() -> list[Route]:
    p = "/admin/v1"
    return [
        Route("/v1/credits/redeem", redeem, methods=["POST"]),
        Route("/v1/referrals", referrals, methods=["GET"]),
        Route(f"{p}/code-batches", admin_only(create_batch), methods=["POST"]),
        Route(f"{p}/code-batches", admin_only(list_batches), methods=["GET"]),
        Route(f"{p}/code-batches/{{batch_id}}", admin_only(get_batch), methods=["GET"]),
        Route(f"{p}/code-batches/{{batch_id}}/revoke", admin_only(revoke_batch), methods=["POST"]),
        Route(f"{p}/organizations/{{org}}/ledger/{{entry_id}}/reverse", admin_only(reverse_entry), methods=["POST"]),
        Route(f"{p}/organizations/{{org}}/referrals", admin_only(org_referrals), methods=["GET"]),
    ]
