"""Live usage events for dashboards: each committed request, fanned out to subscribers.

Subscribers get bounded queues; a slow one loses events rather than slowing requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from switchyard.accounts.ledger import Settlement
from switchyard.metering.cost import usd


def event_of(s: Settlement) -> dict[str, Any]:
    return {
        "type": "request.settled", "request_id": s.request_id, "org_id": s.org_id, "key_id": s.key_id,
        "model": s.model, "deployment": s.deployment, "endpoint": s.endpoint, "status": s.status,
        "stream": s.stream, "input_tokens": s.input_tokens, "cached_tokens": s.cached_tokens,
        "output_tokens": s.output_tokens, "reasoning_tokens": s.reasoning_tokens, "image_tokens": s.image_tokens,
        "cost_nanos": s.cost_nanos, "cost_usd": usd(s.cost_nanos), "latency_ms": s.latency_ms,
        "created_at": s.created_at // 1000,
    }


class UsageEvents:
    def __init__(self, queue_size: int = 1000) -> None:
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self._queue_size = queue_size

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(self._queue_size)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._subscribers.discard(queue)

    @property
    def listened(self) -> bool:
        return bool(self._subscribers)

    def publish(self, batch: Sequence[tuple[Settlement, Any]]) -> None:
        if not self._subscribers:
            return
        for settlement, _ in batch:
            self.deliver(event_of(settlement))

    def deliver(self, event: dict[str, Any]) -> None:
        for queue in self._subscribers:
            if not queue.full():
                queue.put_nowait(event)
