"""Budgets that reset: a monthly key budget in a configured time zone resets exactly at the
month's boundary on every worker; a request admitted before the boundary and finished after it
is billed to the period it was admitted in. The gateway's clock is set a few seconds before the
boundary (SWITCHYARD_CLOCK_OFFSET_SECONDS) and the test waits for the boundary to pass."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.conftest import Admin, known_everywhere, start_gateway, upstream_config
from tests.integration.test_redis_limiter import REDIS_URL
from tests.standins.openai_upstream import StandInUpstream

TZ = "Asia/Tokyo"
LEAD_SECONDS = 25.0  # the gateway starts this long before the boundary, by its own clock


def next_month_start(now: float, tz: str) -> float:
    local = datetime.fromtimestamp(now, ZoneInfo(tz))
    first = (local.replace(day=1, hour=0, minute=0, second=0, microsecond=0) + timedelta(days=32)).replace(day=1)
    return first.timestamp()


def chat(base_url: str, key: str, model: str = "gpt-5.2") -> httpx.Response:
    return httpx.post(f"{base_url}/chat/completions", headers={"authorization": f"Bearer {key}"}, timeout=60,
                      json={"model": model, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 20})


def test_a_monthly_budget_resets_at_the_boundary_on_every_worker(tmp_path: Path, upstream: StandInUpstream,
                                                                pg_url: str) -> None:
    boundary = next_month_start(time.time() + 40 * 86_400, TZ)  # a month boundary well ahead
    offset = boundary - LEAD_SECONDS - time.time()

    def fake_now() -> float:
        return time.time() + offset

    config = upstream_config(upstream)
    config["redis"] = {"url": REDIS_URL}
    config["budgets"] = {"timezone": TZ}
    gw = start_gateway(tmp_path, config=config, args=["--workers", "2"],
                       env={"STANDIN_KEY": "x", "SWITCHYARD_DATABASE_URL": pg_url,
                            "SWITCHYARD_CLOCK_OFFSET_SECONDS": str(offset)})
    try:
        admin = Admin(gw)
        org = admin.org("monthly", tier="unlimited")
        admin.topup(org["id"], "10")
        key_obj = admin.call("POST", "/keys", json={"org_id": org["id"], "name": "m", "budget_usd": "0.001",
                                                     "budget_period": "monthly"})
        key = key_obj["key"]
        assert key_obj["budget_period"] == "monthly"
        assert key_obj["period_start"] < boundary and key_obj["period_spent_nanos"] == 0
        known_everywhere(gw, key)
        assert fake_now() < boundary - 3, "the gateway took too long to start for this test"

        spent_before = 0
        for _ in range(40):  # spend this month's budget until it refuses
            answer = chat(gw.base_url, key)
            if answer.status_code == 429:
                assert answer.json()["error"]["code"] == "insufficient_quota"
                assert "this month" in answer.json()["error"]["message"]
                break
            assert answer.status_code == 200
            spent_before += int(Decimal(answer.headers["x-switchyard-cost-usd"]) * 10**9)
        else:
            raise AssertionError("the budget never refused")
        assert 0 < spent_before <= 1_000_000

        assert chat(gw.base_url, key).status_code == 429  # spent, on whichever worker answers
        # Room for one more request this month, for a slow one admitted just before the boundary
        # and finished after it (the shared counter takes the raise at once, on every worker).
        admin.call("PATCH", f"/keys/{key_obj['id']}", json={"budget_usd": "0.0015"})
        while fake_now() < boundary - 1.5:
            time.sleep(0.05)
        slow: dict[str, httpx.Response] = {}
        thread = threading.Thread(target=lambda: slow.setdefault("r", chat(gw.base_url, key, "sim-slow")))
        thread.start()
        while fake_now() < boundary + 0.3:
            time.sleep(0.05)
        # A new month: the spend starts again, on both workers.
        after = [chat(gw.base_url, key) for _ in range(6)]
        assert [a.status_code for a in after] == [200] * 6
        new_month = sum(int(Decimal(a.headers["x-switchyard-cost-usd"]) * 10**9) for a in after)
        thread.join()
        assert slow["r"].status_code == 200
        # Billed (the balance paid for it), but to the month it was admitted in.
        shown = admin.call("GET", f"/keys/{key_obj['id']}")
        assert shown["period_start"] == int(boundary)
        assert shown["period_spent_nanos"] == new_month
        usage = admin.call("GET", "/usage", params={"org": org["id"]})["data"][0]
        assert admin.balance(org["id"])["balance_nanos"] == 10 * 10**9 - usage["cost_nanos"]
        assert admin.balance(org["id"])["consistent"] is True
    finally:
        gw.stop()


@pytest.mark.parametrize("holds", ["memory", "redis"])
def test_an_organisation_budget_caps_every_key_and_shows_its_period_spend(tmp_path: Path, upstream: StandInUpstream,
                                                                         holds: str) -> None:
    config = upstream_config(upstream)
    if holds == "redis":
        config["redis"] = {"url": REDIS_URL}
    gw = start_gateway(tmp_path, config=config, env={"STANDIN_KEY": "x"})
    try:
        admin = Admin(gw)
        org = admin.org("capped", tier="unlimited", budget_usd="0.0008", budget_period="daily")
        admin.topup(org["id"], "10")
        keys = [admin.key(org["id"], name=f"k{i}") for i in range(2)]
        statuses, spent = [], 0
        for i in range(20):
            answer = chat(gw.base_url, keys[i % 2])
            statuses.append(answer.status_code)
            if answer.status_code == 200:
                spent += int(Decimal(answer.headers["x-switchyard-cost-usd"]) * 10**9)
            else:
                error = answer.json()["error"]
                assert error["code"] == "insufficient_quota" and "organization's budget" in error["message"]
                assert "today" in error["message"]
        assert 200 in statuses and statuses[-1] == 429 and spent <= 800_000
        shown = admin.call("GET", f"/organizations/{org['id']}")
        assert (shown["budget_usd"], shown["budget_period"], shown["period_spent_nanos"]) == ("0.0008", "daily", spent)
        # A raised budget has room at once (the shared counter is credited, not rebuilt).
        admin.call("PATCH", f"/organizations/{org['id']}", json={"budget_usd": "0.002", "overdraft_usd": "1"})
        assert chat(gw.base_url, keys[1]).status_code == 200
        admin.call("PATCH", f"/organizations/{org['id']}", json={"budget_usd": None})
        assert chat(gw.base_url, keys[0]).status_code == 200  # no cap: the balance alone limits it
        bad = admin.http.patch(f"/organizations/{org['id']}", json={"budget_period": "hourly"})
        assert (bad.status_code, bad.json()["error"]["param"]) == (400, "budget_period")
    finally:
        gw.stop()
