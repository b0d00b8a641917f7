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
