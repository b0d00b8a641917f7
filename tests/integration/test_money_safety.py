"""Money safety against greedy clients and broken upstreams: `n` is held and billed per choice,
no bill exceeds its hold, missing usage is counted, and no request outlives its client or deadline."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from switchyard.metering.tokens import count_prompt_tokens, count_text
from switchyard.wire.chat import parse_chat_request
from tests.conftest import Admin, Gateway, start_gateway
from tests.standins.misbehaving_upstream import IGNORED_LIMIT_TOKENS, INTERNAL_ID, TEXT, MisbehavingUpstream

IN_PRICE, OUT_PRICE = Decimal("1.75"), Decimal("14")  # gpt-5.2, USD per 1M tokens
HELLO = [{"role": "user", "content": "Hello"}]
# Admission's bound on "Hello" at gpt-5.2: 5 bytes + OpenAI framing (3 + 3) + prompt_overhead 16.
HELLO_INPUT_BOUND = 5 + 6 + 16


def nanos(input_tokens: int, output_tokens: int) -> int:
    exact = (IN_PRICE * input_tokens + OUT_PRICE * output_tokens) * 1000  # nano-dollars
    return int((2 * exact + 1) // 2)


def mis_config(mis: MisbehavingUpstream) -> dict[str, Any]:
    def model(behaviour: str, **extra: Any) -> dict[str, Any]:
        dep = {"provider": "openai", "base_url": mis.base_url, "model": behaviour, "catalog": "gpt-5.2",
               "timeouts": {"connect": 2, "read": 30}, "retries": 0, **extra}
        return {"deployments": [dep]}

    behaviours = ["n-choices", "huge-usage", "no-usage", "zero-usage", "ignore-limit", "internal-id", "trickle"]
    models = {f"mis-{b}": model(b) for b in behaviours}
    models["mis-deadline"] = model("trickle", timeouts={"connect": 2, "read": 30, "total": 2})
    models["mis-deadline-stream"] = model("trickle-stream", timeouts={"connect": 2, "read": 30, "total": 2})
    models["mis-trickle-stream"] = model("trickle-stream")
    models["mis-huge-body"] = model("huge-body", max_response_bytes=1024 * 1024)
    models["mis-huge-stream"] = model("huge-stream", max_stream_bytes=1024 * 1024)
    return {"models": models}


@pytest.fixture(scope="module")
def mis() -> Iterator[MisbehavingUpstream]:
    stand_in = MisbehavingUpstream(trickle_seconds=0.5).start()
    yield stand_in
    stand_in.stop()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, mis: MisbehavingUpstream) -> Iterator[Gateway]:
    gateway = start_gateway(tmp_path_factory.mktemp("money-safety"), config=mis_config(mis))
    yield gateway
    gateway.stop()




def org_with_key(gw: Gateway, name: str, balance: str = "10", **key_fields: Any) -> tuple[Admin, dict[str, Any], str]:
    admin = Admin(gw)
    org = admin.org(name, tier="unlimited")
    admin.topup(org["id"], balance)
    return admin, org, admin.key(org["id"], **key_fields)


# ---- 1. n counts everywhere money is concerned ---------------------------------------------


def test_n_choices_are_held_for_every_choice(gw: Gateway, mis: MisbehavingUpstream) -> None:
    _, _, key = org_with_key(gw, "n-hold", budget_usd="0.001")
    client = gw.client(key)
    # 128 choices of up to 20 tokens may cost $0.0358 at gpt-5.2's output price: far past the budget,
    # though one choice of 20 tokens ($0.00033) would fit.
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="mis-n-choices", messages=HELLO, n=128, max_tokens=20)
    assert refused.value.code == "insufficient_quota"
    # Two choices fit, and both are billed.
    raw = client.chat.completions.with_raw_response.create(model="mis-n-choices", messages=HELLO, n=2, max_tokens=20)
    reply = raw.parse()
    assert len(reply.choices) == 2 and reply.usage.completion_tokens == 40
    assert Decimal(raw.headers["x-switchyard-cost-usd"]) == Decimal(nanos(20, 40)) / 10**9


def test_concurrent_n_requests_never_overspend(gw: Gateway) -> None:
    admin, org, key = org_with_key(gw, "n-race", budget_usd="0.001")
    # Each request holds 4 x 5 output tokens (and its prompt bound): at most three fit the budget.
    body = {"model": "mis-n-choices", "messages": HELLO, "n": 4, "max_tokens": 5}

    async def fire() -> list[int]:
        async with httpx.AsyncClient(base_url=gw.base_url, timeout=60, headers={"Authorization": f"Bearer {key}"},
                                     limits=httpx.Limits(max_connections=100)) as http:
            return [r.status_code for r in await asyncio.gather(*(http.post("/chat/completions", json=body) for _ in range(60)))]

    statuses = asyncio.run(fire())
    assert set(statuses) <= {200, 429} and statuses.count(200) >= 1
    spent = next(k for k in admin.call("GET", "/keys", params={"org": org["id"]})["data"])["spent_nanos"]
    assert spent <= 1_000_000  # the budget (no overdraft)
    assert spent == statuses.count(200) * nanos(20, 20)  # each answer billed once, for all 4 choices
    assert statuses.count(200) <= 3


def test_estimate_explain_and_rate_limits_count_every_choice(gw: Gateway, mis: MisbehavingUpstream) -> None:
    _, _, key = org_with_key(gw, "n-count", tpm_limit=100_000)
    http = httpx.Client(base_url=gw.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
    est = http.post("/cost/estimate", json={"model": "mis-n-choices", "messages": HELLO, "n": 4, "max_tokens": 100}).json()
    assert est["choices"] == 4 and est["max_output_tokens"] == 100
    assert est["cost"]["max_nanos"] == nanos(HELLO_INPUT_BOUND, 400)  # every choice, at the prompt's bound

    resp = http.post("/chat/completions", json={"model": "mis-n-choices", "messages": HELLO, "n": 4, "max_tokens": 100})
    assert resp.status_code == 200
    # Admission counted the prompt estimate (11 bytes / 4, rounded up) and 4 x 100 output tokens.
    assert resp.headers["x-ratelimit-remaining-tokens"] == str(100_000 - (3 + 400))

    body_file = gw.data_dir.parent / "n4.json"
    body_file.write_text(json.dumps({"messages": HELLO, "n": 4, "max_completion_tokens": 100}))
    out = subprocess.run(
        [sys.executable, "-m", "switchyard", "routes", "explain", "--model", "mis-n-choices", "--file", str(body_file), "--json"],
        capture_output=True, text=True, env={**_cli_env(gw)}, check=True)
    explained = json.loads(out.stdout)
    assert explained["choices"] == 4 and explained["expected_output_tokens"] == 400
    assert explained["deployments"][0]["worst_case_output_tokens"] == 400


def _cli_env(gw: Gateway) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    env.update(SWITCHYARD_CONFIG=str(gw.data_dir.parent / "switchyard.yaml"), SWITCHYARD_DATA_DIR=str(gw.data_dir))
    return env


# ---- 2. a bill never exceeds what was admitted ---------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_reporting_millions_of_tokens_is_billed_at_the_bound(gw: Gateway, stream: bool) -> None:
    admin, org, key = org_with_key(gw, f"huge-{stream}", balance="1")
    client = gw.client(key)
    if stream:
        raw = client.chat.completions.with_raw_response.create(
            model="mis-huge-usage", messages=HELLO, max_tokens=20, stream=True, stream_options={"include_usage": True})
        chunks = list(raw.parse())
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == TEXT
        request_id = raw.headers["x-request-id"]
        cost = chunks[-1].usage.model_extra["cost"]
    else:
        raw = client.chat.completions.with_raw_response.create(model="mis-huge-usage", messages=HELLO, max_tokens=20)
        reply = raw.parse()
        assert reply.choices[0].message.content == TEXT  # the answer is still delivered
        request_id = raw.headers["x-request-id"]
        cost = reply.usage.model_extra["cost"]
    billed = nanos(HELLO_INPUT_BOUND, 20)  # what admission reserved: nothing more
    assert Decimal(str(cost)) == Decimal(billed) / 10**9
    balance = admin.balance(org["id"])
    assert balance["balance_nanos"] == 10**9 - billed and balance["consistent"]
    row = gw.usage_record(request_id)
    assert (row["input_tokens"], row["output_tokens"], row["cost_nanos"]) == (HELLO_INPUT_BOUND, 20, billed)
    assert "input 10000000 > bound" in row["anomaly"] and "output 10000000 > bound 20" in row["anomaly"]


def test_a_reservation_cap_lets_a_small_balance_call_without_max_tokens(gw: Gateway, mis: MisbehavingUpstream) -> None:
    admin, org, key = org_with_key(gw, "reserve-cap", balance="0.001")
    client = gw.client(key)
    with pytest.raises(openai.RateLimitError) as refused:  # the model's 128K max output would cost $1.79
        client.chat.completions.create(model="mis-ignore-limit", messages=HELLO)
    assert refused.value.code == "insufficient_quota"

    admin.call("PATCH", f"/organizations/{org['id']}", json={"max_reserve_tokens": 50})
    raw = client.chat.completions.with_raw_response.create(model="mis-ignore-limit", messages=HELLO)
    assert raw.parse().usage.completion_tokens == IGNORED_LIMIT_TOKENS  # what the upstream claims
    sent = mis.received[-1]
    assert sent["max_tokens"] == 50 and sent["max_completion_tokens"] == 50  # the cap reached the upstream
    row = gw.usage_record(raw.headers["x-request-id"])
    assert row["output_tokens"] == 50 and row["cost_nanos"] == nanos(20, 50)  # billed no more than reserved

    key_capped = admin.key(org["id"], max_reserve_tokens=10)  # a key's cap overrides its organisation's
    gw.client(key_capped).chat.completions.create(model="mis-ignore-limit", messages=HELLO)
    assert mis.received[-1]["max_completion_tokens"] == 10


# ---- 3. missing usage is counted, not zeroed -----------------------------------------------


@pytest.mark.parametrize("behaviour", ["no-usage", "zero-usage"])
def test_an_answer_without_usage_is_billed_from_our_count(gw: Gateway, behaviour: str) -> None:
    _, _, key = org_with_key(gw, f"count-{behaviour}")
    raw = gw.client(key).chat.completions.with_raw_response.create(model=f"mis-{behaviour}", messages=HELLO, max_tokens=50)
    reply = raw.parse()
    prompt = count_prompt_tokens(parse_chat_request({"model": "m", "messages": HELLO}))
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (prompt, count_text(TEXT))
    row = gw.usage_record(raw.headers["x-request-id"])
    assert row["usage_source"] == "counted"
    assert row["cost_nanos"] == nanos(prompt, count_text(TEXT)) > 0


def test_a_stream_without_usage_gets_our_count_in_its_usage_chunk(gw: Gateway) -> None:
    _, _, key = org_with_key(gw, "count-stream")
    chunks = list(gw.client(key).chat.completions.create(
        model="mis-no-usage", messages=HELLO, max_tokens=50, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].usage.completion_tokens == count_text(TEXT)
    assert chunks[-1].usage.model_extra["cost"] > 0


# ---- 4. no request outlives its client or its deadline -------------------------------------


def test_a_client_that_leaves_cancels_the_upstream_call_and_frees_its_hold(gw: Gateway, mis: MisbehavingUpstream) -> None:
    admin, org, key = org_with_key(gw, "leaver", balance="5")
    closed_before = len(mis.closed)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(gw.base_url + "/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=1.5,
                   json={"model": "mis-trickle", "messages": HELLO, "max_tokens": 100})
    # The upstream connection is dropped and the money freed, without waiting for the upstream.
    deadline = time.monotonic() + 20
    while len(mis.closed) == closed_before or admin.balance(org["id"])["held_nanos"] != 0:
        assert time.monotonic() < deadline, "the upstream call outlived its client"
        time.sleep(0.1)
    assert admin.balance(org["id"])["balance_nanos"] == 5 * 10**9  # nothing billed: nothing was answered
    cancelled = _rows_of_org(gw, org["id"])
    assert [(r["status"], r["http_status"], r["cost_nanos"]) for r in cancelled] == [("cancelled", 499, 0)]


def test_a_client_that_leaves_mid_stream_stops_the_upstream_and_is_billed_for_what_it_got(
        gw: Gateway, mis: MisbehavingUpstream) -> None:
    admin, org, key = org_with_key(gw, "stream-leaver", balance="5")
    closed_before = len(mis.closed)
    got: list[str] = []
    with httpx.stream("POST", gw.base_url + "/chat/completions", headers={"Authorization": f"Bearer {key}"},
                      json={"model": "mis-trickle-stream", "messages": HELLO, "max_tokens": 100, "stream": True},
                      timeout=30) as answer:
        assert answer.status_code == 200
        for line in answer.iter_lines():
            if "tick" in line:
                got.append(line)
                if len(got) == 2:
                    break  # the client goes away with the stream still running
    # The gateway notices at once: the upstream connection is dropped, the hold given back, and
    # what was delivered billed ("cancelled": the client ended it).
    deadline = time.monotonic() + 20
    while len(mis.closed) == closed_before or admin.balance(org["id"])["held_nanos"] != 0:
        assert time.monotonic() < deadline, "the upstream stream outlived its client"
        time.sleep(0.1)
    (row,) = _rows_of_org(gw, org["id"])
    assert row["status"] == "cancelled" and row["stream"] and row["output_tokens"] >= 2
    assert admin.balance(org["id"])["balance_nanos"] == 5 * 10**9 - row["cost_nanos"] and row["cost_nanos"] > 0


def _rows_of_org(gw: Gateway, org_id: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 30
    while True:
        with sqlite3.connect(gw.data_dir / "switchyard.db") as db:
            db.row_factory = sqlite3.Row
            rows = [dict(r) for r in db.execute("SELECT * FROM usage_records WHERE org_id = ?", (org_id,))]
        if rows or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def test_an_upstream_call_past_its_total_deadline_fails_cleanly(gw: Gateway) -> None:
    _, org, key = org_with_key(gw, "deadline")
    with pytest.raises(openai.APIStatusError) as failed:
        gw.client(key, timeout=60).chat.completions.create(model="mis-deadline", messages=HELLO, max_tokens=10)
    assert failed.value.status_code == 504 and failed.value.code == "upstream_timeout"
    # A stream past its deadline ends with an error event, billed for what it delivered.
    with pytest.raises(openai.APIError) as broken:
        for _ in gw.client(key, timeout=60).chat.completions.create(
                model="mis-deadline-stream", messages=HELLO, max_tokens=10, stream=True):
            pass
    assert "timed out" in str(broken.value)
    statuses = sorted(r["status"] for r in _rows_of_org(gw, org["id"]))
    assert statuses == ["failed", "partial"]


def test_the_local_model_stops_generating_when_its_client_leaves(local_gateway: Gateway) -> None:
    prompt = [{"role": "user", "content": "Write a very long story about a dragon, at least two thousand words."}]
    seen = len(local_gateway.logs())  # the gateway is shared: only this request's lines count
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(local_gateway.base_url + "/chat/completions", timeout=1.0,
                   headers={"Authorization": "Bearer sk-sy-test-user"},
                   json={"model": "default", "messages": prompt, "max_tokens": 1500, "temperature": 1.0, "seed": 7})
    deadline = time.monotonic() + 60
    while "client went away" not in local_gateway.logs()[seen:]:
        assert time.monotonic() < deadline, "the generation went on for a client that had left"
        time.sleep(0.1)
    line = next(line for line in local_gateway.logs()[seen:].splitlines() if "client went away" in line)
    request_id = line.split("generation ")[1].split()[0]
    row = local_gateway.usage_record(request_id)
    assert row["status"] == "cancelled" and row["output_tokens"] == 0
    # The one model instance is free again: the next request is answered.
    reply = local_gateway.client().chat.completions.create(model="default", messages=HELLO, max_tokens=5)
    assert reply.choices[0].finish_reason in ("stop", "length")


# ---- 9. upstream answers are bounded -------------------------------------------------------


def test_an_oversized_answer_fails_and_bills_nothing(gw: Gateway) -> None:
    admin, org, key = org_with_key(gw, "huge-body", balance="1")
    with pytest.raises(openai.APIStatusError) as failed:
        gw.client(key).chat.completions.create(model="mis-huge-body", messages=HELLO, max_tokens=10)
    assert failed.value.status_code == 502 and failed.value.code == "upstream_response_too_large"
    assert admin.balance(org["id"])["balance_nanos"] == 10**9


def test_an_oversized_stream_is_cut_and_billed_for_what_arrived(gw: Gateway) -> None:
    admin, org, key = org_with_key(gw, "huge-stream", balance="1")
    received = 0
    with pytest.raises(openai.APIError) as broken:
        for chunk in gw.client(key).chat.completions.create(model="mis-huge-stream", messages=HELLO, max_tokens=10,
                                                            stream=True):
            received += len(chunk.choices[0].delta.content or "") if chunk.choices else 0
    assert "larger than it is allowed" in str(broken.value)
    assert 0 < received <= 1024 * 1024
    rows = _rows_of_org(gw, org["id"])
    assert [r["status"] for r in rows] == ["partial"] and rows[0]["error_code"] == "upstream_response_too_large"
    assert admin.balance(org["id"])["consistent"]


# ---- 11. the model a client sees --------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_answers_name_the_public_model_not_the_upstreams_id(gw: Gateway, stream: bool) -> None:
    client = gw.client()
    if stream:
        models = {c.model for c in client.chat.completions.create(model="mis-internal-id", messages=HELLO, stream=True,
                                                                  stream_options={"include_usage": True})}
    else:
        models = {client.chat.completions.create(model="mis-internal-id", messages=HELLO).model}
    assert models == {"mis-internal-id"} and INTERNAL_ID not in models
