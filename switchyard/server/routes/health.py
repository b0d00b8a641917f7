"""GET /healthz (alive: the worker answers), GET /readyz (ready: its database and Redis answer
and the schema is at the newest migration) and GET /metrics (Prometheus; the metrics token or
the admin key)."""

from __future__ import annotations

import hmac

from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import Response

from switchyard.server.auth import caller
from switchyard.server.responses import JSONResponse
from switchyard.server.state import AppState
from switchyard.store.database import head_revision
from switchyard.wire.errors import GatewayError, invalid_api_key, permission_denied


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """503 (with what is wrong) while a dependency is down or the schema is behind: a load balancer
    sends this replica nothing meanwhile."""
    state: AppState = request.app.state.sy
    checks: dict[str, str] = {}
    try:
        async with state.admin.engine.connect() as conn:
            current = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
        checks["database"] = "ok"
        checks["migrations"] = "ok" if current == head_revision() else f"at {current}, not {head_revision()}"
    except Exception as exc:  # any failure to answer is "not ready", and says which
        checks["database"] = f"unreachable: {type(exc).__name__}"
    if state.redis is not None:
        try:
            await state.redis.ping()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"unreachable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ready" if ready else "not_ready", "checks": checks}, status_code=200 if ready else 503)


async def metrics(request: Request) -> Response:
    state: AppState = request.app.state.sy
    if not state.settings.metrics_enabled:
        raise GatewayError(404, "Metrics are off on this server (metrics.enabled: false).", code="not_found")
    token = state.settings.metrics_token
    if token:
        sent = (request.headers.get("authorization") or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(sent.encode(), token.encode()):
            raise invalid_api_key("GET /metrics needs the metrics token (metrics.token) as a Bearer token.")
    elif not caller(request).is_admin:
        raise permission_denied("GET /metrics needs the admin key (or set metrics.token).")
    from switchyard.observability.metrics import CONTENT_TYPE, exposition  # after the app set its directory

    if state.gauges is not None:  # the worker answering is exact; the others wrote theirs within a second
        state.gauges.sample()

    return Response(exposition(), media_type=CONTENT_TYPE)
