"""`ledger.settle`: make a request's bill durable, grouping the commits of concurrent requests.

A request awaits its settlement before its response (or its stream's last chunk) leaves. The
writer commits whatever settlements are waiting in one transaction, so under load one commit
serves many requests, and with no load a settlement commits at once.
"""

from __future__ import annotations

import asyncio
import sqlite3
import logging
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Table, insert, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from switchyard.accounts.directory import Directory
from switchyard.store.database import Store
from switchyard.metering.rollups import COLUMNS as ROLLUP_COLUMNS
from switchyard.metering.rollups import NAMED_UPSERT, SQLITE_UPSERT, rollup_rows
from switchyard.store.schema import changes, ledger_entries, usage_records

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
    http_status: int = 200
    error_code: str | None = None
    error_param: str | None = None
    usage_source: str = "upstream"  # upstream: as the upstream reported it; counted: our own count; none
    anomaly: str | None = None  # what the upstream reported beyond the request's bounds (billed at the bound)
    ttfb_ms: int | None = None  # until the first answer or stream chunk arrived from the upstream
    attempts: int | None = None  # deployments tried
    units: str | None = None  # a media request's quantities: `audio_ms=90500`, `image.hd.1024x1024=1`
    # The budget periods (their starts) the request was admitted in: its cost counts in those.
    key_period: int | None = None
    org_period: int | None = None
    # Rows that belong with this bill (a stored response, a batch line's result): committed in
    # the same transaction, so neither exists without the other.
    rows: tuple[tuple[Table, dict[str, Any]], ...] = ()

    def usage_row(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _USAGE_COLUMNS if name in _SETTLEMENT_FIELDS}

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


_USAGE_COLUMNS = tuple(c.name for c in usage_records.columns)
_SETTLEMENT_FIELDS = frozenset(Settlement.__dataclass_fields__)


def _log_failed_record(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("a request record could not be committed: %s", future.exception())


class LedgerWriter:
    def __init__(self, store: Store, directory: Directory, retry_seconds: float = 20.0) -> None:
        self._store = store
        self._directory = directory
        self._pending: list[tuple[Settlement, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.listeners: list[Any] = []  # called with each committed batch (usage events, metrics, alerts)
        self.on_commit: Any = None  # called with (group size, perf_counter at start) after each commit
        self.retry_seconds = retry_seconds

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        # Let what is waiting commit before the worker goes.
        while self._pending:
            await asyncio.sleep(0.01)
        if self._task:
            self._task.cancel()

    async def settle(self, settlement: Settlement) -> None:
        await self.submit(settlement)

    def submit(self, settlement: Settlement) -> asyncio.Future[None]:
        """Queue a settlement for the next group commit; the future resolves once it is durable.
        Once queued it commits whether or not anyone still waits for it."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((settlement, future))
        self._wake.set()
        return future

    def record(self, settlement: Settlement) -> None:
        """Queue a record that moves no money (a refused or failed request): committed with the
        next group, never waited for, so a flood of refusals costs no request its latency."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_log_failed_record)
        self._pending.append((settlement, future))
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                await self._commit_group(batch)

    async def _commit_group(self, batch: list[tuple[Settlement, asyncio.Future[None]]]) -> None:
        started = time.perf_counter()
        try:
            await self._commit_retrying([s for s, _ in batch])
        except Exception as exc:
            if len(batch) > 1 and not _unreachable(exc):
                # One bad settlement (say, a batch line's result another worker already wrote)
                # must not fail the others that shared its transaction: commit each alone.
                log.warning("committing %d settlements together failed (%s); committing each alone", len(batch), exc)
                for item in batch:
                    await self._commit_group([item])
                return
            if _unreachable(exc):
                log.error("the database stayed unreachable: %d settlements not committed (%s)", len(batch), exc)
            else:
                log.exception("committing settlement %s failed", batch[0][0].request_id)
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        self._committed(batch, started)

    def _committed(self, batch: list[tuple[Settlement, asyncio.Future[None]]], started: float) -> None:
        for _, fut in batch:
            if not fut.done():
                fut.set_result(None)
        if self.on_commit is not None:
            self.on_commit(len(batch), started)
        # The listeners run after the waiting requests have sent their answers (queued behind
        # their wake-ups): none of them is worth a client's wait (about 50 µs a request).
        asyncio.get_running_loop().call_soon(self._tell_listeners, batch)

    def _tell_listeners(self, batch: list[tuple[Settlement, asyncio.Future[None]]]) -> None:
        for listener in self.listeners:
            try:
                listener(batch)
            except Exception:
                log.exception("usage listener failed")

    async def _commit_retrying(self, batch: list[Settlement]) -> None:
        """Commit, retrying while the database is unreachable (a restart, a failover) until the
        oldest settlement is `retry_seconds` old; the requests wait, their answers held until
        their bills are in. (From the settlements' own time: groups queued behind a long outage
        fail at once instead of each waiting its own `retry_seconds`.)"""
        deadline = time.monotonic() + self.retry_seconds - (time.time() - min(s.created_at for s in batch) / 1000)
        delay = 0.05
        lost_connection = False
        while True:
            try:
                await self._commit(batch)
                return
            except Exception as exc:
                if lost_connection and _duplicate(exc):
                    # The connection dropped as it committed, and the commit had gone through.
                    ids = [s.request_id for s in batch]
                    if len(await committed_costs(self._store.engine, ids)) == len(set(ids)):
                        return
                if not _unreachable(exc) or time.monotonic() + delay > deadline:
                    raise
                if not lost_connection:
                    log.warning("the database is unreachable (%s); retrying %d settlements", exc, len(batch))
                lost_connection = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def _commit(self, batch: list[Settlement]) -> None:
        # Spend per (organisation or key, budget period): a group that straddles a period's
        # boundary counts each request in the period it was admitted in.
        org_cost: defaultdict[tuple[str, int | None], int] = defaultdict(int)
        key_cost: defaultdict[tuple[str, int | None], int] = defaultdict(int)
        ledger_rows: list[dict[str, Any]] = []
        extra: defaultdict[Table, list[dict[str, Any]]] = defaultdict(list)
        for s in batch:
            for table, row in s.rows:
                extra[table].append(row)
            org_cost[(s.org_id, s.org_period)] += s.cost_nanos
            if s.key_in_db:
                key_cost[(s.key_id, s.key_period)] += s.cost_nanos
            ledger_rows += s.ledger_rows()
        usage_rows = [s.usage_row() for s in batch]
        rollups = rollup_rows(batch)
        now = int(time.time() * 1000)
        orgs = sorted(org_cost.items(), key=_by_period)
        keys = sorted(key_cost.items(), key=_by_period)

        async with self._directory.lock:
            if self._store.is_sqlite:
                balances, spent = await self._store.sqlite_transaction(
                    lambda conn: _write_sqlite(conn, usage_rows, rollups, ledger_rows, extra, orgs, keys, now))
            else:
                balances, spent = await self._store.transaction(
                    lambda conn: _write_core(conn, usage_rows, rollups, ledger_rows, extra, orgs, keys, now))
            self._directory.apply_settled(balances, spent)


async def committed_costs(engine: AsyncEngine, request_ids: Sequence[str]) -> dict[str, int]:
    """What the committed bills of these requests cost (a request with no bill is absent)."""
    found: dict[str, int] = {}
    for i in range(0, len(request_ids), 500):
        async with engine.connect() as conn:
            rows = await conn.execute(select(usage_records.c.request_id, usage_records.c.cost_nanos)
                                      .where(usage_records.c.request_id.in_(request_ids[i:i + 500])))
            found.update({rid: int(cost) for rid, cost in rows})
    return found


# PostgreSQL's codes for "not reachable right now": connection exceptions (class 08), the server
# shutting down or starting up (57P01-57P03), too many connections (53300).
_UNREACHABLE_STATES = ("57P01", "57P02", "57P03", "53300")


def _unreachable(exc: BaseException) -> bool:
    """A failure to reach the database (worth retrying), not one of the statements themselves."""
    seen: BaseException | None = exc
    for _ in range(8):  # the driver's error, wrapped by SQLAlchemy's adapter, wrapped again
        if seen is None:
            return False
        if isinstance(seen, sqlite3.Error):
            return False
        if isinstance(seen, (OSError, ConnectionError, asyncio.TimeoutError)):
            return True
        if isinstance(seen, DBAPIError) and seen.connection_invalidated:
            return True
        state = getattr(seen, "sqlstate", None) or getattr(seen, "pgcode", None)
        if isinstance(state, str) and (state.startswith("08") or state in _UNREACHABLE_STATES):
            return True
        if type(seen).__name__ in ("ConnectionDoesNotExistError", "ConnectionFailureError"):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _duplicate(exc: BaseException) -> bool:
    return isinstance(exc, (IntegrityError, sqlite3.IntegrityError))


def _by_period(item: tuple[tuple[str, int | None], int]) -> tuple[str, int]:
    (ident, period), _ = item
    return ident, period if period is not None else -1


Costs = list[tuple[tuple[str, int | None], int]]  # ((organisation or key, period start), cost)
# What a commit read back: org -> (balance, spent, period start); key -> (spent, period start).
Balances = dict[str, tuple[int, int, int | None]]
Spent = dict[str, tuple[int, int | None]]

# Spend in a period: a later period than the one counted starts the count again; an earlier one
# (a request admitted before the boundary, settled after it) no longer counts.
_P = "CAST(:p AS BIGINT)"  # typed, so PostgreSQL knows the parameter when it is null
_SPENT_CASE = (f"CASE WHEN {_P} IS NULL THEN spent_nanos + :c WHEN period_start IS NULL OR period_start < {_P} THEN :c "
               f"WHEN period_start = {_P} THEN spent_nanos + :c ELSE spent_nanos END")
_PERIOD_CASE = (f"CASE WHEN {_P} IS NULL THEN period_start WHEN period_start IS NULL OR period_start < {_P} THEN {_P} "
                "ELSE period_start END")
_ORG_UPDATE = (f"UPDATE organizations SET balance_nanos = balance_nanos - :c, spent_nanos = {_SPENT_CASE}, "
               f"period_start = {_PERIOD_CASE}, updated_at = :now WHERE id = :id "
               "RETURNING balance_nanos, spent_nanos, period_start")
_KEY_UPDATE = (f"UPDATE api_keys SET spent_nanos = {_SPENT_CASE}, period_start = {_PERIOD_CASE} WHERE id = :id "
               "RETURNING spent_nanos, period_start")


def _write_core(
    conn: Connection, usage_rows: list[dict[str, Any]], rollups: list[tuple[Any, ...]],
    ledger_rows: list[dict[str, Any]], extra: Mapping[Table, list[dict[str, Any]]], orgs: Costs, keys: Costs, now: int,
) -> tuple[Balances, Spent]:
    conn.execute(insert(usage_records), usage_rows)
    conn.execute(text(NAMED_UPSERT), [dict(zip(ROLLUP_COLUMNS, row)) for row in rollups])
    if ledger_rows:
        conn.execute(insert(ledger_entries), ledger_rows)
    for table, rows in extra.items():
        conn.execute(insert(table), rows)
    balances: Balances = {}
    spent: Spent = {}
    feed = []
    for (org_id, period), cost in orgs:
        if cost:
            row = conn.execute(text(_ORG_UPDATE), {"c": cost, "p": period, "now": now, "id": org_id}).one()
            balances[org_id] = (int(row[0]), int(row[1]), row[2])
            feed.append({"entity": "org", "entity_id": org_id, "created_at": now})
    for (key_id, period), cost in keys:
        if cost:
            row = conn.execute(text(_KEY_UPDATE), {"c": cost, "p": period, "id": key_id}).one()
            spent[key_id] = (int(row[0]), row[1])
            feed.append({"entity": "key", "entity_id": key_id, "created_at": now})
    if feed:
        # Other workers follow balances through the change feed.
        conn.execute(insert(changes), feed)
    return balances, spent


# The same statements as `_write_core`, as plain SQL on the sqlite3 connection: building and
# compiling SQLAlchemy constructs costs more than the writes themselves at thousands per second.
_USAGE_SQL = f"INSERT INTO usage_records ({', '.join(_USAGE_COLUMNS)}) VALUES ({', '.join('?' * len(_USAGE_COLUMNS))})"
_LEDGER_COLUMNS = ("org_id", "key_id", "kind", "amount_nanos", "request_id", "note", "created_at")
_LEDGER_SQL = f"INSERT INTO ledger_entries ({', '.join(_LEDGER_COLUMNS)}) VALUES ({', '.join('?' * len(_LEDGER_COLUMNS))})"
_ORG_SQL = _ORG_UPDATE
_KEY_SQL = _KEY_UPDATE
_CHANGE_SQL = "INSERT INTO changes (entity, entity_id, created_at) VALUES (?, ?, ?)"


def _insert_sql(table: Table) -> tuple[str, tuple[str, ...]]:
    columns = tuple(c.name for c in table.columns)
    return f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", columns


def _write_sqlite(
    conn: sqlite3.Connection, usage_rows: list[dict[str, Any]], rollups: list[tuple[Any, ...]],
    ledger_rows: list[dict[str, Any]], extra: Mapping[Table, list[dict[str, Any]]], orgs: Costs, keys: Costs, now: int,
) -> tuple[Balances, Spent]:
    cur = conn.cursor()
    try:
        cur.executemany(_USAGE_SQL, [tuple(r[c] for c in _USAGE_COLUMNS) for r in usage_rows])
        cur.executemany(SQLITE_UPSERT, rollups)
        if ledger_rows:
            cur.executemany(_LEDGER_SQL, [tuple(r[c] for c in _LEDGER_COLUMNS) for r in ledger_rows])
        for table, rows in extra.items():
            sql, columns = _insert_sql(table)
            cur.executemany(sql, [tuple(r.get(c) for c in columns) for r in rows])
        balances: Balances = {}
        spent: Spent = {}
        feed = []
        for (org_id, period), cost in orgs:
            if cost:
                balance, org_spent, start = cur.execute(_ORG_SQL, {"c": cost, "p": period, "now": now, "id": org_id}).fetchone()
                balances[org_id] = (balance, org_spent, start)
                feed.append(("org", org_id, now))
        for (key_id, period), cost in keys:
            if cost:
                key_spent, start = cur.execute(_KEY_SQL, {"c": cost, "p": period, "id": key_id}).fetchone()
                spent[key_id] = (key_spent, start)
                feed.append(("key", key_id, now))
        if feed:
            cur.executemany(_CHANGE_SQL, feed)
        return balances, spent
    finally:
        cur.close()
