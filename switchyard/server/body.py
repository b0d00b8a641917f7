"""Reading request bodies: bounded in size, decoded as JSON, errors in OpenAI's shape."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from switchyard.wire.errors import invalid_request, payload_too_large


async def read_json(request: Request, limit: int) -> Any:
    length = request.headers.get("content-length")
    if length is not None:
        try:
            if int(length) > limit:
                raise payload_too_large(limit)
        except ValueError:
            raise invalid_request("Invalid Content-Length header.") from None
    chunks = bytearray()
    async for chunk in request.stream():
        chunks += chunk
        if len(chunks) > limit:
            raise payload_too_large(limit)
    if not chunks:
        raise invalid_request("The request body is empty; expected a JSON object.")
    try:
        return orjson.loads(chunks)
    except orjson.JSONDecodeError as exc:
        raise invalid_request(
            f"We could not parse the JSON body of your request ({exc.msg} at position {exc.pos}). "
            "The OpenAI API expects a JSON payload."
        ) from None
