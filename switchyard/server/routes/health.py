"""GET /healthz: ready once every deployment has started."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from switchyard.server.responses import JSONResponse


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})
