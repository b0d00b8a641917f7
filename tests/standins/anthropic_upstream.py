"""A stand-in Anthropic Messages upstream speaking the real wire format, with scripted behaviours.

It runs in a background thread of the test process (like the OpenAI stand-in); the gateway
under test calls `POST /v1/messages` on it. Every request is recorded (headers + body).

Like the real API it insists on `x-api-key`, `anthropic-version`, `max_tokens`, alternating
turns starting with `user`, and a thinking budget below `max_tokens` without a changed
temperature; breaking those gets a real-shaped 400/401 error body.

Behaviour is chosen by the upstream model id (configure deployments with `model: <behaviour>`):
  claude-ok              a text answer (stream: message_start, ping, text block, message_delta, message_stop)
  claude-tools           some text then a `get_weather` tool_use (stream: input_json_delta fragments)
  claude-cache           the text answer with cache read / cache creation tokens in usage
  claude-thinking        a thinking block (with signature) then the text answer
  claude-json            a tool_use of the tool named in `tool_choice` (json_schema emulation)
  claude-stop-<reason>   the text answer ending with that stop_reason (max_tokens, stop_sequence, refusal)
  claude-<status>        an Anthropic error body with that HTTP status (429 adds retry-after: 7)
  claude-stream-error    streams one text delta, then an `error` event (overloaded_error)
  claude-no-stop         streams the answer but closes without message_stop
  claude-not-json        ignores a JSON-mode instruction and answers prose
  claude-small           a 100-token context: longer prompts get Anthropic's "prompt is too long" 400
  claude-counted         usage as `count_tokens` counts the request (input) and the answer (output)
  claude-zero-usage      streams usage of zero tokens (as some Anthropic-speaking proxies do)
Asked for JSON (a system prompt that mentions "JSON object"), the text answers come fenced in
Markdown, as Claude likes to write them. `POST /v1/messages/count_tokens` counts with
`pseudo_tokens` (a third of the UTF-8 bytes, at least one per part).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.standins.server import ThreadedStandIn

ANSWER = ["Hello", " from", " the", " stand-in", "."]
TEXT = "".join(ANSWER)
TOOL_INPUT = {"location": "Paris", "unit": "c"}
TOOL_JSON = ['{"loc', 'ation": "Par', 'is", "unit": "c"}']  # joins to json.dumps(TOOL_INPUT)
TOOL_PREFACE = "Let me check."
JSON_ANSWER = {"city": "Paris", "temp_c": 21}
THINKING = "The user greets me; greet back."

USAGE = {"input_tokens": 21, "output_tokens": 7}
CACHE_USAGE = {"input_tokens": 100, "cache_read_input_tokens": 2000, "cache_creation_input_tokens": 500, "output_tokens": 40}

ERRORS = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
    500: "api_error", 503: "api_error", 529: "overloaded_error",
}


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class AnthropicStandIn(ThreadedStandIn):
    counts: list[dict[str, Any]] = field(default_factory=list)  # count_tokens bodies (not in `received`)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/v1/messages/count_tokens", self._count_tokens)

    async def _count_tokens(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.counts.append(body)
        if not request.headers.get("x-api-key"):
            return error_response(401, "x-api-key header is required")
        if not body.get("messages") or "max_tokens" in body:
            return error_response(400, "messages: Field required" if not body.get("messages") else "max_tokens: Extra inputs are not permitted")
        return web.json_response({"input_tokens": request_tokens(body)})

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.received.append(Received(request.path, dict(request.headers), body))
        if not request.headers.get("x-api-key"):
            return error_response(401, "x-api-key header is required")
        if request.headers.get("anthropic-version") != "2023-06-01":
            return error_response(400, "anthropic-version header is required")
        problem = validate(body)
        if problem:
            return error_response(400, problem)
        behaviour = str(body.get("model"))
        suffix = behaviour.removeprefix("claude-")
        if suffix.isdigit():
            status = int(suffix)
            headers = {"retry-after": "7"} if status == 429 else {}
            return error_response(status, f"stand-in failure {status}", headers)
        if behaviour == "claude-small" and request_tokens(body) > 100:
            return error_response(400, f"prompt is too long: {request_tokens(body)} tokens > 100 maximum")
        message = script(behaviour, body)
        if body.get("stream"):
            return await self._stream(request, message, behaviour)
        return web.json_response(message, headers={"request-id": "req_standin"})

    async def _stream(self, request: web.Request, message: dict[str, Any], behaviour: str) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        for name, data in stream_events(message):
            if behaviour == "claude-stream-error" and name == "content_block_stop":
                await resp.write(sse("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}))
                return resp
            if behaviour == "claude-no-stop" and name == "message_stop":
                break
            await resp.write(sse(name, data))
        await resp.write_eof()
        return resp


def sse(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"type": "error", "error": {"type": ERRORS.get(status, "api_error"), "message": message}}
    return web.json_response(body, status=status, headers=headers)


def validate(body: dict[str, Any]) -> str | None:
    """The checks the real API makes that a translation could get wrong."""
    if not isinstance(body.get("max_tokens"), int):
        return "max_tokens: Field required"
    messages = body.get("messages") or []
    if not messages:
        return "messages: at least one message is required"
    if messages[0].get("role") != "user":
        return "messages: first message must use the \"user\" role"
    for a, b in zip(messages, messages[1:]):
        if a.get("role") == b.get("role"):
            return "messages: roles must alternate between \"user\" and \"assistant\""
    for m in messages:
        if m.get("role") not in ("user", "assistant"):
            return f"messages: Unexpected role \"{m.get('role')}\""
    thinking = body.get("thinking")
    if thinking and thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens", 0)
        if budget < 1024 or budget >= body["max_tokens"]:
            return "thinking.budget_tokens: must be >= 1024 and less than max_tokens"
        if "temperature" in body:
            return "temperature may only be set to 1 when thinking is enabled"
        if (body.get("tool_choice") or {}).get("type") in ("any", "tool"):
            return "Thinking may not be enabled when tool_choice forces tool use."
    if "temperature" in body and "top_p" in body:
        return "`temperature` and `top_p` cannot both be specified for this model."
    return None


def pseudo_tokens(text: str) -> int:
    """The stand-in's tokenizer: a third of the UTF-8 bytes, at least one."""
    return max(1, len(text.encode()) // 3)


def request_tokens(body: dict[str, Any]) -> int:
    """What the stand-in counts for a request (and bills as its input): texts, tools, framing."""
    total = 3
    system = body.get("system")
    if isinstance(system, str):
        total += pseudo_tokens(system)
    elif isinstance(system, list):
        total += sum(pseudo_tokens(str(b.get("text", ""))) for b in system)
    for message in body.get("messages") or []:
        total += 4
        content = message.get("content")
        if isinstance(content, str):
            total += pseudo_tokens(content)
        else:
            for block in content or []:
                total += 1600 if block.get("type") == "image" else pseudo_tokens(json.dumps(block))
    if body.get("tools"):
        total += 346 + pseudo_tokens(json.dumps(body["tools"]))
    return total


def script(behaviour: str, body: dict[str, Any]) -> dict[str, Any]:
    """The complete Message the behaviour answers with (streams are cut from it)."""
    content: list[dict[str, Any]] = [{"type": "text", "text": TEXT}]
    system = body.get("system") if isinstance(body.get("system"), str) else ""
    if "JSON object" in system and behaviour != "claude-not-json":
        content = [{"type": "text", "text": "```json\n" + json.dumps(JSON_ANSWER) + "\n```"}]
    stop_reason, stop_sequence = "end_turn", None
    usage: dict[str, Any] = {**USAGE, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    if behaviour == "claude-tools":
        content = [{"type": "text", "text": TOOL_PREFACE},
                   {"type": "tool_use", "id": "toolu_standin1", "name": "get_weather", "input": TOOL_INPUT}]
        stop_reason = "tool_use"
    elif behaviour == "claude-cache":
        usage = dict(CACHE_USAGE)
    elif behaviour == "claude-thinking":
        content = [{"type": "thinking", "thinking": THINKING, "signature": "sig_standin"}, *content]
        usage["output_tokens"] = 60
    elif behaviour == "claude-json":
        name = (body.get("tool_choice") or {}).get("name") or "answer"
        content = [{"type": "tool_use", "id": "toolu_standin2", "name": name, "input": JSON_ANSWER}]
        stop_reason = "tool_use"
    elif behaviour == "claude-counted":
        usage = {"input_tokens": request_tokens(body), "output_tokens": pseudo_tokens(TEXT),
                 "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    elif behaviour == "claude-zero-usage":
        usage = {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    elif behaviour.startswith("claude-stop-"):
        stop_reason = behaviour.removeprefix("claude-stop-")
        if stop_reason == "stop_sequence":
            stop_sequence = (body.get("stop_sequences") or ["END"])[0]
    return {
        "id": "msg_standin", "type": "message", "role": "assistant", "model": body.get("model"),
        "content": content, "stop_reason": stop_reason, "stop_sequence": stop_sequence, "usage": usage,
    }


def stream_events(message: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The events the real API sends for `message`, in their real order."""
    usage = message["usage"]
    start_usage = {k: v for k, v in usage.items() if k != "output_tokens"} | {"output_tokens": 1}
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": {
            **message, "content": [], "stop_reason": None, "stop_sequence": None, "usage": start_usage}}),
        ("ping", {"type": "ping"}),
    ]
    for i, block in enumerate(message["content"]):
        kind = block["type"]
        if kind == "text":
            events.append(("content_block_start", {"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}}))
            pieces = ANSWER if block["text"] == TEXT else [block["text"]]
            events += [("content_block_delta", {"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": p}})
                       for p in pieces]
        elif kind == "thinking":
            events.append(("content_block_start", {"type": "content_block_start", "index": i,
                                                   "content_block": {"type": "thinking", "thinking": "", "signature": ""}}))
            events.append(("content_block_delta", {"type": "content_block_delta", "index": i,
                                                   "delta": {"type": "thinking_delta", "thinking": block["thinking"]}}))
            events.append(("content_block_delta", {"type": "content_block_delta", "index": i,
                                                   "delta": {"type": "signature_delta", "signature": block["signature"]}}))
        elif kind == "tool_use":
            events.append(("content_block_start", {"type": "content_block_start", "index": i, "content_block": {
                "type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}}))
            raw = json.dumps(block["input"])
            pieces = TOOL_JSON if raw == "".join(TOOL_JSON) else [raw[: len(raw) // 2], raw[len(raw) // 2:]]
            events.append(("content_block_delta", {"type": "content_block_delta", "index": i, "delta": {"type": "input_json_delta", "partial_json": ""}}))
            events += [("content_block_delta", {"type": "content_block_delta", "index": i, "delta": {"type": "input_json_delta", "partial_json": p}})
                       for p in pieces]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
    events.append(("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]},
                                     "usage": {"output_tokens": usage["output_tokens"]}}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events
