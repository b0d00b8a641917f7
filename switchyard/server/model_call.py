"""The HTTP side of a model call, written once: authenticate, read the body, let the gateway
answer it, relay the answer as JSON or server-sent events."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from switchyard.accounts.records import Principal
from switchyard.gateway import Gateway, Outcome
from switchyard.server.auth import caller
from switchyard.server.body import read_json
from switchyard.server.responses import JSONResponse, sse_response
from switchyard.server.state import AppState

Endpoint = Callable[[Gateway, Any, Principal, str], Awaitable[Outcome]]


async def model_call(request: Request, endpoint: Endpoint) -> Response:
    state: AppState = request.app.state.sy
    principal = caller(request)
    raw = await read_json(request, state.settings.max_body_bytes, state.settings.limits)
    request.scope["state"]["model"] = raw.get("model") if isinstance(raw, dict) else None
    outcome = await endpoint(state.gateway, raw, principal, request.scope["state"]["request_id"])
    if outcome.frames is not None:
        return sse_response(outcome.frames, outcome.headers, outcome.finish)
    return JSONResponse(outcome.body, headers=outcome.headers)
