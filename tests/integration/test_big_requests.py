"""Big and deep requests get clear 400s (never a 500, never a frozen worker).

How long a big request holds the event loop is measured by `bench/big_requests.py`, not here;
these tests check what a client sees, and that the worker keeps serving meanwhile.
"""

from __future__ import annotations

import threading
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import MASTER_KEY, USER_KEY, Gateway

def post(gw: Gateway, path: str, body: bytes, key: str = USER_KEY) -> httpx.Response:
    return httpx.post(gw.root + path, content=body, timeout=120,
                      headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})


@pytest.mark.parametrize("path,body", [
    ("/v1/chat/completions", lambda d: {"model": "gpt-5.2", "messages": [{"role": "user", "content": "x"}],
                                        "metadata_extra": d}),
    ("/v1/responses", lambda d: {"model": "gpt-5.2", "input": "x", "metadata_extra": d}),
    ("/v1/cost/estimate", lambda d: {"model": "gpt-5.2", "messages": [{"role": "user", "content": "x"}], "x": d}),
    ("/v1/batches", lambda d: {"input_file_id": "file-x", "endpoint": "/v1/chat/completions", "x": d}),
])
@pytest.mark.parametrize("depth", [300, 2000])
def test_deep_json_is_a_400_naming_the_param(upstream_gateway: Gateway, path: str, body: Any, depth: int) -> None:
    raw = orjson.dumps(body("__DEEP__")).replace(b'"__DEEP__"', b"[" * depth + b"]" * depth)
    resp = post(upstream_gateway, path, raw)
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert err["type"] == "invalid_request_error"
    if depth == 300:  # parsed, then refused with the place it goes too deep
        assert err["param"].startswith(("metadata_extra[0]", "x[0]"))


def test_deep_json_on_admin_endpoints_is_a_400(upstream_gateway: Gateway) -> None:
    body = orjson.dumps({"name": "deep"}).replace(b"}", b',"x":' + b"[" * 300 + b"]" * 300 + b"}")
    resp = post(upstream_gateway, "/admin/v1/organizations", body, key=MASTER_KEY)
    assert resp.status_code == 400 and resp.json()["error"]["param"].startswith("x")


def test_a_deep_tool_schema_within_the_limit_reaches_the_upstream(upstream_gateway: Gateway) -> None:
    schema: Any = {"type": "string"}
    for _ in range(90):  # 180 levels of nesting, within the 200 allowed
        schema = {"type": "object", "properties": {"a": schema}}
    body = {"model": "gpt-5.2", "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": schema}}]}
    resp = post(upstream_gateway, "/v1/chat/completions", orjson.dumps(body))
    assert resp.status_code == 200, resp.text


def test_a_million_messages_are_refused_before_parsing(upstream_gateway: Gateway) -> None:
    body = orjson.dumps({"model": "gpt-5.2", "messages": [{"role": "user", "content": "hi"}] * 1_000_000})
    health = _healthz_while(upstream_gateway, lambda: post(upstream_gateway, "/v1/chat/completions", body))
    resp = health.result
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "request_too_complex"
    assert health.answered > 0 and health.failed == 0


def test_too_many_messages_and_items_get_clear_400s(upstream_gateway: Gateway) -> None:
    chat = orjson.dumps({"model": "gpt-5.2", "messages": [{"role": "user", "content": "hi"}] * 20_001})
    resp = post(upstream_gateway, "/v1/chat/completions", chat)
    assert resp.status_code == 400
    assert (resp.json()["error"]["param"], resp.json()["error"]["code"]) == ("messages", "array_above_max_length")
    items = orjson.dumps({"model": "gpt-5.2", "input": [{"role": "user", "content": "hi"}] * 20_001})
    resp = post(upstream_gateway, "/v1/responses", items)
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "input"
    # 200,000 items are refused before they are even parsed.
    items = orjson.dumps({"model": "gpt-5.2", "input": [{"role": "user", "content": "hi"}] * 200_000})
    assert post(upstream_gateway, "/v1/responses", items).json()["error"]["code"] == "request_too_complex"


def test_a_60_mb_message_is_refused_for_its_size_while_the_worker_keeps_serving(upstream_gateway: Gateway) -> None:
    body = orjson.dumps({"model": "gpt-5.2", "messages": [{"role": "user", "content": "word " * 12_000_000}]})
    health = _healthz_while(upstream_gateway, lambda: post(upstream_gateway, "/v1/chat/completions", body))
    resp = health.result
    assert resp.status_code == 400, resp.text[:300]
    assert resp.json()["error"]["code"] == "context_length_exceeded"
    assert health.answered > 0 and health.failed == 0


class _Health:
    result: Any = None
    answered = 0
    failed = 0


def _healthz_while(gw: Gateway, work: Any) -> _Health:
    """Run `work` while another client keeps asking /healthz on the same worker."""
    health = _Health()
    done = threading.Event()

    def run() -> None:
        try:
            health.result = work()
        finally:
            done.set()

    thread = threading.Thread(target=run)
    thread.start()
    with httpx.Client(timeout=60) as client:
        while not done.is_set():
            try:
                ok = client.get(gw.root + "/healthz").status_code == 200
            except httpx.HTTPError:
                ok = False
            health.answered += ok
            health.failed += not ok
    thread.join()
    return health


def test_a_1_mb_prompt_that_fits_only_by_its_exact_count_is_answered(upstream_gateway: Gateway) -> None:
    # 1 MB of words: its byte bound (1M tokens) is past gpt-5.2's 400K window, so only the exact
    # count (about 200K, in the counting thread) shows it fits; the worker keeps serving meanwhile.
    body = orjson.dumps({"model": "gpt-5.2", "max_tokens": 5,
                         "messages": [{"role": "user", "content": "quick brown foxes " * 58_000}]})
    assert len(body) > 1_000_000
    health = _healthz_while(upstream_gateway, lambda: post(upstream_gateway, "/v1/chat/completions", body))
    resp = health.result
    assert resp.status_code == 200, resp.text[:300]
    assert resp.json()["object"] == "chat.completion"
    assert health.answered > 0 and health.failed == 0
