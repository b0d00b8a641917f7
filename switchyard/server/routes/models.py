"""GET /v1/models and GET /v1/models/{id}."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from switchyard.catalog import ModelSpec
from switchyard.server.responses import JSONResponse
from switchyard.server.auth import caller
from switchyard.server.state import AppState
from switchyard.wire.errors import model_not_found


def _model_object(name: str, spec: ModelSpec) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": spec.created, "owned_by": spec.owned_by}


async def list_models(request: Request) -> Response:
    state: AppState = request.app.state.sy
    principal = caller(request)
    data = [_model_object(name, spec) for name, spec in state.table.names() if principal.may_use(name)]
    return JSONResponse({"object": "list", "data": data})


async def get_model(request: Request) -> Response:
    state: AppState = request.app.state.sy
    principal = caller(request)
    model_id = request.path_params["model_id"]
    for name, spec in state.table.names():
        if name == model_id and principal.may_use(name):
            return JSONResponse(_model_object(name, spec))
    raise model_not_found(model_id)
