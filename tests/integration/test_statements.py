"""Monthly statements (postpaid invoices): usage by model, credits, adjustments and the total,
as JSON, CSV and a printable console page, adding up to the ledger to the nano-dollar."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal

import httpx
import pytest

from tests.conftest import Admin, Gateway, start_gateway, upstream_config
from tests.standins.openai_upstream import StandInUpstream

LIST_NANOS = 12 * 1_750 + 5 * 14_000  # one stand-in answer on gpt-5.2


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstream: StandInUpstream) -> Iterator[Gateway]:
    gateway = start_gateway(tmp_path_factory.mktemp("statements"), config=upstream_config(upstream),
                            env={"STANDIN_KEY": "x"})
    yield gateway
    gateway.stop()


def test_a_postpaid_month_adds_up_to_the_ledger(gw: Gateway) -> None:
    admin = Admin(gw)
    org = admin.org("postpaid-co", prepaid=False)
    key = admin.key(org["id"], name="p")
    headers = {"authorization": f"Bearer {key}"}
    for model in ("gpt-5.2", "gpt-5.2", "sim-tools"):
        answer = httpx.post(f"{gw.base_url}/chat/completions", headers=headers, timeout=30,
                            json={"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 20})
        assert answer.status_code == 200
    admin.call("POST", f"/organizations/{org['id']}/adjustments", json={"amount_usd": "-1.5", "note": "support plan"})
    admin.call("POST", f"/organizations/{org['id']}/adjustments", json={"amount_usd": "0.25", "kind": "refund",
                                                                        "note": "goodwill"})
    month = datetime.now(timezone.utc).strftime("%Y-%m")
    statement = httpx.get(f"{gw.base_url}/statements/{month}", headers=headers).json()
    assert statement["adds_up"] is True and statement["opening_nanos"] == 0
    assert statement["usage_nanos"] == 3 * LIST_NANOS == statement["usage_by_model_nanos"]
    assert {m["model"]: m["requests"] for m in statement["by_model"]} == {"gpt-5.2": 2, "sim-tools": 1}
    assert [(m["kind"], m["amount_nanos"]) for m in statement["movements"]] == [
        ("adjustment", -1_500_000_000), ("refund", 250_000_000)]
    balance = admin.balance(org["id"])
    assert statement["closing_nanos"] == balance["balance_nanos"] == balance["ledger_sum_nanos"]
    assert statement["closing_nanos"] == -3 * LIST_NANOS - 1_250_000_000
    # The same figures as CSV: the lines between the balances sum to the difference.
    as_csv = admin.http.get(f"/organizations/{org['id']}/statements/{month}", params={"format": "csv"})
    assert as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert rows[0]["description"] == "opening balance" and rows[-1]["description"] == "closing balance"
    movements = sum(Decimal(r["amount_usd"]) for r in rows[1:-1] if r["section"] != "usage")
    usage_total = Decimal(next(r for r in rows if r["description"] == "usage, total")["amount_usd"])
    assert usage_total == -Decimal(3 * LIST_NANOS) / 10**9  # signed as it moves the balance
    moved = movements + usage_total
    assert moved == Decimal(rows[-1]["amount_usd"]) - Decimal(rows[0]["amount_usd"])
    # A month before any activity is empty, and still adds up.
    assert httpx.get(f"{gw.base_url}/statements/2026-01", headers=headers).json()["closing_nanos"] == 0


@pytest.mark.parametrize("month", ["2026-13", "abc", "2026-1", "1999-12", "2026-00"])
def test_a_bad_month_is_a_clear_400(gw: Gateway, month: str) -> None:
    admin = Admin(gw)
    key = admin.key(admin.org(f"bad-month-{month}")["id"])
    answer = httpx.get(f"{gw.base_url}/statements/{month}", headers={"authorization": f"Bearer {key}"})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "month"
