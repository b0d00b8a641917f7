"""The `batches` and `batch_results` tables: every read and write the API and the runner make.

Status changes are conditional updates (`WHERE status IN …`), so a cancel from the API and
the runner's own progress never overwrite each other: whichever commits second sees the
other's status and follows it. Times are epoch milliseconds here, seconds in the API object.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import orjson
from sqlalchemy import func, insert, or_, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from switchyard.store.schema import batch_results, batches

# Statuses with work left for a runner; the others are final.
ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
CANCELLABLE = ("validating", "in_progress")


def now_ms() -> int:
    return int(time.time() * 1000)


def new_batch_id() -> str:
    """Time-ordered like request ids, so the newest-first list is also id order."""
    return f"batch_{now_ms():012x}{os.urandom(10).hex()}"


@dataclass(frozen=True, slots=True)
class BatchRecord:
    id: str
    org_id: str
    key_id: str
    endpoint: str
    model: str | None
    input_file_id: str
    completion_window: str
    status: str
    output_file_id: str | None
    error_file_id: str | None
    errors: str | None
    metadata: str | None
    total: int
    created_at: int
    in_progress_at: int | None
    expires_at: int
    finalizing_at: int | None
    completed_at: int | None
    failed_at: int | None
    expired_at: int | None
    cancelling_at: int | None
    cancelled_at: int | None
    lease_owner: str | None
    lease_until: int | None

    @classmethod
    def from_row(cls, row: Any) -> BatchRecord:
        return cls(**{f.name: getattr(row, f.name) for f in fields(cls)})


@dataclass(frozen=True, slots=True)
class Tally:
    """What the answered lines add up to: request counts and token usage."""

    completed: int = 0
    failed: int = 0
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0


def _seconds(ms: int | None) -> int | None:
    return ms // 1000 if ms is not None else None


def batch_object(b: BatchRecord, tally: Tally) -> dict[str, Any]:
    """The spec's `Batch` object."""
    errors = orjson.loads(b.errors) if b.errors else None
    return {
        "id": b.id, "object": "batch", "endpoint": b.endpoint, "model": b.model,
        "errors": {"object": "list", "data": errors} if errors else None,
        "input_file_id": b.input_file_id, "completion_window": b.completion_window, "status": b.status,
        "output_file_id": b.output_file_id, "error_file_id": b.error_file_id,
        "created_at": _seconds(b.created_at), "in_progress_at": _seconds(b.in_progress_at),
        "expires_at": _seconds(b.expires_at), "finalizing_at": _seconds(b.finalizing_at),
        "completed_at": _seconds(b.completed_at), "failed_at": _seconds(b.failed_at),
        "expired_at": _seconds(b.expired_at), "cancelling_at": _seconds(b.cancelling_at),
        "cancelled_at": _seconds(b.cancelled_at),
        "request_counts": {"total": b.total, "completed": tally.completed, "failed": tally.failed},
        "usage": {
            "input_tokens": tally.input_tokens,
            "input_tokens_details": {"cached_tokens": tally.cached_tokens},
            "output_tokens": tally.output_tokens,
            "output_tokens_details": {"reasoning_tokens": tally.reasoning_tokens},
            "total_tokens": tally.input_tokens + tally.output_tokens,
        },
        "metadata": orjson.loads(b.metadata) if b.metadata else None,
    }


def result_row(
    batch_id: str, line: int, custom_id: str, ok: bool, output: str, usage: Any = None, cost_nanos: int = 0,
) -> dict[str, Any]:
    """A `batch_results` row; `usage` is the answer's usage object (chat or Responses shape)."""
    tokens = _tokens(usage)
    return {"batch_id": batch_id, "line": line, "custom_id": custom_id, "ok": ok, "output": output,
            "input_tokens": tokens[0], "cached_tokens": tokens[1], "output_tokens": tokens[2],
            "reasoning_tokens": tokens[3], "cost_nanos": cost_nanos}


def _tokens(usage: Any) -> tuple[int, int, int, int]:
    if not isinstance(usage, dict):
        return 0, 0, 0, 0

    def num(value: Any) -> int:
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

    chat = "prompt_tokens" in usage
    inp = num(usage.get("prompt_tokens" if chat else "input_tokens"))
    out = num(usage.get("completion_tokens" if chat else "output_tokens"))
    in_details = usage.get("prompt_tokens_details" if chat else "input_tokens_details") or {}
    out_details = usage.get("completion_tokens_details" if chat else "output_tokens_details") or {}
    cached = num(in_details.get("cached_tokens")) if isinstance(in_details, dict) else 0
    reasoning = num(out_details.get("reasoning_tokens")) if isinstance(out_details, dict) else 0
    return inp, cached, out, reasoning


class BatchRecords:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    # ---- the API ---------------------------------------------------------------------------

    async def create(
        self, *, org_id: str, key_id: str, endpoint: str, input_file_id: str, completion_window: str,
        metadata: dict[str, str] | None, window_seconds: int,
    ) -> BatchRecord:
        now = now_ms()
        row: dict[str, Any] = {f.name: None for f in fields(BatchRecord)}
        row.update(
            id=new_batch_id(), org_id=org_id, key_id=key_id, endpoint=endpoint, input_file_id=input_file_id,
            completion_window=completion_window, status="validating", total=0, created_at=now,
            expires_at=now + window_seconds * 1000,
            metadata=orjson.dumps(metadata).decode() if metadata is not None else None,
        )
        async with self.engine.begin() as conn:
            await conn.execute(insert(batches).values(**row))
        return BatchRecord(**row)

    async def get(self, org_id: str, batch_id: str) -> BatchRecord | None:
        """A batch of this organisation (another's is as good as absent)."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(batches).where(
                batches.c.id == batch_id, batches.c.org_id == org_id))).first()
        return BatchRecord.from_row(row) if row else None

    async def list(self, org_id: str, after: str | None, limit: int) -> tuple[list[BatchRecord], bool] | None:
        """Newest first, a page after the batch `after`; None if `after` is not this org's batch."""
        q = select(batches).where(batches.c.org_id == org_id)
        async with self.engine.connect() as conn:
            if after is not None:
                cursor = (await conn.execute(select(batches.c.created_at, batches.c.id).where(
                    batches.c.id == after, batches.c.org_id == org_id))).first()
                if cursor is None:
                    return None
                q = q.where(tuple_(batches.c.created_at, batches.c.id) < tuple_(cursor.created_at, cursor.id))
            rows = (await conn.execute(
                q.order_by(batches.c.created_at.desc(), batches.c.id.desc()).limit(limit + 1))).all()
        return [BatchRecord.from_row(r) for r in rows[:limit]], len(rows) > limit

    async def request_cancel(self, org_id: str, batch_id: str) -> BatchRecord | None:
        """Move a running batch to `cancelling` (the runner finishes the job); returns the batch as it is now."""
        async with self.engine.begin() as conn:
            await conn.execute(update(batches).where(
                batches.c.id == batch_id, batches.c.org_id == org_id, batches.c.status.in_(CANCELLABLE),
            ).values(status="cancelling", cancelling_at=now_ms()))
        return await self.get(org_id, batch_id)

    async def tallies(self, batch_ids: Sequence[str]) -> dict[str, Tally]:
        if not batch_ids:
            return {}
        r = batch_results.c
        q = (select(r.batch_id, r.ok, func.count().label("n"),
                    func.coalesce(func.sum(r.input_tokens), 0).label("inp"),
                    func.coalesce(func.sum(r.cached_tokens), 0).label("cached"),
                    func.coalesce(func.sum(r.output_tokens), 0).label("out"),
                    func.coalesce(func.sum(r.reasoning_tokens), 0).label("reasoning"))
             .where(r.batch_id.in_(list(batch_ids))).group_by(r.batch_id, r.ok))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q)).all()
        acc: dict[str, dict[str, int]] = {}
        for row in rows:
            t = acc.setdefault(row.batch_id, dict.fromkeys(
                ("completed", "failed", "input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens"), 0))
            t["completed" if row.ok else "failed"] += int(row.n)
            t["input_tokens"] += int(row.inp)
            t["cached_tokens"] += int(row.cached)
            t["output_tokens"] += int(row.out)
            t["reasoning_tokens"] += int(row.reasoning)
        return {batch_id: Tally(**t) for batch_id, t in acc.items()}

    async def tally(self, batch_id: str) -> Tally:
        return (await self.tallies([batch_id])).get(batch_id, Tally())

    # ---- the runner ------------------------------------------------------------------------

    async def load(self, batch_id: str) -> BatchRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(batches).where(batches.c.id == batch_id))).first()
        return BatchRecord.from_row(row) if row else None

    async def transition(self, batch_id: str, from_statuses: Iterable[str], **values: Any) -> bool:
        """Apply `values` only if the batch is still in one of `from_statuses`; True if it was."""
        async with self.engine.begin() as conn:
            result = await conn.execute(update(batches).where(
                batches.c.id == batch_id, batches.c.status.in_(list(from_statuses))).values(**values))
        return result.rowcount == 1

    async def claimable(self, now: int, limit: int) -> list[str]:
        """Batches with work left that no live worker holds, oldest first."""
        q = (select(batches.c.id)
             .where(batches.c.status.in_(ACTIVE),
                    or_(batches.c.lease_owner.is_(None), batches.c.lease_until < now))
             .order_by(batches.c.created_at).limit(limit))
        async with self.engine.connect() as conn:
            return list((await conn.execute(q)).scalars())

    async def claim(self, batch_id: str, owner: str, lease_ms: int) -> bool:
        """Take the lease if it is free or run out: one UPDATE, so two workers cannot both win."""
        now = now_ms()
        async with self.engine.begin() as conn:
            result = await conn.execute(update(batches).where(
                batches.c.id == batch_id, batches.c.status.in_(ACTIVE),
                or_(batches.c.lease_owner.is_(None), batches.c.lease_until < now, batches.c.lease_owner == owner),
            ).values(lease_owner=owner, lease_until=now + lease_ms))
        return result.rowcount == 1

    async def renew(self, batch_id: str, owner: str, lease_ms: int) -> BatchRecord | None:
        """Extend our lease; the batch as it is now, or None if the lease is no longer ours."""
        async with self.engine.begin() as conn:
            result = await conn.execute(update(batches).where(
                batches.c.id == batch_id, batches.c.lease_owner == owner,
            ).values(lease_until=now_ms() + lease_ms))
            if result.rowcount != 1:
                return None
            row = (await conn.execute(select(batches).where(batches.c.id == batch_id))).first()
        return BatchRecord.from_row(row) if row else None

    async def release(self, batch_id: str, owner: str) -> None:
        """Give the lease back (on shutdown or when done) so another worker need not wait it out."""
        async with self.engine.begin() as conn:
            await conn.execute(update(batches).where(
                batches.c.id == batch_id, batches.c.lease_owner == owner,
            ).values(lease_owner=None, lease_until=None))

    async def answered_lines(self, batch_id: str) -> set[int]:
        async with self.engine.connect() as conn:
            return set((await conn.execute(
                select(batch_results.c.line).where(batch_results.c.batch_id == batch_id))).scalars())

    async def add_results(self, rows: list[dict[str, Any]]) -> None:
        """Results of lines that were not billed (failed, expired). A line already answered keeps
        its first result: never two rows, never a second answer."""
        if not rows:
            return
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        stmt = dialect.insert(batch_results).on_conflict_do_nothing(
            index_elements=[batch_results.c.batch_id, batch_results.c.line])
        async with self.engine.begin() as conn:
            for start in range(0, len(rows), 1000):
                await conn.execute(stmt, rows[start:start + 1000])

    async def outputs(self, batch_id: str) -> tuple[list[str], list[str]]:
        """The output file's lines and the error file's lines, in input order."""
        ok: list[str] = []
        failed: list[str] = []
        q = (select(batch_results.c.ok, batch_results.c.output)
             .where(batch_results.c.batch_id == batch_id).order_by(batch_results.c.line))
        async with self.engine.connect() as conn:
            for row in await conn.execute(q):
                (ok if row.ok else failed).append(row.output)
        return ok, failed
