"""`ledger.settle`: make a request's bill durable, grouping the commits of concurrent requests.

A request awaits its settlement before its response (or its stream's last chunk) leaves. The
writer commits whatever settlements are waiting in one transaction, so under load one commit
serves many requests, and with no load a settlement commits at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from switchyard.accounts.directory import Directory
from switchyard.store.schema import api_keys, changes, ledger_entries, organizations, usage_records

log = logging.getLogger("switchyard.ledger")

MAX_BATCH = 500


@dataclass(slots=True)
class Settlement:
    request_id: str
    org_id: str
    key_id: str
    key_in_db: bool  # keys from config are not rows; their spend is tracked on the organisation only
    reserved_nanos: int
    cost_nanos: int
    model: str
    deployment: str
    endpoint: str
    status: str
    stream: bool
    service_tier: str
    input_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    output_tokens: int
    reasoning_tokens: int
    image_tokens: int
    latency_ms: int
    created_at: int

    def usage_row(self) -> dict[str, Any]:
        row = asdict(self)
        for k in ("key_in_db", "reserved_nanos"):
            row.pop(k)
        return row

    def ledger_rows(self) -> list[dict[str, Any]]:
        base = {"org_id": self.org_id, "key_id": self.key_id, "request_id": self.request_id,
                "note": None, "created_at": self.created_at}
        rows = []
        if self.reserved_nanos:
            rows.append({**base, "kind": "reserve", "amount_nanos": -self.reserved_nanos})
            rows.append({**base, "kind": "release", "amount_nanos": self.reserved_nanos})
        if self.cost_nanos:
            rows.append({**base, "kind": "settle", "amount_nanos": -self.cost_nanos})
        return rows


class LedgerWriter:
    def __init__(self, engine: AsyncEngine, directory: Directory) -> None:
        self._engine = engine
        self._directory = directory
        self._pending: list[tuple[Settlement, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.listeners: list[Any] = []  # called with each committed batch (usage events)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        # Let what is waiting commit before the worker goes.
        while self._pending:
            await asyncio.sleep(0.01)
        if self._task:
            self._task.cancel()

    async def settle(self, settlement: Settlement) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((settlement, future))
        self._wake.set()
        await future

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                try:
                    await self._commit([s for s, _ in batch])
                except Exception as exc:
                    log.exception("committing %d settlements failed", len(batch))
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                for _, fut in batch:
                    if not fut.done():
                        fut.set_result(None)
                for listener in self.listeners:
                    try:
                        listener(batch)
                    except Exception:
                        log.exception("usage listener failed")

    async def _commit(self, batch: list[Settlement]) -> None:
        org_delta: defaultdict[str, int] = defaultdict(int)
        key_delta: defaultdict[str, int] = defaultdict(int)
        ledger_rows: list[dict[str, Any]] = []
        for s in batch:
            org_delta[s.org_id] -= s.cost_nanos
            if s.key_in_db:
                key_delta[s.key_id] += s.cost_nanos
            ledger_rows += s.ledger_rows()
        now = int(time.time() * 1000)
        async with self._directory.lock, self._engine.begin() as conn:
            await conn.execute(insert(usage_records), [s.usage_row() for s in batch])
            if ledger_rows:
                await conn.execute(insert(ledger_entries), ledger_rows)
            balances: dict[str, int] = {}
            spent: dict[str, int] = {}
            feed = []
            for org_id, delta in org_delta.items():
                if delta:
                    await conn.execute(update(organizations).where(organizations.c.id == org_id)
                                       .values(balance_nanos=organizations.c.balance_nanos + delta, updated_at=now))
                    feed.append({"entity": "org", "entity_id": org_id, "created_at": now})
                balances[org_id] = (await conn.execute(
                    select(organizations.c.balance_nanos).where(organizations.c.id == org_id))).scalar_one()
            for key_id, delta in key_delta.items():
                if delta:
                    await conn.execute(update(api_keys).where(api_keys.c.id == key_id)
                                       .values(spent_nanos=api_keys.c.spent_nanos + delta))
                    feed.append({"entity": "key", "entity_id": key_id, "created_at": now})
                spent[key_id] = (await conn.execute(
                    select(api_keys.c.spent_nanos).where(api_keys.c.id == key_id))).scalar_one()
            if feed:
                # Other workers follow balances through the change feed.
                await conn.execute(insert(changes), feed)
        self._directory.apply_settled(balances, spent)
