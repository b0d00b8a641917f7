"""Alert settings and the delivery log: GET/PUT /v1/alerts and GET /v1/alerts/deliveries (the
key's organisation), and the same under /admin/v1/organizations/{org}/alerts."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchyard.alerts.rules import delivery_log, get_rules, set_rules
from switchyard.server.auth import caller
from switchyard.server.responses import JSONResponse
from switchyard.server.routes.admin import admin_only, object_body
from switchyard.server.state import AppState


async def own_alerts(request: Request) -> Response:
    state: AppState = request.app.state.sy
    org_id = caller(request).org.id
    if request.method == "PUT":
        return JSONResponse(await set_rules(state.admin.engine, org_id, await object_body(request)))
    return JSONResponse(await get_rules(state.admin.engine, org_id))


async def own_deliveries(request: Request) -> Response:
    state: AppState = request.app.state.sy
    return JSONResponse({"object": "list", "data": await delivery_log(state.admin.engine, caller(request).org.id)})


async def org_alerts(request: Request, state: AppState) -> Any:
    org = await state.admin.get_org(request.path_params["org"])
    if request.method == "PUT":
        return await set_rules(state.admin.engine, org["id"], await object_body(request))
    return await get_rules(state.admin.engine, org["id"])


async def org_deliveries(request: Request, state: AppState) -> Any:
    org = await state.admin.get_org(request.path_params["org"])
    return {"object": "list", "data": await delivery_log(state.admin.engine, org["id"])}


def routes() -> list[Route]:
    p = "/admin/v1/organizations/{org}/alerts"
    return [
        Route("/v1/alerts", own_alerts, methods=["GET", "PUT"]),
        Route("/v1/alerts/deliveries", own_deliveries, methods=["GET"]),
        Route(p, admin_only(org_alerts), methods=["GET", "PUT"]),
        Route(p + "/deliveries", admin_only(org_deliveries), methods=["GET"]),
    ]
