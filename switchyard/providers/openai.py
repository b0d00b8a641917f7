"""OpenAI and every server speaking its protocol (vLLM, Ollama, llama.cpp server, Azure-style).

The request body is the client's, untouched but for the model id and, when streaming, the
usage chunk we always ask for (metering needs it; the gateway drops it if the client did not
ask). Streams are relayed event by event as they arrive.
"""

from __future__ import annotations

import base64
import binascii
import logging
import struct
from contextlib import aclosing
from urllib.parse import urlsplit
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import orjson

from switchyard.providers.base import (
    ChatCall, CompletionCall, EmbedCall, Embedded, HTTPProvider, MediaCall, ModerateCall, ResponsesCall, ResponsesUnsupported, Speech,
)
from switchyard.catalog import ModelSpec
from switchyard.config import ConfigError, DeploymentConfig
from switchyard.providers.compatible_counts import KINDS as COUNT_KINDS
from switchyard.providers.compatible_counts import CompatibleCounter
from switchyard.wire.chat import ChatRequest
from switchyard.wire.embeddings import decode_vector
from switchyard.providers.overflow import is_overflow
from switchyard.providers.http import (
    Response, UpstreamProtocolError, UpstreamTimeout, transport_error,
)
from switchyard.wire.errors import GatewayError, upstream_error
from switchyard.wire.forms import encode_form
from switchyard.wire.sse import SSEDecoder, SSEEvent

log = logging.getLogger("switchyard.providers.openai")

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# Statuses that are the client's own fault: passed through with the upstream's message.
_CLIENT_STATUSES = frozenset({400, 404, 409, 413, 422})
_TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


class OpenAIProvider(HTTPProvider):
    kind = "openai"
    _fields: tuple[str, ...] | None = None
    _counter: CompatibleCounter | None = None

    def __init__(self, deployment: DeploymentConfig, spec: ModelSpec) -> None:
        super().__init__(deployment, spec)
        host = urlsplit(deployment.base_url or DEFAULT_BASE_URL).hostname or ""
        self._openai = host == "api.openai.com" or host.endswith(".openai.azure.com")  # else a compatible server
        configured = deployment.options.get("count_tokens")
        if configured is not None and configured not in COUNT_KINDS:  # a typo fails at start-up, not at billing
            raise ConfigError(f"deployment {deployment.id}: count_tokens must be one of {', '.join(COUNT_KINDS)}")

    async def start(self) -> None:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = self.credential()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        pool = self.open_pool(self.deployment.base_url or DEFAULT_BASE_URL, headers)
        if not self._is_openai():
            # A compatible server tokenizes with its own model: ask it, when usage is missing.
            configured = self.deployment.options.get("count_tokens")
            self._counter = CompatibleCounter(self, str(configured) if configured else None,
                                              pool.base_path.removesuffix("/v1"))

    def _is_openai(self) -> bool:
        return self._openai

    async def count_prompt_tokens(self, request: ChatRequest) -> int | None:
        return await self._counter.prompt(request, self.deployment.model) if self._counter else None

    async def count_output_tokens(self, text: str) -> int | None:
        return await self._counter.text(text) if self._counter else None

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
                fields = ("max_completion_tokens",) if self._is_openai() else ("max_tokens", "max_completion_tokens")
            self._fields = fields
        return fields

    def _payload(self, call: ChatCall, stream: bool) -> bytes:
        body = dict(call.body)
        body["model"] = call.upstream_model
        if not self._is_openai() and isinstance(body.get("messages"), list):
            body["messages"] = _compatible_messages(body["messages"])
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

    _no_responses = False
    _no_compact = False

    @property
    def native_responses(self) -> bool:
        # OpenAI itself serves /responses; many compatible servers (Ollama, older vLLM, llama.cpp)
        # do not: `native_responses: false` says so, and a server that answers /responses with a
        # bare 404 or a 405 is remembered as such (and its turns translated to chat).
        return bool(self.deployment.options.get("native_responses", True)) and not self._no_responses

    async def compact(self, call: ResponsesCall) -> dict[str, Any]:
        if self._no_compact:
            raise ResponsesUnsupported(self.deployment.id)
        body = {**call.body, "model": call.upstream_model}
        resp = await self._post_responses(body, stream=False, path="/responses/compact")
        data = await self._read_json(resp)
        if not isinstance(data, dict) or data.get("object") != "response.compaction":
            raise upstream_error(502, f"Deployment {self.deployment.id} returned an invalid compaction.", code="upstream_invalid_response")
        return data

    async def _post_responses(self, body: dict[str, Any], stream: bool, path: str = "/responses") -> Response:
        try:
            return await self.post(path, orjson.dumps(body), map_error, stream=stream)
        except GatewayError as exc:
            # OpenAI's own 404s (an unknown model) carry a code; a server without the route does not.
            if exc.status == 405 or (exc.status == 404 and exc.code is None):
                # A server may have /responses but not /responses/compact (vLLM): remembered apart.
                flag = "_no_compact" if path == "/responses/compact" else "_no_responses"
                if not getattr(self, flag):
                    setattr(self, flag, True)
                    log.warning("deployment %s has no %s (HTTP %d): served by translation to chat from now on",
                                self.deployment.id, path, exc.status)
                raise ResponsesUnsupported(self.deployment.id) from None
            raise

    async def respond(self, call: ResponsesCall) -> dict[str, Any]:
        body = {**call.body, "model": call.upstream_model, "stream": False}
        resp = await self._post_responses(body, stream=False)
        data = await self._read_json(resp)
        if not isinstance(data, dict) or data.get("object") != "response":
            raise upstream_error(502, f"Deployment {self.deployment.id} returned an invalid response.", code="upstream_invalid_response")
        return data

    async def respond_stream(self, call: ResponsesCall) -> AsyncIterator[list[dict[str, Any]]]:
        body = {**call.body, "model": call.upstream_model, "stream": True}
        resp = await self._post_responses(body, stream=True)
        async with aclosing(self._json_events(resp, _TERMINAL_EVENTS)) as batches:
            async for batch in batches:
                yield batch

    async def _json_events(self, resp: Response, terminal: frozenset[str] | tuple[str, ...],
                           count: int = 1) -> AsyncIterator[list[dict[str, Any]]]:
        """A stream of JSON events (Responses, images, transcripts, speech), batched per read,
        ended after `count` terminal events; an error event raises, as a failure mid-stream."""
        dep_id = self.deployment.id
        seen = 0
        async with aclosing(self._event_batches(resp)) as batches:
            async for events in batches:
                batch = []
                for event in events:
                    if event.data == b"[DONE]":
                        continue
                    try:
                        obj = orjson.loads(event.data)
                    except orjson.JSONDecodeError:
                        obj = None
                    if not isinstance(obj, dict):
                        raise upstream_error(502, f"Deployment {dep_id} sent an unreadable event.",
                                             code="upstream_invalid_response")
                    if obj.get("type") == "error" or isinstance(obj.get("error"), dict):
                        err = obj["error"] if isinstance(obj.get("error"), dict) else obj
                        raise upstream_error(502, f"Deployment {dep_id} failed mid-stream: "
                                                  f"{err.get('message') or 'unknown error'}",
                                             code=str(err.get("code") or "upstream_error"))
                    batch.append(obj)
                    seen += obj.get("type") in terminal
                if batch:
                    yield batch
                if seen >= count:
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

    async def embed(self, call: EmbedCall) -> Embedded:
        """Passed through (the client's fields, unknown ones included), vectors asked for as
        base64 (a quarter of the bytes) and handed back as floats for the gateway to encode."""
        req = call.request
        body = {**req.raw, "model": call.upstream_model, "encoding_format": "base64"}
        resp = await self.post("/embeddings", orjson.dumps(body), map_error)
        data = await self._read_json(resp)
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list) or len(items) != req.count:
            raise upstream_error(502, f"Deployment {self.deployment.id} returned an invalid embeddings answer.",
                                 code="upstream_invalid_response")
        try:
            vectors = [decode_vector(item["embedding"]) for item in sorted(items, key=lambda i: i["index"])]
        except (KeyError, TypeError, ValueError, struct.error):
            raise upstream_error(502, f"Deployment {self.deployment.id} returned an unreadable embedding.",
                                 code="upstream_invalid_response") from None
        usage = data.get("usage")
        tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        return Embedded(vectors, tokens if isinstance(tokens, int) and not isinstance(tokens, bool) else None)

    async def moderate(self, call: ModerateCall) -> dict[str, Any]:
        body = {**call.request.raw, "model": call.upstream_model}
        resp = await self.post("/moderations", orjson.dumps(body), map_error)
        data = await self._read_json(resp)
        if not isinstance(data, dict) or not isinstance(data.get("results"), list):
            raise upstream_error(502, f"Deployment {self.deployment.id} returned an invalid moderation.",
                                 code="upstream_invalid_response")
        return data

    # ---- legacy completions: passed through ---------------------------------------------------

    def _completion_payload(self, call: CompletionCall, stream: bool) -> bytes:
        body = {**call.request.raw, "model": call.upstream_model, "max_tokens": call.output_limit}
        if stream:
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        return orjson.dumps(body)

    async def complete(self, call: CompletionCall) -> dict[str, Any]:
        resp = await self.post("/completions", self._completion_payload(call, False), map_error)
        data = await self._read_json(resp)
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            raise upstream_error(502, f"Deployment {self.deployment.id} returned an invalid completion.",
                                 code="upstream_invalid_response")
        return data

    def complete_stream(self, call: CompletionCall) -> AsyncIterator[list[bytes]]:
        return self._chunks("/completions", lambda: self._completion_payload(call, True))

    # ---- media: images and audio ------------------------------------------------------------

    async def _post_media(self, call: MediaCall, stream: bool, fields: dict[str, Any] | None = None) -> Response:
        """The call as JSON, or as a multipart form when it uploads files (as OpenAI takes them)."""
        body = {**(call.fields if fields is None else fields), "model": call.upstream_model}
        if not call.files:
            return await self.post(call.path, orjson.dumps(body), map_error, stream=stream)
        pairs = [(name, item) for name, value in body.items()
                 for item in (value if isinstance(value, list) else [value])]
        content_type, payload = encode_form(
            [(f"{name}[]" if isinstance(body[name], list) else name, _form_text(item)) for name, item in pairs],
            call.files)
        return await self.post(call.path, payload, map_error, stream=stream, content_type=content_type)

    async def _media_json(self, call: MediaCall, check: str) -> dict[str, Any]:
        data = await self._read_json(await self._post_media(call, stream=False))
        if not isinstance(data, dict) or check not in data:
            raise upstream_error(502, f"Deployment {self.deployment.id} returned an invalid {call.path[1:]} answer.",
                                 code="upstream_invalid_response")
        return data

    async def _media_events(self, call: MediaCall, terminal: tuple[str, ...], count: int = 1,
                            fields: dict[str, Any] | None = None) -> AsyncIterator[list[dict[str, Any]]]:
        """A media stream's events, ended after `count` terminal events (one per image)."""
        resp = await self._post_media(call, stream=True, fields=fields)
        async with aclosing(self._json_events(resp, terminal, count)) as batches:
            async for batch in batches:
                yield batch

    async def images(self, call: MediaCall) -> dict[str, Any]:
        return await self._media_json(call, "data")

    def images_stream(self, call: MediaCall) -> AsyncIterator[list[dict[str, Any]]]:
        return self._media_events(call, ("image_generation.completed", "image_edit.completed"),
                                  count=int(call.fields.get("n") or 1))

    async def transcribe(self, call: MediaCall) -> dict[str, Any]:
        return await self._media_json(call, "text")

    def transcribe_stream(self, call: MediaCall) -> AsyncIterator[list[dict[str, Any]]]:
        return self._media_events(call, ("transcript.text.done",))

    async def speak(self, call: MediaCall) -> Speech:
        """Raw audio streamed through; for models billed by audio tokens the upstream is asked for
        its SSE format, whose last event carries the usage, and the audio is decoded from it."""
        fields = dict(call.fields)
        if "audio_output_token" not in self.spec.units:
            fields.pop("stream_format", None)
            resp = await self._post_media(call, stream=True, fields=fields)
            return Speech(resp.headers.get("content-type") or "application/octet-stream", self._bytes_of(resp))
        fields["stream_format"] = "sse"
        events = self._media_events(call, ("speech.audio.done",), fields=fields)
        first = await anext(events)  # the first event: a failure here may still fall back
        speech = Speech(_AUDIO_TYPES.get(str(fields.get("response_format") or "mp3"), "application/octet-stream"),
                        _empty())
        speech.chunks = self._audio_of(first, events, speech)
        return speech

    async def _bytes_of(self, resp: Response) -> AsyncIterator[bytes]:
        try:
            async for piece in resp.iter_chunks():
                yield piece
        except (UpstreamTimeout, UpstreamProtocolError) as exc:
            raise transport_error(exc, self.deployment.id) from None
        finally:
            resp.release()

    async def _audio_of(self, first: list[dict[str, Any]], events: AsyncIterator[list[dict[str, Any]]],
                        speech: Speech) -> AsyncIterator[bytes]:
        try:
            batch: list[dict[str, Any]] | None = first
            while batch is not None:
                out = bytearray()
                for event in batch:
                    if event.get("type") == "speech.audio.delta":
                        try:
                            out += base64.b64decode(str(event.get("audio") or ""), validate=True)
                        except binascii.Error:
                            raise upstream_error(502, f"Deployment {self.deployment.id} sent unreadable audio.",
                                                 code="upstream_invalid_response") from None
                    elif event.get("type") == "speech.audio.done" and isinstance(event.get("usage"), dict):
                        speech.usage = event["usage"]
                if out:
                    yield bytes(out)
                batch = await anext(events, None)
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    async def _send(self, call: ChatCall, stream: bool) -> Response:
        return await self.post("/chat/completions", self._payload(call, stream), map_error, stream=stream)

    async def chat(self, call: ChatCall) -> dict[str, Any]:
        resp = await self._send(call, stream=False)
        data = await self._read_json(resp)
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            raise upstream_error(502, f"Deployment {self.deployment.id} returned an invalid response.", code="upstream_invalid_response")
        return data

    def chat_stream(self, call: ChatCall) -> AsyncIterator[list[bytes]]:
        return self._chunks("/chat/completions", lambda: self._payload(call, True))

    async def _chunks(self, path: str, payload: Callable[[], bytes]) -> AsyncIterator[list[bytes]]:
        """The chunk payloads of a chat or completions stream, batched per read, up to [DONE].
        One generator from the socket's pieces to the batches: a 200-chunk stream resumes each
        layer once per chunk, so this path has no layers it does not need."""
        dep_id = self.deployment.id
        resp = await self.post(path, payload(), map_error, stream=True)
        try:
            if resp.content_type != "text/event-stream":
                raise upstream_error(502, f"Deployment {dep_id} did not answer with an event stream.", code="upstream_invalid_response")
            decoder = SSEDecoder()
            async for piece in resp.iter_chunks():
                batch = []
                for event in decoder.feed(piece):
                    data = event.data
                    if data == b"[DONE]":
                        if batch:
                            yield batch
                        return
                    if b'"error"' in data:
                        _raise_if_error_event(data, dep_id)
                    batch.append(data)
                if batch:
                    yield batch
        except (UpstreamTimeout, UpstreamProtocolError) as exc:
            raise transport_error(exc, dep_id) from None
        finally:
            resp.release()
        raise upstream_error(502, f"Deployment {dep_id} ended the stream early.", code="upstream_stream_broken")


PROVIDER = OpenAIProvider


_AUDIO_TYPES = {"mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac", "flac": "audio/flac",
                "wav": "audio/wav", "pcm": "audio/pcm"}


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""  # an async generator that yields nothing


def _form_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else orjson.dumps(value).decode()


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


def _compatible_messages(messages: list[Any]) -> list[Any]:
    """An assistant turn that only calls tools with `content: ""` rather than null: llama-cpp-python's
    server refuses null (a 500) and its templates fail on a missing key; every server takes ""."""
    if not any(isinstance(m, dict) and m.get("role") == "assistant" and m.get("content") is None for m in messages):
        return messages
    return [{**m, "content": ""} if isinstance(m, dict) and m.get("role") == "assistant" and m.get("content") is None
            else m for m in messages]


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
        code = code if isinstance(code, str) else None  # llama-server sends its HTTP status as an integer code
    elif isinstance(obj, dict) and isinstance(obj.get("error"), str):
        message = obj["error"]
    if not message:
        message = raw[:300].decode("utf-8", "replace").strip() or f"HTTP {status}"
    out_headers = {}
    for name in ("retry-after", "retry-after-ms"):
        if name in headers:
            out_headers[name] = headers[name]
    if status in _CLIENT_STATUSES:
        if is_overflow(status, str(message), etype, code):
            code = "context_length_exceeded"  # however this server words it: fallback acts on the code
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
