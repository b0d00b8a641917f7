"""POST /v1/completions (legacy text completions)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from switchyard.endpoints import completions as endpoint
from switchyard.server.model_call import model_call


async def create_completion(request: Request) -> Response:
    return await model_call(request, endpoint.serve)
