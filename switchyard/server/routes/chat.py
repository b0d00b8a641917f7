"""POST /v1/chat/completions."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from switchyard.server.auth import caller
from switchyard.server.body import read_json
from switchyard.server.responses import JSONResponse, sse_response
from switchyard.server.state import AppState


async def chat_completions(request: Request) -> Response:
    state: AppState = request.app.state.sy
    principal = caller(request)
    raw = await read_json(request, state.settings.max_body_bytes, state.settings.limits)
    request.scope["state"]["model"] = raw.get("model") if isinstance(raw, dict) else None
    outcome = await state.gateway.chat(raw, principal, request.scope["state"]["request_id"])
    if outcome.frames is not None:
        return sse_response(outcome.frames, outcome.headers, outcome.finish)
    return JSONResponse(outcome.body, headers=outcome.headers)
