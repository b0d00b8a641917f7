"""The Audio API: POST /v1/audio/transcriptions and /translations (multipart), /speech (JSON)."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchyard.endpoints import audio as endpoint
from switchyard.gateway import Outcome
from switchyard.server.auth import caller
from switchyard.server.body import read_json
from switchyard.server.form import read_form
from switchyard.server.responses import JSONResponse, sse_response
from switchyard.server.state import AppState
from switchyard.wire.audio import parse_speech, parse_transcription


def routes() -> list[Route]:
    return [
        Route("/v1/audio/transcriptions", transcriptions, methods=["POST"]),
        Route("/v1/audio/translations", translations, methods=["POST"]),
        Route("/v1/audio/speech", speech, methods=["POST"]),
    ]


async def transcriptions(request: Request) -> Response:
    return await _transcribe(request, "transcriptions")


async def translations(request: Request) -> Response:
    return await _transcribe(request, "translations")


async def _transcribe(request: Request, task: str) -> Response:
    state: AppState = request.app.state.sy
    principal = caller(request)
    form = await read_form(request, state.settings.limits.max_audio_upload_bytes, 1)
    # Measuring the audio walks its frames: off the event loop, however long the file.
    req = await asyncio.to_thread(parse_transcription, task, form)
    request.scope["state"]["model"] = req.model
    return _response(await endpoint.transcribe(state.gateway, req, principal, request.scope["state"]["request_id"]))


async def speech(request: Request) -> Response:
    state: AppState = request.app.state.sy
    principal = caller(request)
    req = parse_speech(await read_json(request, state.settings.max_body_bytes, state.settings.limits))
    request.scope["state"]["model"] = req.model
    return _response(await endpoint.speak(state.gateway, req, principal, request.scope["state"]["request_id"]))


def _response(outcome: Outcome) -> Response:
    if outcome.frames is not None:
        return sse_response(outcome.frames, outcome.headers, outcome.finish, outcome.media_type or "text/event-stream")
    if outcome.content is not None:
        return Response(outcome.content, media_type=outcome.media_type, headers=outcome.headers)
    return JSONResponse(outcome.body, headers=outcome.headers)
