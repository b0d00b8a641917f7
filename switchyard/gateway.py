"""The request pipeline, start to end: validate, route, check fit, call, relay.

Each step lives in its own part (wire, routing, metering, providers); this module only
strings them together, so one request's path can be read top to bottom here.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from switchyard.accounts.keys import Principal
from switchyard.metering.tokens import count_prompt_tokens, prompt_bytes_bound
from switchyard.providers import ChatCall
from switchyard.routing.fit import check_capabilities, check_size
from switchyard.routing.table import Deployment, ModelTable
from switchyard.wire.chat import ChatRequest, parse_chat_request
from switchyard.wire.errors import GatewayError
from switchyard.wire.sse import DONE, data_frame

log = logging.getLogger("switchyard.requests")
# A chunk whose `usage` is an object (not null), however the upstream spaces its JSON.
_HAS_USAGE = re.compile(rb'"usage"\s*:\s*\{').search


@dataclass(slots=True)
class Outcome:
    """What the server sends back: a body, or SSE frames, plus headers about the route."""

    deployment: Deployment
    body: dict[str, Any] | None = None
    frames: AsyncIterator[bytes] | None = None
    headers: dict[str, str] = field(default_factory=dict)


class Gateway:
    def __init__(self, table: ModelTable) -> None:
        self.table = table

    async def chat(self, raw: Any, principal: Principal, request_id: str) -> Outcome:
        request = parse_chat_request(raw)
        _, group = self.table.resolve(request.model)
        dep = group[0]
        check_capabilities(request, dep)
        check_size(request, dep, self._prompt_tokens(request, dep))
        call = ChatCall(request=request, body=raw, upstream_model=dep.config.model, request_id=request_id)
        headers = {"x-switchyard-deployment": dep.id}
        started = time.perf_counter()
        if not request.stream:
            body = await dep.provider.chat(call)
            _log(request_id, principal, request, dep, started, body.get("usage"))
            return Outcome(dep, body=body, headers=headers)
        stream = dep.provider.chat_stream(call)
        try:
            first = await anext(stream)
        except StopAsyncIteration:
            first = None
        except BaseException:
            await stream.aclose()
            raise
        frames = _relay(first, stream, request, lambda usage: _log(request_id, principal, request, dep, started, usage))
        return Outcome(dep, frames=frames, headers=headers)

    @staticmethod
    def _prompt_tokens(request: ChatRequest, dep: Deployment) -> int:
        """Prompt size for admission; exact counting only when the cheap bound cannot prove a fit."""
        bound = prompt_bytes_bound(request)
        if bound + (request.output_limit or 0) <= dep.context_window:
            return min(bound, dep.context_window - 1)
        exact = dep.provider.count_prompt_tokens(request)
        return exact if exact is not None else count_prompt_tokens(request)


async def _relay(
    first: bytes | None,
    stream: AsyncIterator[bytes],
    request: ChatRequest,
    on_end: Any,
) -> AsyncIterator[bytes]:
    """Frame provider chunks as SSE; keep the usage chunk only if the client asked for it."""
    want_usage = request.wants_usage_chunk
    usage: dict[str, Any] | None = None
    try:
        chunk = first
        while chunk is not None:
            if _HAS_USAGE(chunk):
                obj = orjson.loads(chunk)
                usage = obj.get("usage") or usage
                if obj.get("choices"):
                    if not want_usage:
                        obj["usage"] = None
                        chunk = orjson.dumps(obj)
                    yield data_frame(chunk)
                elif want_usage:
                    yield data_frame(chunk)
            else:
                yield data_frame(chunk)
            chunk = await anext(stream, None)
        yield DONE
    except GatewayError as exc:
        # Headers are gone: the SDK raises APIError for an `error` event mid-stream.
        yield data_frame(exc.to_json())
    finally:
        await stream.aclose()
        on_end(usage)


def _log(
    request_id: str,
    principal: Principal,
    request: ChatRequest,
    dep: Deployment,
    started: float,
    usage: dict[str, Any] | None,
) -> None:
    if log.isEnabledFor(logging.INFO):
        log.info(
            "%s key=%s model=%s deployment=%s stream=%s ms=%.1f usage=%s",
            request_id, principal.key_id, request.model, dep.id, bool(request.stream),
            (time.perf_counter() - started) * 1000, orjson.dumps(usage).decode() if usage else "-",
        )
