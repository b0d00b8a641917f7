"""The request log: one usage record per request, newest first, in cursor pages.

Read by the console and by `GET /v1/requests`; prompts and answers are never stored, so a
row is what was asked of whom, what it cost and how long it took.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from switchyard.metering.cost import usd
from switchyard.store.schema import api_keys, usage_records

MAX_PAGE = 200
STATUSES = ("completed", "partial", "cancelled", "cache_hit", "refused", "failed")


@dataclass(frozen=True, slots=True)
class LogFilter:
    key_id: str | None = None
    model: str | None = None
    status: str | None = None
    start: int | None = None  # epoch ms, inclusive
    end: int | None = None  # epoch ms, exclusive


def request_object(row: Any) -> dict[str, Any]:
    return {
        "id": row.request_id, "object": "request", "created_at": row.created_at // 1000,
        "created_at_ms": row.created_at, "org_id": row.org_id, "key_id": row.key_id,
        "key_name": getattr(row, "key_name", None), "model": row.model, "deployment": row.deployment,
        "endpoint": row.endpoint, "stream": bool(row.stream), "status": row.status, "http_status": row.http_status,
        "error_code": row.error_code, "service_tier": row.service_tier,
        "usage": {"input_tokens": row.input_tokens, "cached_tokens": row.cached_tokens,
                  "cache_write_tokens": row.cache_write_tokens, "output_tokens": row.output_tokens,
                  "reasoning_tokens": row.reasoning_tokens, "image_tokens": row.image_tokens,
                  "source": row.usage_source,
                  "units": _units(getattr(row, "units", None))},
        "cost_nanos": row.cost_nanos, "cost_usd": usd(row.cost_nanos), "latency_ms": row.latency_ms,
        "ttfb_ms": row.ttfb_ms, "attempts": row.attempts, "anomaly": row.anomaly,
    }


def _units(text: str | None) -> dict[str, int]:
    """A media request's quantities (`audio_ms=90500 image.hd.1024x1024=1`) as an object."""
    out: dict[str, int] = {}
    for pair in (text or "").split():
        name, _, value = pair.partition("=")
        if value.isdigit():
            out[name] = int(value)
    return out


def _cursor(row: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(f"{row['created_at_ms']}:{row['id']}".encode()).decode().rstrip("=")


def _after(cursor: str) -> tuple[int, str] | None:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, request_id = raw.split(":", 1)
        return int(at), request_id
    except (ValueError, UnicodeDecodeError):
        return None


def _query(org_id: str) -> Any:
    u = usage_records.c
    return (select(usage_records, api_keys.c.name.label("key_name"))
            .join(api_keys, api_keys.c.id == u.key_id, isouter=True).where(u.org_id == org_id))


async def page(engine: AsyncEngine, org_id: str, where: LogFilter, cursor: str | None = None,
               limit: int = 50) -> dict[str, Any]:
    """A page of the log, newest first; `next_cursor` continues it (None at the end). A
    cursor that does not decode starts from the top rather than failing the page."""
    u = usage_records.c
    q = _query(org_id)
    for column, value in ((u.key_id, where.key_id), (u.model, where.model), (u.status, where.status)):
        if value:
            q = q.where(column == value)
    if where.start is not None:
        q = q.where(u.created_at >= where.start)
    if where.end is not None:
        q = q.where(u.created_at < where.end)
    after = _after(cursor) if cursor else None
    if after is not None:
        q = q.where(or_(u.created_at < after[0], and_(u.created_at == after[0], u.request_id < after[1])))
    limit = max(1, min(limit, MAX_PAGE))
    q = q.order_by(u.created_at.desc(), u.request_id.desc()).limit(limit + 1)
    async with engine.connect() as conn:
        rows = [request_object(r) for r in (await conn.execute(q)).all()]
    more = len(rows) > limit
    rows = rows[:limit]
    return {"object": "list", "data": rows, "has_more": more, "next_cursor": _cursor(rows[-1]) if more else None}


async def one(engine: AsyncEngine, org_id: str, request_id: str) -> dict[str, Any] | None:
    async with engine.connect() as conn:
        row = (await conn.execute(_query(org_id).where(usage_records.c.request_id == request_id))).first()
    return request_object(row) if row is not None else None
