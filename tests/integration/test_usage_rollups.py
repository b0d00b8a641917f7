"""The per-minute and per-hour usage sums the console reads equal the raw records, however
settlements are grouped and whichever of two writers (workers) commits them."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from switchyard.accounts.directory import Directory
from switchyard.accounts.ledger import LedgerWriter, Settlement
from switchyard.metering import rollups
from switchyard.store.database import Store, migrate

MEASURES = "SUM(CASE WHEN status IN ('refused', 'failed') THEN 0 ELSE 1 END), " \
           "SUM(CASE WHEN status IN ('refused', 'failed') THEN 1 ELSE 0 END), SUM(input_tokens), SUM(cached_tokens), " \
           "SUM(output_tokens), SUM(reasoning_tokens), SUM(image_tokens), SUM(cost_nanos), SUM(latency_ms)"


def settlement(i: int, rng: random.Random) -> Settlement:
    status = rng.choice(["completed", "completed", "partial", "cancelled", "refused", "failed"])
    cost = 0 if status in ("refused", "failed") else rng.randrange(1, 10**6)
    return Settlement(
        request_id=f"req_{i}", org_id=rng.choice(["org_a", "org_b"]), key_id=rng.choice(["key_1", "key_2", "key_3"]),
        key_in_db=False, reserved_nanos=0, cost_nanos=cost, model=rng.choice(["m1", "m2"]), deployment="d",
        endpoint="/v1/chat/completions", status=status, stream=False, service_tier="default",
        input_tokens=rng.randrange(1000), cached_tokens=rng.randrange(10), cache_write_tokens=0,
        output_tokens=rng.randrange(500), reasoning_tokens=rng.randrange(50), image_tokens=rng.randrange(5),
        latency_ms=rng.randrange(1, 900), created_at=1_700_000_000_000 + rng.randrange(3 * 3_600_000),
        ttfb_ms=rng.randrange(1, 100), attempts=1)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_rollups_equal_the_records(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("pg_url") if backend == "postgres" else f"sqlite+aiosqlite:///{tmp_path / 'r.db'}"
    rng = random.Random(7)
    batch = [settlement(i, rng) for i in range(600)]

    async def run() -> tuple[dict, dict, dict]:
        stores = [Store(url), Store(url)]
        await migrate(stores[0].engine)
        async with stores[0].engine.begin() as conn:
            for org in ("org_a", "org_b"):
                await conn.exec_driver_sql(
                    "INSERT INTO organizations (id, name, tier, price_multiplier, prepaid, balance_nanos, "
                    f"overdraft_nanos, created_at, updated_at) VALUES ('{org}', '{org}', 'unlimited', '1', false, 0, 0, 0, 0)")
        writers = [LedgerWriter(s, Directory(s.engine, {}, asyncio.Lock())) for s in stores]
        for w in writers:
            w.start()
        # Two writers, like two workers, committing interleaved groups of the same buckets.
        await asyncio.gather(*(writers[i % 2].settle(s) for i, s in enumerate(batch)))
        sums = {}
        async with stores[0].engine.connect() as conn:
            for span in rollups.SPANS:
                raw = (await conn.exec_driver_sql(
                    f"SELECT created_at - created_at % {span}, org_id, key_id, model, {MEASURES} FROM usage_records "
                    f"GROUP BY created_at - created_at % {span}, org_id, key_id, model")).all()
                rolled = (await conn.exec_driver_sql(
                    f"SELECT bucket, org_id, key_id, model, requests, errors, input_tokens, cached_tokens, output_tokens, "
                    f"reasoning_tokens, image_tokens, cost_nanos, latency_ms FROM usage_rollups WHERE span = {span}")).all()
                sums[span] = ({tuple(r[:4]): tuple(int(v) for v in r[4:]) for r in raw},
                              {tuple(r[:4]): tuple(int(v) for v in r[4:]) for r in rolled})
        hourly = await rollups.totals(stores[0].engine, org_id="org_a", start=0, end=2**62)
        minutely = await rollups.totals(stores[0].engine, org_id="org_a", start=0, end=2**62, span=rollups.MINUTE)
        for w in writers:
            await w.close()
        for s in stores:
            await s.close()
        return sums, hourly, minutely

    sums, hourly, minutely = asyncio.run(run())
    for span, (raw, rolled) in sums.items():
        assert rolled == raw, span
    org_a = [s for s in batch if s.org_id == "org_a"]
    assert hourly == minutely
    assert hourly["cost_nanos"] == sum(s.cost_nanos for s in org_a)
    assert hourly["requests"] + hourly["errors"] == len(org_a)
