"""The Responses API: POST /v1/responses (and /compact), and the stored responses behind GET/DELETE."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchyard.endpoints import compaction, responses as responses_endpoint
from switchyard.responses import ResponseStore
from switchyard.server.model_call import model_call
from switchyard.server.responses import JSONResponse
from switchyard.server.auth import caller
from switchyard.server.state import AppState
from switchyard.wire.errors import invalid_request, not_found


async def create_response(request: Request) -> Response:
    return await model_call(request, responses_endpoint.serve)


async def compact_response(request: Request) -> Response:
    return await model_call(request, compaction.serve)


def _store(state: AppState) -> ResponseStore:
    assert state.gateway.responses is not None
    return state.gateway.responses


def _missing(response_id: str) -> Exception:
    return not_found(f"Response with id '{response_id}' not found.", param="response_id")


async def get_response(request: Request) -> Response:
    state: AppState = request.app.state.sy
    principal = caller(request)
    response_id = request.path_params["response_id"]
    if request.query_params.get("stream") in ("true", "1"):
        raise invalid_request("Replaying a stored response as a stream is not supported; omit 'stream'.", param="stream")
    body = await _store(state).get(principal.org.id, response_id)
    if body is None:
        raise _missing(response_id)
    return JSONResponse(body)


async def delete_response(request: Request) -> Response:
    state: AppState = request.app.state.sy
    principal = caller(request)
    response_id = request.path_params["response_id"]
    if not await _store(state).delete(principal.org.id, response_id):
        raise _missing(response_id)
    return JSONResponse({"id": response_id, "object": "response", "deleted": True})


async def list_input_items(request: Request) -> Response:
    state: AppState = request.app.state.sy
    principal = caller(request)
    response_id = request.path_params["response_id"]
    q = request.query_params
    order = q.get("order", "desc")
    if order not in ("asc", "desc"):
        raise invalid_request("'order' must be 'asc' or 'desc'.", param="order")
    try:
        limit = int(q.get("limit", "20"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 100:
        raise invalid_request("'limit' must be an integer from 1 to 100.", param="limit")
    page = await _store(state).input_items(principal.org.id, response_id, after=q.get("after"), limit=limit, order=order)
    if page is None:
        raise _missing(response_id)
    items, has_more = page
    return JSONResponse({
        "object": "list", "data": items, "has_more": has_more,
        "first_id": items[0]["id"] if items else None, "last_id": items[-1]["id"] if items else None,
    })


def routes() -> list[Route]:
    return [
        Route("/v1/responses", create_response, methods=["POST"]),
        Route("/v1/responses/compact", compact_response, methods=["POST"]),
        Route("/v1/responses/{response_id}", get_response, methods=["GET"]),
        Route("/v1/responses/{response_id}", delete_response, methods=["DELETE"]),
        Route("/v1/responses/{response_id}/input_items", list_input_items, methods=["GET"]),
    ]
