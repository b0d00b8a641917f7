"""Usage summed per minute and per hour, written with each group of bills.

The console's charts and totals and the usage API read these sums: a month of a busy
organisation's usage is a few thousand rows instead of millions of records, and they are kept
for good while the records themselves are pruned after `usage.retention_days`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from switchyard.store.schema import UNSERVED, usage_rollups

MINUTE = 60_000
HOUR = 3_600_000
SPANS = (MINUTE, HOUR)
DAY = 86_400_000

GROUP = ("span", "bucket", "org_id", "key_id", "model", "deployment")
MEASURES = ("requests", "errors", "input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens",
            "image_tokens", "cost_nanos", "latency_ms", "cache_write_tokens")
COLUMNS = GROUP + MEASURES
GROUPS = {"model": "model", "key": "key_id", "deployment": "deployment", "org": "org_id"}


class Billed(Protocol):
    org_id: str
    key_id: str
    model: str
    deployment: str
    status: str
    input_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    output_tokens: int
    reasoning_tokens: int
    image_tokens: int
    cost_nanos: int
    latency_ms: int
    created_at: int


def rollup_rows(records: Iterable[Billed]) -> list[tuple[Any, ...]]:
    """One row per (span, bucket, org, key, model, deployment) touched, in a fixed order so that
    concurrent writers lock rows in the same order (no deadlock on PostgreSQL)."""
    sums: dict[tuple[Any, ...], list[int]] = {}
    for r in records:
        served = r.status not in UNSERVED
        values = (int(served), int(not served), r.input_tokens, r.cached_tokens, r.output_tokens,
                  r.reasoning_tokens, r.image_tokens, r.cost_nanos, r.latency_ms, r.cache_write_tokens)
        for span in SPANS:
            key = (span, r.created_at - r.created_at % span, r.org_id, r.key_id, r.model, r.deployment)
            total = sums.get(key)
            if total is None:
                sums[key] = list(values)
            else:
                for i, v in enumerate(values):
                    total[i] += v
    return [key + tuple(total) for key, total in sorted(sums.items())]


def upsert_sql(placeholders: list[str]) -> str:
    """An upsert adding to the sums (SQLite and PostgreSQL speak the same ON CONFLICT)."""
    added = ", ".join(f"{m} = usage_rollups.{m} + excluded.{m}" for m in MEASURES)
    return (f"INSERT INTO usage_rollups ({', '.join(COLUMNS)}) VALUES ({', '.join(placeholders)}) "
            f"ON CONFLICT ({', '.join(GROUP)}) DO UPDATE SET {added}")


SQLITE_UPSERT = upsert_sql(["?"] * len(COLUMNS))
NAMED_UPSERT = upsert_sql([f":{c}" for c in COLUMNS])


async def series(
    engine: AsyncEngine, *, org_id: str | None, span: int, bucket: int, start: int, end: int,
    group: str | None = None, key_id: str | None = None,
) -> list[dict[str, Any]]:
    """Sums per `bucket` ms (a multiple of `span`, the rollup read) between `start` and `end`
    (epoch ms), optionally per model, key, deployment or organisation."""
    r = usage_rollups.c
    at = (r.bucket - r.bucket % bucket).label("bucket") if bucket != span else r.bucket.label("bucket")
    columns: list[Any] = [at]
    if group is not None:
        if group not in GROUPS:
            raise ValueError(group)
        columns.append(getattr(r, GROUPS[group]).label("group"))
    conditions = [r.span == span, r.bucket >= start, r.bucket < end]
    if org_id is not None:
        conditions.append(r.org_id == org_id)
    if key_id is not None:
        conditions.append(r.key_id == key_id)
    q = (select(*columns, *[func.sum(getattr(r, m)).label(m) for m in MEASURES]).where(and_(*conditions))
         .group_by(*columns).order_by(*columns))
    async with engine.connect() as conn:
        rows = (await conn.execute(q)).all()
    return [{"bucket": row.bucket, **({"group": row.group} if group else {}),
             **{m: int(getattr(row, m)) for m in MEASURES}} for row in rows]


async def totals(engine: AsyncEngine, *, org_id: str | None, start: int, end: int, span: int = HOUR) -> dict[str, int]:
    r = usage_rollups.c
    conditions = [r.span == span, r.bucket >= start, r.bucket < end]
    if org_id is not None:
        conditions.append(r.org_id == org_id)
    q = select(*[func.coalesce(func.sum(getattr(r, m)), 0).label(m) for m in MEASURES]).where(and_(*conditions))
    async with engine.connect() as conn:
        row = (await conn.execute(q)).one()
    return {m: int(getattr(row, m)) for m in MEASURES}


async def top(engine: AsyncEngine, *, by: str, start: int, end: int, org_id: str | None = None,
              limit: int = 10) -> list[dict[str, Any]]:
    """The biggest spenders (orgs, keys or models) over a range, from the hourly sums."""
    r = usage_rollups.c
    who = getattr(r, GROUPS[by]).label("group")
    conditions = [r.span == HOUR, r.bucket >= start, r.bucket < end]
    if org_id is not None:
        conditions.append(r.org_id == org_id)
    q = (select(who, *[func.sum(getattr(r, m)).label(m) for m in MEASURES]).where(and_(*conditions))
         .group_by(who).order_by(func.sum(r.cost_nanos).desc(), who).limit(limit))
    async with engine.connect() as conn:
        rows = (await conn.execute(q)).all()
    return [{"group": row.group, **{m: int(getattr(row, m)) for m in MEASURES}} for row in rows]
