"""POST /v1/chat/completions."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from switchyard.endpoints import chat
from switchyard.server.model_call import model_call


async def chat_completions(request: Request) -> Response:
    return await model_call(request, chat.serve)
