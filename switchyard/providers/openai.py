"""OpenAI and every server speaking its protocol (vLLM, Ollama, llama.cpp server, Azure-style).

The request body is the client's, untouched but for the model id and, when streaming, the
usage chunk we always ask for (metering needs it; the gateway drops it if the client did not
ask). Streams are relayed event by event as they arrive.
"""

from __future__ import annotations

import logging
from contextlib import aclosing
from urllib.parse import urlsplit
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

from switchyard.providers.base import ChatCall, HTTPProvider, ResponsesCall
from switchyard.providers.http import (
    Response, UpstreamProtocolError, UpstreamTimeout, transport_error,
)
from switchyard.wire.errors import GatewayError, upstream_error
from switchyard.wire.sse import SSEDecoder, SSEEvent

log = logging.getLogger("switchyard.providers.openai")

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# Statuses that are the client's own fault: passed through with the upstream's message.
_CLIENT_STATUSES = frozenset({400, 404, 409, 413, 422})
_TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


class OpenAIProvider(HTTPProvider):
    kind = "openai"
    _fields: tuple[str, ...] | None = None

    async def start(self) -> None:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = self.credential()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self.open_pool(self.deployment.base_url or DEFAULT_BASE_URL, headers)

    def _limit_fields(self) -> tuple[str, ...]:
        """How this server is told an output limit. OpenAI itself takes `max_completion_tokens`
        (and refuses both at once); compatible servers differ (llama.cpp's ignores
        `max_completion_tokens`), so they get both, unless `output_limit_fields` says otherwise."""
        fields = self._fields
        if fields is None:
            configured = self.deployment.options.get("output_limit_fields")
            if configured:
                fields = tuple(str(f) for f in configured)
            else:
                host = urlsplit(self.deployment.base_url or DEFAULT_BASE_URL).hostname or ""
                official = host == "api.openai.com" or host.endswith(".openai.azure.com")
                fields = ("max_completion_tokens",) if official else ("max_tokens", "max_completion_tokens")
            self._fields = fields
        return fields

    def _payload(self, call: ChatCall, stream: bool) -> bytes:
        body = dict(call.body)
        body["model"] = call.upstream_model
        limit = call.output_limit
        if limit is not None:
            fields = self._limit_fields()
            if len(fields) > 1 or not (body.get("max_tokens") or body.get("max_completion_tokens")):
                for name in fields:
                    body[name] = limit
        if stream:
            options = dict(body.get("stream_options") or {})
            options["include_usage"] = True
            body["stream_options"] = options
        return orjson.dumps(body)

    @property
    def native_responses(self) -> bool:
        # OpenAI itself serves /responses; many compatible servers (Ollama, older vLLM) do not:
        # `native_responses: false` on such a deployment makes the gateway translate to chat.
        return bool(self.deployment.options.get("native_responses", True))

    async def respond(self, call: ResponsesCall) -> dict[str, Any]:
        body = {**call.body, "model": call.upstream_model, "stream": False}
        resp = await self.post("/responses", orjson.dumps(body), map_error)
        data = await self._read_json(resp)
        if not isinstance(data, dict) or data.get("object") != "response":
            raise upstream_error(502, f"Deployment {self.deployment.id} returned an invalid response.", code="upstream_invalid_response")
        return data

    async def respond_stream(self, call: ResponsesCall) -> AsyncIterator[list[dict[str, Any]]]:
        dep_id = self.deployment.id
        body = {**call.body, "model": call.upstream_model, "stream": True}
        resp = await self.post("/responses", orjson.dumps(body), map_error, stream=True)
        async with aclosing(self._event_batches(resp)) as batches:
            async for events in batches:
                batch, ended = [], False
                for event in events:
                    if event.data == b"[DONE]":
                        continue
                    try:
                        obj = orjson.loads(event.data)
                    except orjson.JSONDecodeError:
                        raise upstream_error(502, f"Deployment {dep_id} sent an unreadable event.", code="upstream_invalid_response") from None
                    kind = obj.get("type") if isinstance(obj, dict) else None
                    if kind == "error":
                        raise upstream_error(502, f"Deployment {dep_id} failed mid-stream: {obj.get('message') or 'unknown error'}",
                                             code=obj.get("code") or "upstream_error")
                    batch.append(obj)
                    ended = ended or kind in _TERMINAL_EVENTS
                if batch:
                    yield batch
                if ended:
                    return
        raise upstream_error(502, f"Deployment {dep_id} ended the stream early.", code="upstream_stream_broken")

    async def _event_batches(self, resp: Response) -> AsyncIterator[list[SSEEvent]]:
        """The events of an SSE answer, batched per network read; transport failures mapped."""
        dep_id = self.deployment.id
        try:
            if resp.content_type != "text/event-stream":
                raise upstream_error(502, f"Deployment {dep_id} did not answer with an event stream.", code="upstream_invalid_response")
            decoder = SSEDecoder()
            async for piece in resp.iter_chunks():
                events = decoder.feed(piece)
                if events:
                    yield events
        except (UpstreamTimeout, UpstreamProtocolError) as exc:
            raise transport_error(exc, dep_id) from None
        finally:
            resp.release()

    async def _read_json(self, resp: Response) -> Any:
        try:
            raw = await resp.read()
        except (UpstreamTimeout, UpstreamProtocolError) as exc:
            raise transport_error(exc, self.deployment.id) from None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None

    async def _send(self, call: ChatCall, stream: bool) -> Response:
        return await self.post("/chat/completions", self._payload(call, stream), map_error, stream=stream)

    async def chat(self, call: ChatCall) -> dict[str, Any]:
        resp = await self._send(call, stream=False)
        data = await self._read_json(resp)
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            raise upstream_error(502, f"Deployment {self.deployment.id} returned an invalid response.", code="upstream_invalid_response")
        return data

    async def chat_stream(self, call: ChatCall) -> AsyncIterator[list[bytes]]:
        dep_id = self.deployment.id
        resp = await self._send(call, stream=True)
        async with aclosing(self._event_batches(resp)) as batches:
            async for events in batches:
                batch, done = [], False
                for event in events:
                    data = event.data
                    if data == b"[DONE]":
                        done = True
                        break
                    if b'"error"' in data:
                        _raise_if_error_event(data, dep_id)
                    batch.append(data)
                if batch:
                    yield batch
                if done:
                    return
        raise upstream_error(502, f"Deployment {dep_id} ended the stream early.", code="upstream_stream_broken")


PROVIDER = OpenAIProvider


def _raise_if_error_event(data: bytes, dep_id: str) -> None:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return
    if isinstance(obj, dict) and obj.get("error"):
        err = obj["error"] if isinstance(obj["error"], dict) else {"message": str(obj["error"])}
        raise upstream_error(
            502,
            f"Deployment {dep_id} failed mid-stream: {err.get('message') or 'unknown error'}",
            type=str(err.get("type") or "upstream_error"),
            code=err.get("code") or "upstream_error",
        )


def map_error(status: int, raw: bytes, headers: Mapping[str, str], dep_id: str) -> GatewayError:
    """Turn an upstream error response into ours, keeping what helps the client."""
    message, etype, code, param = None, None, None, None
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        obj = None
    if isinstance(obj, dict) and isinstance(obj.get("error"), dict):
        err = obj["error"]
        message, etype, code, param = err.get("message"), err.get("type"), err.get("code"), err.get("param")
    elif isinstance(obj, dict) and isinstance(obj.get("error"), str):
        message = obj["error"]
    if not message:
        message = raw[:300].decode("utf-8", "replace").strip() or f"HTTP {status}"
    out_headers = {}
    for name in ("retry-after", "retry-after-ms"):
        if name in headers:
            out_headers[name] = headers[name]
    if status in _CLIENT_STATUSES:
        return GatewayError(status, str(message), type=str(etype or "invalid_request_error"), param=param, code=code)
    if status in (401, 403):
        # The caller's key is fine; ours was refused. Saying 401 would send them hunting.
        return upstream_error(502, f"Deployment {dep_id} rejected the gateway's credentials.", code="upstream_auth_error")
    if status == 429:
        return upstream_error(
            429, f"Upstream rate limit reached: {message}", type=str(etype or "requests"),
            code=code or "rate_limit_exceeded", headers=out_headers,
        )
    if status == 408 or status == 504:
        return upstream_error(504, f"Deployment {dep_id} timed out: {message}", code="upstream_timeout")
    if status == 503:
        return upstream_error(503, f"Deployment {dep_id} is unavailable: {message}", code="upstream_unavailable", headers=out_headers)
    return upstream_error(502, f"Deployment {dep_id} failed (HTTP {status}): {message}", code="upstream_error", headers=out_headers)
