"""POST /v1/chat/completions."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from switchyard.server.body import read_json
from switchyard.server.responses import JSONResponse, sse_response
from switchyard.server.state import AppState


async def chat_completions(request: Request) -> Response:
    state: AppState = request.app.state.sy
    principal = state.directory.authenticate(request.headers.get("authorization"))
    raw = await read_json(request, state.settings.max_body_bytes)
    outcome = await state.gateway.chat(raw, principal, request.state.request_id)
    if outcome.frames is not None:
        return sse_response(outcome.frames, outcome.headers, outcome.finish)
    return JSONResponse(outcome.body, headers=outcome.headers)
