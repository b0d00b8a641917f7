"""Usage that stays fast: request records past `usage.retention_days` are pruned in the
background in small batches while requests keep flowing; the rollups, the usage API's figures
and every balance (the ledger) stay as they were."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import httpx

from tests.conftest import Admin, start_gateway, upstream_config
from tests.standins.openai_upstream import StandInUpstream

OLD_ROWS = 200_000


def chat(base_url: str, key: str) -> httpx.Response:
    return httpx.post(f"{base_url}/chat/completions", headers={"authorization": f"Bearer {key}"}, timeout=30,
                      json={"model": "gpt-5.2", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 20})


def test_old_records_are_pruned_while_requests_flow_and_money_and_rollups_stay(
    tmp_path: Path, upstream: StandInUpstream,
) -> None:
    config = upstream_config(upstream)
    gw = start_gateway(tmp_path, config=config, env={"STANDIN_KEY": "x"})
    try:
        admin = Admin(gw)
        org = admin.org("long-lived")
        admin.topup(org["id"], "50")
        key = admin.key(org["id"], name="k")
        for _ in range(3):
            assert chat(gw.base_url, key).status_code == 200
        before_usage = admin.call("GET", "/usage", params={"org": org["id"]})["data"]
    finally:
        gw.stop()

    database = gw.data_dir / "switchyard.db"
    db = sqlite3.connect(database)
    columns = [row[1] for row in db.execute("PRAGMA table_info(usage_records)")]
    template = dict(zip(columns, db.execute("SELECT * FROM usage_records LIMIT 1").fetchone()))
    three_days_ago = int(time.time() * 1000) - 3 * 86_400_000
    rows = [tuple({**template, "request_id": f"old-{i}", "created_at": three_days_ago + i}[c] for c in columns)
            for i in range(OLD_ROWS)]
    db.executemany(f"INSERT INTO usage_records VALUES ({', '.join('?' * len(columns))})", rows)
    db.commit()
    rollups_before = db.execute("SELECT COUNT(*), SUM(cost_nanos), SUM(requests) FROM usage_rollups WHERE span = 3600000").fetchone()
    db.close()

    config["usage"] = {"retention_days": 1, "prune_batch": 5000}
    gw = start_gateway(tmp_path, config=config, env={"STANDIN_KEY": "x"})
    try:
        admin = Admin(gw)
        served, seen = 0, []
        db = sqlite3.connect(database, timeout=30)
        while True:  # requests keep flowing while the pruner works through the old records
            answer = chat(gw.base_url, key)
            assert answer.status_code == 200, answer.text
            served += 1
            left = db.execute("SELECT COUNT(*) FROM usage_records WHERE request_id LIKE 'old-%'").fetchone()[0]
            seen.append(left)
            if left == 0:
                break
            assert served < 5000, f"pruning made no progress: {seen[-5:]}"
        assert len(set(seen)) > 1 or seen == [0]  # it went down batch by batch, not in one long delete
        kept = db.execute("SELECT COUNT(*) FROM usage_records").fetchone()[0]
        assert kept == 3 + served  # every recent record stays
        rollups_after = db.execute("SELECT COUNT(*), SUM(cost_nanos), SUM(requests) FROM usage_rollups WHERE span = 3600000").fetchone()
        db.close()
        # The sums only grew by the new requests; the usage API (from the sums) agrees.
        assert rollups_after[2] == rollups_before[2] + served
        usage = admin.call("GET", "/usage", params={"org": org["id"]})["data"][0]
        assert usage["requests"] == before_usage[0]["requests"] + served
        assert usage["cost_nanos"] == before_usage[0]["cost_nanos"] * (3 + served) // 3
        balance = admin.balance(org["id"])
        assert balance["consistent"] is True and balance["balance_nanos"] == 50 * 10**9 - usage["cost_nanos"]
    finally:
        gw.stop()
