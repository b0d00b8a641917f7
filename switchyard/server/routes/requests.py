"""GET /v1/requests and /v1/requests/{id}: a key looks up its own requests (cost, tokens,
latency, deployment, attempts), in the spirit of OpenRouter's generation lookup."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchyard.metering import request_log
from switchyard.metering.request_log import LogFilter
from switchyard.server.auth import caller
from switchyard.server.responses import JSONResponse
from switchyard.server.state import AppState
from switchyard.wire.errors import invalid_request, not_found


def log_filter(request: Request, key_id: str | None) -> LogFilter:
    q = request.query_params
    try:
        start = int(q["start"]) * 1000 if q.get("start") else None
        end = int(q["end"]) * 1000 if q.get("end") else None
    except ValueError:
        raise invalid_request("'start' and 'end' are unix timestamps in seconds.", param="start") from None
    status = q.get("status") or None
    if status is not None and status not in request_log.STATUSES:
        raise invalid_request(f"'status' must be one of {', '.join(request_log.STATUSES)}.", param="status")
    return LogFilter(key_id=key_id, model=q.get("model") or None, status=status, start=start, end=end)


def page_size(request: Request) -> int:
    try:
        limit = int(request.query_params.get("limit", "50"))
    except ValueError:
        raise invalid_request("'limit' must be an integer.", param="limit") from None
    if not 1 <= limit <= request_log.MAX_PAGE:
        raise invalid_request(f"'limit' must be between 1 and {request_log.MAX_PAGE}.", param="limit")
    return limit


async def list_requests(request: Request) -> Response:
    state: AppState = request.app.state.sy
    principal = caller(request)
    page = await request_log.page(state.admin.engine, principal.org.id, log_filter(request, principal.key_id),
                                  request.query_params.get("after"), page_size(request))
    return JSONResponse(page)


async def get_request(request: Request) -> Response:
    state: AppState = request.app.state.sy
    principal = caller(request)
    request_id = request.path_params["request_id"]
    found = await request_log.one(state.admin.engine, principal.org.id, request_id)
    if found is None or found["key_id"] != principal.key_id:
        raise not_found(f"No request '{request_id}' made with this key.", param="request_id")
    return JSONResponse(found)


def routes() -> list[Route]:
    return [
        Route("/v1/requests", list_requests, methods=["GET"]),
        Route("/v1/requests/{request_id}", get_request, methods=["GET"]),
    ]
