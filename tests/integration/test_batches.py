"""The Batch API end to end: real gateway processes, the official SDK, stops and crashes mid-batch.

The stand-in upstream answers every chat request with 12 prompt and 5 completion tokens; here
its `slow` behaviour (served as `gpt-5.2`) waits 50 ms per request, so a batch of a few hundred
lines runs for a few seconds: long enough to stop or kill the server in the middle of it.
"""

from __future__ import annotations

import io
import os
import re
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai import OpenAI
from openai.types import Batch

from tests.conftest import MASTER_KEY, USER_KEY, Admin, Gateway, start_gateway, upstream_config
from tests.openapi_spec import openapi, schema  # noqa: F401  (openapi is a fixture)
from tests.standins.openai_upstream import StandInUpstream

MODEL = "gpt-5.2"
LOCAL_MODEL = "smollm2-135m-instruct"
CHAT = "/v1/chat/completions"
UPSTREAM_KEY = "sk-upstream-secret"
HELLO = [{"role": "user", "content": "Hello"}]
NANOS = Decimal(10**9)
# gpt-5.2 in the catalog, USD per 1M tokens.
PRICES = {"input": Decimal("1.75"), "cached_input": Decimal("0.175"), "output": Decimal("14")}
FINAL = ("completed", "failed", "expired", "cancelled")


# ---------------------------------------------------------------- helpers


def price_nanos(input_tokens: int, cached: int, output_tokens: int, multiplier: str) -> int:
    usd = ((input_tokens - cached) * PRICES["input"] + cached * PRICES["cached_input"]
           + output_tokens * PRICES["output"]) / Decimal(1_000_000) * Decimal(multiplier)
    return int((usd * NANOS).to_integral_value(rounding=ROUND_HALF_UP))


def nanos_of(usd: Any) -> int:
    value = Decimal(str(usd)) * NANOS
    assert value == value.to_integral_value(), usd
    return int(value)


def chat_line(custom_id: str, model: str = MODEL, **body: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": CHAT,
            "body": {"model": model, "messages": HELLO, **body}}


def upload(client: OpenAI, lines: list[Any], name: str = "batch.jsonl") -> str:
    data = b"".join((raw if isinstance(raw, bytes) else orjson.dumps(raw)) + b"\n" for raw in lines)
    return client.files.create(file=(name, io.BytesIO(data)), purpose="batch").id


def jsonl(client: OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    meta = client.files.retrieve(file_id)
    assert meta.purpose == "batch_output"
    return [orjson.loads(line) for line in client.files.content(file_id).content.splitlines() if line.strip()]


def wait_batch(client: OpenAI, batch_id: str, done: Callable[[Batch], bool], timeout: float = 120) -> Batch:
    """Wait until `done`, for as long as the batch makes progress: `timeout` is how long it may
    go without a line finishing or its status changing (a busy machine is slow, not stuck)."""
    deadline = time.monotonic() + timeout
    last: tuple[Any, ...] | None = None
    while True:
        batch = client.batches.retrieve(batch_id)
        if done(batch):
            return batch
        counts = batch.request_counts
        progress = (batch.status, counts.completed if counts else 0, counts.failed if counts else 0)
        if progress != last:
            last, deadline = progress, time.monotonic() + timeout
        assert time.monotonic() < deadline, f"batch made no progress for {timeout:g}s: {batch}"
        time.sleep(0.05)


def is_final(batch: Batch) -> bool:
    return batch.status in FINAL


def completed_at_least(n: int) -> Callable[[Batch], bool]:
    def check(batch: Batch) -> bool:
        assert batch.status not in FINAL or batch.status == "completed", batch
        return batch.request_counts is not None and batch.request_counts.completed >= n

    return check


def check_batch_object(raw: dict[str, Any], openapi: Any) -> Batch:
    """Exactly the spec's `Batch`: its fields, no others, and valid for the SDK's model too."""
    assert set(raw) == set(schema("Batch")["properties"]), set(raw) ^ set(schema("Batch")["properties"])
    openapi(raw, "Batch", allow_null_optional=True)
    return Batch.model_validate(raw)


def raw_batch(gw: Gateway, key: str, batch_id: str) -> dict[str, Any]:
    resp = httpx.get(f"{gw.base_url}/batches/{batch_id}", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()


def new_org(gw: Gateway, name: str, topup: str = "100") -> tuple[str, str]:
    admin = Admin(gw)
    org = admin.org(name)
    admin.topup(org["id"], topup)
    return org["id"], admin.key(org["id"])


def org_usage(gw: Gateway, org_id: str) -> dict[str, Any]:
    data = Admin(gw).call("GET", "/usage", params={"org": org_id})["data"]
    return data[0] if data else {"requests": 0, "cost_nanos": 0, "input_tokens": 0, "output_tokens": 0}


def check_lines_once(batch: Batch, outputs: list[dict[str, Any]], errors: list[dict[str, Any]],
                     custom_ids: list[str]) -> None:
    """Every custom_id exactly once across both files, and the counts saying the same."""
    seen = Counter(line["custom_id"] for line in outputs + errors)
    assert sorted(seen) == sorted(custom_ids)
    assert set(seen.values()) == {1}
    assert batch.request_counts is not None
    assert batch.request_counts.total == len(custom_ids)
    assert batch.request_counts.completed == len(outputs)
    assert batch.request_counts.failed == len(errors)
    assert len({line["id"] for line in outputs + errors}) == len(outputs + errors)


def check_billed_once(gw: Gateway, org_id: str, outputs: list[dict[str, Any]], start_balance: int) -> int:
    """The org paid exactly the sum of the answered lines' costs, each at half the standard price."""
    total = 0
    for line in outputs:
        assert line["response"]["status_code"] == 200 and line["error"] is None
        assert line["response"]["request_id"].startswith("req_")
        usage = line["response"]["body"]["usage"]
        if "prompt_tokens" in usage:
            inp, out = usage["prompt_tokens"], usage["completion_tokens"]
            cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
        else:
            inp, out = usage["input_tokens"], usage["output_tokens"]
            cached = (usage.get("input_tokens_details") or {}).get("cached_tokens", 0)
        cost = nanos_of(usage["cost"])
        assert cost == price_nanos(inp, cached, out, "0.5")
        assert abs(2 * cost - price_nanos(inp, cached, out, "1")) <= 1  # half the standard price
        total += cost
    usage_row = org_usage(gw, org_id)
    assert usage_row["requests"] == len(outputs)
    assert usage_row["cost_nanos"] == total
    balance = Admin(gw).balance(org_id)
    assert balance["consistent"], balance
    assert start_balance - balance["balance_nanos"] == total
    return total


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def standin() -> Iterator[StandInUpstream]:
    """Our own stand-in: its `slow` behaviour here takes 50 ms (the shared one takes 3 s)."""
    stand_in = StandInUpstream(slow_seconds=0.05).start()
    yield stand_in
    stand_in.stop()


def batch_config(standin: StandInUpstream) -> dict[str, Any]:
    config = upstream_config(standin)
    config["models"][MODEL]["deployments"][0]["model"] = "slow"
    # A batch pool of 3000 tokens a minute: a line asking for 1000 output tokens fits twice.
    config["tiers"] = {"tight-batch": {"rpm": None, "tpm": None, "batch_rpm": None, "batch_tpm": 3000}}
    return config


def start(workdir: Path, standin: StandInUpstream, args: list[str] | None = None, **env: str) -> Gateway:
    return start_gateway(workdir, config=batch_config(standin), env={"STANDIN_KEY": UPSTREAM_KEY, **env}, args=args)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, standin: StandInUpstream) -> Iterator[Gateway]:
    g = start(tmp_path_factory.mktemp("batches-gw"), standin)
    yield g
    g.stop()


# ---------------------------------------------------------------- restarts: exactly once


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_batch_survives_sigterm_and_kill_9(
    tmp_path: Path, standin: StandInUpstream, openapi: Any, backend: str, request: pytest.FixtureRequest,
) -> None:
    env = {"SWITCHYARD_BATCH_CONCURRENCY": "2", "SWITCHYARD_BATCH_LEASE_SECONDS": "3"}
    if backend == "postgres":
        env["SWITCHYARD_DATABASE_URL"] = request.getfixturevalue("pg_url")
    workdir = tmp_path / "restarts"
    gw = start(workdir, standin, **env)
    try:
        org_id, key = new_org(gw, "batch-restarts")
        start_balance = Admin(gw).balance(org_id)["balance_nanos"]
        ids = [f"req-{i:03d}" for i in range(300)]
        client = gw.client(key)
        file_id = upload(client, [chat_line(cid, max_tokens=20) for cid in ids])
        created = client.batches.create(input_file_id=file_id, endpoint=CHAT, completion_window="24h",
                                        metadata={"run": "restarts"})
        assert created.status == "validating"
        assert created.expires_at == created.created_at + 24 * 3600

        # A clean stop in the middle: lines in flight finish, the lease is handed back.
        seen = wait_batch(client, created.id, completed_at_least(60))
        assert seen.request_counts and seen.request_counts.completed < 300
        gw.stop()
        gw = start(workdir, standin, **env)
        client = gw.client(key)
        resumed = client.batches.retrieve(created.id)
        assert resumed.status in ("in_progress", "finalizing", "completed")

        # A crash in the middle: in-flight lines are lost unbilled and run again after the lease runs out.
        seen = wait_batch(client, created.id, completed_at_least(150))
        assert seen.request_counts and seen.request_counts.completed < 300
        gw.proc.kill()
        gw.proc.wait()
        gw = start(workdir, standin, **env)
        client = gw.client(key)
        final = wait_batch(client, created.id, is_final)

        assert final.status == "completed", final
        check_batch_object(raw_batch(gw, key, created.id), openapi)
        assert final.model == MODEL and final.endpoint == CHAT and final.metadata == {"run": "restarts"}
        assert final.in_progress_at and final.finalizing_at and final.completed_at
        assert final.created_at <= final.in_progress_at <= final.finalizing_at <= final.completed_at
        assert final.error_file_id is None and final.errors is None
        outputs, errors = jsonl(client, final.output_file_id), jsonl(client, final.error_file_id)
        check_lines_once(final, outputs, errors, ids)
        assert [line["custom_id"] for line in outputs] == ids  # input order
        assert final.request_counts and final.request_counts.failed == 0
        assert final.usage is not None
        assert (final.usage.input_tokens, final.usage.output_tokens, final.usage.total_tokens) == (
            300 * 12, 300 * 5, 300 * 17)
        assert final.usage.input_tokens_details.cached_tokens == 0
        assert final.usage.output_tokens_details.reasoning_tokens == 0
        for line in outputs:
            assert line["response"]["body"]["object"] == "chat.completion"
            assert nanos_of(line["response"]["body"]["usage"]["cost"]) == price_nanos(12, 0, 5, "1") // 2
        total = check_billed_once(gw, org_id, outputs, start_balance)
        assert total == 300 * price_nanos(12, 0, 5, "0.5")
        ledger = Admin(gw).call("GET", f"/organizations/{org_id}/ledger", params={"limit": 1000})["data"]
        assert sum(1 for e in ledger if e["kind"] == "settle") == 300
        if backend == "sqlite":  # the rows themselves: one usage record per line, at the batch tier
            with sqlite3.connect(gw.data_dir / "switchyard.db") as db:
                tiers = db.execute("SELECT service_tier, count(*) FROM usage_records WHERE org_id = ? "
                                   "GROUP BY service_tier", (org_id,)).fetchall()
                results = db.execute("SELECT count(*), sum(ok), sum(cost_nanos) FROM batch_results "
                                     "WHERE batch_id = ?", (created.id,)).fetchone()
            assert tiers == [("batch", 300)]
            assert results == (300, 300, total)
        assert "lease lost" not in gw.logs()
    finally:
        gw.stop()


def test_a_crashed_workers_batch_is_taken_over_by_another(tmp_path: Path, standin: StandInUpstream) -> None:
    """Two workers: the one running the batch is killed; the other takes over once the lease runs out."""
    gw = start(tmp_path / "workers", standin, args=["--workers", "2"], SWITCHYARD_BATCH_LEASE_SECONDS="2",
               SWITCHYARD_BATCH_CONCURRENCY="2", SWITCHYARD_REDIS_URL="redis://127.0.0.1:6379/0")
    try:
        org_id, key = new_org(gw, "batch-workers")
        time.sleep(1)  # the other worker learns of the new key from the change feed
        start_balance = Admin(gw).balance(org_id)["balance_nanos"]
        client = gw.client(key)
        ids = [f"w{i}" for i in range(200)]
        created = client.batches.create(input_file_id=upload(client, [chat_line(cid) for cid in ids]),
                                        endpoint=CHAT, completion_window="24h")
        wait_batch(client, created.id, completed_at_least(40))
        (owner,) = re.findall(rf"batch {created.id}: claimed by (\S+)", gw.logs_with(f"batch {created.id}: claimed by"))
        os.kill(int(owner.split(":")[1]), signal.SIGKILL)

        client = gw.client(key, max_retries=3)  # a fresh connection: the old one went with the worker
        final = wait_batch(client, created.id, is_final, timeout=60)
        assert final.status == "completed", final
        owners = re.findall(rf"batch {created.id}: claimed by (\S+)", gw.logs())
        assert len(owners) == 2 and owners[1] != owner
        outputs, errors = jsonl(client, final.output_file_id), jsonl(client, final.error_file_id)
        assert errors == []
        check_lines_once(final, outputs, errors, ids)
        check_billed_once(gw, org_id, outputs, start_balance)
    finally:
        gw.stop()


@pytest.mark.local_model
def test_local_model_batch_survives_a_restart(tmp_path: Path, openapi: Any) -> None:
    env = {"SWITCHYARD_BATCH_LEASE_SECONDS": "3"}
    workdir = tmp_path / "local"
    gw = start_gateway(workdir, env=env)
    try:
        client = gw.client()
        assert LOCAL_MODEL in [m.id for m in client.models.list().data]
        org_id, key = new_org(gw, "batch-local", topup="1")
        client = gw.client(key)
        ids = [f"local-{i}" for i in range(200)]
        lines = [{"custom_id": cid, "method": "POST", "url": CHAT, "body": {
            "model": LOCAL_MODEL, "max_tokens": 4, "temperature": 0,
            "messages": [{"role": "user", "content": f"Say the number {i}."}]}} for i, cid in enumerate(ids)]
        created = client.batches.create(input_file_id=upload(client, lines), endpoint=CHAT, completion_window="24h")

        seen = wait_batch(client, created.id, completed_at_least(20), timeout=180)
        assert seen.request_counts and seen.request_counts.completed < 200
        gw.stop()
        gw = start_gateway(workdir, env=env)
        client = gw.client(key)
        final = wait_batch(client, created.id, is_final, timeout=300)

        assert final.status == "completed", final
        check_batch_object(raw_batch(gw, key, created.id), openapi)
        outputs, errors = jsonl(client, final.output_file_id), jsonl(client, final.error_file_id)
        assert errors == []
        check_lines_once(final, outputs, errors, ids)
        for line in outputs:
            body = line["response"]["body"]
            assert body["model"] == LOCAL_MODEL
            assert 0 < body["usage"]["completion_tokens"] <= 4
            assert body["usage"]["cost"] == 0  # the local model is free, at any tier
        # One usage record per line: answered and metered exactly once across the restart.
        usage = org_usage(gw, org_id)
        assert usage["requests"] == 200
        assert final.usage is not None
        assert usage["input_tokens"] == final.usage.input_tokens > 0
        assert usage["output_tokens"] == final.usage.output_tokens > 0
    finally:
        gw.stop()


# ---------------------------------------------------------------- validation


def test_invalid_lines_fail_the_batch_with_an_error_file(gw: Gateway, openapi: Any) -> None:
    client = gw.client()
    good = chat_line("good")
    lines: list[Any] = [
        good,                                                                              # 1
        b"{not json",                                                                      # 2
        {"method": "POST", "url": CHAT, "body": good["body"]},                             # 3 no custom_id
        chat_line("good"),                                                                 # 4 duplicate
        {**chat_line("wrong-url"), "url": "/v1/responses"},                                # 5
        {**chat_line("wrong-method"), "method": "GET"},                                    # 6
        {"custom_id": "no-model", "method": "POST", "url": CHAT, "body": {"messages": HELLO}},  # 7
        chat_line("other-model", model="sim-ok"),                                          # 8
        chat_line("streams", stream=True),                                                 # 9
        {"custom_id": "bad-body", "method": "POST", "url": CHAT, "body": {"model": MODEL, "messages": "hi"}},  # 10
        b"[1, 2]",                                                                         # 11
        chat_line("fine"),                                                                 # 12
    ]
    created = client.batches.create(input_file_id=upload(client, lines), endpoint=CHAT, completion_window="24h")
    final = wait_batch(client, created.id, is_final, timeout=30)
    assert final.status == "failed"
    assert final.failed_at and final.in_progress_at is None and final.output_file_id is None
    check_batch_object(raw_batch(gw, USER_KEY, created.id), openapi)

    assert final.errors is not None and final.errors.object == "list"
    by_line = {e.line: e for e in final.errors.data or []}
    assert sorted(by_line) == list(range(2, 12))
    expect = {2: ("invalid_json_line", None), 3: ("missing_custom_id", "custom_id"),
              4: ("duplicate_custom_id", "custom_id"), 5: ("invalid_url", "url"), 6: ("invalid_method", "method"),
              7: ("missing_model", "body.model"), 8: ("mismatched_model", "body.model"),
              9: ("invalid_stream", "body.stream"), 10: ("invalid_request", "body.messages"),
              11: ("invalid_json_line", None)}
    for number, (code, param) in expect.items():
        assert (by_line[number].code, by_line[number].param) == (code, param), by_line[number]
        assert by_line[number].message
    assert "not valid JSON" in (by_line[2].message or "")
    assert "'good'" in (by_line[4].message or "")
    assert "/v1/chat/completions" in (by_line[5].message or "")
    assert "sim-ok" in (by_line[8].message or "") and MODEL in (by_line[8].message or "")
    assert "messages" in (by_line[10].message or "")

    errors = jsonl(client, final.error_file_id)
    assert len(errors) == 10
    custom_ids = [None, None, "good", "wrong-url", "wrong-method", "no-model", "other-model", "streams",
                  "bad-body", None]
    for number, line, custom_id in zip(range(2, 12), errors, custom_ids, strict=True):
        assert line["id"].startswith("batch_req_")
        assert line["custom_id"] == custom_id
        assert line["response"] is None
        assert line["error"]["code"] == "invalid_request"
        assert line["error"]["message"] == f"line {number}: {by_line[number].message}"
    assert final.request_counts and (final.request_counts.completed, final.request_counts.failed) == (0, 0)


def test_empty_file_and_unknown_model_fail(gw: Gateway) -> None:
    client = gw.client()
    empty = client.batches.create(input_file_id=upload(client, [b"", b"   "]), endpoint=CHAT, completion_window="24h")
    final = wait_batch(client, empty.id, is_final, timeout=30)
    assert final.status == "failed" and final.errors and final.errors.data
    assert final.errors.data[0].code == "empty_file" and final.errors.data[0].line is None

    unknown = client.batches.create(input_file_id=upload(client, [chat_line(f"u{i}", model="no-such-model")
                                                                  for i in range(3)]),
                                    endpoint=CHAT, completion_window="24h")
    final = wait_batch(client, unknown.id, is_final, timeout=30)
    assert final.status == "failed" and final.errors and final.errors.data
    assert [(e.code, e.line, e.param) for e in final.errors.data] == [("model_not_found", 1, "body.model")]


def test_create_refuses_bad_parameters(gw: Gateway) -> None:
    client = gw.client()
    file_id = upload(client, [chat_line("x")])
    with pytest.raises(openai.BadRequestError) as exc:
        client.batches.create(input_file_id=file_id, endpoint="/v1/moderations", completion_window="24h")  # type: ignore[arg-type]
    assert exc.value.param == "endpoint"
    with pytest.raises(openai.BadRequestError) as exc:
        client.batches.create(input_file_id=file_id, endpoint=CHAT, completion_window="48h")  # type: ignore[arg-type]
    assert exc.value.param == "completion_window"
    with pytest.raises(openai.BadRequestError) as exc:
        client.batches.create(input_file_id=file_id, endpoint=CHAT, completion_window="24h",
                              metadata={f"k{i}": "v" for i in range(17)})
    assert exc.value.param == "metadata"
    other = client.files.create(file=("notes.txt", io.BytesIO(b"hello")), purpose="user_data")
    with pytest.raises(openai.BadRequestError) as exc:
        client.batches.create(input_file_id=other.id, endpoint=CHAT, completion_window="24h")
    assert exc.value.param == "input_file_id"
    with pytest.raises(openai.NotFoundError) as exc:
        client.batches.create(input_file_id="file-nope", endpoint=CHAT, completion_window="24h")
    assert exc.value.param == "input_file_id"
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nope")
    for bad in ("0", "101", "x"):
        resp = httpx.get(f"{gw.base_url}/batches", params={"limit": bad}, headers={"Authorization": f"Bearer {USER_KEY}"})
        assert resp.status_code == 400 and resp.json()["error"]["param"] == "limit"


# ---------------------------------------------------------------- failed lines, cancel, isolation


def test_failed_lines_go_to_the_error_file(gw: Gateway) -> None:
    client = gw.client()
    ids = ["bad-0", "bad-1"]
    created = client.batches.create(
        input_file_id=upload(client, [chat_line(cid, model="sim-status-400") for cid in ids]),
        endpoint=CHAT, completion_window="24h")
    final = wait_batch(client, created.id, is_final, timeout=30)
    assert final.status == "completed" and final.output_file_id is None
    errors = jsonl(client, final.error_file_id)
    check_lines_once(final, [], errors, ids)
    for line in errors:
        assert line["error"] is None
        assert line["response"]["status_code"] == 400
        assert line["response"]["request_id"].startswith("req_")
        assert set(line["response"]["body"]["error"]) == {"message", "type", "param", "code"}

    # 5xx lines are retried (with backoff) before they are given up.
    created = client.batches.create(
        input_file_id=upload(client, [chat_line("down", model="sim-status-500")]),
        endpoint=CHAT, completion_window="24h")
    final = wait_batch(client, created.id, is_final, timeout=60)
    (line,) = jsonl(client, final.error_file_id)
    assert line["response"]["status_code"] >= 500
    assert final.completed_at and final.completed_at - final.in_progress_at >= 1  # type: ignore[operator]


def test_rate_limited_lines_wait_instead_of_failing(gw: Gateway) -> None:
    admin = Admin(gw)
    org = admin.org("batch-tight", tier="tight-batch")
    admin.topup(org["id"], "10")
    client = gw.client(admin.key(org["id"]))
    ids = [f"t{i}" for i in range(12)]
    started = time.monotonic()
    created = client.batches.create(input_file_id=upload(client, [chat_line(cid, max_tokens=1000) for cid in ids]),
                                    endpoint=CHAT, completion_window="24h")
    final = wait_batch(client, created.id, is_final, timeout=90)
    assert final.status == "completed" and final.request_counts
    assert (final.request_counts.completed, final.request_counts.failed) == (12, 0)
    assert time.monotonic() - started > 1  # unlimited, 12 lines of 50 ms over 4 slots take 0.15 s
    check_lines_once(final, jsonl(client, final.output_file_id), [], ids)
    # The interactive pool is untouched by batch lines.
    assert client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=1000).choices


def test_lines_after_the_key_is_revoked_fail_unbilled(gw: Gateway) -> None:
    admin = Admin(gw)
    org = admin.org("batch-revoked")
    admin.topup(org["id"], "10")
    start_balance = admin.balance(org["id"])["balance_nanos"]
    made = admin.call("POST", "/keys", json={"org_id": org["id"]})
    client = gw.client(made["key"])
    ids = [f"k{i}" for i in range(300)]
    created = client.batches.create(input_file_id=upload(client, [chat_line(cid) for cid in ids]),
                                    endpoint=CHAT, completion_window="24h")
    wait_batch(client, created.id, completed_at_least(20))
    admin.call("DELETE", f"/keys/{made['id']}")
    other = gw.client(admin.key(org["id"]))  # the org still reads its batch with another key
    final = wait_batch(other, created.id, is_final, timeout=30)
    assert final.status == "completed"
    outputs, errors = jsonl(other, final.output_file_id), jsonl(other, final.error_file_id)
    check_lines_once(final, outputs, errors, ids)
    assert outputs and errors
    for line in errors:
        assert line["response"] is None and line["error"]["code"] == "invalid_api_key"
    check_billed_once(gw, org["id"], outputs, start_balance)


def test_cancel_stops_starting_lines_and_keeps_what_finished(gw: Gateway, openapi: Any) -> None:
    org_id, key = new_org(gw, "batch-cancel")
    start_balance = Admin(gw).balance(org_id)["balance_nanos"]
    client = gw.client(key)
    ids = [f"c{i}" for i in range(300)]
    created = client.batches.create(input_file_id=upload(client, [chat_line(cid) for cid in ids]),
                                    endpoint=CHAT, completion_window="24h")
    wait_batch(client, created.id, completed_at_least(20))
    cancelling = client.batches.cancel(created.id)
    assert cancelling.status in ("cancelling", "cancelled")
    assert cancelling.cancelling_at is not None
    final = wait_batch(client, created.id, is_final, timeout=30)
    assert final.status == "cancelled" and final.cancelled_at is not None
    check_batch_object(raw_batch(gw, key, created.id), openapi)
    outputs = jsonl(client, final.output_file_id)
    assert final.error_file_id is None
    assert final.request_counts is not None
    assert final.request_counts.total == 300
    assert 20 <= final.request_counts.completed == len(outputs) < 300
    assert final.request_counts.failed == 0
    assert len({line["custom_id"] for line in outputs}) == len(outputs)
    check_billed_once(gw, org_id, outputs, start_balance)
    time.sleep(0.5)  # nothing more runs
    assert client.batches.retrieve(created.id).request_counts == final.request_counts
    # Cancelling again is a no-op; a finished batch cannot be cancelled.
    assert client.batches.cancel(created.id).status == "cancelled"
    done = client.batches.create(input_file_id=upload(client, [chat_line("one")]), endpoint=CHAT,
                                 completion_window="24h")
    wait_batch(client, done.id, is_final, timeout=30)
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(done.id)


def test_batches_are_private_to_their_organisation(gw: Gateway, openapi: Any) -> None:
    org_a, key_a = new_org(gw, "batch-org-a")
    _, key_b = new_org(gw, "batch-org-b")
    a, b = gw.client(key_a), gw.client(key_b)
    file_a = upload(a, [chat_line("only")])
    made = [a.batches.create(input_file_id=file_a, endpoint=CHAT, completion_window="24h") for _ in range(3)]
    for batch in made:
        wait_batch(a, batch.id, is_final, timeout=30)

    for batch in made:
        with pytest.raises(openai.NotFoundError) as exc:
            b.batches.retrieve(batch.id)
        assert exc.value.body and exc.value.body["message"]  # type: ignore[index]
        with pytest.raises(openai.NotFoundError):
            b.batches.cancel(batch.id)
    assert b.batches.list().data == []
    with pytest.raises(openai.NotFoundError):  # another org's file is no input file either
        b.batches.create(input_file_id=file_a, endpoint=CHAT, completion_window="24h")
    # Any key of the organisation sees its batches.
    assert gw.client(Admin(gw).key(org_a)).batches.retrieve(made[0].id).id == made[0].id

    # Newest first, cursor pages.
    first = a.batches.list(limit=2)
    assert [x.id for x in first.data] == [made[2].id, made[1].id] and first.has_more
    rest = a.batches.list(limit=2, after=first.data[-1].id)
    assert [x.id for x in rest.data] == [made[0].id] and not rest.has_more
    assert [x.id for x in a.batches.list()] == [m.id for m in reversed(made)]
    page = httpx.get(f"{gw.base_url}/batches", params={"limit": 2},
                     headers={"Authorization": f"Bearer {key_a}"}).json()
    assert page["object"] == "list" and page["first_id"] == made[2].id and page["last_id"] == made[1].id
    for raw in page["data"]:
        check_batch_object(raw, openapi)


# ---------------------------------------------------------------- Responses, expiry


def test_responses_batch(gw: Gateway, openapi: Any) -> None:
    org_id, key = new_org(gw, "batch-responses")
    start_balance = Admin(gw).balance(org_id)["balance_nanos"]
    client = gw.client(key)
    ids = [f"r{i}" for i in range(6)]
    lines = [{"custom_id": cid, "method": "POST", "url": "/v1/responses",
              "body": {"model": MODEL, "input": f"Hello {i}", "max_output_tokens": 64}} for i, cid in enumerate(ids)]
    created = client.batches.create(input_file_id=upload(client, lines), endpoint="/v1/responses",
                                    completion_window="24h")
    final = wait_batch(client, created.id, is_final, timeout=60)
    assert final.status == "completed", final
    assert final.endpoint == "/v1/responses" and final.model == MODEL
    check_batch_object(raw_batch(gw, key, created.id), openapi)
    outputs = jsonl(client, final.output_file_id)
    check_lines_once(final, outputs, jsonl(client, final.error_file_id), ids)
    for line in outputs:
        assert line["response"]["body"]["object"] == "response"
        assert line["response"]["body"]["status"] == "completed"
    check_billed_once(gw, org_id, outputs, start_balance)
    assert final.usage and final.usage.input_tokens == sum(
        line["response"]["body"]["usage"]["input_tokens"] for line in outputs)

    # A Responses line that is not a valid Responses request fails validation.
    bad = [{"custom_id": "x", "method": "POST", "url": "/v1/responses", "body": {"model": MODEL, "input": 3}}]
    failed = client.batches.create(input_file_id=upload(client, bad), endpoint="/v1/responses",
                                   completion_window="24h")
    failed = wait_batch(client, failed.id, is_final, timeout=30)
    assert failed.status == "failed" and failed.errors and failed.errors.data
    assert (failed.errors.data[0].line, failed.errors.data[0].param) == (1, "body.input")


def test_batch_expires_at_the_end_of_its_window(tmp_path: Path, standin: StandInUpstream, openapi: Any) -> None:
    gw = start(tmp_path / "expiry", standin, SWITCHYARD_BATCH_COMPLETION_WINDOW_SECONDS="2")
    try:
        org_id, key = new_org(gw, "batch-expiry")
        start_balance = Admin(gw).balance(org_id)["balance_nanos"]
        client = gw.client(key)
        ids = [f"e{i}" for i in range(400)]  # 400 x 50 ms over 4 slots: 5 s, more than the window
        created = client.batches.create(input_file_id=upload(client, [chat_line(cid) for cid in ids]),
                                        endpoint=CHAT, completion_window="24h")
        assert created.expires_at == created.created_at + 2
        final = wait_batch(client, created.id, is_final, timeout=30)
        assert final.status == "expired", final
        assert final.expired_at is not None and final.expired_at >= final.expires_at  # type: ignore[operator]
        check_batch_object(raw_batch(gw, key, created.id), openapi)
        outputs, errors = jsonl(client, final.output_file_id), jsonl(client, final.error_file_id)
        assert 0 < len(outputs) < 400 and errors
        check_lines_once(final, outputs, errors, ids)
        for line in errors:
            assert line["response"] is None
            assert line["error"]["code"] == "batch_expired"
        # What was answered in time is delivered and billed; what expired costs nothing.
        check_billed_once(gw, org_id, outputs, start_balance)
    finally:
        gw.stop()


def test_metrics_show_the_batch_lines_queued(tmp_path: Path, standin: StandInUpstream) -> None:
    """switchyard_batch_lines_queued: while a batch runs, the lines it has left; then none."""
    from tests.integration.test_metrics import scrape, total

    gw = start(tmp_path / "queued", standin, SWITCHYARD_BATCH_CONCURRENCY="1")
    try:
        _, key = new_org(gw, "batch-metrics")
        client = gw.client(key)
        file_id = upload(client, [chat_line(f"q-{i}", max_tokens=5) for i in range(80)])
        batch = client.batches.create(input_file_id=file_id, endpoint=CHAT, completion_window="24h")
        seen = 0.0
        deadline = time.monotonic() + 60
        while seen == 0.0:
            seen = total(scrape(gw.root, MASTER_KEY), "switchyard_batch_lines_queued")
            assert time.monotonic() < deadline and client.batches.retrieve(batch.id).status not in FINAL
            time.sleep(0.2)
        assert 0 < seen <= 80
        assert wait_batch(client, batch.id, is_final).status == "completed"
        deadline = time.monotonic() + 30
        while total(scrape(gw.root, MASTER_KEY), "switchyard_batch_lines_queued") != 0:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        gw.stop()
