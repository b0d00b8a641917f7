"""Responses event streams from one deployment, as batches of event dicts.

Two sources look the same to the gateway's relay: a deployment that streams Responses events
itself (ids and echoed fields adopted as ours), and a chat stream translated event by event.
Both can close themselves as failed when the upstream breaks off after the first event.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from switchyard.wire.errors import GatewayError
from switchyard.wire.responses_chat import ResponseEvents

TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
_DELTAS = frozenset({"response.output_text.delta", "response.function_call_arguments.delta", "response.refusal.delta"})

Event = dict[str, Any]


class EventSource:
    """What the relay needs: the first batch, the rest, a failure ending, the text delivered so far."""

    first: list[Event]

    async def next(self) -> list[Event] | None:
        raise NotImplementedError

    def failed(self, error: GatewayError) -> list[Event]:
        raise NotImplementedError

    def delivered(self) -> str:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError


class NativeEvents(EventSource):
    def __init__(self, upstream: AsyncIterator[list[Event]], first: list[Event], adopt: Callable[[dict[str, Any]], None]) -> None:
        self._upstream = upstream
        self._adopt = adopt
        self._sequence = -1
        self._snapshot: dict[str, Any] = {}
        self._text: list[str] = []
        self.first = self._take(first)

    def _take(self, batch: list[Event]) -> list[Event]:
        for event in batch:
            response = event.get("response")
            if isinstance(response, dict):
                self._adopt(response)
                self._snapshot = response
            if isinstance(event.get("sequence_number"), int):
                self._sequence = event["sequence_number"]
            if event.get("type") in _DELTAS and isinstance(event.get("delta"), str):
                self._text.append(event["delta"])
        return batch

    async def next(self) -> list[Event] | None:
        batch = await anext(self._upstream, None)  # type: ignore[call-overload]
        return self._take(batch) if batch is not None else None

    def failed(self, error: GatewayError) -> list[Event]:
        response = copy.deepcopy(self._snapshot)
        response.update(status="failed", error={"code": error.code or "server_error", "message": error.message})
        return [{"type": "response.failed", "sequence_number": self._sequence + 1, "response": response}]

    def delivered(self) -> str:
        return "".join(self._text)

    async def aclose(self) -> None:
        await self._upstream.aclose()  # type: ignore[attr-defined]


class TranslatedEvents(EventSource):
    """A chat stream (batches of `chat.completion.chunk` JSON) told as Responses events."""

    def __init__(self, chunks: AsyncIterator[list[bytes]], first: list[bytes], events: ResponseEvents) -> None:
        self._chunks = chunks
        self._events = events
        self._usage: dict[str, Any] | None = None
        self._done = False
        self._text: list[str] = []
        self.first = events.start() + self._convert(first)

    def _convert(self, batch: list[bytes]) -> list[Event]:
        out: list[Event] = []
        for raw in batch:
            chunk = orjson.loads(raw)
            if isinstance(chunk.get("usage"), dict):
                self._usage = chunk["usage"]
            for event in self._events.feed(chunk):
                if event["type"] in _DELTAS:
                    self._text.append(event["delta"])
                out.append(event)
        return out

    async def next(self) -> list[Event] | None:
        if self._done:
            return None
        batch = await anext(self._chunks, None)  # type: ignore[call-overload]
        if batch is not None:
            return self._convert(batch)
        self._done = True
        events, _ = self._events.complete(self._usage)
        return events

    def failed(self, error: GatewayError) -> list[Event]:
        events, _ = self._events.fail({"code": error.code or "server_error", "message": error.message})
        return events

    def delivered(self) -> str:
        return "".join(self._text)

    async def aclose(self) -> None:
        await self._chunks.aclose()  # type: ignore[attr-defined]
