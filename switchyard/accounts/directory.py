"""Every worker's cache of organisations and keys, kept current from the change feed.

Requests authenticate against memory only. Operators' changes (and other workers' settlements)
append to `changes`; a poller reads the tail a few times a second and reloads what changed,
so a revoked key or a new balance takes effect on every worker within a second.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import fields
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from switchyard.accounts.keys import digest, redact
from switchyard.accounts.records import KeyRecord, OrgRecord, Principal
from switchyard.store.schema import api_keys, changes, organizations
from switchyard.wire.errors import invalid_api_key

log = logging.getLogger("switchyard.accounts")


def _update_in_place(target: Any, source: Any) -> None:
    """Principals hold the records themselves, so updates must keep object identity."""
    for f in fields(target):
        setattr(target, f.name, getattr(source, f.name))


class Directory:
    def __init__(self, engine: AsyncEngine, static_keys: Mapping[str, KeyRecord], lock: asyncio.Lock) -> None:
        self._engine = engine
        self._static = dict(static_keys)  # digest -> record, for keys from config (not in the database)
        self.lock = lock  # shared with the ledger writer: a reload never interleaves with a commit
        self.orgs: dict[str, OrgRecord] = {}
        self._by_hash: dict[str, KeyRecord] = {}
        self._hash_of: dict[str, str] = {}
        self._last_change = 0
        self._task: asyncio.Task[None] | None = None
        self.on_config: Callable[[], Awaitable[None]] | None = None  # a `config` change: reload it

    async def load(self) -> None:
        async with self.lock, self._engine.connect() as conn:
            self._last_change = (await conn.execute(select(func.coalesce(func.max(changes.c.id), 0)))).scalar_one()
            for row in await conn.execute(select(organizations)):
                self.orgs[row.id] = OrgRecord.from_row(row)
            for row in await conn.execute(select(api_keys)):
                self._put_key(row)

    def _put_key(self, row: Any) -> None:
        record = KeyRecord.from_row(row)
        existing = self._by_hash.get(row.key_hash)
        if existing is not None:
            _update_in_place(existing, record)
        else:
            self._by_hash[row.key_hash] = record
            self._hash_of[record.id] = row.key_hash

    def _put_org(self, row: Any) -> None:
        record = OrgRecord.from_row(row)
        existing = self.orgs.get(record.id)
        if existing is not None:
            _update_in_place(existing, record)
        else:
            self.orgs[record.id] = record

    async def refresh(self) -> int:
        """Apply changes since the last look; returns how many were applied."""
        async with self.lock, self._engine.connect() as conn:
            rows = (await conn.execute(
                select(changes.c.id, changes.c.entity, changes.c.entity_id)
                .where(changes.c.id > self._last_change).order_by(changes.c.id)
            )).all()
            if not rows:
                return 0
            org_ids = {r.entity_id for r in rows if r.entity == "org"}
            key_ids = {r.entity_id for r in rows if r.entity == "key"}
            if org_ids:
                for row in await conn.execute(select(organizations).where(organizations.c.id.in_(org_ids))):
                    self._put_org(row)
            if key_ids:
                for row in await conn.execute(select(api_keys).where(api_keys.c.id.in_(key_ids))):
                    self._put_key(row)
            self._last_change = rows[-1].id
        if self.on_config is not None and any(r.entity == "config" for r in rows):
            await self.on_config()  # every worker re-reads its config file (POST /admin/v1/reload)
        return len(rows)

    async def prune(self, keep_seconds: float = 600) -> None:
        """The feed only has to outlive the slowest poller: drop what every worker has long seen."""
        cutoff = int((time.time() - keep_seconds) * 1000)
        async with self._engine.begin() as conn:
            await conn.execute(delete(changes).where(changes.c.created_at < cutoff))

    def start_polling(self, interval: float = 0.25, prune_every: float = 60) -> None:
        async def poll() -> None:
            last_prune = time.monotonic()
            while True:
                await asyncio.sleep(interval)
                try:
                    await self.refresh()
                    if time.monotonic() - last_prune > prune_every:
                        last_prune = time.monotonic()
                        await self.prune()
                except Exception:  # a database hiccup must not stop the poller for good
                    log.exception("refreshing accounts failed; retrying")

        self._task = asyncio.get_running_loop().create_task(poll())

    async def close(self) -> None:
        if self._task:
            self._task.cancel()

    def apply_settled(self, org_balances: Mapping[str, tuple[int, int, int | None]],
                      key_spent: Mapping[str, tuple[int, int | None]]) -> None:
        """Values read back in the settlement transaction itself: exact as of that commit."""
        for org_id, (balance, spent, period_start) in org_balances.items():
            org = self.orgs.get(org_id)
            if org is not None:
                org.balance_nanos, org.spent_nanos, org.period_start = balance, spent, period_start
        for key_id, (spent, period_start) in key_spent.items():
            h = self._hash_of.get(key_id)
            if h is not None:
                key = self._by_hash[h]
                key.spent_nanos, key.period_start = spent, period_start

    def key_by_id(self, key_id: str) -> KeyRecord | None:
        h = self._hash_of.get(key_id)
        return self._by_hash.get(h) if h else None

    def principal(self, key_id: str) -> Principal | None:
        """The caller behind a key id, for work done later on its behalf (batch lines): None
        once the key is revoked, expired or gone."""
        key = self.key_by_id(key_id) or next((k for k in self._static.values() if k.id == key_id), None)
        if key is None or key.revoked_at is not None:
            return None
        if key.expires_at is not None and key.expires_at <= time.time() * 1000:
            return None
        org = self.orgs.get(key.org_id)
        return Principal(key, org) if org is not None else None

    def keys_of(self, org_id: str) -> Iterable[KeyRecord]:
        return (k for k in self._by_hash.values() if k.org_id == org_id)

    def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise invalid_api_key(
                "You didn't provide an API key. Provide it in the Authorization header as 'Bearer YOUR_KEY'."
            )
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise invalid_api_key("The Authorization header must be 'Bearer YOUR_KEY'.")
        h = digest(token)
        key = self._static.get(h) or self._by_hash.get(h)
        if key is None:
            raise invalid_api_key(f"Incorrect API key provided: {redact(token)}.")
        if key.revoked_at is not None:
            raise invalid_api_key(f"API key {redact(token)} has been revoked.")
        if key.expires_at is not None and key.expires_at <= time.time() * 1000:
            raise invalid_api_key(f"API key {redact(token)} has expired.")
        org = self.orgs.get(key.org_id)
        if org is None:
            raise invalid_api_key(f"API key {redact(token)} belongs to no organisation.")
        return Principal(key, org)
