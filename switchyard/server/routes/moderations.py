"""POST /v1/moderations."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from switchyard.endpoints import moderations as endpoint
from switchyard.server.model_call import model_call


async def create_moderation(request: Request) -> Response:
    return await model_call(request, endpoint.serve)
