"""A settlement that cannot commit fails alone, not the others grouped into its transaction."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from switchyard.accounts.directory import Directory
from switchyard.accounts.ledger import LedgerWriter, Settlement
from switchyard.store.database import Store, migrate
from switchyard.store.schema import batch_results


def _settlement(request_id: str, line: int) -> Settlement:
    row = {"batch_id": "batch_x", "line": line, "custom_id": f"c{line}", "ok": True, "output": "{}",
           "input_tokens": 1, "cached_tokens": 0, "output_tokens": 1, "reasoning_tokens": 0, "cost_nanos": 7}
    return Settlement(
        request_id=request_id, org_id="org_t", key_id="key_t", key_in_db=False, reserved_nanos=10, cost_nanos=7,
        model="m", deployment="m#0", endpoint="/v1/chat/completions", status="completed", stream=False,
        service_tier="batch", input_tokens=1, cached_tokens=0, cache_write_tokens=0, output_tokens=1,
        reasoning_tokens=0, image_tokens=0, latency_ms=1, created_at=1, rows=((batch_results, row),))


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_conflicting_row_fails_only_its_own_settlement(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("pg_url") if backend == "postgres" else f"sqlite+aiosqlite:///{tmp_path / 'l.db'}"

    async def run() -> tuple[list[BaseException | None], int, int]:
        store = Store(url)
        await migrate(store.engine)
        async with store.engine.begin() as conn:
            await conn.exec_driver_sql(
                "INSERT INTO organizations (id, name, tier, price_multiplier, prepaid, balance_nanos, overdraft_nanos,"
                " created_at, updated_at) VALUES ('org_t', 't', 'unlimited', '1', false, 1000, 0, 0, 0)")
        directory = Directory(store.engine, {}, asyncio.Lock())
        writer = LedgerWriter(store, directory)
        writer.start()
        await writer.settle(_settlement("req_first", 1))
        # Three settlements queued together; the middle one's result row already exists.
        results = await asyncio.gather(
            writer.settle(_settlement("req_a", 2)), writer.settle(_settlement("req_b", 1)),
            writer.settle(_settlement("req_c", 3)), return_exceptions=True)
        async with store.engine.connect() as conn:
            usage = (await conn.exec_driver_sql("SELECT count(*) FROM usage_records")).scalar_one()
            balance = (await conn.exec_driver_sql("SELECT balance_nanos FROM organizations")).scalar_one()
        await writer.close()
        await store.close()
        return list(results), usage, balance

    results, usage, balance = asyncio.run(run())
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], Exception)
    assert usage == 3 and balance == 1000 - 3 * 7  # the failed one billed nothing


def test_an_unreachable_database_fails_the_group_once_it_is_too_old_never_each_alone() -> None:
    """Bills retried while PostgreSQL is unreachable (nothing listens on its port): the group fails
    together when its oldest bill is `retry_seconds` old, not split into single retries; a group
    already that old fails at its first try."""
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def run() -> tuple[list[BaseException | None], list[int], list[BaseException | None], list[int]]:
        store = Store(f"postgresql+asyncpg://postgres@127.0.0.1:{port}/nothing")
        writer = LedgerWriter(store, Directory(store.engine, {}, asyncio.Lock()), retry_seconds=0.6)
        sizes: list[int] = []
        commit = writer._commit

        async def counted(batch: list[Settlement]) -> None:
            sizes.append(len(batch))
            await commit(batch)

        writer._commit = counted  # type: ignore[method-assign]
        writer.start()
        now = int(time.time() * 1000)
        fresh = [_settlement(f"req_{i}", i) for i in range(3)]
        for s in fresh:
            s.created_at = now
        together = await asyncio.gather(*(writer.settle(s) for s in fresh), return_exceptions=True)
        first_sizes, sizes[:] = list(sizes), []
        old = _settlement("req_old", 9)
        old.created_at = now - 60_000
        late = await asyncio.gather(writer.settle(old), return_exceptions=True)
        await store.close()
        return list(together), first_sizes, list(late), list(sizes)

    together, sizes, late, late_sizes = asyncio.run(run())
    assert all(isinstance(r, Exception) for r in together), together
    assert len(sizes) > 1 and set(sizes) == {3}  # retried as one group, never each alone
    assert isinstance(late[0], Exception) and late_sizes == [1]  # too old: one try only
