"""Google Gemini (the Generative Language API: `generateContent` / `streamGenerateContent`).

OpenAI chat requests are translated to Gemini's `contents` / `systemInstruction` / `tools` /
`generationConfig`, and Gemini's candidates back to OpenAI choices, so clients see one
protocol. Usage is reported in OpenAI's accounting (completion tokens include thinking
tokens; prompt tokens include cached ones), which is what metering bills.

Deployment options (extra keys in the deployment config):
  thinking_budgets  {effort: tokens} overriding `THINKING_BUDGETS` (Gemini 2.5 models)
  thinking_style    "budget" (thinkingConfig.thinkingBudget) or "level" (thinkingLevel, the
                    Gemini 3 way); by default "level" for `gemini-3*` models, else "budget"
  api_version       path prefix when `base_url` has none (default "v1beta")
  keepalive_seconds idle time before a pooled connection is dropped (default 15)
"""

from __future__ import annotations

import base64
import logging
import mimetypes
import re
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import quote, unquote_to_bytes, urlsplit

import orjson

from switchyard.providers.base import ChatCall, EmbedCall, Embedded, HTTPProvider
from switchyard.providers.overflow import is_overflow
from switchyard.providers.http import (
    Response, UpstreamProtocolError, UpstreamTimeout, transport_error,
)
from switchyard.wire.chat import (
    AudioPart,
    ChatRequest,
    FilePart,
    ImagePart,
    JSONObjectFormat,
    JSONSchemaResponseFormat,
    Message,
    NamedToolChoice,
    RefusalPart,
    TextPart,
)
from switchyard.wire.errors import GatewayError, invalid_request, upstream_error
from switchyard.wire.sse import SSEDecoder

log = logging.getLogger("switchyard.providers.gemini")

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
THINKING_BUDGETS: dict[str, int] = {"none": 0, "minimal": 512, "low": 1024, "medium": 8192, "high": 24576}

_FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}
_CLIENT_STATUSES = frozenset({400, 404, 409, 413, 422})
# Raw-body fields in Gemini's own vocabulary that a client may add (via `extra_body`).
_NATIVE_PASSTHROUGH = ("safetySettings", "cachedContent", "labels")


class GeminiProvider(HTTPProvider):
    kind = "gemini"

    _prefix = ""

    async def start(self) -> None:
        dep = self.deployment
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = self.credential()
        if key:
            headers["x-goog-api-key"] = key
        base_url = dep.base_url or DEFAULT_BASE_URL
        path = urlsplit(base_url).path.rstrip("/")
        # A base URL that already names an API version (…/v1beta) is used as is.
        if not re.search(r"/v\d+(alpha|beta)?\d*$", path):
            self._prefix = "/" + str(dep.options.get("api_version", "v1beta")).strip("/")
        self.open_pool(base_url, headers)

    # ------------------------------------------------------------------ token counts
    def _count_path(self) -> str:
        return f"{self._prefix}/models/{quote(self.deployment.model.removeprefix('models/'), safe='-._~')}:countTokens"

    async def count_prompt_tokens(self, request: ChatRequest) -> int | None:
        """Gemini's own count (`countTokens`) of the request as we would send it."""
        try:
            body = to_gemini(request, {}, None)
        except GatewayError:
            return None
        model = "models/" + self.deployment.model.removeprefix("models/")
        counted = {k: body[k] for k in ("contents", "systemInstruction", "tools", "toolConfig") if k in body}
        found = await self.ask(self._count_path(), {"generateContentRequest": {"model": model, **counted}})
        tokens = found.get("totalTokens") if isinstance(found, dict) else None
        return tokens if isinstance(tokens, int) else None

    async def count_output_tokens(self, text: str) -> int | None:
        if not text:
            return 0
        found = await self.ask(self._count_path(), {"contents": [{"role": "model", "parts": [{"text": text}]}]})
        tokens = found.get("totalTokens") if isinstance(found, dict) else None
        return tokens if isinstance(tokens, int) else None

    # ------------------------------------------------------------------ request
    def _path(self, model: str, stream: bool) -> str:
        model = model.removeprefix("models/")
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return f"{self._prefix}/models/{quote(model, safe='-._~')}:{method}"

    def thinking_config(self, effort: str | None) -> dict[str, Any] | None:
        if effort is None:
            return None
        opts = self.deployment.options
        style = opts.get("thinking_style") or ("level" if self.deployment.model.startswith("gemini-3") else "budget")
        if style == "level":
            return {"thinkingLevel": effort}
        budgets = {**THINKING_BUDGETS, **dict(opts.get("thinking_budgets") or {})}
        if effort not in budgets:
            raise invalid_request(f"Unsupported value: 'reasoning_effort' does not support '{effort}'.",
                                  param="reasoning_effort", code="unsupported_value")
        return {"thinkingBudget": int(budgets[effort])}

    async def _send(self, call: ChatCall, stream: bool) -> Response:
        payload = orjson.dumps(to_gemini(call.request, call.body, self.thinking_config(call.request.reasoning_effort),
                                         output_limit=call.output_limit))
        return await self.post(self._path(call.upstream_model, stream), payload, map_error, stream=stream)

    # ------------------------------------------------------------------ embeddings
    async def embed(self, call: EmbedCall) -> Embedded:
        """`batchEmbedContents`, one request per input. Its answer has no token count: the
        gateway counts the inputs with `countTokens`."""
        req = call.request
        if req.texts is None:
            raise invalid_request(f"Model {req.model} embeds text: token arrays are for OpenAI's models.", param="input")
        model = "models/" + call.upstream_model.removeprefix("models/")
        one: dict[str, Any] = {"model": model}
        if req.dimensions is not None:
            one["outputDimensionality"] = req.dimensions
        body = {"requests": [{**one, "content": {"parts": [{"text": text}]}} for text in req.texts]}
        path = f"{self._prefix}/models/{quote(model.removeprefix('models/'), safe='-._~')}:batchEmbedContents"
        resp = await self.post(path, orjson.dumps(body), map_error)
        try:
            raw = await resp.read()
        except (UpstreamTimeout, UpstreamProtocolError) as exc:
            raise transport_error(exc, self.deployment.id) from None
        try:
            data = orjson.loads(raw)
            vectors = [[float(v) for v in item["values"]] for item in data["embeddings"]]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise upstream_error(502, f"Deployment {self.deployment.id} returned an invalid embeddings answer.",
                                 code="upstream_invalid_response") from None
        if len(vectors) != req.count:
            raise upstream_error(502, f"Deployment {self.deployment.id} returned {len(vectors)} embeddings for "
                                 f"{req.count} inputs.", code="upstream_invalid_response")
        return Embedded(vectors, None)

    # ------------------------------------------------------------------ calls
    async def chat(self, call: ChatCall) -> dict[str, Any]:
        dep_id = self.deployment.id
        resp = await self._send(call, stream=False)
        try:
            raw = await resp.read()
        except (UpstreamTimeout, UpstreamProtocolError) as exc:
            raise transport_error(exc, dep_id) from None
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict) or not ("candidates" in data or "promptFeedback" in data):
            raise upstream_error(502, f"Deployment {dep_id} returned an invalid response.", code="upstream_invalid_response")
        return from_gemini(data, call.upstream_model)

    async def chat_stream(self, call: ChatCall) -> AsyncIterator[list[bytes]]:
        dep_id = self.deployment.id
        resp = await self._send(call, stream=True)
        try:
            if resp.content_type != "text/event-stream":
                raise upstream_error(502, f"Deployment {dep_id} did not answer with an event stream.", code="upstream_invalid_response")
            decoder = SSEDecoder()
            state = _StreamState(call.upstream_model)
            async for piece in resp.iter_chunks():
                batch: list[bytes] = []
                for event in decoder.feed(piece):
                    batch += state.feed(event.data, dep_id)
                if batch:
                    yield batch
            tail: list[bytes] = []
            for event in decoder.close():
                tail += state.feed(event.data, dep_id)
            if not state.finished:
                raise upstream_error(502, f"Deployment {dep_id} ended the stream early.", code="upstream_stream_broken")
            tail += state.usage_chunk()
            if tail:
                yield tail
        except (UpstreamTimeout, UpstreamProtocolError) as exc:
            raise transport_error(exc, dep_id) from None
        finally:
            resp.release()


PROVIDER = GeminiProvider


# ---------------------------------------------------------------------- OpenAI -> Gemini
def to_gemini(
    req: ChatRequest, body: Mapping[str, Any], thinking: dict[str, Any] | None = None, output_limit: int | None = None,
) -> dict[str, Any]:
    """The `generateContent` body for an OpenAI chat request."""
    out: dict[str, Any] = {}
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}
    for i, msg in enumerate(req.messages):
        if msg.role in ("system", "developer"):
            system += [{"text": t} for t in _texts(msg.content)]
        elif msg.role == "user":
            parts = _user_parts(msg, i)
            if parts:
                contents.append({"role": "user", "parts": parts})
        elif msg.role == "assistant":
            parts = [{"text": t} for t in _texts(msg.content) if t]
            for tc in msg.tool_calls or ():
                call_names[tc.id] = tc.function.name
                parts.append({"functionCall": {"name": tc.function.name, "args": _args(tc.function.arguments, i)}})
            if parts:
                contents.append({"role": "model", "parts": parts})
        else:  # tool / legacy function results
            name = msg.name if msg.role == "function" else call_names.get(msg.tool_call_id or "")
            if not name:
                raise invalid_request(
                    f"Invalid value for 'messages[{i}].tool_call_id': no earlier assistant tool call has id "
                    f"'{msg.tool_call_id}'.", param=f"messages[{i}].tool_call_id", code="invalid_value")
            part = {"functionResponse": {"name": name, "response": _tool_result("".join(_texts(msg.content)))}}
            prev = contents[-1] if contents else None
            # Parallel calls are answered in one turn holding every result.
            if prev and prev["role"] == "user" and all("functionResponse" in p for p in prev["parts"]):
                prev["parts"].append(part)
            else:
                contents.append({"role": "user", "parts": [part]})
    out["contents"] = contents
    if system:
        out["systemInstruction"] = {"parts": system}

    functions = []
    for tool in req.tools or ():
        fn = tool.function
        if tool.type != "function" or fn is None:
            continue
        decl: dict[str, Any] = {"name": fn.name}
        if fn.description:
            decl["description"] = fn.description
        if fn.parameters and fn.parameters.get("properties"):  # Gemini rejects an empty object schema
            decl["parameters"] = gemini_schema(fn.parameters)
        functions.append(decl)
    if functions:
        out["tools"] = [{"functionDeclarations": functions}]
        choice = req.tool_choice
        mode: dict[str, Any] | None = None
        if isinstance(choice, NamedToolChoice):
            mode = {"mode": "ANY", "allowedFunctionNames": [choice.function.name]}
        elif choice == "required":
            mode = {"mode": "ANY"}
        elif choice == "none":
            mode = {"mode": "NONE"}
        elif choice == "auto":
            mode = {"mode": "AUTO"}
        if mode:
            out["toolConfig"] = {"functionCallingConfig": mode}

    gen: dict[str, Any] = {}
    for key, value in (
        ("temperature", req.temperature), ("topP", req.top_p), ("maxOutputTokens", output_limit or req.output_limit),
        ("stopSequences", req.stop_sequences or None), ("candidateCount", req.n), ("seed", req.seed),
        ("presencePenalty", req.presence_penalty), ("frequencyPenalty", req.frequency_penalty),
    ):
        if value is not None:
            gen[key] = value
    rf = req.response_format
    if isinstance(rf, JSONObjectFormat):
        gen["responseMimeType"] = "application/json"
    elif isinstance(rf, JSONSchemaResponseFormat):
        gen["responseMimeType"] = "application/json"
        if rf.json_schema.schema:
            gen["responseSchema"] = gemini_schema(rf.json_schema.schema)
    if thinking is not None:
        gen["thinkingConfig"] = thinking
    native = body.get("generationConfig")
    if isinstance(native, dict):
        gen.update(native)
    if gen:
        out["generationConfig"] = gen
    for key in _NATIVE_PASSTHROUGH:
        if key in body:
            out[key] = body[key]
    return out


def _texts(content: Any) -> list[str]:
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    out = []
    for part in content:
        if isinstance(part, TextPart):
            out.append(part.text)
        elif isinstance(part, RefusalPart):
            out.append(part.refusal)
    return out


def _user_parts(msg: Message, i: int) -> list[dict[str, Any]]:
    if isinstance(msg.content, str):
        return [{"text": msg.content}]
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(msg.content or ()):
        where = f"messages[{i}].content[{j}]"
        if isinstance(part, TextPart):
            parts.append({"text": part.text})
        elif isinstance(part, ImagePart):
            parts.append(_media(part.image_url.url, f"{where}.image_url", "image/jpeg"))
        elif isinstance(part, AudioPart):
            fmt = part.input_audio.format.lower()
            parts.append({"inlineData": {"mimeType": f"audio/{'mpeg' if fmt == 'mp3' else fmt}", "data": part.input_audio.data}})
        elif isinstance(part, FilePart):
            data = part.file.get("file_data")
            if not isinstance(data, str):
                raise invalid_request("Only inline files ('file_data') can be sent to this model.", param=f"{where}.file")
            parts.append(_media(data, f"{where}.file.file_data", "application/pdf"))
    return parts


def _media(url: str, param: str, default_mime: str) -> dict[str, Any]:
    if url.startswith("data:"):
        header, sep, payload = url[5:].partition(",")
        if not sep:
            raise invalid_request("Invalid data URL.", param=param)
        mime, *flags = header.split(";")
        if "base64" in flags:
            data = "".join(payload.split())
        else:
            data = base64.b64encode(unquote_to_bytes(payload)).decode()
        return {"inlineData": {"mimeType": mime or default_mime, "data": data}}
    if url.startswith(("http://", "https://", "gs://")):
        guessed = mimetypes.guess_type(urlsplit(url).path)[0]
        return {"fileData": {"mimeType": guessed or default_mime, "fileUri": url}}
    raise invalid_request("Expected a data: or http(s) URL.", param=param)


def _args(arguments: str, i: int) -> dict[str, Any]:
    if not arguments.strip():
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        raise invalid_request(f"Invalid value for 'messages[{i}].tool_calls': arguments are not valid JSON.",
                              param=f"messages[{i}].tool_calls", code="invalid_value") from None
    return value if isinstance(value, dict) else {"value": value}


def _tool_result(text: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {"result": text}
    return value if isinstance(value, dict) else {"result": value}


# The OpenAPI-subset `Schema` Gemini accepts; everything else (additionalProperties, $schema,
# strict, …) is dropped, `$ref`s are inlined from `$defs`, and `type: [x, "null"]` becomes nullable.
_SCHEMA_KEYS = frozenset({
    "type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems", "properties",
    "required", "minProperties", "maxProperties", "minLength", "maxLength", "pattern", "example", "anyOf",
    "propertyOrdering", "default", "items", "minimum", "maximum",
})


def gemini_schema(schema: Any, defs: Mapping[str, Any] | None = None, depth: int = 0) -> Any:
    """A JSON Schema rewritten into the subset Gemini's `responseSchema` / `parameters` accept."""
    if not isinstance(schema, dict):
        return schema
    if defs is None:
        defs = {**(schema.get("definitions") or {}), **(schema.get("$defs") or {})}
    if depth > 32:  # a recursive $ref cannot be inlined: stop with an open object
        return {"type": "object"}
    ref = schema.get("$ref")
    if isinstance(ref, str):
        target = defs.get(ref.rsplit("/", 1)[-1])
        merged = {**(target or {}), **{k: v for k, v in schema.items() if k != "$ref"}}
        return gemini_schema(merged, defs, depth + 1)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "const":
            out["enum"] = [value]
        elif key in ("oneOf", "anyOf"):
            out["anyOf"] = [gemini_schema(v, defs, depth + 1) for v in value]
        elif key not in _SCHEMA_KEYS:
            continue
        elif key == "properties":
            out[key] = {name: gemini_schema(v, defs, depth + 1) for name, v in value.items()}
        elif key == "items":
            out[key] = gemini_schema(value, defs, depth + 1)
        elif key == "type" and isinstance(value, list):
            kinds = [t for t in value if t != "null"]
            if len(kinds) < len(value):
                out["nullable"] = True
            if len(kinds) == 1:
                out["type"] = kinds[0]
            elif kinds:
                out["anyOf"] = [{"type": t} for t in kinds]
        else:
            out[key] = value
    return out


# ---------------------------------------------------------------------- Gemini -> OpenAI
def _call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def _finish(reason: str | None, has_calls: bool) -> str | None:
    if reason is None:
        return None
    if reason == "STOP" and has_calls:
        return "tool_calls"
    return _FINISH.get(reason, "stop")


def usage_from(meta: Any) -> dict[str, Any] | None:
    if not isinstance(meta, dict):
        return None

    def n(key: str) -> int:
        value = meta.get(key)
        return value if isinstance(value, int) and value > 0 else 0

    prompt = n("promptTokenCount") + n("toolUsePromptTokenCount")
    thoughts = n("thoughtsTokenCount")
    completion = n("candidatesTokenCount") + thoughts
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": min(n("cachedContentTokenCount"), prompt)},
        "completion_tokens_details": {"reasoning_tokens": thoughts},
    }


def from_gemini(data: dict[str, Any], model: str) -> dict[str, Any]:
    """A `chat.completion` for a `GenerateContentResponse`: one choice per candidate."""
    choices = []
    for pos, cand in enumerate(data.get("candidates") or ()):
        texts: list[str] = []
        calls: list[dict[str, Any]] = []
        for part in (cand.get("content") or {}).get("parts") or ():
            if "functionCall" in part:
                fc = part["functionCall"] or {}
                calls.append({"id": _call_id(), "type": "function", "function": {
                    "name": fc.get("name", ""), "arguments": orjson.dumps(fc.get("args") or {}).decode()}})
            elif isinstance(part.get("text"), str) and not part.get("thought"):
                texts.append(part["text"])
        message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None,
                                   "refusal": None, "annotations": []}
        if calls:
            message["tool_calls"] = calls
        choices.append({"index": cand.get("index", pos), "message": message, "logprobs": None,
                        "finish_reason": _finish(cand.get("finishReason"), bool(calls)) or "stop"})
    if not choices and (data.get("promptFeedback") or {}).get("blockReason"):
        # The prompt itself was blocked: no candidates at all.
        choices.append({"index": 0, "message": {"role": "assistant", "content": None, "refusal": None, "annotations": []},
                        "logprobs": None, "finish_reason": "content_filter"})
    out: dict[str, Any] = {
        "id": "chatcmpl-" + (data.get("responseId") or uuid.uuid4().hex),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": data.get("modelVersion") or model,
        "system_fingerprint": None,
        "choices": choices,
    }
    usage = usage_from(data.get("usageMetadata"))
    if usage is not None:
        out["usage"] = usage
    return out


class _StreamState:
    """Turns each streamed `GenerateContentResponse` into `chat.completion.chunk` payloads."""

    def __init__(self, model: str) -> None:
        self.head: dict[str, Any] = {"id": "chatcmpl-" + uuid.uuid4().hex, "object": "chat.completion.chunk",
                                     "created": int(time.time()), "model": model, "system_fingerprint": None}
        self.started: set[int] = set()
        self.calls: dict[int, int] = {}  # candidate index -> tool calls sent
        self.finished_candidates: set[int] = set()
        self.usage: dict[str, Any] | None = None
        self.blocked = False

    @property
    def finished(self) -> bool:
        return bool(self.finished_candidates) or self.blocked

    def _chunk(self, index: int, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return orjson.dumps({**self.head, "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}]})

    def feed(self, raw: bytes, dep_id: str) -> list[bytes]:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise upstream_error(502, f"Deployment {dep_id} sent an event that is not JSON.", code="upstream_invalid_response") from None
        if not isinstance(data, dict):
            return []
        if data.get("error"):
            err = data["error"] if isinstance(data["error"], dict) else {"message": str(data["error"])}
            code = err.get("code") if isinstance(err.get("code"), int) else 500
            raise map_error(code, orjson.dumps({"error": err}), {}, dep_id, prefix="failed mid-stream: ")
        if data.get("modelVersion"):
            self.head["model"] = data["modelVersion"]
        if data.get("responseId"):
            self.head["id"] = "chatcmpl-" + data["responseId"]
        if data.get("usageMetadata"):
            self.usage = usage_from(data["usageMetadata"])
        out: list[bytes] = []
        candidates = data.get("candidates") or ()
        if not candidates and (data.get("promptFeedback") or {}).get("blockReason") and not self.blocked:
            self.blocked = True
            out.append(self._chunk(0, {"role": "assistant", "content": "", "refusal": None}))
            out.append(self._chunk(0, {}, "content_filter"))
        for pos, cand in enumerate(candidates):
            idx = cand.get("index", pos)
            if idx not in self.started:
                self.started.add(idx)
                out.append(self._chunk(idx, {"role": "assistant", "content": "", "refusal": None}))
            texts = []
            for part in (cand.get("content") or {}).get("parts") or ():
                if "functionCall" in part:
                    if texts:
                        out.append(self._chunk(idx, {"content": "".join(texts)}))
                        texts = []
                    fc = part["functionCall"] or {}
                    k = self.calls.get(idx, 0)
                    self.calls[idx] = k + 1
                    out.append(self._chunk(idx, {"tool_calls": [{"index": k, "id": _call_id(), "type": "function",
                                                                 "function": {"name": fc.get("name", ""), "arguments": ""}}]}))
                    out.append(self._chunk(idx, {"tool_calls": [{"index": k, "function": {
                        "arguments": orjson.dumps(fc.get("args") or {}).decode()}}]}))
                elif isinstance(part.get("text"), str) and part["text"] and not part.get("thought"):
                    texts.append(part["text"])
            if texts:
                out.append(self._chunk(idx, {"content": "".join(texts)}))
            reason = cand.get("finishReason")
            if reason and idx not in self.finished_candidates:
                self.finished_candidates.add(idx)
                out.append(self._chunk(idx, {}, _finish(reason, bool(self.calls.get(idx)))))
        return out

    def usage_chunk(self) -> list[bytes]:
        if self.usage is None:
            return []
        return [orjson.dumps({**self.head, "choices": [], "usage": self.usage})]


# ---------------------------------------------------------------------- errors
def _retry_delay(details: Any) -> str | None:
    """Seconds from a `google.rpc.RetryInfo` detail (`"retryDelay": "37s"`), rounded up."""
    for detail in details if isinstance(details, list) else ():
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                seconds = float(delay[:-1])
            except ValueError:
                continue
            return str(max(1, int(seconds + 0.999)))
    return None


def map_error(status: int, raw: bytes, headers: Mapping[str, str], dep_id: str, prefix: str = "") -> GatewayError:
    """Turn a Gemini error (`{"error": {"code", "message", "status", "details"}}`) into ours."""
    err: dict[str, Any] = {}
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        obj = None
    if isinstance(obj, list) and obj and isinstance(obj[0], dict):  # streamed bodies may be JSON arrays
        obj = obj[0]
    if isinstance(obj, dict) and isinstance(obj.get("error"), dict):
        err = obj["error"]
    message = err.get("message") or raw[:300].decode("utf-8", "replace").strip() or f"HTTP {status}"
    code = str(err["status"]).lower() if err.get("status") else None
    details = err.get("details")
    reasons = {d.get("reason") for d in details if isinstance(d, dict)} if isinstance(details, list) else set()
    out_headers = {name: headers[name] for name in ("retry-after", "retry-after-ms") if name in headers}
    if status in (401, 403) or "API_KEY_INVALID" in reasons:  # Gemini answers a bad key with 400
        return upstream_error(502, f"Deployment {dep_id} rejected the gateway's credentials.", code="upstream_auth_error")
    if status in _CLIENT_STATUSES:
        if is_overflow(status, str(message), code=code):
            code = "context_length_exceeded"
        return GatewayError(status, prefix + str(message), type="invalid_request_error", code=code)
    if status == 429:
        if "retry-after" not in out_headers and (delay := _retry_delay(details)):
            out_headers["retry-after"] = delay
        return upstream_error(429, f"Upstream rate limit reached: {message}", type="requests",
                              code=code or "rate_limit_exceeded", headers=out_headers)
    if status in (408, 504):
        return upstream_error(504, f"Deployment {dep_id} timed out: {message}", code="upstream_timeout")
    if status == 503:
        return upstream_error(503, f"Deployment {dep_id} is unavailable: {prefix}{message}", code="upstream_unavailable", headers=out_headers)
    return upstream_error(502, f"Deployment {dep_id} failed (HTTP {status}): {prefix}{message}", code="upstream_error", headers=out_headers)
