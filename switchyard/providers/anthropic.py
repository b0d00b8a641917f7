"""Anthropic Messages API (POST /v1/messages), spoken to clients as OpenAI Chat Completions.

Requests are translated OpenAI → Messages (system hoisted out, same-role turns merged, images,
tools and tool results as content blocks, response formats emulated with an instruction and
a forced tool, reasoning effort as an extended-thinking budget); answers and event streams
are translated back into `chat.completion` objects and `chat.completion.chunk` payloads.

Usage follows OpenAI's accounting: `prompt_tokens` is the whole prompt (uncached input +
cache reads + cache writes), with `cached_tokens` and `cache_write_tokens` broken out.
Anthropic does not report thinking tokens separately, so `reasoning_tokens` stays 0 (they
are inside `output_tokens`, which is what is billed).

Options (extra keys of the deployment): `thinking_budgets` (effort → budget_tokens),
`anthropic_version`, `anthropic_beta`, `keepalive_seconds`.
"""

from __future__ import annotations

import re

import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

from switchyard.providers.base import ChatCall, HTTPProvider, MessagesCall
from switchyard.providers.http import (
    Response, UpstreamProtocolError, UpstreamTimeout, transport_error,
)
from switchyard.providers.openai import map_error
from switchyard.wire.chat import (
    AudioPart, ChatRequest, FilePart, ImagePart, JSONObjectFormat, Message, NamedToolChoice, RefusalPart, TextPart,
)
from switchyard.wire.answers import json_answer
from switchyard.wire.errors import GatewayError, invalid_request, upstream_error
from switchyard.wire.messages import usage_from_anthropic
from switchyard.wire.sse import SSEDecoder, SSEEvent

log = logging.getLogger("switchyard.providers.anthropic")

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
DEFAULT_THINKING_BUDGETS: dict[str, int] = {"low": 1024, "medium": 4096, "high": 16384, "xhigh": 32768}
MIN_THINKING_BUDGET = 1024  # Anthropic rejects smaller budgets

FINISH_REASONS = {
    "end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop",
    "max_tokens": "length", "model_context_window_exceeded": "length",
    "tool_use": "tool_calls", "refusal": "content_filter",
}
# Anthropic error types seen in a mid-stream `error` event → the status we would have given.
# Beta flags are names like `interleaved-thinking-2025-05-14`: anything else could split the header.
_BETA_UNSAFE = re.compile(r"[^A-Za-z0-9,._ -]")
_EVENT_STATUSES = {
    "invalid_request_error": 400, "request_too_large": 413, "rate_limit_error": 429,
    "overloaded_error": 503, "api_error": 502, "timeout_error": 504,
}

JSON_OBJECT_INSTRUCTION = (
    "Respond only with a single valid JSON object. Do not wrap it in code fences and do not add any other text."
)


def _json_schema_instruction(name: str, forced: bool) -> str:
    if forced:
        return f"Respond by calling the `{name}` tool; its input is your answer, as JSON matching the tool's schema."
    return (
        f"When you give your final answer, give it by calling the `{name}` tool; its input is your answer, "
        "as JSON matching the tool's schema."
    )


class AnthropicProvider(HTTPProvider):
    kind = "anthropic"
    _framing: int | None = None  # tokens count_tokens adds around one short user message

    async def start(self) -> None:
        dep = self.deployment
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "anthropic-version": str(dep.options.get("anthropic_version", API_VERSION)),
        }
        beta = dep.options.get("anthropic_beta")
        if beta:
            headers["anthropic-beta"] = ",".join(beta) if isinstance(beta, list) else str(beta)
        key = self.credential()
        if key:
            headers["x-api-key"] = key
        base = (dep.base_url or DEFAULT_BASE_URL).rstrip("/")
        self.open_pool(base.removesuffix("/v1"), headers)  # accept either form of the base URL

    # ------------------------------------------------------------------ request
    def thinking_budget(self, effort: str | None) -> int | None:
        if effort is None:
            return None
        budgets = dict(DEFAULT_THINKING_BUDGETS)
        budgets.update(self.deployment.options.get("thinking_budgets") or {})
        value = budgets.get(effort)
        return int(value) if value else None

    def translate(self, call: ChatCall, stream: bool) -> tuple[dict[str, Any], str | None]:
        """The Messages request body, and the name of the tool standing in for a json_schema (if any)."""
        req = call.request
        if req.n is not None and req.n > 1:
            raise invalid_request("This model supports only n=1.", param="n", code="unsupported_value")
        system, messages = _messages(req.messages)
        max_tokens = call.output_limit or req.output_limit or self.max_output_tokens
        body: dict[str, Any] = {"model": call.upstream_model, "max_tokens": max_tokens}

        budget = self.thinking_budget(req.reasoning_effort)
        if budget is not None:
            budget = min(budget, max_tokens - 1)  # OpenAI's limit includes reasoning; Anthropic's budget must be below it
            if budget < MIN_THINKING_BUDGET:
                budget = None

        tools = [_tool(t, i) for i, t in enumerate(req.tools or [])]
        tool_choice: dict[str, Any] | None = _tool_choice(req.tool_choice) if tools else None

        schema_tool: str | None = None
        fmt = req.json_schema
        if fmt is not None:
            schema_tool = fmt.name
            # Forced tool use is not allowed with extended thinking, nor would it leave the client's tools usable.
            forced = budget is None and not tools
            system.append(_json_schema_instruction(fmt.name, forced))
            tools.append({
                "name": fmt.name,
                "description": fmt.description or "Give the final answer as this tool's input.",
                "input_schema": fmt.schema or {"type": "object"},
            })
            if forced:
                tool_choice = {"type": "tool", "name": fmt.name}
        elif isinstance(req.response_format, JSONObjectFormat):
            system.append(JSON_OBJECT_INSTRUCTION)

        if system:
            body["system"] = "\n\n".join(system)
        body["messages"] = messages
        if tools:
            body["tools"] = tools
            if req.parallel_tool_calls is False:
                tool_choice = dict(tool_choice or {"type": "auto"})
                if tool_choice["type"] != "none":
                    tool_choice["disable_parallel_tool_use"] = True
            if tool_choice is not None:
                body["tool_choice"] = tool_choice
        if req.stop_sequences:
            body["stop_sequences"] = req.stop_sequences
        if budget is not None:
            body["thinking"] = {"type": "enabled", "budget_tokens": budget}
            # Thinking allows neither a changed temperature nor top_p below 0.95.
            if req.top_p is not None and req.top_p >= 0.95:
                body["top_p"] = req.top_p
        else:
            # Anthropic's range is 0..1 (OpenAI's 0..2); newer models refuse temperature and top_p together.
            if req.temperature is not None:
                body["temperature"] = min(req.temperature, 1.0)
            elif req.top_p is not None:
                body["top_p"] = req.top_p
            top_k = call.body.get("top_k")
            if isinstance(top_k, int) and not isinstance(top_k, bool):
                body["top_k"] = top_k
        if req.user:
            body["metadata"] = {"user_id": req.user}
        if stream:
            body["stream"] = True
        return body, schema_tool

    async def _send(self, payload: bytes, stream: bool = False) -> Response:
        return await self.post("/v1/messages", payload, map_anthropic_error, stream=stream)

    # ------------------------------------------------------------------ Messages, passed through
    @property
    def native_messages(self) -> bool:
        return True

    def _passed(self, call: MessagesCall) -> tuple[bytes, bytes]:
        """The client's own Messages request (unknown and beta fields kept) for this deployment's
        model, and the client's `anthropic-beta` flags beside the deployment's own."""
        body = {**call.body, "model": call.upstream_model}
        if call.stream:
            body["stream"] = True
        else:
            body.pop("stream", None)
        beta = _BETA_UNSAFE.sub("", call.beta or "")[:2000]
        return orjson.dumps(body), (b"anthropic-beta: " + beta.encode() + b"\r\n") if beta else b""

    async def _answer(self, resp: Response) -> tuple[bytes, Any]:
        """A whole answer's bytes and their JSON (None when it is not JSON)."""
        try:
            raw = await resp.read()
        except (UpstreamTimeout, UpstreamProtocolError) as exc:
            raise transport_error(exc, self.deployment.id) from None
        try:
            return raw, orjson.loads(raw)
        except orjson.JSONDecodeError:
            return raw, None

    async def message(self, call: MessagesCall) -> dict[str, Any]:
        payload, headers = self._passed(call)
        _, data = await self._answer(await self.post("/v1/messages", payload, map_anthropic_error, headers=headers))
        if not isinstance(data, dict) or data.get("type") != "message":
            raise upstream_error(502, f"Deployment {self.deployment.id} returned an invalid message.",
                                 code="upstream_invalid_response")
        return data

    async def message_stream(self, call: MessagesCall) -> AsyncIterator[list[SSEEvent]]:
        """Anthropic's events as they came, batched per read, up to message_stop; an `error`
        event raises, as a failure mid-stream."""
        dep_id = self.deployment.id
        payload, headers = self._passed(call)
        resp = await self.post("/v1/messages", payload, map_anthropic_error, stream=True, headers=headers)
        try:
            if resp.content_type != "text/event-stream":
                raise upstream_error(502, f"Deployment {dep_id} did not answer with an event stream.",
                                     code="upstream_invalid_response")
            decoder = SSEDecoder()
            async for piece in resp.iter_chunks():
                batch = decoder.feed(piece)
                for event in batch:
                    if event.event == "error":
                        try:
                            err = orjson.loads(event.data).get("error")
                        except (orjson.JSONDecodeError, AttributeError):
                            err = None
                        raise stream_error(err, dep_id)
                if batch:
                    yield batch
                if any(event.event == "message_stop" for event in batch):
                    return
            raise upstream_error(502, f"Deployment {dep_id} ended the stream early.", code="upstream_stream_broken")
        except (UpstreamTimeout, UpstreamProtocolError) as exc:
            raise transport_error(exc, dep_id) from None
        finally:
            resp.release()

    # ------------------------------------------------------------------ token counts
    # Anthropic: "the token count should be considered an estimate"; a message may bill a few more or less.
    prompt_count_is_billed = False

    async def count_prompt_tokens(self, request: ChatRequest) -> int | None:
        """Anthropic's own count (`/v1/messages/count_tokens`, free) of the prompt as we would send it."""
        try:
            body, _ = self.translate(ChatCall(request=request, body={}, upstream_model=self.deployment.model,
                                              request_id="count"), stream=False)
        except GatewayError:
            return None
        counted = {k: body[k] for k in _COUNTED_FIELDS if k in body}
        found = await self.ask("/v1/messages/count_tokens", counted)
        tokens = found.get("input_tokens") if isinstance(found, dict) else None
        return tokens if isinstance(tokens, int) else None

    async def count_output_tokens(self, text: str) -> int | None:
        """An answer's tokens by Anthropic's count: the text as a message, less an empty one's framing."""
        if not text:
            return 0
        if self._framing is None:
            base = await self.ask("/v1/messages/count_tokens", _one_message(self.deployment.model, "."))
            if not isinstance(base, dict) or not isinstance(base.get("input_tokens"), int):
                return None
            self._framing = base["input_tokens"] - 1
        found = await self.ask("/v1/messages/count_tokens", _one_message(self.deployment.model, text))
        tokens = found.get("input_tokens") if isinstance(found, dict) else None
        return max(tokens - self._framing, 1) if isinstance(tokens, int) else None

    # ------------------------------------------------------------------ non-streaming
    async def chat(self, call: ChatCall) -> dict[str, Any]:
        body, schema_tool = self.translate(call, stream=False)
        resp = await self._send(orjson.dumps(body))
        raw, data = await self._answer(resp)
        if isinstance(data, dict) and data.get("type") == "error":
            raise map_anthropic_error(502, raw, resp.headers, self.deployment.id)
        if not isinstance(data, dict) or not isinstance(data.get("content"), list):
            raise upstream_error(502, f"Deployment {self.deployment.id} returned an invalid response.", code="upstream_invalid_response")
        completion = completion_from_message(data, schema_tool)
        if _json_mode(call):
            message = completion["choices"][0]["message"]
            message["content"] = _as_json(message.get("content") or "", self.deployment.id)
        return completion

    # ------------------------------------------------------------------ streaming
    async def chat_stream(self, call: ChatCall) -> AsyncIterator[list[bytes]]:
        dep_id = self.deployment.id
        body, schema_tool = self.translate(call, stream=True)
        resp = await self._send(orjson.dumps(body), stream=True)
        try:
            if resp.content_type != "text/event-stream":
                raise upstream_error(502, f"Deployment {dep_id} did not answer with an event stream.", code="upstream_invalid_response")
            decoder = SSEDecoder()
            translator = StreamTranslator(dep_id, schema_tool, json_mode=_json_mode(call))
            async for piece in resp.iter_chunks():
                batch: list[bytes] = []
                for event in decoder.feed(piece):
                    translator.feed(event.event, event.data, batch)
                if batch:
                    yield batch
                if translator.done:
                    break
            if not translator.done:
                raise upstream_error(502, f"Deployment {dep_id} ended the stream early.", code="upstream_stream_broken")
        except (UpstreamTimeout, UpstreamProtocolError) as exc:
            raise transport_error(exc, dep_id) from None
        finally:
            resp.release()


PROVIDER = AnthropicProvider


# ---------------------------------------------------------------------- OpenAI → Messages
def _text_of(content: str | list[Any] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.text for p in content if isinstance(p, TextPart))


def _image_block(url: str, where: str) -> dict[str, Any]:
    if url.startswith("data:"):
        header, sep, data = url.partition(",")
        if not sep or ";base64" not in header:
            raise invalid_request("Image data URLs must be base64-encoded.", param=where, code="invalid_image_url")
        media_type = header[5:].split(";")[0].strip().lower() or "image/png"
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise invalid_request("Image URLs must be http(s) or data URLs.", param=where, code="invalid_image_url")


def _user_blocks(msg: Message, i: int) -> list[dict[str, Any]]:
    if isinstance(msg.content, str):
        return [{"type": "text", "text": msg.content}] if msg.content else []
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(msg.content or []):
        if isinstance(part, TextPart):
            if part.text:
                blocks.append({"type": "text", "text": part.text})
        elif isinstance(part, ImagePart):
            blocks.append(_image_block(part.image_url.url, f"messages[{i}].content[{j}].image_url"))
        elif isinstance(part, RefusalPart):
            if part.refusal:
                blocks.append({"type": "text", "text": part.refusal})
        elif isinstance(part, (AudioPart, FilePart)):
            raise invalid_request(
                f"This model does not support '{'input_audio' if isinstance(part, AudioPart) else 'file'}' content parts.",
                param=f"messages[{i}].content[{j}]", code="unsupported_content",
            )
    return blocks


def _assistant_blocks(msg: Message, i: int) -> list[dict[str, Any]]:
    blocks = _user_blocks(msg, i) if msg.content is not None else []
    for j, call in enumerate(msg.tool_calls or []):
        try:
            args = orjson.loads(call.function.arguments) if call.function.arguments.strip() else {}
        except orjson.JSONDecodeError:
            raise invalid_request(
                "Tool call arguments must be valid JSON.",
                param=f"messages[{i}].tool_calls[{j}].function.arguments", code="invalid_value",
            ) from None
        if not isinstance(args, dict):
            args = {"value": args}
        blocks.append({"type": "tool_use", "id": call.id, "name": call.function.name, "input": args})
    return blocks


def _messages(messages: list[Message]) -> tuple[list[str], list[dict[str, Any]]]:
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for i, msg in enumerate(messages):
        if msg.role in ("system", "developer"):
            text = _text_of(msg.content)
            if text:
                system.append(text)
            continue
        if msg.role in ("tool", "function"):
            role = "user"
            block: dict[str, Any] = {"type": "tool_result", "tool_use_id": msg.tool_call_id or msg.name or ""}
            text = _text_of(msg.content)
            if text:
                block["content"] = text
            blocks = [block]
        elif msg.role == "assistant":
            role, blocks = "assistant", _assistant_blocks(msg, i)
        else:
            role, blocks = "user", _user_blocks(msg, i)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)  # Anthropic requires alternating turns
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        # Tool results must come first in their user turn.
        content = turn["content"]
        if turn["role"] == "user" and any(b["type"] == "tool_result" for b in content):
            content.sort(key=lambda b: b["type"] != "tool_result")
    return system, turns


def _tool(tool: Any, i: int) -> dict[str, Any]:
    fn = tool.function
    if tool.type != "function" or fn is None:
        raise invalid_request(f"Tool type '{tool.type}' is not supported by this model.", param=f"tools[{i}].type", code="unsupported_value")
    out: dict[str, Any] = {"name": fn.name}
    if fn.description:
        out["description"] = fn.description
    out["input_schema"] = fn.parameters or {"type": "object", "properties": {}}
    return out


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if isinstance(choice, NamedToolChoice):
        return {"type": "tool", "name": choice.function.name}
    return {"type": {"auto": "auto", "required": "any", "none": "none"}[choice]}


# ---------------------------------------------------------------------- Messages → OpenAI
def _finish(stop_reason: Any, schema_tool_answered: bool, tool_calls: bool) -> str:
    reason = FINISH_REASONS.get(str(stop_reason), "stop")
    if reason == "tool_calls" and not tool_calls:
        return "stop" if schema_tool_answered else reason
    return reason


def completion_from_message(data: dict[str, Any], schema_tool: str | None) -> dict[str, Any]:
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    answered = False
    for block in data["content"]:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            texts.append(str(block.get("text") or ""))
        elif kind == "tool_use":
            if schema_tool is not None and block.get("name") == schema_tool:
                texts.append(orjson.dumps(block.get("input") or {}).decode())
                answered = True
            else:
                tool_calls.append({
                    "id": str(block.get("id")), "type": "function",
                    "function": {"name": str(block.get("name")), "arguments": orjson.dumps(block.get("input") or {}).decode()},
                })
        # thinking / redacted_thinking blocks are not part of the answer
    message: dict[str, Any] = {
        "role": "assistant", "content": "".join(texts) if texts or not tool_calls else None,
        "refusal": None, "annotations": [],
    }
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": _completion_id(data.get("id")),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": str(data.get("model") or ""),
        "choices": [{
            "index": 0, "message": message, "logprobs": None,
            "finish_reason": _finish(data.get("stop_reason"), answered, bool(tool_calls)),
        }],
        "usage": usage_from_anthropic(data.get("usage")),
    }


def _json_mode(call: ChatCall) -> bool:
    """`json_object` asked for: Anthropic gets only an instruction, so its answer needs checking."""
    return isinstance(call.request.response_format, JSONObjectFormat)


def _as_json(text: str, dep_id: str) -> str:
    found = json_answer(text)
    if found is None:
        raise upstream_error(502, f"Deployment {dep_id} did not answer with a JSON object although JSON mode was "
                                  "asked for; retry, or use a json_schema response format.",
                             code="upstream_invalid_json")
    return found


def _completion_id(msg_id: Any) -> str:
    return f"chatcmpl-{msg_id}" if msg_id else f"chatcmpl-{time.time_ns():x}"


class StreamTranslator:
    """Anthropic stream events in, OpenAI chunk payloads out (appended to the batch given)."""

    def __init__(self, dep_id: str, schema_tool: str | None, json_mode: bool = False) -> None:
        self.dep_id = dep_id
        self.schema_tool = schema_tool
        # JSON mode by instruction only: the text is held to the end, to come out as bare JSON.
        self.json_mode = json_mode
        self.held: list[str] = []
        self.head: dict[str, Any] = {}
        self.usage: dict[str, Any] = {}
        self.blocks: dict[int, tuple[str, int]] = {}  # Anthropic block index → (kind, tool call index)
        self.tool_calls = 0
        self.answered = False
        self.stop_reason: Any = None
        self.finished = False
        self.done = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return orjson.dumps({**self.head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]})

    def feed(self, name: str | None, data: bytes, out: list[bytes]) -> None:
        try:
            ev = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise upstream_error(502, f"Deployment {self.dep_id} sent an invalid stream event.", code="upstream_invalid_response") from None
        if not isinstance(ev, dict):
            return
        kind = ev.get("type") or name
        if kind == "message_start":
            msg = ev.get("message") or {}
            self.head = {
                "id": _completion_id(msg.get("id")), "object": "chat.completion.chunk",
                "created": int(time.time()), "model": str(msg.get("model") or ""),
            }
            self.usage.update(msg.get("usage") or {})
            out.append(self._chunk({"role": "assistant", "content": ""}))
        elif kind == "content_block_start":
            index, block = ev.get("index"), ev.get("content_block") or {}
            btype = block.get("type")
            if btype == "tool_use":
                if self.schema_tool is not None and block.get("name") == self.schema_tool:
                    self.blocks[index] = ("answer", -1)
                    self.answered = True
                else:
                    call_index = self.tool_calls
                    self.tool_calls += 1
                    self.blocks[index] = ("tool", call_index)
                    out.append(self._chunk({"tool_calls": [{
                        "index": call_index, "id": str(block.get("id")), "type": "function",
                        "function": {"name": str(block.get("name")), "arguments": ""},
                    }]}))
            elif btype == "text":
                self.blocks[index] = ("text", -1)
                if block.get("text"):
                    out.append(self._chunk({"content": block["text"]}))
            else:
                self.blocks[index] = ("skip", -1)  # thinking, redacted_thinking, ...
        elif kind == "content_block_delta":
            delta = ev.get("delta") or {}
            what, call_index = self.blocks.get(ev.get("index"), ("skip", -1))
            dtype = delta.get("type")
            if dtype == "text_delta" and what == "text" and delta.get("text"):
                if self.json_mode:
                    self.held.append(delta["text"])
                else:
                    out.append(self._chunk({"content": delta["text"]}))
            elif dtype == "input_json_delta" and delta.get("partial_json"):
                if what == "tool":
                    out.append(self._chunk({"tool_calls": [{"index": call_index, "function": {"arguments": delta["partial_json"]}}]}))
                elif what == "answer":
                    out.append(self._chunk({"content": delta["partial_json"]}))
            # thinking_delta / signature_delta: not part of the answer
        elif kind == "message_delta":
            delta = ev.get("delta") or {}
            if delta.get("stop_reason"):
                self.stop_reason = delta["stop_reason"]
            self.usage.update({k: v for k, v in (ev.get("usage") or {}).items() if v is not None})
        elif kind == "message_stop":
            if self.json_mode and self.held:
                out.append(self._chunk({"content": _as_json("".join(self.held), self.dep_id)}))
            self._finish(out)
            self.done = True
        elif kind == "error":
            raise stream_error(ev.get("error"), self.dep_id)
        # ping, content_block_stop and unknown events need nothing

    def _finish(self, out: list[bytes]) -> None:
        if self.finished:
            return
        self.finished = True
        out.append(self._chunk({}, _finish(self.stop_reason, self.answered, self.tool_calls > 0)))
        out.append(orjson.dumps({**self.head, "choices": [], "usage": usage_from_anthropic(self.usage)}))


# ---------------------------------------------------------------------- errors
def stream_error(err: Any, dep_id: str) -> GatewayError:
    err = err if isinstance(err, dict) else {"message": str(err)}
    etype = str(err.get("type") or "api_error")
    return upstream_error(
        _EVENT_STATUSES.get(etype, 502),
        f"Deployment {dep_id} failed mid-stream: {err.get('message') or 'unknown error'}",
        type=etype, code=etype,
    )


def map_anthropic_error(status: int, raw: bytes, headers: Mapping[str, str], dep_id: str) -> GatewayError:
    """Anthropic's error statuses as ours; 529 (overloaded) is a 503 the SDK retries."""
    if status == 529:
        message = "overloaded"
        try:
            obj = orjson.loads(raw)
            message = obj["error"]["message"] or message
        except (orjson.JSONDecodeError, KeyError, TypeError):
            pass
        out_headers = {k: headers[k] for k in ("retry-after",) if k in headers}
        return upstream_error(503, f"Deployment {dep_id} is overloaded: {message}", code="upstream_overloaded", headers=out_headers)
    if status == 413:
        err = map_error(status, raw, headers, dep_id)
        err.code = err.code or "request_too_large"
        return err
    return map_error(status, raw, headers, dep_id)


# What `/v1/messages/count_tokens` takes of a Messages request.
_COUNTED_FIELDS = ("model", "messages", "system", "tools", "tool_choice", "thinking")


def _one_message(model: str, text: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


__all__ = ["PROVIDER", "AnthropicProvider", "completion_from_message", "map_anthropic_error"]
