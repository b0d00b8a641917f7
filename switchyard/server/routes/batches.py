"""The Batch API: POST/GET /v1/batches, GET /v1/batches/{id}, POST /v1/batches/{id}/cancel.

A batch belongs to the organisation of the key that created it; any key of that organisation
sees it, and to every other caller it does not exist (404).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchyard.batch.jsonl import ENDPOINTS
from switchyard.batch.records import ACTIVE, BatchRecord, Tally, batch_object
from switchyard.server.body import read_json
from switchyard.server.responses import JSONResponse
from switchyard.server.auth import caller
from switchyard.server.state import AppState
from switchyard.wire.errors import GatewayError, invalid_request, not_found

COMPLETION_WINDOWS = ("24h",)
MAX_METADATA_PAIRS = 16


def _not_found(batch_id: str) -> GatewayError:
    return not_found(f"No batch found with id '{batch_id}'.", param="batch_id")


def _metadata(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid_request("'metadata' must be an object of string keys and values.", param="metadata")
    if len(value) > MAX_METADATA_PAIRS:
        raise invalid_request(f"'metadata' may hold at most {MAX_METADATA_PAIRS} pairs.", param="metadata")
    for key, item in value.items():
        if not isinstance(key, str) or len(key) > 64:
            raise invalid_request("'metadata' keys must be strings of at most 64 characters.", param="metadata")
        if not isinstance(item, str) or len(item) > 512:
            raise invalid_request("'metadata' values must be strings of at most 512 characters.",
                                  param=f"metadata.{key}")
    return value


async def _objects(state: AppState, records: list[BatchRecord]) -> list[dict[str, Any]]:
    tallies = await state.batches.records.tallies([b.id for b in records])
    return [batch_object(b, tallies.get(b.id) or Tally()) for b in records]


async def create_batch(request: Request) -> Response:
    state: AppState = request.app.state.sy
    principal = caller(request)
    body = await read_json(request, 1024 * 1024, request.app.state.sy.settings.limits)
    if not isinstance(body, dict):
        raise invalid_request("The request body must be a JSON object.")
    file_id = body.get("input_file_id")
    if not isinstance(file_id, str) or not file_id:
        raise invalid_request("Missing required parameter: 'input_file_id'.", param="input_file_id",
                              code="missing_required_parameter")
    endpoint = body.get("endpoint")
    if endpoint not in ENDPOINTS:
        raise invalid_request(
            f"Invalid value for 'endpoint': batches support {', '.join(ENDPOINTS)}.", param="endpoint",
            code="invalid_value")
    window = body.get("completion_window")
    if window not in COMPLETION_WINDOWS:
        raise invalid_request("Invalid value for 'completion_window': only '24h' is supported.",
                              param="completion_window", code="invalid_value")
    metadata = _metadata(body.get("metadata"))
    file = await state.files.get(principal.org.id, file_id)
    if file is None:
        raise not_found(f"No file found with id '{file_id}'.", param="input_file_id")
    if file.purpose != "batch":
        raise invalid_request(f"The input file must be uploaded with purpose 'batch', not '{file.purpose}'.",
                              param="input_file_id")
    batch = await state.batches.records.create(
        org_id=principal.org.id, key_id=principal.key_id, endpoint=endpoint, input_file_id=file_id,
        completion_window=window, metadata=metadata, window_seconds=state.settings.batch_completion_window_seconds)
    state.batches.wake()
    return JSONResponse((await _objects(state, [batch]))[0])


async def get_batch(request: Request) -> Response:
    state: AppState = request.app.state.sy
    principal = caller(request)
    batch_id = request.path_params["batch_id"]
    batch = await state.batches.records.get(principal.org.id, batch_id)
    if batch is None:
        raise _not_found(batch_id)
    return JSONResponse((await _objects(state, [batch]))[0])


async def cancel_batch(request: Request) -> Response:
    state: AppState = request.app.state.sy
    principal = caller(request)
    batch_id = request.path_params["batch_id"]
    batch = await state.batches.records.request_cancel(principal.org.id, batch_id)
    if batch is None:
        raise _not_found(batch_id)
    if batch.status not in ("cancelling", "cancelled"):
        raise GatewayError(409, f"Cannot cancel a batch with status '{batch.status}'.", code="batch_not_cancellable")
    if batch.status in ACTIVE:
        state.batches.wake()
    return JSONResponse((await _objects(state, [batch]))[0])


async def list_batches(request: Request) -> Response:
    state: AppState = request.app.state.sy
    principal = caller(request)
    raw_limit = request.query_params.get("limit", "20")
    try:
        limit = int(raw_limit)
    except ValueError:
        raise invalid_request("'limit' must be an integer between 1 and 100.", param="limit") from None
    if not 1 <= limit <= 100:
        raise invalid_request("'limit' must be an integer between 1 and 100.", param="limit")
    after = request.query_params.get("after") or None
    page = await state.batches.records.list(principal.org.id, after, limit)
    if page is None:
        raise invalid_request(f"Invalid value for 'after': no batch found with id '{after}'.", param="after")
    records, has_more = page
    data = await _objects(state, records)
    return JSONResponse({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                         "last_id": data[-1]["id"] if data else None, "has_more": has_more})


def routes() -> list[Route]:
    return [
        Route("/v1/batches", create_batch, methods=["POST"]),
        Route("/v1/batches", list_batches, methods=["GET"]),
        Route("/v1/batches/{batch_id}", get_batch, methods=["GET"]),
        Route("/v1/batches/{batch_id}/cancel", cancel_batch, methods=["POST"]),
    ]
