"""The Alembic migrations build exactly the schema the code declares, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from switchyard.store.database import make_engine, migrate
from switchyard.store.schema import metadata


def _diff(url: str) -> list[Any]:
    async def run() -> list[Any]:
        engine = make_engine(url)
        try:
            await migrate(engine)
            await migrate(engine)  # idempotent: a second start changes nothing
            async with engine.connect() as conn:
                return await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c), metadata))
        finally:
            await engine.dispose()

    return asyncio.run(run())


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_migrated_schema_matches_the_tables_in_code(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("pg_url") if backend == "postgres" else f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    assert _diff(url) == []


def test_replicas_starting_at_once_migrate_once(pg_url: str) -> None:
    """Four replicas migrate one fresh PostgreSQL database at the same moment (four engines, four
    connections, started together): every one succeeds and the schema ends at the newest revision;
    then all four make sure the operator's organisation exists, again at once, and one row is made."""
    from sqlalchemy import text

    from switchyard.accounts.admin import AccountsAdmin
    from switchyard.limits import load_tiers
    from switchyard.store.database import head_revision

    async def run() -> tuple[list[Any], str, list[Any], int]:
        engines = [make_engine(pg_url) for _ in range(4)]
        try:
            # Without the lock they wait on each other's DDL for good: a bounded wait fails instead.
            outcomes = await asyncio.wait_for(asyncio.gather(*(migrate(e) for e in engines), return_exceptions=True), 60)
            async with engines[0].connect() as conn:
                version = str((await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar())
            operator = await asyncio.gather(*(AccountsAdmin(e, load_tiers()).ensure_operator_org() for e in engines),
                                            return_exceptions=True)
            async with engines[0].connect() as conn:
                rows = int((await conn.execute(text("SELECT count(*) FROM organizations"))).scalar() or 0)
            return list(outcomes), version, list(operator), rows
        finally:
            for e in engines:
                await e.dispose()

    outcomes, version, operator, rows = asyncio.run(run())
    assert outcomes == [None] * 4, outcomes
    assert version == head_revision()
    assert operator == [None] * 4, operator  # a replica that lost the race once exited at start
    assert rows == 1
