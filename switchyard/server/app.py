"""The ASGI application factory (uvicorn calls `create_app` once per worker)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from switchyard.accounts.keys import KeyRing, digest, ensure_master_key
from switchyard.catalog import load_catalog
from switchyard.config import Settings, load_settings
from switchyard.gateway import Gateway
from switchyard.routing.table import ModelTable
from switchyard.server.request_id import RequestIdMiddleware
from switchyard.server.responses import error_response
from switchyard.server.routes.chat import chat_completions
from switchyard.server.routes.health import healthz
from switchyard.server.routes.models import get_model, list_models
from switchyard.server.state import AppState
from switchyard.wire.errors import GatewayError, server_error

log = logging.getLogger("switchyard.server")


async def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        err = GatewayError(404, f"Unknown request URL: {request.method} {request.url.path}.", code="unknown_url")
    elif exc.status_code == 405:
        err = GatewayError(405, f"Method {request.method} is not allowed for {request.url.path}.", code="method_not_allowed")
    else:
        err = GatewayError(exc.status_code, str(exc.detail))
    return error_response(err)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(server_error())


def build_app(settings: Settings) -> ASGIApp:
    catalog = load_catalog(overrides=settings.catalog_overrides)
    table = ModelTable(settings, catalog)
    master_digest, new_key = ensure_master_key(settings.master_key, settings.master_key_file)
    if new_key:
        print(f"switchyard: generated admin key (shown once, store it now): {new_key}", flush=True)
    keys = KeyRing([master_digest], [digest(k) for k in settings.api_keys])
    state = AppState(settings=settings, keys=keys, table=table, gateway=Gateway(table))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await table.start()
        try:
            yield
        finally:
            await table.close()

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/models/{model_id:path}", get_model, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        exception_handlers={
            GatewayError: _gateway_error,
            HTTPException: _http_error,
            Exception: _unexpected_error,
        },
        lifespan=lifespan,
    )
    app.state.sy = state
    # Outermost, so even the 500s Starlette renders itself carry the request id.
    return RequestIdMiddleware(app)


def create_app() -> ASGIApp:
    settings = load_settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return build_app(settings)
