"""OpenAI and every server speaking its protocol (vLLM, Ollama, llama.cpp server, Azure-style).

The request body is the client's, untouched but for the model id and, when streaming, the
usage chunk we always ask for (metering needs it; the gateway drops it if the client did not
ask). Streams are relayed event by event as they arrive.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import orjson

from switchyard.providers.base import ChatCall, Provider
from switchyard.wire.errors import GatewayError, upstream_error
from switchyard.wire.sse import parse_events

log = logging.getLogger("switchyard.providers.openai")

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# Statuses that are the client's own fault: passed through with the upstream's message.
_CLIENT_STATUSES = frozenset({400, 404, 409, 413, 422})


class OpenAIProvider(Provider):
    kind = "openai"

    _session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        dep = self.deployment
        self._url = (dep.base_url or DEFAULT_BASE_URL).rstrip("/") + "/chat/completions"
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if dep.api_key_env:
            key = os.environ.get(dep.api_key_env)
            if key:
                headers["Authorization"] = f"Bearer {key}"
            else:
                log.warning("deployment %s: environment variable %s is not set", dep.id, dep.api_key_env)
        headers.update(dep.headers)
        self._headers = headers
        connector = aiohttp.TCPConnector(
            limit=int(dep.options.get("max_connections", 1000)),
            keepalive_timeout=float(dep.options.get("keepalive_seconds", 60)),
            ttl_dns_cache=300,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=dep.timeouts.connect, sock_read=dep.timeouts.read
            ),
            auto_decompress=True,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _payload(self, call: ChatCall, stream: bool) -> bytes:
        body = dict(call.body)
        body["model"] = call.upstream_model
        if stream:
            options = dict(body.get("stream_options") or {})
            options["include_usage"] = True
            body["stream_options"] = options
        return orjson.dumps(body)

    async def chat(self, call: ChatCall) -> dict[str, Any]:
        assert self._session is not None, "provider not started"
        try:
            async with self._session.post(
                self._url, data=self._payload(call, False), headers=self._headers
            ) as resp:
                raw = await resp.read()
                if resp.status >= 400:
                    raise map_error(resp.status, raw, resp.headers, self.deployment.id)
        except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
            raise _transport_error(exc, self.deployment.id) from None
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            raise upstream_error(502, f"Deployment {self.deployment.id} returned an invalid response.", code="upstream_invalid_response")
        return data

    async def chat_stream(self, call: ChatCall) -> AsyncIterator[bytes]:
        assert self._session is not None, "provider not started"
        dep_id = self.deployment.id
        try:
            resp = await self._session.post(
                self._url, data=self._payload(call, True), headers=self._headers
            )
        except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
            raise _transport_error(exc, dep_id) from None
        try:
            if resp.status >= 400:
                raw = await resp.read()
                raise map_error(resp.status, raw, resp.headers, dep_id)
            if not resp.content_type.startswith("text/event-stream"):
                raise upstream_error(502, f"Deployment {dep_id} did not answer with an event stream.", code="upstream_invalid_response")
            done = False
            async for event in parse_events(_lines(resp.content)):
                data = event.data
                if data == b"[DONE]":
                    done = True
                    break
                if b'"error"' in data:
                    _raise_if_error_event(data, dep_id)
                yield data
            if not done:
                raise upstream_error(502, f"Deployment {dep_id} ended the stream early.", code="upstream_stream_broken")
        except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
            raise _transport_error(exc, dep_id) from None
        finally:
            resp.release()


PROVIDER = OpenAIProvider


async def _lines(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """Split the body into lines ourselves: aiohttp's readline caps line length."""
    buffer = b""
    async for piece in content.iter_any():
        buffer += piece
        if b"\n" not in piece:
            continue
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            yield line
    if buffer:
        yield buffer


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


def _transport_error(exc: BaseException, dep_id: str) -> GatewayError:
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return upstream_error(504, f"Deployment {dep_id} timed out.", code="upstream_timeout")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return upstream_error(502, f"Deployment {dep_id} broke off its response.", code="upstream_stream_broken")
    return upstream_error(502, f"Could not reach deployment {dep_id} ({type(exc).__name__}).", code="upstream_connection_error")


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
