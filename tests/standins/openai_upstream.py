"""A stand-in OpenAI upstream speaking the real wire format, with scripted behaviours.

It runs in a background thread of the test process; the gateway under test (a real server
process) calls it over HTTP. Every request it receives is recorded so tests can check that
what switchyard forwarded is what the client sent.

Behaviour is chosen by the upstream model id the gateway sends (configure deployments with
`model: <behaviour>`):
  ok               a normal answer (streams: role chunk, content chunks, finish, usage)
  tools            a tool call (streams: id/name chunk, argument fragments)
  counted          usage as OpenAI counts the messages (string contents) and the answer
  tools-last       a call of the last function in the request's `tools` (arguments from its schema)
  status-<code>    an OpenAI error body with that status (429 adds Retry-After: 7)
  slow             waits `slow_seconds` before answering
  broken-stream    streams two chunks then drops the connection
  error-event      streams one chunk then an `error` event
  no-done          streams the answer but closes without [DONE]
  slow-stream      streams the answer with a pause of 0.3 s between chunks
  garbage          200 with a body that is not JSON

Images, audio and `POST /v1/completions`: see tests/standins/openai_media.py.

`POST /v1/responses` speaks the Responses API (objects and events as OpenAI sends them, checked
against the SDK's models and the OpenAPI spec by tests/unit/test_standin_responses.py):
  ok               a message whose text echoes the last user text: "echo: <text>"
  tools            a function_call of the first function tool in `tools` (arguments from its
                   parameter schema: strings "Paris", numbers 1, booleans true, enums their first)
  reasoning        a reasoning item (empty summary), then the `ok` message
  incomplete       the `ok` message cut short: status incomplete, reason max_output_tokens
  failed           status failed with a server_error (streams: response.failed)
  status-<code>, slow, slow-stream, garbage   as for chat
  broken-stream    streams three events then drops the connection
  error-event      streams response.created then an `error` event
`POST /v1/responses/compact` keeps the user's turns and adds an opaque `compaction` item.
A missing `model` or `input` is a 400 as from OpenAI (param set, code missing_required_parameter);
`tools` without a function tool in the request is a 400 too. Usage is RESPONSES_USAGE (non-zero cached and reasoning tokens, so billing can be checked).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import struct
import time
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.standins.openai_media import MediaRoutes
from tests.standins.server import ThreadedStandIn

MODERATION_CATEGORIES = ("hate", "hate/threatening", "harassment", "harassment/threatening", "illicit",
                         "illicit/violent", "self-harm", "self-harm/intent", "self-harm/instructions", "sexual",
                         "sexual/minors", "violence", "violence/graphic")
ANSWER = ["Hello", " from", " the", " stand-in", "."]
TOOL_ARGS = ['{"loc', 'ation": "Par', 'is", "unit": "c"}']


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class StandInUpstream(ThreadedStandIn):
    slow_seconds: float = 3.0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/responses", self._responses)
        app.router.add_post("/v1/responses/compact", self._compact)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/v1/moderations", self._moderations)
        MediaRoutes(self.received, Received).add(app)  # images, audio, legacy completions

    async def _moderations(self, request: web.Request) -> web.Response:
        """OpenAI's moderation object: a text mentioning "kill" is flagged for violence; image
        parts are scored as images."""
        body = await request.json()
        self.received.append(Received(request.path, dict(request.headers), body))
        value = body["input"]
        items = [value] if isinstance(value, str) else value
        results = []
        for item in items:
            text = item if isinstance(item, str) else item.get("text", "")
            kind = "image" if isinstance(item, dict) and item.get("type") == "image_url" else "text"
            violent = "kill" in text.lower()
            results.append({
                "flagged": violent,
                "categories": {c: (violent and c == "violence") for c in MODERATION_CATEGORIES},
                "category_scores": {c: (0.91 if violent and c == "violence" else 0.0001) for c in MODERATION_CATEGORIES},
                "category_applied_input_types": {c: [kind] for c in MODERATION_CATEGORIES},
            })
        return web.json_response({"id": "modr-" + uuid.uuid4().hex, "model": body.get("model"), "results": results})

    async def _embeddings(self, request: web.Request) -> web.Response:
        """OpenAI's embeddings: one vector per input (pseudo-random by text, unit length, 8 or
        `dimensions` floats), base64 float32s when asked; usage counts a token per 4 bytes (at
        least 1) of every text, or the token ids. `status-N` models fail like OpenAI."""
        body = await request.json()
        self.received.append(Received(request.path, dict(request.headers), body))
        behaviour = str(body.get("model"))
        if behaviour.startswith("status-"):
            status = int(behaviour.split("-", 1)[1])
            return web.json_response({"error": {"message": f"stand-in failure {status}", "type": "server_error",
                                                "param": None, "code": None}}, status=status)
        value = body["input"]
        inputs = [value] if isinstance(value, str) or (value and isinstance(value[0], int)) else value
        dims = int(body.get("dimensions") or 8)
        data, tokens = [], 0
        for i, item in enumerate(inputs):
            seed = (item if isinstance(item, str) else ",".join(map(str, item))).encode()
            raw = [((b * 31 + k * 17) % 97) / 97 + 0.01 for k, b in enumerate((seed * dims)[:dims])]
            norm = sum(v * v for v in raw) ** 0.5
            vector = [v / norm for v in raw]
            tokens += max(1, len(seed) // 4) if isinstance(item, str) else len(item)
            encoded: Any = vector
            if body.get("encoding_format") == "base64":
                encoded = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
            data.append({"object": "embedding", "index": i, "embedding": encoded})
        if behaviour == "shuffled":
            data.reverse()  # OpenAI orders by index; a client must not rely on the list order
        return web.json_response({"object": "list", "data": data, "model": behaviour,
                                  "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.received.append(Received(request.path, dict(request.headers), body))
        behaviour = str(body.get("model"))
        if behaviour.startswith("status-"):
            status = int(behaviour.split("-", 1)[1])
            headers = {"Retry-After": "7"} if status == 429 else {}
            err = {"error": {"message": f"stand-in failure {status}", "type": "invalid_request_error" if status < 500 else "server_error",
                             "param": "messages" if status == 400 else None, "code": "stand_in_code"}}
            return web.json_response(err, status=status, headers=headers)
        if behaviour == "slow":
            await asyncio.sleep(self.slow_seconds)
        if behaviour == "garbage":
            return web.Response(text="<html>not json</html>", content_type="text/html")
        if body.get("stream"):
            return await self._stream(request, body, behaviour)
        answer = completion(body, call=tool_call(body, behaviour))
        if behaviour == "counted":
            answer["usage"] = openai_usage(body)
        return web.json_response(answer)

    async def _stream(self, request: web.Request, body: dict[str, Any], behaviour: str) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        chunks = stream_chunks(body, call=tool_call(body, behaviour))
        for i, chunk in enumerate(chunks):
            if behaviour == "broken-stream" and i == 2:
                request.transport.close()  # type: ignore[union-attr]
                return resp
            if behaviour == "error-event" and i == 1:
                await resp.write(b'data: {"error": {"message": "stand-in exploded", "type": "server_error", "code": "boom"}}\n\n')
                return resp
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            if behaviour == "slow-stream":
                await asyncio.sleep(0.3)
        if behaviour != "no-done":
            await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    # ---- Responses API ---------------------------------------------------------------------

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return error_response(400, "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
                                  "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent "
                                  "was not valid JSON.)", param=None, code=None)
        self.received.append(Received(request.path, dict(request.headers), body))
        for name in ("model", "input"):
            if body.get(name) in (None, ""):
                return error_response(400, f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter")
        behaviour = str(body["model"])
        if behaviour.startswith("status-"):
            status = int(behaviour.split("-", 1)[1])
            return error_response(status, f"stand-in failure {status}", param="input" if status == 400 else None, code="stand_in_code")
        if behaviour == "tools" and not function_tools(body):
            return error_response(400, "stand-in: behaviour 'tools' needs a function tool in 'tools'.", param="tools", code=None)
        if behaviour == "slow":
            await asyncio.sleep(self.slow_seconds)
        if behaviour == "garbage":
            return web.Response(text="<html>not json</html>", content_type="text/html")
        turn = ResponsesTurn(body, behaviour)
        if body.get("stream"):
            return await self._responses_stream(request, turn)
        return web.json_response(turn.final(), headers={"x-request-id": f"req_{uuid.uuid4().hex}"})

    async def _compact(self, request: web.Request) -> web.Response:
        """`/v1/responses/compact` as OpenAI answers it: the user's turns kept, the rest as one
        opaque compaction item (its content only OpenAI can read)."""
        body = await request.json()
        self.received.append(Received(request.path, dict(request.headers), body))
        if body.get("model") in (None, ""):
            return error_response(400, "Missing required parameter: 'model'.", param="model", code="missing_required_parameter")
        behaviour = str(body["model"])
        if behaviour.startswith("status-"):
            status = int(behaviour.split("-", 1)[1])
            return error_response(status, f"stand-in failure {status}", param=None, code="stand_in_code")
        items = body.get("input") or []
        items = [{"role": "user", "content": items}] if isinstance(items, str) else items
        kept = [{"id": _id("msg"), "type": "message", "role": "user", "status": "completed",
                 "content": [{"type": "input_text", "text": last_user_text([i])}]}
                for i in items if isinstance(i, dict) and i.get("role") == "user"]
        return web.json_response({
            "id": _id("resp"), "object": "response.compaction", "created_at": int(time.time()),
            "output": [*kept, {"id": _id("cmp"), "type": "compaction", "encrypted_content": "gAAAAB" + uuid.uuid4().hex}],
            "usage": dict(RESPONSES_USAGE),
        })

    async def _responses_stream(self, request: web.Request, turn: ResponsesTurn) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache",
                                           "x-request-id": f"req_{uuid.uuid4().hex}"})
        await resp.prepare(request)
        for i, event in enumerate(turn.events()):
            if turn.behaviour == "broken-stream" and i == 3:
                request.transport.close()  # type: ignore[union-attr]
                return resp
            if turn.behaviour == "error-event" and i == 1:
                event = {"type": "error", "code": "server_error", "message": "stand-in exploded", "param": None,
                         "sequence_number": 1}
            await resp.write(sse(event))
            if event["type"] == "error":
                return resp
            if turn.behaviour == "slow-stream":
                await asyncio.sleep(0.3)
        await resp.write_eof()
        return resp


def error_response(status: int, message: str, param: str | None, code: str | None) -> web.Response:
    """OpenAI's error body; 429 adds Retry-After: 7."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    headers = {"Retry-After": "7"} if status == 429 else {}
    return web.json_response({"error": {"message": message, "type": kind, "param": param, "code": code}},
                             status=status, headers=headers)


def sse(event: dict[str, Any]) -> bytes:
    """One Responses stream frame: `event: <type>` then `data: <json>`, no [DONE] at the end."""
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


# Known, non-zero numbers so tests can check what the gateway bills (cached and reasoning included).
RESPONSES_USAGE: dict[str, Any] = {
    "input_tokens": 20, "input_tokens_details": {"cached_tokens": 8, "cache_write_tokens": 0},
    "output_tokens": 9, "output_tokens_details": {"reasoning_tokens": 4}, "total_tokens": 29,
}


def last_user_text(items: Any) -> str:
    """The text of the last user message (a string input is one); else a tool output, else ""."""
    if isinstance(items, str):
        return items
    if not isinstance(items, list):
        return ""
    for item in reversed(items):
        if not isinstance(item, dict):
            continue
        if item.get("type") == "function_call_output":
            out = item.get("output")
            return f"tool output {out if isinstance(out, str) else json.dumps(out)}"
        if item.get("role") == "user" and item.get("type", "message") == "message":
            content = item.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "input_text")
    return ""


def function_tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in body.get("tools") or [] if isinstance(t, dict) and t.get("type") == "function"]


def sample_arguments(parameters: Any) -> dict[str, Any]:
    """Deterministic arguments that fit a tool's JSON schema (top level only)."""
    samples = {"string": "Paris", "integer": 1, "number": 1, "boolean": True, "array": [], "object": {}}
    out: dict[str, Any] = {}
    for name, prop in ((parameters or {}).get("properties") or {}).items():
        prop = prop if isinstance(prop, dict) else {}
        if prop.get("enum"):
            out[name] = prop["enum"][0]
        else:
            kind = prop.get("type", "string")
            kind = next((k for k in kind if k != "null"), "string") if isinstance(kind, list) else kind
            out[name] = samples.get(kind, "Paris")
    return out


def _pieces(text: str, size: int | None = None) -> list[str]:
    """Fragments the way deltas arrive: words with their leading space, or `size`-char chunks."""
    if size:
        return [text[i:i + size] for i in range(0, len(text), size)] or [text]
    words = re.findall(r"\s*\S+", text)
    rest = text[len("".join(words)):]  # trailing whitespace, so the deltas join back to the text
    return [*words, rest] if rest else words or [text]


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}{uuid.uuid4().hex[:16]}"


class ResponsesTurn:
    """One Responses API answer, as a final object or as the events that stream it."""

    def __init__(self, body: dict[str, Any], behaviour: str) -> None:
        self.body = body
        self.behaviour = behaviour
        self.id = _id("resp")
        self.created_at = int(time.time())
        self.text = f"echo: {last_user_text(body.get('input'))}"
        if behaviour == "incomplete":
            self.text = self.text[: max(1, len(self.text) // 2)]
        self.tool = function_tools(body)[0] if behaviour == "tools" else None
        self.arguments = json.dumps(sample_arguments(self.tool.get("parameters"))) if self.tool else ""
        self.message_id, self.call_item_id, self.call_id, self.reasoning_id = _id("msg"), _id("fc"), _id("call"), _id("rs")

    @property
    def status(self) -> str:
        return {"incomplete": "incomplete", "failed": "failed"}.get(self.behaviour, "completed")

    def snapshot(self, status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
        """The Response object: request fields echoed back with the API's defaults filled in."""
        b = self.body
        done = status != "in_progress"
        tools = [{"description": None, "parameters": None, "strict": True, **t} if t.get("type") == "function" else t for t in b.get("tools") or []]
        return {
            "id": self.id, "object": "response", "created_at": self.created_at, "status": status, "background": False,
            "completed_at": self.created_at + 1 if status == "completed" else None,
            "error": {"code": "server_error", "message": "stand-in failure"} if status == "failed" else None,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "instructions": b.get("instructions"), "max_output_tokens": b.get("max_output_tokens"),
            "max_tool_calls": b.get("max_tool_calls"), "model": b.get("model"), "output": output,
            "parallel_tool_calls": b.get("parallel_tool_calls", True), "previous_response_id": b.get("previous_response_id"),
            "prompt_cache_key": b.get("prompt_cache_key"), "prompt_cache_retention": None,
            "reasoning": {"effort": (b.get("reasoning") or {}).get("effort"), "summary": (b.get("reasoning") or {}).get("summary")},
            "safety_identifier": b.get("safety_identifier"), "service_tier": "default", "store": b.get("store", True),
            "temperature": b.get("temperature", 1.0), "text": b.get("text") or {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": b.get("tool_choice", "auto"), "tools": tools, "top_logprobs": b.get("top_logprobs", 0),
            "top_p": b.get("top_p", 1.0), "truncation": b.get("truncation", "disabled"),
            "usage": dict(RESPONSES_USAGE) if done and status != "failed" else None,
            "user": b.get("user"), "metadata": b.get("metadata") or {},
        }

    def reasoning_item(self) -> dict[str, Any]:
        return {"id": self.reasoning_id, "type": "reasoning", "summary": []}

    def message(self, status: str, text: str | None) -> dict[str, Any]:
        content = [] if text is None else [self.part(text)]
        return {"id": self.message_id, "type": "message", "status": status, "content": content, "role": "assistant"}

    @staticmethod
    def part(text: str) -> dict[str, Any]:
        return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}

    def call(self, status: str, arguments: str) -> dict[str, Any]:
        assert self.tool is not None
        return {"id": self.call_item_id, "type": "function_call", "status": status, "arguments": arguments,
                "call_id": self.call_id, "name": self.tool["name"]}

    def output(self) -> list[dict[str, Any]]:
        if self.behaviour == "failed":
            return []
        items = [self.reasoning_item()] if self.behaviour == "reasoning" else []
        if self.tool is not None:
            return [*items, self.call("completed", self.arguments)]
        return [*items, self.message("incomplete" if self.status == "incomplete" else "completed", self.text)]

    def final(self) -> dict[str, Any]:
        return self.snapshot(self.status, self.output())

    def events(self) -> list[dict[str, Any]]:
        """The stream, in OpenAI's order; sequence_number counts from 0."""
        out: list[dict[str, Any]] = []

        def emit(kind: str, **fields: Any) -> None:
            out.append({"type": kind, "sequence_number": len(out), **fields})

        emit("response.created", response=self.snapshot("in_progress", []))
        emit("response.in_progress", response=self.snapshot("in_progress", []))
        if self.behaviour == "failed":
            emit("response.failed", response=self.final())
            return out
        index = 0
        if self.behaviour == "reasoning":
            emit("response.output_item.added", output_index=0, item={**self.reasoning_item(), "status": "in_progress"})
            emit("response.output_item.done", output_index=0, item=self.reasoning_item())
            index = 1
        if self.tool is not None:
            item_id = self.call_item_id
            emit("response.output_item.added", output_index=index, item=self.call("in_progress", ""))
            for piece in _pieces(self.arguments, 8):
                emit("response.function_call_arguments.delta", item_id=item_id, output_index=index, delta=piece)
            emit("response.function_call_arguments.done", item_id=item_id, output_index=index, name=self.tool["name"],
                 arguments=self.arguments)
            emit("response.output_item.done", output_index=index, item=self.call("completed", self.arguments))
        else:
            item_id, where = self.message_id, {"output_index": index, "content_index": 0}
            emit("response.output_item.added", output_index=index, item=self.message("in_progress", None))
            emit("response.content_part.added", item_id=item_id, **where, part=self.part(""))
            for piece in _pieces(self.text):
                emit("response.output_text.delta", item_id=item_id, **where, delta=piece, logprobs=[])
            emit("response.output_text.done", item_id=item_id, **where, text=self.text, logprobs=[])
            emit("response.content_part.done", item_id=item_id, **where, part=self.part(self.text))
            emit("response.output_item.done", output_index=index, item=self.output()[-1])
        emit("response.incomplete" if self.status == "incomplete" else "response.completed", response=self.final())
        return out


def usage() -> dict[str, Any]:
    return {
        "prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    }


def openai_usage(body: dict[str, Any]) -> dict[str, Any]:
    """Usage as OpenAI counts it: o200k tokens of each message's text, 3 tokens of framing per
    message and 3 to prime the reply (OpenAI's cookbook), and the answer's own tokens."""
    from switchyard.metering.tokens import count_text  # the o200k encoding itself

    prompt = 3 + sum(3 + count_text(str(m.get("content") or "")) for m in body.get("messages") or [])
    out = count_text("".join(ANSWER))
    return {"prompt_tokens": prompt, "completion_tokens": out, "total_tokens": prompt + out,
            "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}}


def tool_call(body: dict[str, Any], behaviour: str) -> tuple[str, list[str]] | None:
    """The call a chat answer makes: `tools` calls get_weather; `tools-last` the last function in
    the request's `tools`, with arguments fitting its schema. Arguments come as stream fragments."""
    if behaviour == "tools":
        return "get_weather", TOOL_ARGS
    if behaviour == "tools-last":
        fn = (body.get("tools") or [{}])[-1].get("function") or {}
        return str(fn.get("name")), _pieces(json.dumps(sample_arguments(fn.get("parameters"))), 8)
    return None


def completion(body: dict[str, Any], call: tuple[str, list[str]] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": "".join(ANSWER), "refusal": None, "annotations": []}
    finish = "stop"
    if call is not None:
        message["content"] = None
        message["tool_calls"] = [{"id": "call_standin1", "type": "function",
                                  "function": {"name": call[0], "arguments": "".join(call[1])}}]
        finish = "tool_calls"
    return {
        "id": "chatcmpl-standin", "object": "chat.completion", "created": int(time.time()),
        "model": body.get("model"), "system_fingerprint": "fp_standin", "service_tier": "default",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": usage(),
    }


def stream_chunks(body: dict[str, Any], call: tuple[str, list[str]] | None = None) -> list[dict[str, Any]]:
    head = {"id": "chatcmpl-standin", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": body.get("model"), "system_fingerprint": "fp_standin", "service_tier": "default"}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], "usage": None}

    out = [chunk({"role": "assistant", "content": "", "refusal": None})]
    if call is not None:
        out.append(chunk({"tool_calls": [{"index": 0, "id": "call_standin1", "type": "function",
                                          "function": {"name": call[0], "arguments": ""}}]}))
        out += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": a}}]}) for a in call[1]]
        out.append(chunk({}, "tool_calls"))
    else:
        out += [chunk({"content": piece}) for piece in ANSWER]
        out.append(chunk({}, "stop"))
    if (body.get("stream_options") or {}).get("include_usage"):
        out.append({**head, "choices": [], "usage": usage()})
    return out
