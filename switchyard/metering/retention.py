"""Request records are kept for `usage.retention_days` and then pruned in the background, a small
batch at a time so requests never wait behind a long delete. What is pruned is only the
per-request detail: the per-minute and per-hour sums (rollups) are kept for good, and so is
money (the ledger is never touched: a balance still equals the sum of its ledger)."""

from __future__ import annotations

import asyncio
import logging
import time

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from switchyard.background import Background
from switchyard.store.schema import usage_records

log = logging.getLogger("switchyard.retention")
IDLE_SECONDS = 300.0  # between sweeps once nothing is left to prune


class Pruner(Background):
    def __init__(self, engine: AsyncEngine, retention_days: int, batch: int = 1000, pause: float = 0.05) -> None:
        self.engine = engine
        self.retention_ms = retention_days * 86_400_000
        self.batch = batch
        self.pause = pause  # between two batches of one sweep: other writers get the database
        self.pruned = 0

    async def prune_once(self, now_ms: int | None = None) -> int:
        """Delete up to one batch of the oldest records past retention; returns how many went."""
        cutoff = (now_ms if now_ms is not None else int(time.time() * 1000)) - self.retention_ms
        u = usage_records.c
        oldest = select(u.request_id).where(u.created_at < cutoff).order_by(u.created_at).limit(self.batch)
        async with self.engine.begin() as conn:
            gone = (await conn.execute(delete(usage_records).where(u.request_id.in_(oldest.scalar_subquery())))).rowcount
        self.pruned += gone
        return gone

    async def sweep(self) -> int:
        total = 0
        while (gone := await self.prune_once()) > 0:
            total += gone
            if gone < self.batch:
                break
            await asyncio.sleep(self.pause)
        if total:
            log.info("pruned %d request records older than %d days", total, self.retention_ms // 86_400_000)
        return total

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:  # a busy database this once: the next sweep tries again
                log.exception("pruning request records failed")
            await asyncio.sleep(IDLE_SECONDS)
