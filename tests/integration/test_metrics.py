"""GET /metrics (Prometheus, summed over every worker) and GET /readyz: what an operator's
scraper and load balancer read. Requests are counted once their bill is durable, with its model,
status, tokens and cost."""

from __future__ import annotations

import json
import re
import time
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import MASTER_KEY, Admin, known_everywhere, start_gateway, upstream_config
from tests.integration.test_redis_limiter import REDIS_URL
from tests.standins.openai_upstream import StandInUpstream


def scrape(root: str, token: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    text = httpx.get(f"{root}/metrics", headers={"authorization": f"Bearer {token}"}).text
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def total(metrics: dict[str, dict], name: str, **labels: str) -> float:
    return sum(v for k, v in metrics.get(name, {}).items() if all((key, val) in k for key, val in labels.items()))


@pytest.mark.parametrize("workers", [1, 2])
def test_metrics_sum_every_worker_and_match_the_bills(tmp_path: Path, upstream: StandInUpstream, workers: int,
                                                       request: pytest.FixtureRequest) -> None:
    config = upstream_config(upstream)
    config["metrics"] = {"token": "metrics-secret"}
    env = {"STANDIN_KEY": "x"}
    if workers > 1:  # several workers: Redis for the holds, PostgreSQL as a fleet would
        config["redis"] = {"url": REDIS_URL}
        env["SWITCHYARD_DATABASE_URL"] = request.getfixturevalue("pg_url")
    gw = start_gateway(tmp_path, config=config, args=["--workers", str(workers)], env=env)
    try:
        admin = Admin(gw)
        org = admin.org("observed", tier="unlimited")
        admin.topup(org["id"], "10")
        key = admin.key(org["id"], name="o")
        known_everywhere(gw, key)
        costs = []
        for i in range(20):  # fresh connections: both workers answer some
            answer = httpx.post(f"{gw.base_url}/chat/completions", headers={"authorization": f"Bearer {key}"},
                                json={"model": "gpt-5.2", "messages": [{"role": "user", "content": "Hi"}],
                                      "max_tokens": 20, "stream": i % 2 == 1})
            assert answer.status_code == 200
            if i % 2 == 0:
                costs.append(Decimal(answer.headers["x-switchyard-cost-usd"]))
        refused = httpx.post(f"{gw.base_url}/chat/completions", headers={"authorization": f"Bearer {key}"},
                             json={"model": "no-such-model", "messages": [{"role": "user", "content": "Hi"}]})
        assert refused.status_code == 404
        for _ in range(3):
            httpx.post(f"{gw.base_url}/chat/completions", headers={"authorization": f"Bearer {key}"},
                       json={"model": "sim-status-500", "messages": [{"role": "user", "content": "Hi"}]})
        usage = admin.call("GET", "/usage", params={"org": org["id"]})["data"][0]
        metrics = scrape(gw.root, "metrics-secret")
        assert total(metrics, "switchyard_requests_total", model="gpt-5.2", status="completed") == 20
        assert total(metrics, "switchyard_requests_total", model="gpt-5.2", status="completed", stream="true") == 10
        assert total(metrics, "switchyard_request_duration_seconds_count", model="gpt-5.2") == 20
        billed = total(metrics, "switchyard_cost_usd_total", model="gpt-5.2")
        assert abs(billed - usage["cost_nanos"] / 1e9) < 1e-9 and abs(billed - 2 * float(sum(costs))) < 1e-9
        assert total(metrics, "switchyard_tokens_total", model="gpt-5.2", kind="output") == usage["output_tokens"]
        assert total(metrics, "switchyard_refusals_total", code="model_not_found") == 1
        assert total(metrics, "switchyard_upstream_failures_total") == 3
        assert total(metrics, "switchyard_ledger_group_size_count") >= 1
        # Each worker's gauge, summed: the worker answering samples at the scrape, the others every second.
        deadline = time.monotonic() + 15
        while total(metrics, "switchyard_in_flight_requests", deployment="gpt-5.2#0") != 0 and time.monotonic() < deadline:
            time.sleep(0.2)
            metrics = scrape(gw.root, "metrics-secret")
        assert total(metrics, "switchyard_in_flight_requests", deployment="gpt-5.2#0") == 0
        assert total(metrics, "switchyard_breaker_open", deployment="gpt-5.2#0") == 0
        if workers == 1:  # one breaker: open once `failure_threshold` (5) attempts in a row failed, retries included
            attempts = sum(1 for r in upstream.received if r.body.get("model") == "status-500")
            assert attempts >= 3
            assert total(metrics, "switchyard_breaker_open", deployment="sim-status-500#0") == (1 if attempts >= 5 else 0)
        # The Grafana dashboard in the repo reads only metrics the gateway exports.
        dashboard = json.loads((Path(__file__).parents[2] / "deploy" / "grafana" / "switchyard.json").read_text())
        used = {name for panel in dashboard["panels"] for target in panel["targets"]
                for name in re.findall(r"switchyard_[a-z_]+", target["expr"])}
        declared = set(re.findall(r'"(switchyard_[a-z_]+)"', (Path(__file__).parents[2] / "switchyard" / "observability"
                                                              / "metrics.py").read_text()))
        assert used and {re.sub(r"_(bucket|sum|count)$", "", n) for n in used} <= declared
        assert {n for n in used if n in metrics} >= {"switchyard_requests_total", "switchyard_cost_usd_total"}
        # Without the token: refused; the admin key alone is not enough when a token is set.
        assert httpx.get(f"{gw.root}/metrics").status_code == 401
        assert httpx.get(f"{gw.root}/metrics", headers={"authorization": f"Bearer {MASTER_KEY}"}).status_code == 401
        ready = httpx.get(f"{gw.root}/readyz").json()
        checks = {"database": "ok", "migrations": "ok", **({"redis": "ok"} if workers > 1 else {})}
        assert ready == {"status": "ready", "checks": checks}
        assert httpx.get(f"{gw.root}/healthz").status_code == 200
    finally:
        gw.stop()


def test_metrics_can_be_turned_off(tmp_path: Path, upstream: StandInUpstream) -> None:
    config = upstream_config(upstream) | {"metrics": {"enabled": False}}
    gw = start_gateway(tmp_path, config=config, env={"STANDIN_KEY": "x"})
    try:
        answer = gw.client().chat.completions.create(model="gpt-5.2", messages=[{"role": "user", "content": "Hi"}])
        assert answer.usage.completion_tokens > 0
        off = httpx.get(f"{gw.root}/metrics", headers={"authorization": f"Bearer {MASTER_KEY}"})
        assert off.status_code == 404 and "metrics.enabled" in off.json()["error"]["message"]
        assert not (gw.data_dir / "metrics").exists() or not any((gw.data_dir / "metrics").iterdir())
    finally:
        gw.stop()
