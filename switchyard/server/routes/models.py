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


# The API path of each catalog endpoint, as a client calls it.
_PATHS = {
    "chat.completions": "/v1/chat/completions", "responses": "/v1/responses", "completions": "/v1/completions",
    "embeddings": "/v1/embeddings", "moderations": "/v1/moderations", "images.generations": "/v1/images/generations",
    "images.edits": "/v1/images/edits", "images.variations": "/v1/images/variations",
    "audio.transcriptions": "/v1/audio/transcriptions", "audio.translations": "/v1/audio/translations",
    "audio.speech": "/v1/audio/speech",
}


def _model_object(name: str, spec: ModelSpec) -> dict[str, Any]:
    """OpenAI's model object, and (ours) the endpoints that serve it: chat models answer
    Anthropic's Messages API too, and Responses by translation."""
    endpoints = {_PATHS[e] for e in spec.endpoints}
    if "chat.completions" in spec.endpoints:
        endpoints |= {"/v1/responses", "/v1/messages"}  # both translated from chat where not native
    return {"id": name, "object": "model", "created": spec.created, "owned_by": spec.owned_by,
            "endpoints": sorted(endpoints)}


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
