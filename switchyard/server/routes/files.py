"""The Files API: /v1/files (upload, list), /v1/files/{id} (retrieve, delete), /v1/files/{id}/content."""

from __future__ import annotations

import asyncio
import mimetypes
import os
from typing import BinaryIO

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from switchyard.files import BlobTooLarge, StagedBlob, file_object, no_such_file, upload_limit
from switchyard.files.blobs import iter_open_file
from switchyard.files.registry import check_filename, check_purpose, clean_filename, too_large
from switchyard.server.multipart import MultipartReader, is_multipart, limited
from switchyard.server.responses import JSONResponse
from switchyard.server.auth import caller
from switchyard.server.state import AppState
from switchyard.wire.errors import invalid_request

FORM_OVERHEAD = 1024 * 1024  # room for boundaries, part headers and the small fields
MAX_FIELD_BYTES = 64 * 1024
MAX_FIELDS = 10
MAX_LIST_LIMIT = 10_000


def routes() -> list[Route]:
    return [
        Route("/v1/files", create_file, methods=["POST"]),
        Route("/v1/files", list_files, methods=["GET"]),
        Route("/v1/files/{file_id}", retrieve_file, methods=["GET"]),
        Route("/v1/files/{file_id}", delete_file, methods=["DELETE"]),
        Route("/v1/files/{file_id}/content", file_content, methods=["GET"]),
    ]


def _expires_after(fields: dict[str, str]) -> int | None:
    anchor = fields.get("expires_after[anchor]")
    seconds = fields.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        return None
    if anchor is not None and anchor != "created_at":
        raise invalid_request("'expires_after.anchor' must be 'created_at'.", param="expires_after.anchor")
    if seconds is None:
        raise invalid_request("Missing required parameter: 'expires_after.seconds'.", param="expires_after.seconds")
    try:
        return int(seconds)
    except ValueError:
        raise invalid_request("'expires_after.seconds' must be an integer.", param="expires_after.seconds") from None


async def create_file(request: Request) -> Response:
    state: AppState = request.app.state.sy
    principal = caller(request)
    store = state.files
    content_type = request.headers.get("content-type", "")
    if not is_multipart(content_type):
        raise invalid_request(
            "Uploads must be sent as multipart/form-data with the fields 'file' and 'purpose'.", param="file")
    body_limit = upload_limit(store, None) + FORM_OVERHEAD
    length = request.headers.get("content-length")
    if length is not None:
        try:
            announced = int(length)
        except ValueError:
            raise invalid_request("Invalid Content-Length header.") from None
        if announced > body_limit:
            raise too_large(None, upload_limit(store, None))

    org_id = principal.org.id
    fields: dict[str, str] = {}
    staged: StagedBlob | None = None
    filename = ""
    try:
        body = limited(request.stream(), body_limit, too_large(None, upload_limit(store, None)))
        reader = MultipartReader(content_type, body)
        while (part := await reader.next_part()) is not None:
            if part.name == "file":
                if staged is not None:
                    raise invalid_request("Only one file can be uploaded per request.", param="file")
                # Fields sent before the file (as the SDKs do) let us refuse early and use the
                # tighter limit while streaming; otherwise save_upload checks after the fact.
                purpose = fields.get("purpose")
                filename = clean_filename(part.filename)
                if purpose:
                    check_purpose(purpose)
                    check_filename(purpose, filename)
                limit = upload_limit(store, purpose)
                try:
                    staged = await store.blobs.stage(org_id, reader.chunks(), limit)
                except BlobTooLarge:
                    raise too_large(purpose, limit) from None
            else:
                if len(fields) >= MAX_FIELDS:
                    raise invalid_request(f"Too many form fields: at most {MAX_FIELDS} besides 'file'.")
                value = await reader.read(MAX_FIELD_BYTES, part.name)
                fields[part.name] = value.decode("utf-8", "replace")
        if staged is None:
            raise invalid_request("Missing required parameter: 'file'.", param="file")
        purpose = check_purpose(fields.get("purpose"))
        expires_after = _expires_after(fields)
    except BaseException as exc:
        if staged is not None:
            await store.blobs.discard(staged)
        if isinstance(exc, ClientDisconnect):  # nobody reads the answer; no traceback either
            raise invalid_request("The upload was interrupted.") from None
        raise
    record = await store.save_upload(org_id, principal.key_id, filename, purpose, staged, expires_after)
    return JSONResponse(file_object(record))


def _list_params(request: Request) -> tuple[str | None, int, str, str | None]:
    q = request.query_params
    try:
        limit = int(q.get("limit", MAX_LIST_LIMIT))
    except ValueError:
        raise invalid_request("'limit' must be an integer.", param="limit") from None
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise invalid_request(f"'limit' must be between 1 and {MAX_LIST_LIMIT}, not {limit}.", param="limit")
    order = q.get("order", "desc")
    if order not in ("asc", "desc"):
        raise invalid_request("'order' must be 'asc' or 'desc'.", param="order")
    return q.get("after") or None, limit, order, q.get("purpose") or None


async def list_files(request: Request) -> Response:
    state: AppState = request.app.state.sy
    principal = caller(request)
    after, limit, order, purpose = _list_params(request)
    records, has_more = await state.files.list(principal.org.id, after=after, limit=limit, order=order, purpose=purpose)
    data = [file_object(r) for r in records]
    return JSONResponse({
        "object": "list", "data": data,
        "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    })


async def retrieve_file(request: Request) -> Response:
    state: AppState = request.app.state.sy
    principal = caller(request)
    file_id = request.path_params["file_id"]
    record = await state.files.get(principal.org.id, file_id)
    if record is None:
        raise no_such_file(file_id)
    return JSONResponse(file_object(record))


async def delete_file(request: Request) -> Response:
    state: AppState = request.app.state.sy
    principal = caller(request)
    file_id = request.path_params["file_id"]
    if not await state.files.delete(principal.org.id, file_id):
        raise no_such_file(file_id)
    return JSONResponse({"id": file_id, "object": "file", "deleted": True})


def media_type(filename: str) -> str:
    if filename.lower().endswith(".jsonl"):
        return "application/jsonl"
    return mimetypes.guess_type(filename, strict=False)[0] or "application/octet-stream"


async def file_content(request: Request) -> Response:
    state: AppState = request.app.state.sy
    principal = caller(request)
    return await file_bytes(state, principal.org.id, request.path_params["file_id"])


async def file_bytes(state: AppState, org_id: str, file_id: str) -> Response:
    """A file's bytes, streamed from the data directory (the organisation's own files only)."""
    record = await state.files.get(org_id, file_id)
    if record is None:
        raise no_such_file(file_id)
    try:
        handle: BinaryIO = await asyncio.to_thread(open, state.files.path(record), "rb")
    except FileNotFoundError:  # deleted since the lookup
        raise no_such_file(file_id) from None
    size = os.fstat(handle.fileno()).st_size
    return StreamingResponse(
        iter_open_file(handle), media_type=media_type(record.filename),
        headers={"content-length": str(size)},
    )
