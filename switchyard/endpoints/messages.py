"""Anthropic's `POST /v1/messages`, for every model switchyard routes to: planned and billed
through the chat completion it asks for; deployments that speak Messages (Anthropic's) get the
request passed through as the client sent it (beta fields and flags kept) and their answer and
events relayed as they are; every other deployment answers the chat view, translated back."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import orjson

from switchyard.accounts.billing import Ticket
from switchyard.accounts.records import Principal
from switchyard.gateway import Gateway, Outcome, Trace, first_batch, new_trace
from switchyard.providers import ChatCall, MessagesCall
from switchyard.routing.table import Deployment
from switchyard.wire.chat import parse_chat_request
from switchyard.wire.errors import GatewayError
from switchyard.wire.messages import (
    MessageEvents, chat_from_messages, event, message_from_completion, usage_from_anthropic,
)
from switchyard.wire.sse import DONE, LastFrame, SSEEvent

ENDPOINT = "/v1/messages"
_DONE_LINE = DONE.strip()


async def serve(gw: Gateway, raw: Any, principal: Principal, request_id: str, beta: str | None = None) -> Outcome:
    body = chat_from_messages(raw)
    trace = new_trace(body, principal, request_id, ENDPOINT, False)
    return await gw.traced(trace, _message(gw, raw, body, trace, beta))


async def _message(gw: Gateway, raw: dict[str, Any], body: dict[str, Any], trace: Trace, beta: str | None) -> Outcome:
    request = parse_chat_request(body)
    gw.check_size(request)
    admitted = await gw.admit(trace, await gw.plan(request, trace, "chat.completions"))
    ticket, quote, model = admitted.ticket, admitted.ticket.quote, str(raw["model"])

    def chat_call(dep: Deployment) -> ChatCall:
        return ChatCall(request=request, body=body, upstream_model=dep.config.model, request_id=trace.request_id,
                        output_limit=quote.limit_to_send(dep))

    def native_call(dep: Deployment) -> MessagesCall:
        return MessagesCall(raw, dep.config.model, trace.request_id, beta, stream=bool(request.stream))

    if request.stream:
        async def open_at(dep: Deployment) -> tuple[bool, Any, Any]:
            await gw.deployment_limits(dep, ticket.rate_tokens)
            stream: Any = dep.provider.message_stream(native_call(dep)) if dep.provider.native_messages \
                else dep.provider.chat_stream(chat_call(dep))
            return dep.provider.native_messages, stream, await first_batch(dep, stream)

        dep, (native, stream, first), attempts = await gw.first_stream(ticket, admitted.candidates, open_at)
        if native:
            outcome = gw.stream_outcome(ticket, dep, _relayed(gw, ticket, stream, first, model), stream, attempts,
                                        metered=False)
        else:
            outcome = gw.chunk_stream(ticket, dep, stream, first, attempts, admitted.public)
            assert outcome.frames is not None
            outcome.frames = _message_events(outcome.frames, MessageEvents(model))
        return admitted.headed(outcome)

    async def answer_at(dep: Deployment) -> dict[str, Any]:
        await gw.deployment_limits(dep, ticket.rate_tokens)
        if dep.provider.native_messages:
            message = await dep.provider.message(native_call(dep))
            message["model"] = model  # the name the client asked for, not the upstream's
            return message
        return message_from_completion(await dep.provider.chat(chat_call(dep)), model)

    outcome = await gw.answered(ticket, admitted.candidates, answer_at, None, None,
                                usage_of=lambda m: usage_from_anthropic(m.get("usage")), text_of=message_text)
    return admitted.headed(outcome)


def message_text(message: dict[str, Any]) -> str:
    """What a message says (text, thinking, tool inputs): counted when its usage is missing."""
    parts = []
    for block in message.get("content") or ():
        if isinstance(block, dict):
            for key in ("text", "thinking"):
                if isinstance(block.get(key), str):
                    parts.append(block[key])
            if block.get("type") == "tool_use":
                parts.append(str(block.get("name") or "") + orjson.dumps(block.get("input")).decode())
    return "".join(parts)


async def _relayed(gw: Gateway, ticket: Ticket, events: AsyncIterator[list[SSEEvent]], first: list[SSEEvent],
                   model: str) -> AsyncGenerator[bytes, None]:
    """An Anthropic stream passed through event for event; usage is read from message_start and
    message_delta, and message_stop is sent once the bill is committed."""
    usage: dict[str, Any] = {}
    deltas: list[bytes] = []

    def reported() -> dict[str, Any] | None:
        return usage_from_anthropic(usage) if usage else None

    try:
        batch: list[SSEEvent] | None = first
        stop = event("message_stop", {})
        while batch is not None:
            out = bytearray()
            for ev in batch:
                name, data = ev.event or "message", ev.data
                if name == "message_start":
                    start = orjson.loads(data)
                    message = start.get("message") if isinstance(start, dict) else None
                    if isinstance(message, dict):
                        usage.update(message.get("usage") or {})
                        message["model"] = model
                        data = orjson.dumps(start)
                elif name == "message_delta":
                    usage.update({k: v for k, v in (orjson.loads(data).get("usage") or {}).items() if v is not None})
                elif name == "content_block_delta":
                    deltas.append(data)
                elif name == "message_stop":
                    stop = b"event: message_stop\ndata: " + data + b"\n\n"
                    continue
                out += b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"
            if out:
                yield bytes(out)
            batch = await anext(events, None)
        await gw.settle(ticket, reported(), None, lambda: _delta_text(deltas), "completed")
        yield LastFrame(stop)
    except GatewayError as exc:
        if not ticket.settled:
            await gw.settle(ticket, reported(), None, _delta_text(deltas), "partial", error_code=exc.code)
        yield LastFrame(event("error", {"error": {"type": exc.type if exc.type.endswith("_error") else "api_error",
                                                  "message": exc.message}}))
    finally:
        await events.aclose()  # type: ignore[attr-defined]
        if not ticket.settled:
            await gw.shielded_settle(ticket, gw.settle(ticket, reported(), None, _delta_text(deltas), "cancelled"))


def _delta_text(deltas: list[bytes]) -> str:
    parts = []
    for data in deltas:
        delta = (orjson.loads(data).get("delta") or {})
        parts.append(str(delta.get("text") or delta.get("thinking") or delta.get("partial_json") or ""))
    return "".join(parts)


async def _message_events(frames: AsyncIterator[bytes], events: MessageEvents) -> AsyncGenerator[bytes, None]:
    """A chat completion stream's SSE frames as Anthropic's events (the chat stream settles the
    bill before its last frame, as for chat)."""
    yield events.start()
    try:
        async for piece in frames:
            out = b""
            for line in piece.split(b"\n"):
                if not line.startswith(b"data: ") or line == _DONE_LINE:
                    continue
                chunk = orjson.loads(line[6:])
                if "error" in chunk and not chunk.get("choices"):
                    out += events.error(str((chunk["error"] or {}).get("message") or "upstream error"))
                    yield LastFrame(out)
                    return
                out += events.chunk(chunk)
            if out:
                yield out
        yield LastFrame(events.end())
    finally:
        await frames.aclose()  # type: ignore[attr-defined]
