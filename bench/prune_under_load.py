"""Request latency while old request records are pruned (a script that prints figures, not a test).

Fills a gateway's SQLite database with 200,000 request records three days old, then restarts it
with `usage.retention_days: 1`: the pruner deletes them in batches while a client sends chat
requests one after another. Prints p50 / p99 / max latency without pruning (the same gateway,
before the old records exist) and during it, and how long the prune took.

    python bench/prune_under_load.py
    python bench/prune_under_load.py --rows 500000 --batch 2000
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from big_requests import KEY, ROOT, _Upstream, free_port  # noqa: E402  (the same tiny upstream)


def start(work: Path, config: dict[str, object], binary: str) -> tuple[subprocess.Popen[bytes], str]:
    (work / "config.yaml").write_text(json.dumps(config))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    env.update(SWITCHYARD_CONFIG=str(work / "config.yaml"), SWITCHYARD_DATA_DIR=str(work / "data"),
               SWITCHYARD_API_KEYS=KEY, SWITCHYARD_MASTER_KEY="sk-bench-master", SWITCHYARD_LOG_LEVEL="warning")
    proc = subprocess.Popen([binary, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    root = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(root + "/healthz", timeout=1).status_code == 200:
                return proc, root
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            sys.exit("switchyard did not start")
        time.sleep(0.1)


def latencies(root: str, until: "threading.Event | None" = None, count: int = 500) -> list[float]:
    out: list[float] = []
    body = {"model": "gpt-5.2", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 5}
    with httpx.Client(timeout=60, headers={"authorization": f"Bearer {KEY}"}) as http:
        while (until is None and len(out) < count) or (until is not None and not until.is_set()):
            t = time.perf_counter()
            assert http.post(root + "/v1/chat/completions", json=body).status_code == 200
            out.append((time.perf_counter() - t) * 1000)
    return out


def summary(name: str, ms: list[float]) -> str:
    ms = sorted(ms)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return f"{name:26} {len(ms):>7} {statistics.median(ms):8.2f} {p99:8.2f} {ms[-1]:8.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--switchyard-bin", default=str(ROOT / ".venv" / "bin" / "switchyard"))
    args = parser.parse_args()
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    work = Path(tempfile.mkdtemp(prefix="sy-prune-"))
    config: dict[str, object] = {"models": {"gpt-5.2": {"deployments": [{
        "provider": "openai", "base_url": f"http://127.0.0.1:{upstream.server_address[1]}/v1", "model": "m",
        "catalog": "gpt-5.2"}]}}}
    proc, root = start(work, config, args.switchyard_bin)
    try:
        quiet = latencies(root)
    finally:
        proc.terminate()
        proc.wait()
    database = work / "data" / "switchyard.db"
    db = sqlite3.connect(database)
    columns = [row[1] for row in db.execute("PRAGMA table_info(usage_records)")]
    template = dict(zip(columns, db.execute("SELECT * FROM usage_records LIMIT 1").fetchone()))
    old = int(time.time() * 1000) - 3 * 86_400_000
    db.executemany(f"INSERT INTO usage_records VALUES ({', '.join('?' * len(columns))})",
                   (tuple({**template, "request_id": f"old-{i}", "created_at": old + i}[c] for c in columns)
                    for i in range(args.rows)))
    db.commit()
    config["usage"] = {"retention_days": 1, "prune_batch": args.batch}
    proc, root = start(work, config, args.switchyard_bin)
    try:
        done = threading.Event()
        started = time.perf_counter()
        result: list[float] = []
        client = threading.Thread(target=lambda: result.extend(latencies(root, done)))
        client.start()
        while db.execute("SELECT COUNT(*) FROM usage_records WHERE request_id LIKE 'old-%'").fetchone()[0]:
            time.sleep(0.05)
        took = time.perf_counter() - started
        done.set()
        client.join()
    finally:
        proc.terminate()
        db.close()
    print(f"{'chat requests (ms)':26} {'count':>7} {'p50':>8} {'p99':>8} {'max':>8}")
    print(summary("without pruning", quiet))
    print(summary(f"pruning {args.rows:,} records", result))
    print(f"pruned {args.rows:,} records in {took:.1f} s (batches of {args.batch:,})")


if __name__ == "__main__":
    main()
