"""Every request leaves a trace: refused ones too, in the log and in the usage store, never a
secret or a prompt; and small conformance promises (rate-limit headers, whole-second times)."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import MASTER_KEY, USER_KEY, Admin, Gateway

SECRET_PROMPT = "my password is swordfish-7731"
RATE_HEADERS = ("limit-requests", "remaining-requests", "reset-requests", "limit-tokens", "remaining-tokens", "reset-tokens")


def records(gw: Gateway, where: str, *args: Any, expect: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 30
    while True:
        with sqlite3.connect(gw.data_dir / "switchyard.db") as db:
            db.row_factory = sqlite3.Row
            rows = [dict(r) for r in db.execute(f"SELECT * FROM usage_records WHERE {where} ORDER BY created_at", args)]
        if len(rows) >= expect or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def test_refused_requests_leave_a_log_line_and_a_zero_cost_record(upstream_gateway: Gateway) -> None:
    admin = Admin(upstream_gateway)
    org = admin.org("traced", tier="unlimited")  # balance 0: a paid request is refused for funds
    key = admin.key(org["id"], allowed_models=["gpt-5.2"])
    client = upstream_gateway.client(key)
    with pytest.raises(openai.BadRequestError):  # 400: the bad role is named as the param
        client.chat.completions.create(model="gpt-5.2", messages=[{"role": "robot", "content": SECRET_PROMPT}])
    with pytest.raises(openai.NotFoundError):  # 404: no such model
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": SECRET_PROMPT}])
    with pytest.raises(openai.PermissionDeniedError):  # 403: the key may not use it
        client.chat.completions.create(model="sim-ok", messages=[{"role": "user", "content": SECRET_PROMPT}])
    with pytest.raises(openai.RateLimitError):  # 429: no funds
        client.chat.completions.create(model="gpt-5.2", messages=[{"role": "user", "content": SECRET_PROMPT}])
    with pytest.raises(openai.AuthenticationError):  # 401: an unknown key
        upstream_gateway.client("sk-sy-wrong-key-123").chat.completions.create(
            model="gpt-5.2", messages=[{"role": "user", "content": "x"}])

    rows = records(upstream_gateway, "org_id = ?", org["id"], expect=4)
    seen = [(r["status"], r["http_status"], r["error_code"], r["model"], r["cost_nanos"]) for r in rows]
    assert seen == [
        ("refused", 400, "invalid_value", "gpt-5.2", 0),
        ("refused", 404, "model_not_found", "no-such-model", 0),
        ("refused", 403, "permission_denied", "sim-ok", 0),
        ("refused", 429, "insufficient_quota", "gpt-5.2", 0),
    ]
    assert rows[0]["error_param"] == "messages[0].role"
    assert all(r["key_id"] == rows[0]["key_id"] for r in rows)
    # Refusals are not requests served: the usage API counts them apart.
    usage = admin.call("GET", "/usage", params={"org": org["id"]})["data"][0]
    assert (usage["requests"], usage["errors"], usage["cost_nanos"]) == (0, 4, 0)

    logs = upstream_gateway.logs_with("status=429 code=insufficient_quota")
    lines = [line for line in logs.splitlines() if "status=4" in line and "/v1/chat/completions" in line]
    assert any("status=400 code=invalid_value param=messages[0].role" in line and f"key={rows[0]['key_id']}" in line
               and "model=gpt-5.2" in line for line in lines)
    assert any("status=401" in line and "key=-" in line for line in lines)
    assert any("status=429 code=insufficient_quota" in line for line in lines)
    for secret in (SECRET_PROMPT, key, "sk-sy-wrong-key-123", MASTER_KEY):
        assert secret not in logs


def test_every_answer_carries_the_six_rate_limit_headers_even_when_unlimited(local_gateway: Gateway) -> None:
    # The operator key's organisation is on the `unlimited` tier.
    raw = local_gateway.client(MASTER_KEY).chat.completions.with_raw_response.create(
        model="default", messages=[{"role": "user", "content": "Hi"}], max_tokens=3)
    for name in RATE_HEADERS:
        assert raw.headers[f"x-ratelimit-{name}"], name
    assert int(raw.headers["x-ratelimit-remaining-requests"]) > 0


def test_upstream_errors_after_admission_carry_rate_limit_headers(upstream_gateway: Gateway) -> None:
    resp = httpx.post(upstream_gateway.base_url + "/chat/completions", headers={"Authorization": f"Bearer {USER_KEY}"},
                      json={"model": "sim-status-500", "messages": [{"role": "user", "content": "x"}]}, timeout=60)
    assert resp.status_code == 502
    for name in RATE_HEADERS:
        assert f"x-ratelimit-{name}" in resp.headers


def test_response_timestamps_are_whole_seconds(local_gateway: Gateway) -> None:
    resp = httpx.post(local_gateway.base_url + "/responses", headers={"Authorization": f"Bearer {USER_KEY}"},
                      json={"model": "default", "input": "Hi", "max_output_tokens": 16}, timeout=120)
    body = resp.json()
    assert type(body["created_at"]) is int
    assert body["completed_at"] is None or type(body["completed_at"]) is int
