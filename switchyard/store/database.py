"""Engines, one-hop transactions and migrations. SQLite (WAL) is the embedded default; PostgreSQL by URL."""

from __future__ import annotations

import functools

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import text, Connection, Engine, event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

MIGRATIONS = Path(__file__).parent / "migrations"
T = TypeVar("T")
# A WAL longer than this many frames (pages, about 4 KB each) is reset after the next checkpoint.
# Under steady load a PASSIVE checkpoint never finds the WAL fully copied (commits land while it
# runs), and SQLite only rewinds a fully copied WAL: the WAL grew without end (640 MB beside a
# 168 MB database after 75 s of load), and its index (-shm, mapped in every connection) with it.
WAL_RESET_FRAMES = 4096


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
        self.is_sqlite = url.startswith("sqlite")
        self._synchronous = sqlite_synchronous
        # With synchronous OFF/NORMAL a WAL commit never waits for the disk, so it may run on the
        # event loop: on this kind of VM a hop to a thread and back costs several times the write.
        self._inline = self.is_sqlite and sqlite_synchronous in ("OFF", "NORMAL")
        self._conns: dict[str, sqlite3.Connection] = {}
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer") if self.is_sqlite else None
        self._last_checkpoint = time.monotonic()

    async def transaction(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn` in one transaction through SQLAlchemy (any database)."""
        async with self.engine.begin() as conn:
            return await conn.run_sync(fn)

    def _sqlite(self, role: str, busy_ms: int) -> sqlite3.Connection:
        conn = self._conns.get(role)
        if conn is None:
            conn = sqlite3.connect(self.url.split(":///", 1)[1], timeout=busy_ms / 1000, check_same_thread=False)
            # Checkpoints (which do wait for the disk) are run by `_checkpoint` in the thread.
            # A page cache for the hot index pages (inserts into a large usage table otherwise
            # re-read them from the OS on every commit), and no bigger: each of the two writer
            # connections fills its cache for good: 32 MB each was about 20 MB of a busy worker's
            # memory, and 8 MB cost no CPU per request that the paired benchmark could see.
            # After a reset, the writer that rewinds the WAL cuts a longer file back to 64 MB.
            for pragma in ("journal_mode=WAL", f"synchronous={self._synchronous}", f"busy_timeout={busy_ms}",
                           "wal_autocheckpoint=0", "cache_size=-8192", "journal_size_limit=67108864"):
                conn.execute(f"PRAGMA {pragma}")
            self._conns[role] = conn
        return conn

    @staticmethod
    def _run(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            result = fn(conn)
            conn.commit()
            return result
        except BaseException:
            conn.rollback()
            raise

    async def sqlite_transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` on a writer connection in one transaction: on the loop when that cannot wait
        (no fsync, lock free), else in the writer thread."""
        assert self._thread is not None, "not a SQLite store"
        loop = asyncio.get_running_loop()
        if time.monotonic() - self._last_checkpoint > 1.0:
            self._last_checkpoint = time.monotonic()
            loop.run_in_executor(self._thread, self._checkpoint)
        if self._inline:
            try:
                return self._run(self._sqlite("inline", 0), fn)
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                # Another process holds the write lock: wait for it in the thread, not on the loop.
        return await loop.run_in_executor(self._thread, lambda: self._run(self._sqlite("thread", 30_000), fn))

    def _checkpoint(self) -> None:
        try:
            _, frames, _ = self._sqlite("thread", 30_000).execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if frames > WAL_RESET_FRAMES:
                # The PASSIVE pass copied nearly everything; RESTART copies the last commits with
                # writers held off, then waits for readers to leave the WAL so the next commit
                # rewinds it. Its short busy timeout bounds how long writers wait (they queue
                # in this thread meanwhile); a reader still busy means another try next second.
                self._sqlite("checkpoint", 50).execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
        except sqlite3.Error:  # a busy database: the next checkpoint catches up
            pass

    async def close(self) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=True)
        for conn in self._conns.values():
            conn.close()
        await self.engine.dispose()


@functools.cache
def head_revision() -> str:
    """The newest migration's revision, as the migration scripts say."""
    from alembic.config import Config  # here, not at import: a CLI command that migrates nothing skips 0.1 s
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return str(ScriptDirectory.from_config(cfg).get_current_head())


# Replicas starting at once on one PostgreSQL database migrate one after another: the first
# takes this transaction-scoped advisory lock and migrates, the others wait and find nothing to do.
MIGRATION_LOCK = 0x5357_594D  # "SWYM"


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest revision (idempotent, and safe when several processes do it
    at the same moment: SQLite serialises writers, PostgreSQL takes an advisory lock)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))

    def upgrade(sync_conn: Any) -> None:
        cfg.attributes["connection"] = sync_conn
        command.upgrade(cfg, "head")

    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:lock)"), {"lock": MIGRATION_LOCK})
        await conn.run_sync(upgrade)
