"""The Images API: POST /v1/images/generations (JSON), /edits and /variations (multipart), and
GET /v1/images/content/{token}, where the `url` of a generated image points."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchyard.accounts.records import Principal
from switchyard.endpoints import images as endpoint
from switchyard.files.links import IMAGE_PURPOSE
from switchyard.server.auth import caller
from switchyard.server.body import read_json
from switchyard.server.form import read_form
from switchyard.server.responses import JSONResponse, sse_response
from switchyard.server.routes.files import file_bytes
from switchyard.server.state import AppState
from switchyard.wire.errors import not_found
from switchyard.wire.images import MAX_IMAGES, ImageRequest, parse_form, parse_generation


def routes() -> list[Route]:
    return [
        Route("/v1/images/generations", generations, methods=["POST"]),
        Route("/v1/images/edits", edits, methods=["POST"]),
        Route("/v1/images/variations", variations, methods=["POST"]),
        Route("/v1/images/content/{token}", image_content, methods=["GET"]),
    ]


async def generations(request: Request) -> Response:
    state: AppState = request.app.state.sy
    principal = caller(request)
    raw = await read_json(request, state.settings.max_body_bytes, state.settings.limits)
    return await _serve(request, principal, parse_generation(raw))


async def edits(request: Request) -> Response:
    return await _from_form(request, "edits")


async def variations(request: Request) -> Response:
    return await _from_form(request, "variations")


async def _from_form(request: Request, kind: str) -> Response:
    state: AppState = request.app.state.sy
    principal = caller(request)
    form = await read_form(request, state.settings.limits.max_image_upload_bytes, MAX_IMAGES + 1)
    return await _serve(request, principal, parse_form(kind, form))


async def _serve(request: Request, principal: Principal, req: ImageRequest) -> Response:
    state: AppState = request.app.state.sy
    request.scope["state"]["model"] = req.model
    base = str(request.base_url).rstrip("/")

    async def deliver(data: bytes, fmt: str) -> str:
        record = await state.files.create(principal.org.id, principal.key_id, f"image.{fmt}", IMAGE_PURPOSE, data,
                                          expires_after=state.links.ttl)
        token = state.links.token(principal.org.id, record.id, int(time.time()) + state.links.ttl)
        return f"{base}/v1/images/content/{token}"

    outcome = await endpoint.serve(state.gateway, req, principal, request.scope["state"]["request_id"], deliver,
                                   state.settings.limits.max_image_upload_bytes)
    if outcome.frames is not None:
        return sse_response(outcome.frames, outcome.headers, outcome.finish)
    return JSONResponse(outcome.body, headers=outcome.headers)


async def image_content(request: Request) -> Response:
    """A generated image, by its signed link: no API key (a browser or an <img> fetches it)."""
    state: AppState = request.app.state.sy
    found = state.links.read(request.path_params["token"])
    if found is None:
        raise not_found("This image link is invalid or has expired.")
    return await file_bytes(state, *found)
