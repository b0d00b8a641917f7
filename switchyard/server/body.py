"""Reading request bodies: bounded in size, time and shape, decoded as JSON, errors in OpenAI's shape."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import ClientDisconnect, Request

from switchyard.config import ServerLimits
from switchyard.wire.errors import GatewayError, invalid_request, payload_too_large
from switchyard.wire.json_body import acontainers_in, containers_in, parse_json

LARGE_BODY = 4 << 20

_DEFAULT = ServerLimits()


async def read_json(request: Request, limit: int, limits: ServerLimits = _DEFAULT) -> Any:
    length = request.headers.get("content-length")
    if length is not None:
        try:
            if int(length) > limit:
                raise payload_too_large(limit)
        except ValueError:
            raise invalid_request("Invalid Content-Length header.") from None
    chunks = bytearray()
    try:
        async with asyncio.timeout(limits.body_seconds):
            async for chunk in request.stream():
                chunks += chunk
                if len(chunks) > limit:
                    raise payload_too_large(limit)
    except TimeoutError:
        raise GatewayError(408, f"The request body did not arrive within {limits.body_seconds:g} seconds.",
                           code="request_timeout") from None
    except ClientDisconnect:
        raise invalid_request("The client disconnected before its request body arrived.", code="client_disconnected") from None
    if not chunks:
        raise invalid_request("The request body is empty; expected a JSON object.")
    raw = chunks  # orjson reads a bytearray as it is: no copy of a large body
    # A large body is counted a slice at a time, so the count never holds the loop for long.
    containers = await acontainers_in(raw) if len(raw) > LARGE_BODY else containers_in(raw)
    return parse_json(raw, limits.max_json_nodes, limits.max_json_depth, containers)
