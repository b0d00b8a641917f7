"""Anthropic's `POST /v1/messages`: served as the chat completion it asks for, by any
deployment, and answered as a message (or Anthropic's stream events)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import orjson

from switchyard.accounts.records import Principal
from switchyard.gateway import Gateway, Outcome, new_trace
from switchyard.wire.messages import MessageEvents, chat_from_messages, message_from_completion
from switchyard.wire.sse import DONE

ENDPOINT = "/v1/messages"
_DONE_LINE = DONE.strip()


async def serve(gw: Gateway, raw: Any, principal: Principal, request_id: str) -> Outcome:
    body = chat_from_messages(raw)
    trace = new_trace(body, principal, request_id, ENDPOINT, False)
    outcome = await gw.traced(trace, gw.chat_turn(body, trace, None))
    model = str(raw["model"])
    if outcome.frames is None:
        assert outcome.body is not None
        outcome.body = message_from_completion(outcome.body, model)
        return outcome
    outcome.frames = _message_events(outcome.frames, MessageEvents(model))
    return outcome


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
                    yield out
                    return
                out += events.chunk(chunk)
            if out:
                yield out
        yield events.end()
    finally:
        await frames.aclose()  # type: ignore[attr-defined]
