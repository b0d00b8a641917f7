#!/usr/bin/env python3
"""How long the console's busiest pages take over a big history (a script, not a test).

Seeds one organisation with `--records` usage records (default 1,000,000) across 50 keys,
3 models and the last 30 days, with their per-minute and per-hour rollups, on SQLite and on
PostgreSQL; starts `switchyard serve` on it, signs an operator in through the set-up link, and
prints the median time to render the overview, the 30-day usage page and the request log
(first page and a later one) over HTTP.

    python bench/console_pages.py                      # both backends, 1,000,000 records
    python bench/console_pages.py --backend sqlite --records 200000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from switchyard.accounts.admin import AccountsAdmin  # noqa: E402
from switchyard.config import load_settings  # noqa: E402
from switchyard.limits import load_tiers  # noqa: E402
from switchyard.metering.rollups import MEASURES, SPANS  # noqa: E402
from switchyard.store.database import default_url, make_engine  # noqa: E402
from switchyard.store.prepare import prepare_store  # noqa: E402

DAY_MS = 86_400_000
COLUMNS = ("request_id", "org_id", "key_id", "model", "deployment", "endpoint", "status", "stream", "service_tier",
           "input_tokens", "cached_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens", "image_tokens",
           "cost_nanos", "latency_ms", "created_at", "http_status", "usage_source", "ttfb_ms", "attempts")
CHUNK = 20_000
PASSWORD = "benchmark password"


def records(org_id: str, keys: list[str], count: int, now_ms: int) -> Any:
    rng = random.Random(1)
    models = ["gpt-5.2", "claude-sonnet-4.5", "gemini-2.5-flash"]
    for i in range(count):
        status = "completed" if rng.random() > 0.02 else "failed"
        inp, out = rng.randrange(20, 4000), rng.randrange(1, 1200)
        cost = 0 if status == "failed" else inp * 1750 + out * 14000
        yield (f"req_bench_{i:08d}", org_id, keys[i % len(keys)], models[i % 3], f"{models[i % 3]}#0",
               "/v1/chat/completions", status, i % 4 == 0, "default", inp, inp // 10, 0, out, out // 8, 0, cost,
               rng.randrange(50, 4000), now_ms - rng.randrange(30 * DAY_MS), 200 if status != "failed" else 502,
               "upstream", rng.randrange(20, 900), 1)


def rollup_sql(span: int) -> str:
    measures = ", ".join(MEASURES)
    return (f"INSERT INTO usage_rollups (span, bucket, org_id, key_id, model, deployment, {measures}) "
            f"SELECT {span}, created_at - created_at % {span}, org_id, key_id, model, deployment, "
            "SUM(CASE WHEN status IN ('refused', 'failed') THEN 0 ELSE 1 END), "
            "SUM(CASE WHEN status IN ('refused', 'failed') THEN 1 ELSE 0 END), SUM(input_tokens), SUM(cached_tokens), "
            "SUM(output_tokens), SUM(reasoning_tokens), SUM(image_tokens), SUM(cost_nanos), SUM(latency_ms) "
            f"FROM usage_records GROUP BY created_at - created_at % {span}, org_id, key_id, model, deployment")


async def make_org(env: dict[str, str]) -> tuple[str, list[str]]:
    os.environ.update(env)
    settings = load_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    await prepare_store(settings)
    engine = make_engine(settings.database_url or default_url(settings.data_dir))
    admin = AccountsAdmin(engine, load_tiers(settings.tiers))
    try:
        org = await admin.create_org({"name": "bench-org", "tier": "unlimited"})
        keys = [(await admin.create_key({"org_id": org["id"], "name": f"key-{i:02d}"}))["id"] for i in range(50)]
    finally:
        await engine.dispose()
    return org["id"], keys


def seed_sqlite(path: Path, org_id: str, keys: list[str], count: int, progress: Progress) -> None:
    task = progress.add_task("SQLite: usage records", total=count)
    db = sqlite3.connect(path)
    sql = f"INSERT INTO usage_records ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
    batch: list[tuple[Any, ...]] = []
    for row in records(org_id, keys, count, int(time.time() * 1000)):
        batch.append(row)
        if len(batch) == CHUNK:
            db.executemany(sql, batch)
            db.commit()
            progress.advance(task, len(batch))
            batch = []
    if batch:
        db.executemany(sql, batch)
        progress.advance(task, len(batch))
    rollup = progress.add_task("SQLite: rollups", total=len(SPANS))
    for span in SPANS:
        db.execute(rollup_sql(span))
        progress.advance(rollup)
    db.commit()
    db.execute("ANALYZE")
    db.close()


async def seed_postgres(dsn: str, org_id: str, keys: list[str], count: int, progress: Progress) -> None:
    import asyncpg

    task = progress.add_task("PostgreSQL: usage records", total=count)
    conn = await asyncpg.connect(dsn)
    try:
        batch: list[tuple[Any, ...]] = []
        for row in records(org_id, keys, count, int(time.time() * 1000)):
            batch.append(row)
            if len(batch) == CHUNK:
                await conn.copy_records_to_table("usage_records", records=batch, columns=COLUMNS)
                progress.advance(task, len(batch))
                batch = []
        if batch:
            await conn.copy_records_to_table("usage_records", records=batch, columns=COLUMNS)
            progress.advance(task, len(batch))
        rollup = progress.add_task("PostgreSQL: rollups", total=len(SPANS))
        for span in SPANS:
            await conn.execute(rollup_sql(span))
            progress.advance(rollup)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


def measure(env: dict[str, str], workdir: Path, org_id: str, rounds: int) -> dict[str, float]:
    port = 18000 + random.randrange(1000)
    proc = subprocess.Popen([sys.executable, "-m", "switchyard", "serve", "--port", str(port)], cwd=workdir,
                            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        link = None
        assert proc.stdout is not None
        for line in proc.stdout:
            found = re.search(r"(http://\S+/console/setup/\S+)", line)
            if found:
                link = found.group(1)
            if "Uvicorn running" in line or "Application startup complete" in line:
                break
        assert link, "no set-up link printed"
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)
        for _ in range(300):
            try:
                client.get("/healthz")
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        signed = client.post(link, data={"email": "bench@example.com", "display_name": "Bench", "password": PASSWORD})
        assert signed.status_code == 303, signed.text
        base = f"/console/o/{org_id}"
        later = client.get(f"{base}/requests?format=json").json()["next_cursor"]
        pages = {"overview": base, "usage (30 days by model, per day)": f"{base}/usage",
                 "usage (30 days by key, per hour)": f"{base}/usage?group=key&bucket=hour",
                 "request log": f"{base}/requests", "request log, a later page": f"{base}/requests?after={later}",
                 "request log, filtered by key": f"{base}/requests?key="}
        keys = client.get(f"{base}/keys?format=json").json()["data"]
        pages["request log, filtered by key"] += keys[7]["id"]
        times: dict[str, float] = {}
        for name, path in pages.items():
            samples = []
            for _ in range(rounds):
                start = time.perf_counter()
                response = client.get(path)
                samples.append((time.perf_counter() - start) * 1000)
                assert response.status_code == 200, (path, response.status_code, response.text[:300])
            times[name] = statistics.median(samples)
        return times
    finally:
        proc.terminate()
        proc.wait(20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test", help="server to create a database on")
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    with tempfile.TemporaryDirectory() as tmp, Progress(
            TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,}"),
            TimeRemainingColumn()) as progress:
        for backend in backends:
            workdir = Path(tmp) / backend
            workdir.mkdir()
            env = {"SWITCHYARD_DATA_DIR": str(workdir / "data")}
            pg_name = None
            if backend == "postgres":
                import asyncpg

                pg_name = "sy_bench_" + uuid.uuid4().hex[:8]

                async def create() -> None:
                    conn = await asyncpg.connect(args.pg)
                    await conn.execute(f"CREATE DATABASE {pg_name}")
                    await conn.close()

                asyncio.run(create())
                dsn = args.pg.rsplit("/", 1)[0] + f"/{pg_name}"
                env["SWITCHYARD_DATABASE_URL"] = dsn.replace("postgresql://", "postgresql+asyncpg://")
            try:
                org_id, keys = asyncio.run(make_org(env))
                if backend == "sqlite":
                    seed_sqlite(workdir / "data" / "switchyard.db", org_id, keys, args.records, progress)
                else:
                    asyncio.run(seed_postgres(dsn, org_id, keys, args.records, progress))
                results[backend] = measure(env, workdir, org_id, args.rounds)
            finally:
                for name in env:
                    os.environ.pop(name, None)
                if pg_name:
                    async def drop() -> None:
                        conn = await asyncpg.connect(args.pg)
                        await conn.execute(f"DROP DATABASE IF EXISTS {pg_name} WITH (FORCE)")
                        await conn.close()

                    asyncio.run(drop())
    print(f"\nconsole pages over {args.records:,} usage records (50 keys, 30 days), median of {args.rounds} (ms):")
    names = list(next(iter(results.values())))
    print(f"{'page':<36}" + "".join(f"{b:>12}" for b in results))
    for name in names:
        print(f"{name:<36}" + "".join(f"{results[b][name]:>12.1f}" for b in results))


if __name__ == "__main__":
    main()
