"""Engines, one-hop transactions and migrations. SQLite (WAL) is the embedded default; PostgreSQL by URL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

MIGRATIONS = Path(__file__).parent / "migrations"
T = TypeVar("T")


def default_url(data_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{(data_dir / 'switchyard.db').resolve()}"


def _sqlite_pragmas(engine: Engine, synchronous: str) -> None:
    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _: Any) -> None:
        # WAL lets readers run beside the writer. NORMAL keeps every commit through a process
        # crash (kill -9); FULL adds an fsync per group commit for power loss as well.
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()


def make_engine(url: str, sqlite_synchronous: str = "NORMAL", pool_size: int = 5) -> AsyncEngine:
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})
        _sqlite_pragmas(engine.sync_engine, sqlite_synchronous)
        return engine
    return create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


class Store:
    """The database, with `transaction(fn)`: a whole transaction for one hop off the event loop.

    aiosqlite hops to its thread for every statement (a dozen per settlement batch); here a
    SQLite transaction runs entirely in one dedicated thread, and a PostgreSQL one on asyncpg.
    """

    def __init__(self, url: str, sqlite_synchronous: str = "NORMAL") -> None:
        self.url = url
        self.engine = make_engine(url, sqlite_synchronous)
        self._sync: Engine | None = None
        self._thread: ThreadPoolExecutor | None = None
        if url.startswith("sqlite"):
            self._sync = create_engine(url.replace("+aiosqlite", ""), connect_args={"timeout": 30, "check_same_thread": False})
            _sqlite_pragmas(self._sync, sqlite_synchronous)
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")

    async def transaction(self, fn: Callable[[Connection], T]) -> T:
        if self._sync is not None and self._thread is not None:
            sync = self._sync

            def run() -> T:
                with sync.begin() as conn:
                    return fn(conn)

            return await asyncio.get_running_loop().run_in_executor(self._thread, run)
        async with self.engine.begin() as conn:
            return await conn.run_sync(fn)

    async def close(self) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=True)
        if self._sync is not None:
            self._sync.dispose()
        await self.engine.dispose()


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest revision (idempotent)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))

    def upgrade(sync_conn: Any) -> None:
        cfg.attributes["connection"] = sync_conn
        command.upgrade(cfg, "head")

    async with engine.begin() as conn:
        await conn.run_sync(upgrade)
