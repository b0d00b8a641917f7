"""Stored responses: what `store: true` keeps, what `previous_response_id` rebuilds a conversation from.

Rows are written by the ledger in the same transaction as the response's bill (see `rows`), so
a stored response always has its usage record and a billed one is always retrievable.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import Table, delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from switchyard.store.schema import responses

# A chain longer than this is refused rather than walked forever (a cycle cannot be stored,
# but a runaway client can build a very long one).
MAX_CHAIN = 1000


class ResponseStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @staticmethod
    def rows(org_id: str, key_id: str, response: dict[str, Any], items: Sequence[dict[str, Any]]) -> list[tuple[Table, dict[str, Any]]]:
        """The row that stores `response` with this turn's input `items`, for `Billing.settle(attach=...)`."""
        return [(responses, {
            "id": response["id"], "org_id": org_id, "key_id": key_id,
            "previous_response_id": response.get("previous_response_id"),
            "body": orjson.dumps(response).decode(), "input_items": orjson.dumps(list(items)).decode(),
            "created_at": int(time.time() * 1000),
        })]

    async def _row(self, org_id: str, response_id: str) -> Any:
        async with self._engine.connect() as conn:
            result = await conn.execute(
                select(responses.c.body, responses.c.input_items, responses.c.previous_response_id)
                .where(responses.c.id == response_id, responses.c.org_id == org_id))
            return result.first()

    async def get(self, org_id: str, response_id: str) -> dict[str, Any] | None:
        row = await self._row(org_id, response_id)
        return orjson.loads(row.body) if row is not None else None

    async def conversation(self, org_id: str, response_id: str) -> list[dict[str, Any]] | None:
        """Every turn's input and output items up to and including `response_id`, oldest first;
        None if that response is not this organisation's (or was deleted)."""
        turns: list[list[dict[str, Any]]] = []
        current: str | None = response_id
        while current is not None and len(turns) < MAX_CHAIN:
            row = await self._row(org_id, current)
            if row is None:
                if current == response_id:
                    return None
                break  # an older turn was deleted: the conversation starts after it
            body = orjson.loads(row.body)
            turns.append(orjson.loads(row.input_items) + list(body.get("output") or ()))
            current = row.previous_response_id
        return [item for turn in reversed(turns) for item in turn]

    async def input_items(
        self, org_id: str, response_id: str, *, after: str | None, limit: int, order: str,
    ) -> tuple[list[dict[str, Any]], bool] | None:
        """One cursor page of a response's input items (`order` desc = newest first, as OpenAI)."""
        row = await self._row(org_id, response_id)
        if row is None:
            return None
        items: list[dict[str, Any]] = orjson.loads(row.input_items)
        if order == "desc":
            items.reverse()
        if after is not None:
            ids = [item.get("id") for item in items]
            items = items[ids.index(after) + 1:] if after in ids else []
        return items[:limit], len(items) > limit

    async def delete(self, org_id: str, response_id: str) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                delete(responses).where(responses.c.id == response_id, responses.c.org_id == org_id))
            return bool(result.rowcount)
