"""Accounts end to end: organisations, keys, balances, the ledger, budgets, usage, isolation.

Real gateway processes in front of the stand-in upstream (every answer: 12 prompt tokens,
5 completion tokens), the admin API driven with httpx and /v1 with the official SDK.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import MASTER_KEY, USER_KEY, Gateway, start_gateway, upstream_config
from tests.standins.openai_upstream import StandInUpstream

HELLO = [{"role": "user", "content": "Hello"}]
UPSTREAM_KEY = "sk-upstream-secret"
ADMIN_HEADERS = {"Authorization": f"Bearer {MASTER_KEY}"}

# gpt-5.2 in the catalog: $1.75 input, $14 output per 1M tokens.
INPUT_PRICE = Decimal("1.75")
OUTPUT_PRICE = Decimal("14")
NANOS = Decimal(10**9)
MAX_TOKENS = 200

# Everything this module must never find in a server log.
CREATED_KEYS: list[str] = []
STARTED: list[Gateway] = []


def price_nanos(input_tokens: int, output_tokens: int, multiplier: str = "1") -> int:
    usd = (input_tokens * INPUT_PRICE + output_tokens * OUTPUT_PRICE) / Decimal(1_000_000) * Decimal(multiplier)
    return int((usd * NANOS).to_integral_value(rounding=ROUND_HALF_UP))


# The stand-in always reports 12 prompt and 5 completion tokens.
def standin_price(multiplier: str = "1") -> int:
    return price_nanos(12, 5, multiplier)


def hello_bytes_bound() -> int:
    """The gateway's prompt bound for HELLO: UTF-8 bytes + 3 per message + 3 for the reply primer,
    plus gpt-5.2's catalog prompt_overhead (16 per request)."""
    return len("Hello".encode()) + 3 * len(HELLO) + 3 + 16


def nanos_of(usd: Any) -> int:
    value = Decimal(str(usd)) * NANOS
    assert value == value.to_integral_value(), usd
    return int(value)


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstream: StandInUpstream) -> Iterator[Gateway]:
    g = start_gateway(tmp_path_factory.mktemp("accounts-gw"), config=upstream_config(upstream),
                      env={"STANDIN_KEY": UPSTREAM_KEY})
    STARTED.append(g)
    yield g
    g.stop()


@pytest.fixture(scope="module")
def gw2(tmp_path_factory: pytest.TempPathFactory, upstream: StandInUpstream) -> Iterator[Gateway]:
    g = start_gateway(tmp_path_factory.mktemp("accounts-gw-2workers"), config=upstream_config(upstream),
                      env={"STANDIN_KEY": UPSTREAM_KEY, "SWITCHYARD_REDIS_URL": "redis://127.0.0.1:6379/0"},
                      args=["--workers", "2"])
    STARTED.append(g)
    yield g
    g.stop()


@pytest.fixture(scope="module")
def admin(gw: Gateway) -> Iterator[httpx.Client]:
    with admin_client(gw) as client:
        yield client


def admin_client(g: Gateway) -> httpx.Client:
    return httpx.Client(base_url=g.root + "/admin/v1", headers=ADMIN_HEADERS, timeout=30)


_names = iter(range(1_000_000))


def new_org(admin: httpx.Client, topup: str | None = None, **fields: Any) -> dict[str, Any]:
    resp = admin.post("/organizations", json={"name": f"org-{next(_names)}-{time.time_ns()}", **fields})
    assert resp.status_code == 200, resp.text
    org = resp.json()
    if topup is not None:
        resp = admin.post(f"/organizations/{org['id']}/topup", json={"amount_usd": topup})
        assert resp.status_code == 200, resp.text
        org = resp.json()
    return org


def new_key(admin: httpx.Client, org_id: str, **fields: Any) -> dict[str, Any]:
    resp = admin.post("/keys", json={"org_id": org_id, "name": f"key-{next(_names)}", **fields})
    assert resp.status_code == 200, resp.text
    key = resp.json()
    CREATED_KEYS.append(key["key"])
    return key


def balance_nanos(admin: httpx.Client, org_id: str) -> int:
    resp = admin.get(f"/organizations/{org_id}/balance")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["consistent"] is True, body
    return int(body["balance_nanos"])


def key_usage(admin: httpx.Client, key_id: str) -> dict[str, int]:
    """The key's totals over all time (no grouping: one row, or none before any request)."""
    resp = admin.get("/usage", params={"key": key_id})
    assert resp.status_code == 200, resp.text
    rows = resp.json()["data"]
    if not rows:
        return {"requests": 0, "cost_nanos": 0}
    assert len(rows) == 1
    return rows[0]


def wait_usable(g: Gateway, key: str, model: str = "gpt-5.2", timeout: float = 1.5) -> None:
    """A new key reaches every worker's cache through the change feed within a second."""
    client = g.client(key)
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.models.list()
            return
        except openai.AuthenticationError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def chat(g: Gateway, key: str, model: str = "gpt-5.2", **kwargs: Any) -> Any:
    # Admission holds the worst case (max output when no max_tokens: 128K tokens, ~$1.79 on
    # gpt-5.2), so requests from organisations with a dollar or two name their output cap.
    kwargs.setdefault("max_tokens", MAX_TOKENS)
    return g.client(key).chat.completions.create(model=model, messages=HELLO, **kwargs)


def usage_rows_db(g: Gateway, key_id: str) -> list[sqlite3.Row]:
    db = sqlite3.connect(g.data_dir / "switchyard.db", timeout=30)
    db.row_factory = sqlite3.Row
    try:
        return db.execute("SELECT * FROM usage_records WHERE key_id = ? ORDER BY created_at", (key_id,)).fetchall()
    finally:
        db.close()


# ---------------------------------------------------------------- the full flow


def test_full_flow_exact_price_balance_and_ledger(gw: Gateway, admin: httpx.Client) -> None:
    org = new_org(admin, tier="tier-1", price_multiplier="0.7")
    assert org["price_multiplier"] == "0.7" and org["tier"] == "tier-1" and org["balance_nanos"] == 0
    resp = admin.post(f"/organizations/{org['id']}/topup", json={"amount_usd": "1.00"})
    assert resp.status_code == 200 and resp.json()["balance_nanos"] == 10**9

    created = new_key(admin, org["id"], name="full-flow")
    plaintext = created["key"]
    assert plaintext.startswith("sk-sy-") and len(plaintext) > 30
    # Shown once: neither GET nor the list shows it again.
    got = admin.get(f"/keys/{created['id']}").json()
    assert "key" not in got and plaintext not in json.dumps(got)
    listed = admin.get("/keys", params={"org": org["id"]}).json()["data"]
    assert [k["id"] for k in listed] == [created["id"]]
    assert plaintext not in json.dumps(listed)
    assert got["key_hint"] and got["key_hint"] != plaintext

    wait_usable(gw, plaintext)
    raw = gw.client(plaintext).chat.completions.with_raw_response.create(
        model="gpt-5.2", messages=HELLO, max_tokens=MAX_TOKENS)
    reply = raw.parse()
    expected_usd = (12 * INPUT_PRICE + 5 * OUTPUT_PRICE) / Decimal(1_000_000) * Decimal("0.7")
    expected = int(expected_usd * NANOS)
    assert expected == standin_price("0.7") == 63_700
    assert reply.usage.prompt_tokens == 12 and reply.usage.completion_tokens == 5
    assert Decimal(str(reply.usage.cost)) == expected_usd
    assert Decimal(raw.headers["x-switchyard-cost-usd"]) == expected_usd

    assert balance_nanos(admin, org["id"]) == 10**9 - expected
    key_after = admin.get(f"/keys/{created['id']}").json()
    assert key_after["spent_nanos"] == expected

    entries = admin.get(f"/organizations/{org['id']}/ledger").json()["data"]
    kinds = [e["kind"] for e in entries]
    assert kinds[0] == "topup"
    assert {"topup", "reserve", "release", "settle"} <= set(kinds)
    settles = [e for e in entries if e["kind"] == "settle"]
    assert len(settles) == 1 and settles[0]["amount_nanos"] == -expected
    assert settles[0]["request_id"] == raw.headers["x-request-id"]
    reserve = next(e for e in entries if e["kind"] == "reserve")
    release = next(e for e in entries if e["kind"] == "release")
    assert reserve["amount_nanos"] == -release["amount_nanos"] < 0
    assert sum(e["amount_nanos"] for e in entries) == balance_nanos(admin, org["id"])

    # At rest there is only the hash: the plaintext is in neither the database nor its WAL.
    for path in gw.data_dir.glob("switchyard.db*"):
        assert plaintext.encode() not in path.read_bytes(), path


def test_streaming_usage_chunk_carries_cost_and_is_billed_once(gw: Gateway, admin: httpx.Client) -> None:
    org = new_org(admin, topup="1")
    key = new_key(admin, org["id"])
    wait_usable(gw, key["key"])
    for n in (1, 2):
        chunks = list(chat(gw, key["key"], stream=True, stream_options={"include_usage": True}))
        last = chunks[-1]
        assert last.choices == [] and last.usage is not None
        assert last.usage.total_tokens == 17
        assert nanos_of(last.usage.cost) == standin_price()
        assert all(c.usage is None for c in chunks[:-1])
        totals = key_usage(admin, key["id"])
        assert totals["requests"] == n and totals["cost_nanos"] == n * standin_price()
    assert balance_nanos(admin, org["id"]) == 10**9 - 2 * standin_price()
    settles = [e for e in admin.get(f"/organizations/{org['id']}/ledger").json()["data"] if e["kind"] == "settle"]
    assert len(settles) == 2 and len({e["request_id"] for e in settles}) == 2


def test_upstream_failure_before_output_is_not_billed(gw: Gateway, admin: httpx.Client) -> None:
    org = new_org(admin, topup="1")
    key = new_key(admin, org["id"])
    wait_usable(gw, key["key"])
    with pytest.raises(openai.InternalServerError):
        chat(gw, key["key"], model="sim-status-500")
    with pytest.raises(openai.InternalServerError):
        list(chat(gw, key["key"], model="sim-status-500", stream=True))
    assert balance_nanos(admin, org["id"]) == 10**9
    assert key_usage(admin, key["id"])["requests"] == 0
    assert [e["kind"] for e in admin.get(f"/organizations/{org['id']}/ledger").json()["data"]] == ["topup"]
    # The hold was dropped: the whole balance is still spendable.
    assert chat(gw, key["key"]).usage.total_tokens == 17


def test_mid_stream_failure_bills_what_was_delivered(gw: Gateway, admin: httpx.Client) -> None:
    org = new_org(admin, topup="1")
    key = new_key(admin, org["id"])
    wait_usable(gw, key["key"])
    received: list[str] = []
    with pytest.raises(openai.APIError):
        for chunk in chat(gw, key["key"], model="sim-broken-stream", stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
    assert received == ["Hello"]
    rows = usage_rows_db(gw, key["id"])
    assert len(rows) == 1
    row = rows[0]
    assert row["status"] == "partial" and row["stream"]
    assert row["output_tokens"] >= 1 and row["input_tokens"] > 0
    assert row["cost_nanos"] > 0
    assert row["cost_nanos"] == price_nanos(row["input_tokens"], row["output_tokens"])
    assert balance_nanos(admin, org["id"]) == 10**9 - row["cost_nanos"]
    assert key_usage(admin, key["id"])["requests"] == 1


# ---------------------------------------------------------------- money limits


def test_insufficient_org_balance_is_refused_and_not_billed(gw: Gateway, admin: httpx.Client) -> None:
    org = new_org(admin, topup="0.000001")
    key = new_key(admin, org["id"])
    wait_usable(gw, key["key"])
    for stream in (False, True):
        with pytest.raises(openai.RateLimitError) as info:
            kwargs: dict[str, Any] = {"stream": True} if stream else {}
            result = chat(gw, key["key"], **kwargs)
            if stream:
                list(result)
        assert info.value.code == "insufficient_quota"
        assert info.value.status_code == 429
        assert info.value.response.headers.get("x-ratelimit-limit-requests") == "500"
    assert balance_nanos(admin, org["id"]) == 1000
    assert key_usage(admin, key["id"])["requests"] == 0
    assert [e["kind"] for e in admin.get(f"/organizations/{org['id']}/ledger").json()["data"]] == ["topup"]


def test_key_budget_allows_exactly_n_requests(gw: Gateway, admin: httpx.Client) -> None:
    max_tokens = 10
    # Admission holds the worst case: the prompt's byte bound in, max_tokens out.
    worst = price_nanos(hello_bytes_bound(), max_tokens)
    actual = standin_price()
    n = 3
    budget = worst + (n - 1) * actual  # the Nth fits exactly; after N there is less than `worst` left
    assert budget - n * actual < worst
    org = new_org(admin, topup="1")
    key = new_key(admin, org["id"], budget_usd=str(Decimal(budget) / NANOS))
    assert key["budget_usd"] is not None
    wait_usable(gw, key["key"])
    for _ in range(n):
        assert chat(gw, key["key"], max_tokens=max_tokens).usage.total_tokens == 17
    with pytest.raises(openai.RateLimitError) as info:
        chat(gw, key["key"], max_tokens=max_tokens)
    assert info.value.code == "insufficient_quota"
    assert "budget" in info.value.message
    assert key_usage(admin, key["id"])["requests"] == n
    assert admin.get(f"/keys/{key['id']}").json()["spent_nanos"] == n * actual
    assert balance_nanos(admin, org["id"]) == 10**9 - n * actual
    # The organisation still has money: another key of it is not affected by this key's budget.
    other = new_key(admin, org["id"])
    wait_usable(gw, other["key"])
    assert chat(gw, other["key"], max_tokens=max_tokens).usage.total_tokens == 17


def test_postpaid_org_is_metered_but_never_refused(gw: Gateway, admin: httpx.Client) -> None:
    org = new_org(admin, prepaid=False)
    assert org["prepaid"] is False and org["balance_nanos"] == 0
    key = new_key(admin, org["id"])
    wait_usable(gw, key["key"])
    for _ in range(3):
        assert chat(gw, key["key"]).usage.total_tokens == 17
    assert balance_nanos(admin, org["id"]) == -3 * standin_price()
    usage = key_usage(admin, key["id"])
    assert usage["requests"] == 3 and usage["cost_nanos"] == 3 * standin_price()


# ---------------------------------------------------------------- permissions


def test_allowed_models(gw: Gateway, admin: httpx.Client) -> None:
    org = new_org(admin, topup="1")
    key = new_key(admin, org["id"], allowed_models=["gpt-5.2"])
    assert key["allowed_models"] == ["gpt-5.2"]
    wait_usable(gw, key["key"])
    client = gw.client(key["key"])
    assert [m.id for m in client.models.list().data] == ["gpt-5.2"]
    assert chat(gw, key["key"]).usage.total_tokens == 17
    for model in ("sim-tools", "sim-status-500"):
        with pytest.raises(openai.PermissionDeniedError):
            chat(gw, key["key"], model=model)
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("sim-tools")
    assert key_usage(admin, key["id"])["requests"] == 1


# ---------------------------------------------------------------- changes take effect within a second


def _poll_until_unauthorized(g: Gateway, key: str, timeout: float) -> tuple[float, int]:
    """Seconds until the key is refused, and how many requests still succeeded (and were billed) meanwhile."""
    start = time.monotonic()
    served = 0
    while True:
        try:
            chat(g, key)
            served += 1
        except openai.AuthenticationError:
            return time.monotonic() - start, served
        assert time.monotonic() - start < timeout, "the key still works"
        time.sleep(0.02)


def test_revocation_within_a_second(gw: Gateway, admin: httpx.Client) -> None:
    org = new_org(admin, topup="1")
    key = new_key(admin, org["id"])
    wait_usable(gw, key["key"])
    assert chat(gw, key["key"]).usage.total_tokens == 17
    resp = admin.delete(f"/keys/{key['id']}")
    assert resp.status_code == 200 and resp.json()["revoked_at"] is not None
    assert _poll_until_unauthorized(gw, key["key"], 1.5)[0] < 1.5
    with pytest.raises(openai.AuthenticationError) as info:
        gw.client(key["key"]).models.list()
    assert key["key"] not in info.value.message


def test_revocation_reaches_every_worker(gw2: Gateway) -> None:
    with admin_client(gw2) as admin:
        org = new_org(admin, topup="1")
        key = new_key(admin, org["id"])
        time.sleep(1.0)  # the new key reaches both workers
        for _ in range(20):  # a new client (new connection) each time: both workers answer some of these
            assert chat(gw2, key["key"]).usage.total_tokens == 17
        spent = 20 * standin_price()
        deadline = time.monotonic() + 1.5
        while balance_nanos(admin, org["id"]) != 10**9 - spent:
            assert time.monotonic() < deadline
            time.sleep(0.05)

        assert admin.delete(f"/keys/{key['id']}").status_code == 200
        revoked = time.monotonic()
        elapsed, served = _poll_until_unauthorized(gw2, key["key"], 1.5)
        assert elapsed < 1.5
        spent += served * standin_price()
        time.sleep(max(0.0, 1.0 - (time.monotonic() - revoked)))
        # A second after revocation no worker accepts the key: many requests, new connections each.
        for _ in range(30):
            with httpx.Client(timeout=10) as http:
                resp = http.post(gw2.base_url + "/chat/completions", json={"model": "gpt-5.2", "messages": HELLO},
                                 headers={"Authorization": f"Bearer {key['key']}"})
            assert resp.status_code == 401, resp.text
            assert resp.json()["error"]["code"] == "invalid_api_key"
        assert balance_nanos(admin, org["id"]) == 10**9 - spent
        assert key_usage(admin, key["id"])["requests"] == 20 + served


def test_balance_change_reaches_every_worker(gw2: Gateway) -> None:
    with admin_client(gw2) as admin:
        org = new_org(admin, topup="0.000001")
        key = new_key(admin, org["id"])
        time.sleep(1.0)
        for _ in range(10):
            with pytest.raises(openai.RateLimitError) as info:
                chat(gw2, key["key"])
            assert info.value.code == "insufficient_quota"
        admin.post(f"/organizations/{org['id']}/topup", json={"amount_usd": "1"})
        time.sleep(1.0)
        for _ in range(20):  # new connections: both workers see the new balance
            assert chat(gw2, key["key"]).usage.total_tokens == 17
        deadline = time.monotonic() + 1.5
        while balance_nanos(admin, org["id"]) != 10**9 + 1000 - 20 * standin_price():
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_concurrent_requests_on_two_workers_never_overspend(gw2: Gateway) -> None:
    max_tokens = 5  # the stand-in's whole answer: the hold stays under two answers' cost
    worst = price_nanos(hello_bytes_bound(), max_tokens)
    assert 2 * standin_price() > worst  # two settled requests cost more than one hold
    with admin_client(gw2) as admin:
        org = new_org(admin, topup=str(Decimal(worst) / NANOS))  # exactly one worst case, no overdraft
        key = new_key(admin, org["id"])
        time.sleep(1.0)
        statuses: list[int] = []

        def one() -> None:
            with httpx.Client(timeout=30) as http:  # a connection each: the requests spread over both workers
                resp = http.post(gw2.base_url + "/chat/completions",
                                 json={"model": "sim-slow", "messages": HELLO, "max_tokens": max_tokens},
                                 headers={"Authorization": f"Bearer {key['key']}"})
                statuses.append(resp.status_code)

        threads = [threading.Thread(target=one) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(1.0)
        # Holds are shared through Redis: one worst case fits, so exactly one request runs.
        assert statuses.count(200) == 1, statuses
        assert statuses.count(429) == 7, statuses
        assert balance_nanos(admin, org["id"]) >= 0, statuses


def test_price_change_applies_within_a_second(gw: Gateway, admin: httpx.Client) -> None:
    org = new_org(admin, topup="1", price_multiplier="1")
    key = new_key(admin, org["id"])
    wait_usable(gw, key["key"])
    raw = gw.client(key["key"]).chat.completions.with_raw_response.create(
        model="gpt-5.2", messages=HELLO, max_tokens=MAX_TOKENS)
    assert nanos_of(raw.headers["x-switchyard-cost-usd"]) == standin_price("1")

    resp = admin.patch(f"/organizations/{org['id']}", json={"price_multiplier": "0.5"})
    assert resp.status_code == 200 and resp.json()["price_multiplier"] == "0.5"
    time.sleep(1.0)
    costs = []
    for _ in range(3):
        raw = gw.client(key["key"]).chat.completions.with_raw_response.create(
        model="gpt-5.2", messages=HELLO, max_tokens=MAX_TOKENS)
        costs.append(nanos_of(raw.headers["x-switchyard-cost-usd"]))
        assert nanos_of(raw.parse().usage.cost) == costs[-1]
    assert costs == [standin_price("0.5")] * 3
    assert balance_nanos(admin, org["id"]) == 10**9 - standin_price("1") - 3 * standin_price("0.5")

    # A top-up after the money ran out takes effect as quickly.
    poor = new_org(admin, topup="0.000001")
    poor_key = new_key(admin, poor["id"])
    wait_usable(gw, poor_key["key"])
    with pytest.raises(openai.RateLimitError):
        chat(gw, poor_key["key"])
    admin.post(f"/organizations/{poor['id']}/topup", json={"amount_usd": "1"})
    time.sleep(1.0)
    assert chat(gw, poor_key["key"]).usage.total_tokens == 17


def test_expired_key_is_refused(gw: Gateway, admin: httpx.Client) -> None:
    org = new_org(admin, topup="1")
    expires = int(time.time()) + 3
    key = new_key(admin, org["id"], expires_at=expires)
    assert key["expires_at"] == expires
    wait_usable(gw, key["key"])
    assert chat(gw, key["key"]).usage.total_tokens == 17
    time.sleep(max(0.0, expires - time.time()) + 0.2)
    with pytest.raises(openai.AuthenticationError):
        chat(gw, key["key"])
    already = new_key(admin, org["id"], expires_at=int(time.time()) - 60)
    time.sleep(0.6)
    with pytest.raises(openai.AuthenticationError):
        gw.client(already["key"]).models.list()
    assert key_usage(admin, key["id"])["requests"] == 1


# ---------------------------------------------------------------- isolation


def test_isolation_between_organisations(gw: Gateway, admin: httpx.Client) -> None:
    org_a = new_org(admin, topup="1")
    org_b = new_org(admin, topup="2")
    key_a = new_key(admin, org_a["id"])
    key_a2 = new_key(admin, org_a["id"])
    key_b = new_key(admin, org_b["id"])
    for k in (key_a, key_a2, key_b):
        wait_usable(gw, k["key"])
    for _ in range(3):
        chat(gw, key_a["key"])
    chat(gw, key_a2["key"])
    chat(gw, key_b["key"])

    http = httpx.Client(base_url=gw.root, timeout=30, headers={"Authorization": f"Bearer {key_a['key']}"})
    with http:
        own = http.get("/v1/usage")
        assert own.status_code == 200
        rows = own.json()["data"]
        assert sum(r["requests"] for r in rows) == 3
        assert sum(r["cost_nanos"] for r in rows) == 3 * standin_price()
        # Asking for someone else's rows changes nothing: the key reads its own usage only.
        for params in ({"key": key_b["id"]}, {"org": org_b["id"]}, {"key": key_a2["id"]}):
            resp = http.get("/v1/usage", params=params)
            assert resp.status_code == 200 and resp.json()["data"] == rows
        by_model = http.get("/v1/usage", params={"group_by": "model"}).json()["data"]
        assert [(r["model"], r["requests"]) for r in by_model] == [("gpt-5.2", 3)]
        assert all("key_id" not in r and "org_id" not in r for r in by_model)
        assert http.get("/v1/usage", params={"group_by": "key"}).status_code == 400
        # No admin API for an organisation's key, whatever it asks for.
        for method, path in (("GET", "/admin/v1/organizations"), ("GET", f"/admin/v1/organizations/{org_b['id']}/balance"),
                             ("GET", "/admin/v1/usage"), ("GET", f"/admin/v1/keys/{key_b['id']}"),
                             ("DELETE", f"/admin/v1/keys/{key_b['id']}"),
                             ("POST", f"/admin/v1/organizations/{org_a['id']}/topup")):
            resp = http.request(method, path, json={"amount_usd": "5"} if method == "POST" else None)
            assert resp.status_code == 403, (method, path, resp.text)
            assert resp.json()["error"]["type"] == "permission_error"
    sdk_on_admin = openai.OpenAI(base_url=gw.root + "/admin/v1", api_key=key_a["key"], max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        sdk_on_admin.get("/organizations", cast_to=object)

    assert balance_nanos(admin, org_a["id"]) == 10**9 - 4 * standin_price()
    assert balance_nanos(admin, org_b["id"]) == 2 * 10**9 - standin_price()
    assert admin.get(f"/keys/{key_b['id']}").json()["revoked_at"] is None
    # B still works after all of A's attempts.
    assert chat(gw, key_b["key"]).usage.total_tokens == 17


# ---------------------------------------------------------------- usage API and live events


def test_usage_api_aggregates_exactly(gw: Gateway, admin: httpx.Client) -> None:
    org = new_org(admin, topup="1", price_multiplier="0.7")
    k1 = new_key(admin, org["id"])
    k2 = new_key(admin, org["id"])
    for k in (k1, k2):
        wait_usable(gw, k["key"])
    plan = [(k1, "gpt-5.2"), (k1, "gpt-5.2"), (k1, "sim-tools"), (k2, "gpt-5.2"), (k2, "sim-tools", True)]
    expected: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for key, model, *stream in plan:
        if stream:
            list(chat(gw, key["key"], model=model, stream=True))
        else:
            chat(gw, key["key"], model=model)
        e = expected[(key["id"], model)]
        e["requests"] += 1
        e["input_tokens"] += 12
        e["output_tokens"] += 5
        e["cost_nanos"] += standin_price("0.7")

    resp = admin.get("/usage", params={"org": org["id"], "group_by": "key,model", "bucket": "hour"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["group_by"] == ["key", "model"] and body["bucket"] == "hour"
    got: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in body["data"]:
        assert row["bucket_start"] % 3600 == 0
        assert nanos_of(row["cost_usd"]) == row["cost_nanos"]
        for m in ("requests", "input_tokens", "output_tokens", "cost_nanos"):
            got[(row["key_id"], row["model"])][m] += row[m]
    assert {k: dict(v) for k, v in got.items()} == {k: dict(v) for k, v in expected.items()}

    total = admin.get("/usage", params={"org": org["id"]}).json()["data"]
    assert total[0]["requests"] == len(plan)
    assert total[0]["cost_nanos"] == len(plan) * standin_price("0.7") == 10**9 - balance_nanos(admin, org["id"])
    assert admin.get("/usage", params={"group_by": "colour"}).status_code == 400
    assert admin.get("/usage", params={"bucket": "fortnight"}).status_code == 400


def test_usage_events_stream(gw: Gateway, admin: httpx.Client) -> None:
    org = new_org(admin, topup="1")
    key = new_key(admin, org["id"])
    wait_usable(gw, key["key"])
    events: list[dict[str, Any]] = []
    connected = threading.Event()
    done = threading.Event()
    wanted = 3

    def listen() -> None:
        try:
            with httpx.Client(timeout=httpx.Timeout(30, read=20)) as http:
                with http.stream("GET", gw.root + "/admin/v1/usage/events", params={"org": org["id"]},
                                 headers=ADMIN_HEADERS) as resp:
                    assert resp.status_code == 200
                    assert resp.headers["content-type"].startswith("text/event-stream")
                    for line in resp.iter_lines():
                        if line.startswith(":"):
                            connected.set()
                        elif line.startswith("data: "):
                            events.append(json.loads(line[6:]))
                            if len(events) >= wanted:
                                return
        finally:
            connected.set()
            done.set()

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert connected.wait(10)
    # Another organisation's traffic is not in this org's feed.
    other = new_org(admin, topup="1")
    other_key = new_key(admin, other["id"])
    wait_usable(gw, other_key["key"])
    chat(gw, other_key["key"])

    ids = []
    raw = gw.client(key["key"]).chat.completions.with_raw_response.create(
        model="gpt-5.2", messages=HELLO, max_tokens=MAX_TOKENS)
    ids.append(raw.headers["x-request-id"])
    with gw.client(key["key"]).chat.completions.with_streaming_response.create(
            model="gpt-5.2", messages=HELLO, stream=True, max_tokens=MAX_TOKENS) as streamed:
        ids.append(streamed.headers["x-request-id"])
        list(streamed.parse())
    raw = gw.client(key["key"]).chat.completions.with_raw_response.create(
        model="sim-tools", messages=HELLO, max_tokens=MAX_TOKENS)
    ids.append(raw.headers["x-request-id"])
    assert done.wait(10), f"only {len(events)} events arrived"
    assert [e["request_id"] for e in events] == ids
    for e, stream in zip(events, (False, True, False), strict=True):
        assert e["type"] == "request.settled"
        assert e["org_id"] == org["id"] and e["key_id"] == key["id"]
        assert e["cost_nanos"] == standin_price() and nanos_of(e["cost_usd"]) == standin_price()
        assert e["input_tokens"] == 12 and e["output_tokens"] == 5
        assert e["status"] == "completed" and e["stream"] is stream
    assert [e["model"] for e in events] == ["gpt-5.2", "gpt-5.2", "sim-tools"]


def test_usage_events_need_the_master_key(gw: Gateway, admin: httpx.Client) -> None:
    org = new_org(admin)
    key = new_key(admin, org["id"])
    wait_usable(gw, key["key"])
    with httpx.Client(timeout=10) as http:
        for auth in (f"Bearer {key['key']}", f"Bearer {USER_KEY}"):
            resp = http.get(gw.root + "/admin/v1/usage/events", headers={"Authorization": auth})
            assert resp.status_code == 403
        assert http.get(gw.root + "/admin/v1/usage/events").status_code == 401


# ---------------------------------------------------------------- bad admin input


def test_admin_rejects_bad_input_without_side_effects(gw: Gateway, admin: httpx.Client) -> None:
    org = new_org(admin, topup="1")
    other = new_org(admin)
    key = new_key(admin, org["id"], allowed_models=["gpt-5.2"])
    oid, kid = org["id"], key["id"]
    cases: list[tuple[str, str, Any, int]] = [
        ("POST", f"/organizations/{oid}/topup", {"amount_usd": "Infinity"}, 400),
        ("POST", f"/organizations/{oid}/topup", {"amount_usd": "NaN"}, 400),
        ("POST", f"/organizations/{oid}/topup", {"amount_usd": "sNaN"}, 400),
        ("POST", f"/organizations/{oid}/topup", {"amount_usd": "1e30"}, 400),
        ("POST", f"/organizations/{oid}/topup", {"amount_usd": "9e999999"}, 400),
        ("POST", f"/organizations/{oid}/topup", {"amount_usd": 1.5}, 400),
        ("POST", f"/organizations/{oid}/topup", {"amount_usd": "0.0000000001"}, 400),
        ("POST", f"/organizations/{oid}/topup", {"amount_usd": "-1"}, 400),
        ("POST", f"/organizations/{oid}/topup", {}, 400),
        ("POST", f"/organizations/{oid}/adjustments", {"amount_usd": "-1", "kind": "settle"}, 400),
        ("POST", "/organizations", {"name": "bad-multiplier", "price_multiplier": "NaN"}, 400),
        ("POST", "/organizations", {"name": "bad-multiplier", "price_multiplier": "sNaN"}, 400),
        ("POST", "/organizations", {"name": "bad-multiplier", "price_multiplier": "-0.5"}, 400),
        ("POST", "/organizations", {"name": "bad-tier", "tier": ["tier-1"]}, 400),
        ("POST", "/organizations", {"name": "bad-tier", "tier": "tier-9"}, 400),
        ("POST", "/organizations", {"name": "bad-prepaid", "prepaid": "no"}, 400),
        ("POST", "/organizations", {"name": other["name"]}, 409),
        ("PATCH", f"/organizations/{oid}", {"name": other["name"]}, 409),
        ("PATCH", f"/organizations/{oid}", {"price_multiplier": "Infinity"}, 400),
        ("PATCH", f"/organizations/{oid}", {"prepaid": "false"}, 400),
        ("GET", f"/organizations/{oid}/ledger?limit=abc", None, 400),
        ("GET", f"/organizations/{oid}/ledger?limit=-5", None, 400),
        ("GET", f"/organizations/{oid}/ledger?after=x", None, 400),
        ("PATCH", f"/keys/{kid}", {"allowed_models": "gpt-5.2"}, 400),
        ("PATCH", f"/keys/{kid}", {"allowed_models": [1, 2]}, 400),
        ("PATCH", f"/keys/{kid}", {"budget_usd": "Infinity"}, 400),
        ("PATCH", f"/keys/{kid}", {"rpm_limit": -1}, 400),
        ("POST", "/keys", {"org_id": oid, "budget_usd": 1.5}, 400),
        ("POST", "/keys", {"org_id": oid, "allowed_models": "gpt-5.2"}, 400),
        ("POST", "/keys", {"org_id": "org_nope"}, 404),
        ("GET", "/usage?start=abc", None, 400),
    ]
    for method, path, body, status in cases:
        resp = admin.request(method, path, json=body)
        assert resp.status_code == status, (method, path, body, resp.status_code, resp.text)
        err = resp.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert balance_nanos(admin, oid) == 10**9
    assert [e["kind"] for e in admin.get(f"/organizations/{oid}/ledger").json()["data"]] == ["topup"]
    after = admin.get(f"/organizations/{oid}").json()
    assert (after["name"], after["price_multiplier"], after["prepaid"]) == (org["name"], "1", True)
    assert admin.get(f"/keys/{kid}").json()["allowed_models"] == ["gpt-5.2"]
    assert admin.get(f"/organizations/{oid}/ledger", params={"limit": 1}).json()["has_more"] is False
    wait_usable(gw, key["key"])
    assert chat(gw, key["key"]).usage.total_tokens == 17


# ---------------------------------------------------------------- secrets (keep last: reads the logs of all of the above)


def test_no_secret_in_any_log(gw: Gateway) -> None:
    # A wrong key that looks real is not echoed either.
    bogus = "sk-sy-live-" + "Q" * 40
    with pytest.raises(openai.AuthenticationError) as info:
        gw.client(bogus).models.list()
    assert bogus not in info.value.message
    CREATED_KEYS.append(bogus)
    time.sleep(0.3)  # let log lines flush
    assert len(CREATED_KEYS) > 10
    assert STARTED
    for g in STARTED:
        text = g.logs()
        assert text.strip(), "the server logged nothing at all"
        for secret in [*CREATED_KEYS, MASTER_KEY, UPSTREAM_KEY, USER_KEY]:
            assert secret not in text, f"a secret appears in {g.log_path}"
        # Not even the unguessable middle part of a key.
        for secret in CREATED_KEYS:
            assert secret[12:-6] not in text
        assert Path(g.log_path).exists()
