"""GET /v1/usage: a key reads its own usage (never another key's or organisation's)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from switchyard.server.responses import JSONResponse
from switchyard.server.auth import caller
from switchyard.server.state import AppState
from switchyard.wire.errors import invalid_request


def usage_query(request: Request) -> dict[str, Any]:
    q = request.query_params
    try:
        start = int(q["start"]) if "start" in q else None
        end = int(q["end"]) if "end" in q else None
    except ValueError:
        raise invalid_request("'start' and 'end' are unix timestamps in seconds.", param="start") from None
    group_by = [g for g in q.get("group_by", "").split(",") if g]
    return {"group_by": group_by, "bucket": q.get("bucket"), "start": start, "end": end}


async def own_usage(request: Request) -> Response:
    state: AppState = request.app.state.sy
    principal = caller(request)
    query = usage_query(request)
    if set(query["group_by"]) - {"model"}:
        raise invalid_request("A key's own usage can be grouped by model only.", param="group_by")
    return JSONResponse(await state.admin.usage(key_id=principal.key_id, org_id=principal.org.id, **query))
