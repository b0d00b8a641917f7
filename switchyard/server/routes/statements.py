"""Monthly statements as data: GET /v1/statements/{YYYY-MM} (the key's organisation) and
GET /admin/v1/organizations/{org}/statements/{YYYY-MM}; JSON, or CSV with `?format=csv`."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchyard.accounts.statements import monthly_statement, statement_csv
from switchyard.server.auth import caller
from switchyard.server.responses import JSONResponse
from switchyard.server.routes.admin import admin_only
from switchyard.server.state import AppState


async def _statement(request: Request, state: AppState, org_ref: str) -> Response:
    org = await state.admin.get_org(org_ref)
    month = request.path_params["month"]
    statement = await monthly_statement(state.admin.engine, org, month)
    if request.query_params.get("format") == "csv":
        return Response(statement_csv(statement), media_type="text/csv", headers={
            "content-disposition": f'attachment; filename="statement-{org["id"]}-{month}.csv"'})
    return JSONResponse(statement)


async def own_statement(request: Request) -> Response:
    state: AppState = request.app.state.sy
    return await _statement(request, state, caller(request).org.id)


async def org_statement(request: Request, state: AppState) -> Any:
    return await _statement(request, state, request.path_params["org"])


def routes() -> list[Route]:
    return [
        Route("/v1/statements/{month}", own_statement, methods=["GET"]),
        Route("/admin/v1/organizations/{org}/statements/{month}", admin_only(org_statement), methods=["GET"]),
    ]
