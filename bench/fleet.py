#!/usr/bin/env python3
"""The fleet benchmark: 1, 2 and 3 replicas (2 workers each) behind HAProxy, sharing PostgreSQL
and Redis, under the same closed-loop load (wrk); prints requests/s, p50/p99, the ratio to one
replica, and the billing check (every 2xx answer has exactly one bill; every ledger adds up).

    .venv/bin/python bench/fleet.py [--duration 20] [--connections 64] [--replicas 1,2,3]

It uses tests/fleet.py's harness (HAProxy config, replicas in their own sessions) and the
benchmark's fast stand-in upstream (bench/upstream.py). On this 2-core machine the replicas, the
balancer, PostgreSQL, Redis, the upstream and wrk all share the same cores, so the ratio shows
what the shared writes (grouped ledger commits, Redis scripts) cost more than raw scaling.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

import asyncpg  # noqa: E402

import run as bench_run  # noqa: E402  (wrk and its parsing)
from tests.fleet import Fleet  # noqa: E402


def start_upstream() -> tuple[subprocess.Popen[str], int]:
    from tests.conftest import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, str(BENCH / "upstream.py"), "--port", str(port)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("READY"), line
    return proc, port


async def admin_db(sql: str) -> None:
    conn = await asyncpg.connect(host="127.0.0.1", port=5432, user="postgres", database="test")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def billed(url: str) -> tuple[int, bool]:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    try:
        completed = await conn.fetchval("SELECT count(*) FROM usage_records WHERE status = 'completed'")
        bad = await conn.fetchval(
            "SELECT count(*) FROM organizations o WHERE o.balance_nanos <> "
            "(SELECT coalesce(sum(amount_nanos), 0) FROM ledger_entries l WHERE l.org_id = o.id)")
    finally:
        await conn.close()
    return int(completed), bad == 0


TICK = os.sysconf("SC_CLK_TCK")


def fleet_cpu_seconds(fleet: Fleet) -> float:
    """CPU time (user + system) of every replica's supervisor and workers, from /proc."""
    roots = {r.proc.pid for r in fleet.replicas if r.proc is not None and r.proc.poll() is None}
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid_text, rest = stat.read_text().split(" (", 1)
        except OSError:
            continue
        fields = rest.rsplit(")", 1)[1].split()
        pid, ppid = int(pid_text), int(fields[1])
        if pid in roots or ppid in roots:
            total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def one_fleet(replicas: int, upstream_port: int, duration: float, connections: int, wrk: str) -> dict:
    name = "sy_fleet_" + uuid.uuid4().hex[:10]
    asyncio.run(admin_db(f'CREATE DATABASE "{name}"'))
    url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    workdir = Path(tempfile.mkdtemp(prefix=f"fleet-{replicas}-"))
    fleet = Fleet(workdir, url, f"http://127.0.0.1:{upstream_port}/v1", replicas=replicas, workers=2)
    try:
        fleet.start()
        org = fleet.admin("POST", "/organizations", json={"name": "bench", "tier": "unlimited"})["id"]
        fleet.admin("POST", f"/organizations/{org}/topup", json={"amount_usd": "100000"})
        key = fleet.admin("POST", "/keys", json={"org_id": org})["key"]
        time.sleep(1.5)  # the key reaches every worker through the change feed
        headers = {"Authorization": f"Bearer {key}"}
        bench_run.run_wrk(wrk, fleet.port, headers, False, 3, connections, None)  # warm-up
        time.sleep(1)  # the warm-up's last bills land
        warm, _ = asyncio.run(billed(url))
        cpu = fleet_cpu_seconds(fleet)
        result = bench_run.run_wrk(wrk, fleet.port, headers, False, duration, connections, None)
        cpu = fleet_cpu_seconds(fleet) - cpu
        time.sleep(1)
        completed, consistent = asyncio.run(billed(url))
        ok = result["requests"] - result["non2xx"]
        # wrk stops at its deadline with up to `connections` requests in flight: the gateway
        # answers and bills them, wrk does not count them.
        cut = completed - warm - ok
        result |= {"replicas": replicas, "billed": completed - warm, "answered": ok, "cut": cut,
                   "cpu_us": cpu / max(ok, 1) * 1e6, "billing_ok": consistent and 0 <= cut <= connections}
        return result
    finally:
        fleet.stop()
        asyncio.run(admin_db(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--replicas", default="1,2,3")
    args = parser.parse_args()
    wrk = bench_run.ensure_apt("wrk", "wrk")
    upstream, port = start_upstream()
    rows = []
    try:
        for n in [int(x) for x in args.replicas.split(",")]:
            print(f"fleet of {n} replica(s) x 2 workers ...", flush=True)
            rows.append(one_fleet(n, port, args.duration, args.connections, wrk))
    finally:
        upstream.terminate()
    base = rows[0]["rps"] or 1
    print(f"\n{'replicas':>8} {'req/s':>9} {'ratio':>6} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/req':>10} {'non-2xx':>8} "
          f"{'billed':>8} {'answered':>8} billing")
    for r in rows:
        print(f"{r['replicas']:>8} {r['rps']:>9.1f} {r['rps'] / base:>6.2f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
              f"{r['cpu_us']:>10.0f} {r['non2xx']:>8} {r['billed']:>8} {r['answered']:>8} "
              f"{'ok' if r['billing_ok'] else 'MISMATCH'} ({r['cut']} answered after wrk's deadline)")
    print(f"(this machine: {os.cpu_count()} cores shared by the replicas, HAProxy, PostgreSQL, Redis, the upstream and wrk)")


if __name__ == "__main__":
    main()
