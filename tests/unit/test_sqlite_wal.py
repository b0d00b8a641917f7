"""The SQLite write-ahead log stays bounded while commits never stop (the checkpoint resets it)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from switchyard.store.database import WAL_RESET_FRAMES, Store

COMMITS = 8 * WAL_RESET_FRAMES // 3


def test_the_wal_is_reset_under_a_steady_stream_of_commits(tmp_path: Path) -> None:
    db = tmp_path / "w.db"

    async def run() -> int:
        store = Store(f"sqlite+aiosqlite:///{db}")
        await store.sqlite_transaction(lambda c: c.execute("CREATE TABLE t (b BLOB)"))
        blob = b"x" * 8000  # about three pages a commit
        for i in range(COMMITS):
            if i % 50 == 0:
                store._last_checkpoint = 0.0  # a checkpoint every 50 commits, not every second
            await store.sqlite_transaction(lambda c: c.execute("INSERT INTO t VALUES (?)", (blob,)))
        wal = (tmp_path / "w.db-wal").stat().st_size
        await store.close()
        return wal

    wal = asyncio.run(run())
    written = COMMITS * 8000
    # Without resets the WAL holds every page written (about twice the data: 180 MB for these
    # 87 MB); reset, it stays at a few thresholds' worth of frames (about 40 MB here).
    assert wal < written, f"WAL {wal} bytes for {written} bytes written"
