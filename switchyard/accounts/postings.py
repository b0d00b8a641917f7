"""Money into or out of an organisation outside of requests: one ledger entry and the balance
moved by exactly its amount, in the caller's transaction, with a change-feed row so every
worker's view follows. Top-ups, refunds, adjustments, redemptions, referral credits and
reversals all go through `post`, so a balance always equals the sum of its ledger."""

from __future__ import annotations

import time
from typing import Protocol

from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncConnection

from switchyard.store.schema import changes, ledger_entries, organizations


class FundsSync(Protocol):
    """What a worker's view of spendable money (in memory, or shared in Redis) is told of changes."""

    async def credit_org(self, org_id: str, delta_nanos: int) -> None: ...
    async def credit_key(self, key_id: str, delta_nanos: int, period: int | None = None) -> None: ...
    async def credit_org_budget(self, org_id: str, delta_nanos: int, period: int | None = None) -> None: ...
    async def forget(self, org_id: str | None = None, key_id: str | None = None, period: int | None = None) -> None: ...


def now_ms() -> int:
    return int(time.time() * 1000)


async def feed(conn: AsyncConnection, entity: str, entity_id: str) -> None:
    await conn.execute(insert(changes).values(entity=entity, entity_id=entity_id, created_at=now_ms()))


async def post(
    conn: AsyncConnection, org_id: str, kind: str, amount_nanos: int, *, note: str | None = None,
    cause_id: int | None = None, source: str | None = None,
) -> int:
    """Add one entry (signed amount) and move the balance by it; returns the entry's id."""
    t = now_ms()
    entry_id = (await conn.execute(insert(ledger_entries).values(
        org_id=org_id, key_id=None, kind=kind, amount_nanos=amount_nanos, request_id=None, note=note,
        created_at=t, cause_id=cause_id, source=source,
    ).returning(ledger_entries.c.id))).scalar_one()
    await conn.execute(update(organizations).where(organizations.c.id == org_id).values(
        balance_nanos=organizations.c.balance_nanos + amount_nanos, updated_at=t))
    await feed(conn, "org", org_id)
    return int(entry_id)
