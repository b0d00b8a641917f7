"""The admin API under /admin/v1 (master key only): organisations, keys, money, usage."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchyard.accounts.admin import to_nanos
from switchyard.server.body import read_json
from switchyard.server.responses import JSONResponse, UsageEventStream
from switchyard.server.routes.usage import usage_query
from switchyard.server.auth import caller
from switchyard.server.state import AppState
from switchyard.wire.errors import invalid_request, permission_denied

Handler = Callable[[Request, AppState], Awaitable[Any]]


def admin_only(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        state: AppState = request.app.state.sy
        principal = caller(request)
        if not principal.is_admin:
            raise permission_denied("The admin API needs the master key.")
        result = await handler(request, state)
        if request.method != "GET":
            await state.directory.refresh()  # this worker at once; the others within a poll interval
        return result if isinstance(result, Response) else JSONResponse(result)

    return endpoint


async def object_body(request: Request) -> dict[str, Any]:
    body = await read_json(request, 1024 * 1024, request.app.state.sy.settings.limits)
    if not isinstance(body, dict):
        raise invalid_request("The request body must be a JSON object.")
    return body


async def create_org(request: Request, state: AppState) -> Any:
    return await state.admin.create_org(await object_body(request))


async def list_orgs(request: Request, state: AppState) -> Any:
    return {"object": "list", "data": await state.admin.list_orgs()}


async def get_org(request: Request, state: AppState) -> Any:
    return await state.admin.get_org(request.path_params["org"])


async def update_org(request: Request, state: AppState) -> Any:
    return await state.admin.update_org(request.path_params["org"], await object_body(request))


async def topup(request: Request, state: AppState) -> Any:
    body = await object_body(request)
    amount = to_nanos(body.get("amount_usd"), "amount_usd")
    return await state.admin.move_money(request.path_params["org"], amount, "topup", body.get("note"))


async def adjust(request: Request, state: AppState) -> Any:
    body = await object_body(request)
    amount = to_nanos(body.get("amount_usd"), "amount_usd")
    return await state.admin.move_money(request.path_params["org"], amount, str(body.get("kind", "adjustment")), body.get("note"))


async def balance(request: Request, state: AppState) -> Any:
    result = await state.admin.balance(request.path_params["org"])
    # Money held right now by this worker's requests in flight (zero when idle).
    result["held_nanos"] = state.gateway.billing.funds.org_held(result["org_id"])
    return result


def _int_param(request: Request, name: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid_request(f"'{name}' must be an integer.", param=name) from None
    if not low <= value <= high:
        raise invalid_request(f"'{name}' must be between {low} and {high}.", param=name)
    return value


async def ledger(request: Request, state: AppState) -> Any:
    limit = _int_param(request, "limit", 100, 1, 1000) or 100
    after = _int_param(request, "after", None, 0, 2**63 - 1)
    return await state.admin.ledger(request.path_params["org"], limit, after)


async def create_key(request: Request, state: AppState) -> Any:
    return await state.admin.create_key(await object_body(request))


async def list_keys(request: Request, state: AppState) -> Any:
    return {"object": "list", "data": await state.admin.list_keys(request.query_params.get("org"))}


async def get_key(request: Request, state: AppState) -> Any:
    return await state.admin.get_key(request.path_params["key_id"])


async def update_key(request: Request, state: AppState) -> Any:
    return await state.admin.update_key(request.path_params["key_id"], await object_body(request))


async def revoke_key(request: Request, state: AppState) -> Any:
    return await state.admin.revoke_key(request.path_params["key_id"])


async def usage(request: Request, state: AppState) -> Any:
    q = request.query_params
    return await state.admin.usage(org_id=q.get("org"), key_id=q.get("key"), **usage_query(request))


async def usage_events(request: Request, state: AppState) -> Any:
    org = request.query_params.get("org")
    return UsageEventStream(state.events, lambda event: org is None or event["org_id"] == org)


# ---- people (the console's users, memberships, invitations) -------------------------------


async def list_users(request: Request, state: AppState) -> Any:
    return {"object": "list", "data": await state.console.people.list_users()}


async def create_user(request: Request, state: AppState) -> Any:
    body = await object_body(request)
    return await state.console.people.create_user(body.get("email"), body.get("display_name"), body.get("password"),
                                                  is_operator=body.get("is_operator") is True)


async def add_membership(request: Request, state: AppState) -> Any:
    body = await object_body(request)
    user = await state.console.people.get_user(request.path_params["user"])
    org = await state.admin.get_org(str(body.get("org_id") or body.get("org") or ""))
    await state.console.people.add_membership(user["id"], org["id"], body.get("role", "member"))
    return {"object": "membership", "user_id": user["id"], "org_id": org["id"], "role": body.get("role", "member")}


async def remove_membership(request: Request, state: AppState) -> Any:
    user = await state.console.people.get_user(request.path_params["user"])
    org = await state.admin.get_org(request.path_params["org"])
    await state.console.people.remove_membership(user["id"], org["id"])
    return {"object": "membership", "user_id": user["id"], "org_id": org["id"], "deleted": True}


async def create_invitation(request: Request, state: AppState) -> Any:
    body = await object_body(request)
    org = await state.admin.get_org(str(body.get("org_id") or body.get("org") or ""))
    email = body.get("email")
    token, invitation = await state.console.people.invite(
        org["id"], str(body.get("role", "member")), email if isinstance(email, str) and email else None, None,
        state.console.settings.setup_link_hours * 7)
    invitation["url"] = f"{str(request.base_url).rstrip('/')}/console/invite/{token}"  # shown once
    return invitation


async def list_invitations(request: Request, state: AppState) -> Any:
    return {"object": "list", "data": await state.console.people.list_invitations(request.query_params.get("org"))}


def routes() -> list[Route]:
    p = "/admin/v1"
    return [
        Route(f"{p}/organizations", admin_only(create_org), methods=["POST"]),
        Route(f"{p}/organizations", admin_only(list_orgs), methods=["GET"]),
        Route(f"{p}/organizations/{{org}}", admin_only(get_org), methods=["GET"]),
        Route(f"{p}/organizations/{{org}}", admin_only(update_org), methods=["PATCH"]),
        Route(f"{p}/organizations/{{org}}/topup", admin_only(topup), methods=["POST"]),
        Route(f"{p}/organizations/{{org}}/adjustments", admin_only(adjust), methods=["POST"]),
        Route(f"{p}/organizations/{{org}}/balance", admin_only(balance), methods=["GET"]),
        Route(f"{p}/organizations/{{org}}/ledger", admin_only(ledger), methods=["GET"]),
        Route(f"{p}/keys", admin_only(create_key), methods=["POST"]),
        Route(f"{p}/keys", admin_only(list_keys), methods=["GET"]),
        Route(f"{p}/keys/{{key_id}}", admin_only(get_key), methods=["GET"]),
        Route(f"{p}/keys/{{key_id}}", admin_only(update_key), methods=["PATCH"]),
        Route(f"{p}/keys/{{key_id}}", admin_only(revoke_key), methods=["DELETE"]),
        Route(f"{p}/usage", admin_only(usage), methods=["GET"]),
        Route(f"{p}/usage/events", admin_only(usage_events), methods=["GET"]),
        Route(f"{p}/users", admin_only(list_users), methods=["GET"]),
        Route(f"{p}/users", admin_only(create_user), methods=["POST"]),
        Route(f"{p}/users/{{user}}/memberships", admin_only(add_membership), methods=["POST"]),
        Route(f"{p}/users/{{user}}/memberships/{{org}}", admin_only(remove_membership), methods=["DELETE"]),
        Route(f"{p}/invitations", admin_only(create_invitation), methods=["POST"]),
        Route(f"{p}/invitations", admin_only(list_invitations), methods=["GET"]),
    ]
