"""Anthropic's Messages API, inbound: a `POST /v1/messages` request as a chat completion
request, and a chat completion (or its stream) back as a message (or Anthropic's events).

Every deployment answers through this translation. Fields Anthropic accepts that a chat model
has no use for (`cache_control`, `context_management`, beta fields, server tools) are left out,
never refused."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

import orjson

from switchyard.wire.errors import GatewayError, invalid_request

# Anthropic's thinking budget, as the nearest OpenAI reasoning effort.
_EFFORT_BY_BUDGET = ((2048, "low"), (8192, "medium"))
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal",
                 "function_call": "tool_use"}
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
                403: "permission_error", 404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                500: "api_error", 502: "api_error", 503: "overloaded_error", 504: "timeout_error", 529: "overloaded_error"}


def anthropic_error(err: GatewayError) -> dict[str, Any]:
    """An error in Anthropic's shape, with the OpenAI-style code kept for people who log it."""
    kind = _ERROR_TYPES.get(err.status, "api_error" if err.status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": err.message}}


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    raise invalid_request(f"'{where}' must be a string or a list of content blocks.", param=where)


def _image(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source")
    if isinstance(source, dict) and source.get("type") == "base64":
        url = f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    elif isinstance(source, dict) and source.get("type") == "url":
        url = str(source.get("url", ""))
    else:
        raise invalid_request("An image block needs a base64 or url source.", param=f"{where}.source")
    return {"type": "image_url", "image_url": {"url": url}}


def _user(content: Any, where: str) -> list[dict[str, Any]]:
    """One Anthropic user turn: tool results become tool messages (first, as chat wants them
    right after the assistant's calls), the rest one user message."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    if not isinstance(content, list):
        raise invalid_request(f"'{where}' must be a string or a list of content blocks.", param=where)
    tools: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": str(block.get("text", ""))})
        elif kind == "image":
            parts.append(_image(block, f"{where}[{j}]"))
        elif kind == "tool_result":
            result = block.get("content", "")
            text = result if isinstance(result, str) else _text(result, f"{where}[{j}].content")
            if block.get("is_error"):
                text = f"Error: {text}"
            tools.append({"role": "tool", "tool_call_id": str(block.get("tool_use_id", "")), "content": text})
        elif kind is None:
            raise invalid_request("A content block must be an object with a 'type'.", param=f"{where}[{j}]")
        # documents, search results and other block kinds have no chat equivalent: left out
    out = tools
    if parts:
        out.append({"role": "user", "content": parts})
    return out


def _assistant(content: Any, where: str) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    if not isinstance(content, list):
        raise invalid_request(f"'{where}' must be a string or a list of content blocks.", param=where)
    text, calls = [], []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            text.append(str(block.get("text", "")))
        elif kind == "tool_use":
            calls.append({"id": str(block.get("id", "")), "type": "function",
                          "function": {"name": str(block.get("name", "")),
                                       "arguments": orjson.dumps(block.get("input") or {}).decode()}})
        # thinking blocks are the model's own and not replayable elsewhere: left out
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text)}
    if calls:
        message["tool_calls"] = calls
    return message


def _effort(raw: dict[str, Any]) -> str | None:
    config = raw.get("output_config")
    if isinstance(config, dict) and config.get("effort") in ("low", "medium", "high"):
        return str(config["effort"])
    thinking = raw.get("thinking")
    if not isinstance(thinking, dict) or thinking.get("type") == "disabled":
        return None
    if thinking.get("type") == "adaptive":
        return "medium"
    budget = thinking.get("budget_tokens")
    if isinstance(budget, int):
        return next((effort for limit, effort in _EFFORT_BY_BUDGET if budget <= limit), "high")
    return None


def chat_from_messages(raw: Any) -> dict[str, Any]:
    """The chat completion request a Messages request asks for."""
    if not isinstance(raw, dict):
        raise invalid_request("The request body must be a JSON object.")
    model = raw.get("model")
    if not isinstance(model, str) or not model:
        raise invalid_request("model: Field required", param="model")
    max_tokens = raw.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise invalid_request("max_tokens: Field required (a positive integer)", param="max_tokens")
    turns = raw.get("messages")
    if not isinstance(turns, list) or not turns:
        raise invalid_request("messages: at least one message is required", param="messages")
    messages: list[dict[str, Any]] = []
    system = raw.get("system")
    if system is not None:
        messages.append({"role": "system", "content": _text(system, "system")})
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise invalid_request(f"messages.{i}: must be an object", param=f"messages.{i}")
        role, content = turn.get("role"), turn.get("content")
        if role == "user":
            messages += _user(content, f"messages.{i}.content")
        elif role == "assistant":
            messages.append(_assistant(content, f"messages.{i}.content"))
        elif role == "system":  # Claude Code sends these between turns
            messages.append({"role": "system", "content": _text(content, f"messages.{i}.content")})
        else:
            raise invalid_request(f"messages.{i}.role: must be 'user' or 'assistant'", param=f"messages.{i}.role")
    body: dict[str, Any] = {"model": model, "messages": messages, "max_completion_tokens": max_tokens}
    for ours, theirs in (("temperature", "temperature"), ("top_p", "top_p")):
        if raw.get(theirs) is not None:
            body[ours] = raw[theirs]
    if isinstance(raw.get("stop_sequences"), list) and raw["stop_sequences"]:
        body["stop"] = raw["stop_sequences"][:4]
    effort = _effort(raw)
    if effort is not None:
        body["reasoning_effort"] = effort
    metadata = raw.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        body["user"] = metadata["user_id"]
    tools = [t for t in raw.get("tools") or [] if isinstance(t, dict) and "input_schema" in t]  # server tools: out
    if tools:
        body["tools"] = [{"type": "function", "function": {
            "name": str(t.get("name", "")), "description": str(t.get("description") or ""),
            "parameters": t.get("input_schema") or {"type": "object"}}} for t in tools]
        choice = raw.get("tool_choice")
        if isinstance(choice, dict):
            kind = choice.get("type")
            if kind == "any":
                body["tool_choice"] = "required"
            elif kind == "tool":
                body["tool_choice"] = {"type": "function", "function": {"name": str(choice.get("name", ""))}}
            elif kind == "none":
                body["tool_choice"] = "none"
            if choice.get("disable_parallel_tool_use"):
                body["parallel_tool_calls"] = False
    if raw.get("stream"):
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def anthropic_usage(usage: dict[str, Any] | None) -> dict[str, Any]:
    """Chat usage as Anthropic counts it: input excludes what was read from the cache."""
    usage = usage or {}
    details = usage.get("prompt_tokens_details") or {}
    cached = int(details.get("cached_tokens") or 0)
    written = int(details.get("cache_write_tokens") or 0)
    prompt = int(usage.get("prompt_tokens") or 0)
    return {"input_tokens": max(prompt - cached - written, 0), "cache_read_input_tokens": cached,
            "cache_creation_input_tokens": written, "output_tokens": int(usage.get("completion_tokens") or 0)}


def usage_from_anthropic(usage: Mapping[str, Any] | None) -> dict[str, Any]:
    """Anthropic's usage as chat usage: the prompt counts what was read from and written to the cache."""
    u = usage or {}

    def n(key: str) -> int:
        value = u.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

    cached, writes = n("cache_read_input_tokens"), n("cache_creation_input_tokens")
    prompt = n("input_tokens") + cached + writes
    completion = n("output_tokens")
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "cache_write_tokens": writes},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def new_message_id() -> str:
    return "msg_" + secrets.token_hex(12)


def message_from_completion(completion: dict[str, Any], model: str) -> dict[str, Any]:
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        try:
            args = orjson.loads(fn.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            args = {"_raw": fn.get("arguments")}
        content.append({"type": "tool_use", "id": call.get("id") or "toolu_" + secrets.token_hex(8),
                        "name": fn.get("name", ""), "input": args if isinstance(args, dict) else {"value": args}})
    usage = anthropic_usage(completion.get("usage"))
    return {"id": new_message_id(), "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": _STOP_REASONS.get(choice.get("finish_reason") or "stop", "end_turn"),
            "stop_sequence": None, "usage": usage}


def event(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"


class MessageEvents:
    """Chat completion chunks in, Anthropic's stream events out: message_start, ping, a
    content block per text run or tool call (start, deltas, stop), message_delta, message_stop."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.id = new_message_id()
        self._open: tuple[str, int] | None = None  # ("text", -1) or ("tool", chat tool index)
        self._index = -1
        self._finish: str | None = None
        self._usage: dict[str, Any] | None = None

    def start(self) -> bytes:
        message = {"id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": [],
                   "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": 0, "output_tokens": 0, "cache_read_input_tokens": 0,
                             "cache_creation_input_tokens": 0}}
        return event("message_start", {"message": message}) + event("ping", {})

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return event("content_block_stop", {"index": self._index})

    def _begin(self, kind: tuple[str, int], block: dict[str, Any]) -> bytes:
        out = self._close()
        self._index += 1
        self._open = kind
        return out + event("content_block_start", {"index": self._index, "content_block": block})

    def chunk(self, chunk: dict[str, Any]) -> bytes:
        out = b""
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if delta.get("content"):
                if self._open != ("text", -1):
                    out += self._begin(("text", -1), {"type": "text", "text": ""})
                out += event("content_block_delta", {"index": self._index,
                                                     "delta": {"type": "text_delta", "text": delta["content"]}})
            for call in delta.get("tool_calls") or []:
                position = int(call.get("index", 0))
                fn = call.get("function") or {}
                if self._open != ("tool", position):
                    out += self._begin(("tool", position), {
                        "type": "tool_use", "id": call.get("id") or "toolu_" + secrets.token_hex(8),
                        "name": fn.get("name", ""), "input": {}})
                if fn.get("arguments"):
                    out += event("content_block_delta", {"index": self._index, "delta": {
                        "type": "input_json_delta", "partial_json": fn["arguments"]}})
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return out

    def error(self, message: str) -> bytes:
        return self._close() + event("error", {"error": {"type": "api_error", "message": message}})

    def end(self) -> bytes:
        usage = anthropic_usage(self._usage)
        return self._close() + event("message_delta", {
            "delta": {"stop_reason": _STOP_REASONS.get(self._finish or "stop", "end_turn"), "stop_sequence": None},
            "usage": usage}) + event("message_stop", {})
