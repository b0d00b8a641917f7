"""Responses API ⇄ Chat Completions: the request as a chat body, the chat answer as a Response.

Pure functions (plus one small state machine for streams), no I/O. The gateway runs every
Responses request through its chat pipeline, so a chat body built here must pass
`parse_chat_request`, and everything built from a chat answer must validate against the
official SDK's `Response` and `ResponseStreamEvent` types.
"""

from __future__ import annotations

import base64
import copy
import time
from typing import Any

import orjson

from switchyard.wire.responses import (
    ResponsesRequest,
    TextFormatJSONObject,
    TextFormatJSONSchema,
    ToolChoiceAllowed,
    ToolChoiceCustom,
    ToolChoiceFunction,
    ToolChoiceHosted,
    new_id,
)
from switchyard.wire.responses_tools import ToolMap, tool_map

# What a compaction made by translation (`compaction_item`) carries: the summary, readable by us.
COMPACTION_PREFIX = "sy-compaction-v1:"
SUMMARY_HEADING = "Summary of the conversation so far:\n"  # how the model is shown that summary

FILE_URL_SCHEME = "sy-file://"

# Chat parameters some clients send to /v1/responses through `extra_body`; harmless to forward.
_CHAT_EXTRAS = ("seed", "stop", "presence_penalty", "frequency_penalty", "logit_bias")

# `response.error.code` is an enum in the spec and the SDK; anything else is reported as server_error.
_ERROR_CODES = frozenset(
    {
        "server_error", "rate_limit_exceeded", "invalid_prompt", "data_residency_mismatch", "bio_policy",
        "misalignment_policy_violation", "vector_store_timeout", "invalid_image",
        "invalid_image_format", "invalid_base64_image", "invalid_image_url", "image_too_large",
        "image_too_small", "image_parse_error", "image_content_policy_violation", "invalid_image_mode",
        "image_file_too_large", "unsupported_image_media_type", "empty_image_file",
        "failed_to_download_image", "image_file_not_found",
    }
)  # fmt: skip

_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


# ---------------------------------------------------------------- request → chat body


def chat_body(req: ResponsesRequest, raw: dict[str, Any], items: list[dict[str, Any]]) -> dict[str, Any]:
    """The Chat Completions body for a Responses request over the whole conversation `items`."""
    body: dict[str, Any] = {"model": req.model, "messages": _messages(req.instructions, items)}
    if req.max_output_tokens is not None:
        body["max_completion_tokens"] = req.max_output_tokens
    for name in ("temperature", "top_p", "parallel_tool_calls", "service_tier", "user", "safety_identifier",
                 "prompt_cache_key", "prompt_cache_retention"):  # fmt: skip
        value = getattr(req, name)
        if value is not None:
            body[name] = value
    for name in _CHAT_EXTRAS:
        if raw.get(name) is not None:
            body[name] = raw[name]
    if req.effort is not None:
        body["reasoning_effort"] = req.effort
    if req.text is not None:
        fmt = req.text.format
        if isinstance(fmt, TextFormatJSONSchema):
            schema: dict[str, Any] = {"name": fmt.name, "schema": fmt.schema}
            if fmt.strict is not None:
                schema["strict"] = fmt.strict
            if fmt.description is not None:
                schema["description"] = fmt.description
            body["response_format"] = {"type": "json_schema", "json_schema": schema}
        elif isinstance(fmt, TextFormatJSONObject):
            body["response_format"] = {"type": "json_object"}
        # {"type": "text"} is the default: not sent, as some upstreams reject it.
        if req.text.verbosity is not None:
            body["verbosity"] = req.text.verbosity
    tmap = tool_map(req.tools)
    tools = list(tmap.chat_tools)
    choice = req.choice
    if isinstance(choice, (ToolChoiceFunction, ToolChoiceCustom)):
        namespace = choice.namespace if isinstance(choice, ToolChoiceFunction) else None
        body["tool_choice"] = {"type": "function", "function": {"name": _chat_name_of(tmap, choice.name, namespace)}}
    elif isinstance(choice, ToolChoiceAllowed):
        # Chat's own allowed_tools is not understood by every provider: narrow the list instead.
        allowed = {_chat_name_of(tmap, t.name, None) for t in choice.tools if t.name}
        tools = [t for t in tools if t["function"]["name"] in allowed]
        body["tool_choice"] = choice.mode
    elif isinstance(choice, ToolChoiceHosted):
        pass  # a hosted tool forced: not here, so the model chooses
    elif choice is not None:
        body["tool_choice"] = choice
    if tools:
        body["tools"] = tools
    elif "tool_choice" in body:
        del body["tool_choice"]  # nothing to choose from (e.g. "none" without tools)
    if req.wants_logprobs:
        body["logprobs"] = True
        if req.top_logprobs is not None:
            body["top_logprobs"] = req.top_logprobs
    if req.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def _chat_name_of(tmap: ToolMap, name: str, namespace: str | None) -> str:
    """The chat name of the tool a Responses request names (a namespaced one found by its own name)."""
    if namespace:
        return tmap.chat_name(name, namespace)
    for chat_name, target in tmap.by_chat_name.items():
        if target.name == name:
            return chat_name
    return name


def dropped_tools(req: ResponsesRequest) -> list[str]:
    """Hosted tools a translated (chat) deployment leaves out."""
    return tool_map(req.tools).dropped


def _messages(instructions: str | None, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    tmap = ToolMap()
    open_calls = False  # the last message is an assistant message still collecting function calls
    for item in items:
        kind = item.get("type", "message")
        if kind == "reasoning":
            continue  # no chat equivalent; does not break a run of function calls either
        if kind in ("function_call", "custom_tool_call"):
            name = tmap.chat_name(item["name"], item.get("namespace"))
            arguments = (item.get("arguments") or "") if kind == "function_call" else \
                orjson.dumps({"input": item.get("input") or ""}).decode()
            call = {"id": item["call_id"], "type": "function", "function": {"name": name, "arguments": arguments}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and (open_calls or not last.get("tool_calls")):
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
            open_calls = True
            continue
        open_calls = False
        if kind in ("function_call_output", "custom_tool_call_output"):
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": _tool_output(item["output"])})
        elif kind == "message":
            messages.append(_chat_message(item))
        elif kind == "compaction":
            summary = compaction_summary(item)
            if summary is not None:
                messages.append({"role": "system", "content": SUMMARY_HEADING + summary})
        # hosted tools' items (web_search_call, ...) have no chat equivalent
    return messages


def compaction_item(summary: str) -> dict[str, Any]:
    """The compaction item of a conversation compacted by translation: the summary itself, marked
    as ours (only OpenAI can read OpenAI's encrypted ones)."""
    encoded = base64.b64encode(summary.encode()).decode()
    return {"id": new_id("cmp"), "type": "compaction", "encrypted_content": COMPACTION_PREFIX + encoded}


def compaction_summary(item: dict[str, Any]) -> str | None:
    """The summary in a compaction item switchyard made; None for OpenAI's own."""
    content = item.get("encrypted_content")
    if not isinstance(content, str) or not content.startswith(COMPACTION_PREFIX):
        return None
    try:
        return base64.b64decode(content[len(COMPACTION_PREFIX):]).decode()
    except ValueError:
        return None


def _tool_output(output: Any) -> str:
    if isinstance(output, str):
        return output
    return "".join(p.get("text", "") for p in output if isinstance(p, dict) and p.get("type") == "input_text")


def _chat_message(item: dict[str, Any]) -> dict[str, Any]:
    role = item["role"]
    content = item["content"]
    if role == "assistant":
        if isinstance(content, str):
            return {"role": "assistant", "content": content}
        # A refusal was shown to the user; as context it is plain assistant text.
        text = "".join(p.get("text") or p.get("refusal") or "" for p in content)
        return {"role": "assistant", "content": text}
    if isinstance(content, str):
        return {"role": role, "content": content}
    parts = [_chat_part(p) for p in content]
    if len(parts) == 1 and parts[0]["type"] == "text":
        return {"role": role, "content": parts[0]["text"]}
    return {"role": role, "content": parts}


def _chat_part(part: dict[str, Any]) -> dict[str, Any]:
    kind = part["type"]
    if kind in ("input_text", "output_text"):
        return {"type": "text", "text": part["text"]}
    if kind == "input_image":
        url = part.get("image_url") or f"{FILE_URL_SCHEME}{part['file_id']}"
        return {"type": "image_url", "image_url": {"url": url, "detail": part.get("detail") or "auto"}}
    if kind == "input_file":
        file = {k: part[k] for k in ("file_id", "file_data", "filename") if part.get(k) is not None}
        return {"type": "file", "file": file}
    if kind == "refusal":
        return {"type": "text", "text": part["refusal"]}
    raise ValueError(f"unexpected content part type {kind!r}")  # parse_responses_request rejects these


# ---------------------------------------------------------------- Response objects


def _text_format(req: ResponsesRequest) -> dict[str, Any]:
    fmt = req.text.format if req.text else None
    if isinstance(fmt, TextFormatJSONSchema):
        out: dict[str, Any] = {"type": "json_schema", "name": fmt.name, "schema": fmt.schema, "strict": fmt.strict}
        if fmt.description is not None:
            out["description"] = fmt.description
        return out
    if isinstance(fmt, TextFormatJSONObject):
        return {"type": "json_object"}
    return {"type": "text"}


def _tool_choice(req: ResponsesRequest) -> Any:
    return req.tool_choice if req.tool_choice is not None else "auto"


def _echoed_tools(req: ResponsesRequest) -> list[dict[str, Any]]:
    """The request's tools as a Response echoes them (function tools with their defaults)."""
    out = []
    for tool in req.tools or ():
        if tool.get("type") == "function":
            tool = {"description": None, "parameters": None, "strict": None, **tool}
        out.append(tool)
    return out


def _service_tier(tier: str | None) -> str:
    if tier == "fast":
        return "priority"  # OpenAI echoes `fast` as the tier it maps to
    return tier or "default"


def base_response(
    req: ResponsesRequest,
    *,
    response_id: str,
    created_at: float,
    model: str,
    status: str,
    previous_response_id: str | None,
) -> dict[str, Any]:
    """A complete Response object with no output and no usage yet."""
    reasoning = req.reasoning
    resp: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "completed_at": None,
        "error": None,
        "incomplete_details": None,
        "instructions": req.instructions,
        "max_output_tokens": req.max_output_tokens,
        "max_tool_calls": req.max_tool_calls,
        "model": model,
        "output": [],
        "parallel_tool_calls": True if req.parallel_tool_calls is None else req.parallel_tool_calls,
        "previous_response_id": previous_response_id,
        "prompt_cache_key": req.prompt_cache_key,
        "reasoning": {
            "effort": reasoning.effort if reasoning else None,
            "summary": reasoning.summary if reasoning else None,
        },
        "safety_identifier": req.safety_identifier,
        "service_tier": _service_tier(req.service_tier),
        "store": True if req.store is None else req.store,
        "temperature": 1.0 if req.temperature is None else req.temperature,
        "text": {
            "format": _text_format(req),
            "verbosity": (req.text.verbosity if req.text else None) or "medium",
        },
        "tool_choice": _tool_choice(req),
        "tools": _echoed_tools(req),
        "top_logprobs": req.top_logprobs if req.top_logprobs is not None else 0,
        "top_p": 1.0 if req.top_p is None else req.top_p,
        "truncation": req.truncation or "disabled",
        "usage": None,
        "metadata": dict(req.metadata or {}),
    }
    if req.user is not None:
        resp["user"] = req.user  # the spec types it as a plain string: absent rather than null
    return resp


def _finish(resp: dict[str, Any], finish_reason: str | None) -> None:
    """Set status, incomplete_details and completed_at from the chat finish reason."""
    reason = _INCOMPLETE.get(finish_reason or "")
    if reason is not None:
        resp["status"] = "incomplete"
        resp["incomplete_details"] = {"reason": reason}
        resp["completed_at"] = None
    else:
        resp["status"] = "completed"
        resp["completed_at"] = int(time.time())


def response_from_chat(
    completion: dict[str, Any],
    req: ResponsesRequest,
    *,
    response_id: str,
    created_at: float,
    model: str,
    previous_response_id: str | None,
) -> dict[str, Any]:
    """The Response for a `chat.completion` answer."""
    resp = base_response(
        req, response_id=response_id, created_at=created_at, model=model, status="completed",
        previous_response_id=previous_response_id,
    )  # fmt: skip
    choices = completion.get("choices") or [{}]
    choice = choices[0]
    message = choice.get("message") or {}
    finish_reason = choice.get("finish_reason")
    content = message.get("content")
    if isinstance(content, list):  # some upstreams answer with text parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    refusal = message.get("refusal")
    tool_calls = message.get("tool_calls") or []
    output: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    if content or not (tool_calls or refusal):
        logprobs = (choice.get("logprobs") or {}).get("content") or []
        parts.append(_output_text(content or "", [_part_logprob(lp) for lp in logprobs]))
    if refusal:
        parts.append({"type": "refusal", "refusal": refusal})
    if parts:
        output.append({"id": new_id("msg"), "type": "message", "role": "assistant", "status": "completed", "content": parts})
    tmap = tool_map(req.tools)
    for call in tool_calls:
        fn = call.get("function") or {}
        name = fn.get("name") or ""
        item_id = new_id("ctc" if tmap.by_chat_name.get(name, None) and tmap.by_chat_name[name].custom else "fc")
        output.append(tmap.call_item(call.get("id") or new_id("call"), name, fn.get("arguments") or "", item_id, "completed"))
    _finish(resp, finish_reason)
    if resp["status"] == "incomplete" and output:
        output[-1]["status"] = "incomplete"
    resp["output"] = output
    resp["usage"] = response_usage(completion.get("usage"))
    if completion.get("service_tier"):
        resp["service_tier"] = _service_tier(completion["service_tier"])
    return resp


def _output_text(text: str, logprobs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs}


def _token_bytes(lp: dict[str, Any]) -> list[int]:
    raw = lp.get("bytes")
    return list(raw) if raw is not None else list(str(lp.get("token", "")).encode())


def _part_logprob(lp: dict[str, Any]) -> dict[str, Any]:
    """A chat logprob as a content part's `LogProb` (bytes and top_logprobs required)."""
    return {
        "token": lp.get("token", ""),
        "logprob": lp.get("logprob", 0.0),
        "bytes": _token_bytes(lp),
        "top_logprobs": [
            {"token": t.get("token", ""), "logprob": t.get("logprob", 0.0), "bytes": _token_bytes(t)}
            for t in lp.get("top_logprobs") or ()
        ],
    }


def _event_logprob(lp: dict[str, Any]) -> dict[str, Any]:
    """A chat logprob as a streaming event's `ResponseLogProb` (no bytes)."""
    return {
        "token": lp.get("token", ""),
        "logprob": lp.get("logprob", 0.0),
        "top_logprobs": [{"token": t.get("token", ""), "logprob": t.get("logprob", 0.0)} for t in lp.get("top_logprobs") or ()],
    }


# ---------------------------------------------------------------- usage


def response_usage(chat_usage: dict[str, Any] | None) -> dict[str, Any] | None:
    """Chat `usage` → Responses `usage` (both cache counters always present, as SDK 2.45+ requires)."""
    if not chat_usage:
        return None
    prompt = chat_usage.get("prompt_tokens") or 0
    completion = chat_usage.get("completion_tokens") or 0
    in_details = chat_usage.get("prompt_tokens_details") or {}
    out_details = chat_usage.get("completion_tokens_details") or {}
    usage: dict[str, Any] = {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": in_details.get("cached_tokens") or 0,
            "cache_write_tokens": in_details.get("cache_write_tokens") or 0,
        },
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": out_details.get("reasoning_tokens") or 0},
        "total_tokens": chat_usage.get("total_tokens") or prompt + completion,
    }
    if "cost" in chat_usage:
        usage["cost"] = chat_usage["cost"]
    return usage


# ---------------------------------------------------------------- streaming


class _Message:
    """The open assistant message item and its open content part."""

    __slots__ = ("id", "index", "parts", "kind", "text", "logprobs", "event_logprobs")

    def __init__(self, index: int) -> None:
        self.id = new_id("msg")
        self.index = index
        self.parts: list[dict[str, Any]] = []  # closed parts
        self.kind: str | None = None  # "output_text" | "refusal" while a part is open
        self.text: list[str] = []
        self.logprobs: list[dict[str, Any]] = []
        self.event_logprobs: list[dict[str, Any]] = []

    def part(self) -> dict[str, Any]:
        text = "".join(self.text)
        if self.kind == "refusal":
            return {"type": "refusal", "refusal": text}
        return _output_text(text, list(self.logprobs))

    def item(self, status: str) -> dict[str, Any]:
        parts = [*self.parts, self.part()] if self.kind else list(self.parts)
        return {"id": self.id, "type": "message", "role": "assistant", "status": status, "content": parts}


class _Call:
    """An open tool call item: a function_call, or a custom_tool_call (whose input is told whole
    when it closes: the chat call's JSON arguments only give it up at the end)."""

    __slots__ = ("id", "index", "call_id", "name", "arguments", "_tmap")

    def __init__(self, index: int, call_id: str, name: str, tmap: ToolMap) -> None:
        self._tmap = tmap
        self.name = name  # the chat name
        self.id = new_id("ctc" if self.custom else "fc")
        self.index = index
        self.call_id = call_id
        self.arguments: list[str] = []

    @property
    def custom(self) -> bool:
        target = self._tmap.by_chat_name.get(self.name)
        return target is not None and target.custom

    @property
    def public_name(self) -> str:
        target = self._tmap.by_chat_name.get(self.name)
        return target.name if target is not None else self.name

    def item(self, status: str) -> dict[str, Any]:
        arguments = "".join(self.arguments) if status != "in_progress" or not self.custom else ""
        return self._tmap.call_item(self.call_id, self.name, arguments, self.id, status)


class ResponseEvents:
    """Turns a stream of chat.completion.chunk dicts into Responses streaming events, in OpenAI's order.

    Output items are emitted one at a time: text after a tool call (or a tool call after text, or
    the next tool call) closes the open item first.
    """

    def __init__(
        self,
        req: ResponsesRequest,
        *,
        response_id: str,
        created_at: float,
        model: str,
        previous_response_id: str | None,
    ) -> None:
        self._req = req
        self._response_id = response_id
        self._created_at = created_at
        self._model = model
        self._previous_response_id = previous_response_id
        self._seq = 0
        self._output: list[dict[str, Any]] = []  # closed items
        self._open: _Message | _Call | None = None
        self._calls: dict[int, _Call] = {}  # chat tool_call index → its item
        self._tmap = tool_map(req.tools)
        self._finish_reason: str | None = None
        self._service_tier: str | None = None

    # -- helpers

    def _event(self, type_: str, **fields: Any) -> dict[str, Any]:
        event = {"type": type_, "sequence_number": self._seq, **fields}
        self._seq += 1
        return event

    def _response(self, status: str) -> dict[str, Any]:
        resp = base_response(
            self._req, response_id=self._response_id, created_at=self._created_at, model=self._model,
            status=status, previous_response_id=self._previous_response_id,
        )  # fmt: skip
        resp["output"] = copy.deepcopy(self._output)
        if self._service_tier:
            resp["service_tier"] = _service_tier(self._service_tier)
        return resp

    def _close_part(self, msg: _Message) -> list[dict[str, Any]]:
        if msg.kind is None:
            return []
        part = msg.part()
        text = "".join(msg.text)
        content_index = len(msg.parts)
        common = {"item_id": msg.id, "output_index": msg.index, "content_index": content_index}
        if msg.kind == "refusal":
            done = self._event("response.refusal.done", **common, refusal=text)
        else:
            done = self._event("response.output_text.done", **common, text=text, logprobs=list(msg.event_logprobs))
        events = [done, self._event("response.content_part.done", **common, part=copy.deepcopy(part))]
        msg.parts.append(part)
        msg.kind, msg.text, msg.logprobs, msg.event_logprobs = None, [], [], []
        return events

    def _close(self, status: str) -> list[dict[str, Any]]:
        item = self._open
        if item is None:
            return []
        self._open = None
        events: list[dict[str, Any]] = []
        if isinstance(item, _Message):
            events += self._close_part(item)
        elif item.custom:
            done_item = item.item(status)
            common = {"item_id": item.id, "output_index": item.index}
            events.append(self._event("response.custom_tool_call_input.delta", **common, delta=done_item["input"]))
            events.append(self._event("response.custom_tool_call_input.done", **common, input=done_item["input"]))
        else:
            events.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item.id, output_index=item.index, name=item.public_name, arguments="".join(item.arguments),
                )  # fmt: skip
            )
        done = item.item(status)
        self._output.append(done)
        events.append(self._event("response.output_item.done", output_index=item.index, item=copy.deepcopy(done)))
        return events

    def _message(self, kind: str) -> tuple[_Message, list[dict[str, Any]]]:
        """The open message with an open part of `kind`, opening what is needed."""
        events: list[dict[str, Any]] = []
        msg = self._open
        if not isinstance(msg, _Message):
            events += self._close("completed")
            msg = _Message(len(self._output))
            self._open = msg
            events.append(self._event("response.output_item.added", output_index=msg.index, item=msg.item("in_progress")))
        if msg.kind != kind:
            events += self._close_part(msg)
            msg.kind = kind
            events.append(
                self._event(
                    "response.content_part.added",
                    item_id=msg.id, output_index=msg.index, content_index=len(msg.parts), part=msg.part(),
                )  # fmt: skip
            )
        return msg, events

    # -- the interface

    def start(self) -> list[dict[str, Any]]:
        return [
            self._event("response.created", response=self._response("in_progress")),
            self._event("response.in_progress", response=self._response("in_progress")),
        ]

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        if chunk.get("service_tier"):
            self._service_tier = chunk["service_tier"]
        events: list[dict[str, Any]] = []
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue  # Responses has no `n`; the chat body never asks for more than one
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                msg, opened = self._message("output_text")
                events += opened
                lps = (choice.get("logprobs") or {}).get("content") or []
                msg.logprobs += [_part_logprob(lp) for lp in lps]
                event_lps = [_event_logprob(lp) for lp in lps]
                msg.event_logprobs += event_lps
                msg.text.append(text)
                events.append(
                    self._event(
                        "response.output_text.delta",
                        item_id=msg.id, output_index=msg.index, content_index=len(msg.parts), delta=text,
                        logprobs=event_lps,
                    )  # fmt: skip
                )
            refusal = delta.get("refusal")
            if refusal:
                msg, opened = self._message("refusal")
                events += opened
                msg.text.append(refusal)
                events.append(
                    self._event(
                        "response.refusal.delta",
                        item_id=msg.id, output_index=msg.index, content_index=len(msg.parts), delta=refusal,
                    )  # fmt: skip
                )
            for call in delta.get("tool_calls") or ():
                events += self._tool_call(call)
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
        return events

    def _tool_call(self, call: dict[str, Any]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        index = call.get("index", 0)
        fn = call.get("function") or {}
        item = self._calls.get(index)
        if item is None:
            events += self._close("completed")
            item = _Call(len(self._output), call.get("id") or new_id("call"), fn.get("name") or "", self._tmap)
            self._calls[index] = item
            self._open = item
            events.append(self._event("response.output_item.added", output_index=item.index, item=item.item("in_progress")))
        elif fn.get("name") and item is self._open and not item.name:
            item.name = fn["name"]
        args = fn.get("arguments")
        if args:
            if item is self._open:
                item.arguments.append(args)
                if not item.custom:
                    events.append(self._event("response.function_call_arguments.delta", item_id=item.id,
                                              output_index=item.index, delta=args))
            else:
                # A fragment for an item already closed (upstream interleaved calls): fix the
                # final object; its events are already out.
                item.arguments.append(args)
                for i, done in enumerate(self._output):
                    if done["id"] == item.id:
                        self._output[i] = item.item(done["status"])
        return events

    def complete(self, usage: dict[str, Any] | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Close what is open and finish with response.completed (or response.incomplete)."""
        incomplete = self._finish_reason in _INCOMPLETE
        events: list[dict[str, Any]] = []
        if self._open is None and not self._output:
            # Nothing streamed: still answer with an (empty) message, as the non-streamed path does.
            _, events = self._message("output_text")
        events += self._close("incomplete" if incomplete else "completed")
        resp = self._response("completed")
        _finish(resp, self._finish_reason)
        resp["usage"] = response_usage(usage)
        kind = "response.incomplete" if incomplete else "response.completed"
        events.append(self._event(kind, response=copy.deepcopy(resp)))
        return events, resp

    def fail(self, error: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Close open items as incomplete and finish with response.failed."""
        events = self._close("incomplete")
        resp = self._response("failed")
        code = error.get("code")
        resp["error"] = {
            "code": code if code in _ERROR_CODES else "server_error",
            "message": str(error.get("message") or "The response failed."),
        }
        events.append(self._event("response.failed", response=copy.deepcopy(resp)))
        return events, resp

    @property
    def output(self) -> list[dict[str, Any]]:
        """The output items closed so far."""
        return self._output
