"""Routing across deployments: strategies, capability and size filters, retries, fallbacks, breakers."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import openai
import pytest

from tests.conftest import Admin, Gateway, StandInUpstream, start_gateway

HELLO = [{"role": "user", "content": "Hello"}]
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}


def _dep(upstream: StandInUpstream, behaviour: str, catalog: str = "gpt-5.2", **extra: Any) -> dict[str, Any]:
    return {"provider": "openai", "base_url": upstream.base_url, "model": behaviour, "catalog": catalog,
            "timeouts": {"connect": 2, "read": 1.5}, **extra}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstream: StandInUpstream) -> Iterator[Gateway]:
    u = upstream
    models = {
        "fallback-500": {"deployments": [_dep(u, "status-500", retries=0), _dep(u, "ok")]},
        "retry-then-fallback": {"deployments": [_dep(u, "status-503", retries=2), _dep(u, "ok")]},
        "fallback-429": {"deployments": [_dep(u, "status-429"), _dep(u, "ok")]},
        "fallback-timeout": {"deployments": [_dep(u, "slow", retries=0), _dep(u, "ok")]},
        "all-fail": {"deployments": [_dep(u, "status-500", retries=0), _dep(u, "status-503", retries=0)]},
        "no-fallback-400": {"deployments": [_dep(u, "status-400"), _dep(u, "ok")]},
        "mid-stream": {"deployments": [_dep(u, "broken-stream", retries=0), _dep(u, "ok")]},
        "cheapest": {"strategy": "cheapest", "deployments": [_dep(u, "ok", "gpt-5.2"), _dep(u, "ok", "gpt-4.1-nano")]},
        "capable": {"deployments": [_dep(u, "ok", "small-window"), _dep(u, "ok", "gpt-5.2")]},
        "breaker": {"deployments": [
            _dep(u, "status-500", retries=0, breaker_failures=2, breaker_cooldown=1.5), _dep(u, "ok")]},
        "weighted": {"strategy": "weighted", "deployments": [_dep(u, "ok", weight=3), _dep(u, "ok", weight=1)]},
        "least-busy": {"strategy": "least_busy", "deployments": [_dep(u, "ok"), _dep(u, "ok")]},
        "latency": {"strategy": "latency", "deployments": [_dep(u, "ok"), _dep(u, "ok")]},
    }
    config = {
        "models": models,
        "catalog": {"small-window": {
            "provider": "openai", "owned_by": "test", "created": 1700000000, "context_window": 1000,
            "max_output_tokens": 200, "prices": {"input": "1", "cached_input": None, "output": "2"},
            "capabilities": ["streaming"], "endpoints": ["chat.completions"],
        }},
    }
    g = start_gateway(tmp_path_factory.mktemp("routing"), config=config)
    yield g
    g.stop()


def _create(gw: Gateway, model: str, **kwargs: Any) -> Any:
    return gw.client().chat.completions.with_raw_response.create(model=model, messages=HELLO, **kwargs)


def _sent_models(upstream: StandInUpstream, since: int) -> list[str]:
    return [r.body["model"] for r in upstream.received[since:]]


def test_falls_back_after_a_500(gw: Gateway, upstream: StandInUpstream) -> None:
    before = len(upstream.received)
    raw = _create(gw, "fallback-500")
    assert raw.headers["x-switchyard-deployment"] == "fallback-500#1"
    assert raw.headers["x-switchyard-attempts"] == "2"
    assert raw.parse().choices[0].message.content
    assert _sent_models(upstream, before) == ["status-500", "ok"]


def test_retries_with_backoff_then_falls_back(gw: Gateway, upstream: StandInUpstream) -> None:
    before = len(upstream.received)
    raw = _create(gw, "retry-then-fallback")
    assert raw.headers["x-switchyard-attempts"] == "4"
    assert _sent_models(upstream, before) == ["status-503"] * 3 + ["ok"]


def test_a_long_retry_after_moves_on_instead_of_waiting(gw: Gateway, upstream: StandInUpstream) -> None:
    before = len(upstream.received)
    started = time.monotonic()
    raw = _create(gw, "fallback-429")
    assert time.monotonic() - started < 3, "Retry-After 7 s is not waited for when another deployment can answer"
    assert raw.headers["x-switchyard-deployment"] == "fallback-429#1"
    assert _sent_models(upstream, before) == ["status-429", "ok"]


def test_timeouts_fall_back(gw: Gateway) -> None:
    raw = _create(gw, "fallback-timeout")
    assert raw.headers["x-switchyard-deployment"] == "fallback-timeout#1"


def test_when_every_candidate_fails_the_last_error_is_returned(gw: Gateway) -> None:
    with pytest.raises(openai.InternalServerError) as err:
        _create(gw, "all-fail")
    assert err.value.status_code == 503
    assert err.value.response.headers["x-switchyard-attempts"] == "2"


def test_client_errors_are_not_retried_or_rerouted(gw: Gateway, upstream: StandInUpstream) -> None:
    before = len(upstream.received)
    with pytest.raises(openai.BadRequestError):
        _create(gw, "no-fallback-400")
    assert _sent_models(upstream, before) == ["status-400"]


def test_streams_fall_back_before_their_first_byte(gw: Gateway, upstream: StandInUpstream) -> None:
    before = len(upstream.received)
    chunks = list(gw.client().chat.completions.create(model="fallback-500", messages=HELLO, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert _sent_models(upstream, before) == ["status-500", "ok"]


def test_streams_do_not_switch_deployment_after_bytes_were_sent(gw: Gateway, upstream: StandInUpstream) -> None:
    before = len(upstream.received)
    got = []
    with pytest.raises(openai.APIError):
        for chunk in gw.client().chat.completions.create(model="mid-stream", messages=HELLO, stream=True):
            got.append(chunk)
    assert got
    assert _sent_models(upstream, before) == ["broken-stream"]


def test_cheapest_capable_deployment_is_chosen_and_billed_at_its_price(gw: Gateway) -> None:
    raw = _create(gw, "cheapest", max_tokens=10)
    assert raw.headers["x-switchyard-deployment"] == "cheapest#1"  # gpt-4.1-nano
    # The stand-in reports 12 prompt + 5 completion tokens; gpt-4.1-nano: $0.10 / $0.40 per 1M.
    expected = (Decimal(12) * Decimal("0.10") + Decimal(5) * Decimal("0.40")) / Decimal(10**6)
    assert Decimal(raw.headers["x-switchyard-cost-usd"]) == expected


def test_capabilities_and_size_filter_candidates(gw: Gateway) -> None:
    assert _create(gw, "capable").headers["x-switchyard-deployment"] == "capable#0"
    # Tools: the small-window entry has no `tools` capability.
    assert _create(gw, "capable", tools=[TOOL]).headers["x-switchyard-deployment"] == "capable#1"
    # Images: only gpt-5.2 has vision.
    png = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    image = [{"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                          {"type": "image_url", "image_url": {"url": png, "detail": "low"}}]}]
    raw = gw.client().chat.completions.with_raw_response.create(model="capable", messages=image)
    assert raw.headers["x-switchyard-deployment"] == "capable#1"
    # Too long for a 1,000-token window: only the 400K one fits.
    long = [{"role": "user", "content": "lorem ipsum " * 600}]
    raw = gw.client().chat.completions.with_raw_response.create(model="capable", messages=long)
    assert raw.headers["x-switchyard-deployment"] == "capable#1"


def test_circuit_breaker_takes_a_failing_deployment_out_then_probes_it(gw: Gateway, upstream: StandInUpstream) -> None:
    for _ in range(2):  # two failures open the breaker
        assert _create(gw, "breaker").headers["x-switchyard-deployment"] == "breaker#1"
    before = len(upstream.received)
    for _ in range(3):
        raw = _create(gw, "breaker")
        assert raw.headers["x-switchyard-attempts"] == "1"
    assert _sent_models(upstream, before) == ["ok"] * 3, "the open breaker skips the failing deployment"
    time.sleep(1.7)
    before = len(upstream.received)
    _create(gw, "breaker")
    assert _sent_models(upstream, before) == ["status-500", "ok"], "after the cool-down one probe goes through"


def test_weighted_strategy_spreads_by_weight(gw: Gateway) -> None:
    served = Counter(_create(gw, "weighted").headers["x-switchyard-deployment"] for _ in range(80))
    assert served["weighted#0"] > served["weighted#1"] > 0


@pytest.mark.parametrize("model", ["least-busy", "latency"])
def test_other_strategies_serve(gw: Gateway, model: str) -> None:
    served = {_create(gw, model).headers["x-switchyard-deployment"] for _ in range(10)}
    assert served <= {f"{model}#0", f"{model}#1"} and served


def test_only_the_attempt_that_answered_is_billed(gw: Gateway) -> None:
    admin = Admin(gw)
    org = admin.org("routing-billing", tier="unlimited")
    admin.topup(org["id"], "10")
    client = gw.client(key=admin.key(org["id"]))
    for _ in range(3):
        client.chat.completions.create(model="fallback-500", messages=HELLO, max_tokens=10)
    usage = admin.call("GET", "/usage", params={"org": org["id"], "group_by": "deployment"})["data"]
    assert [(u["deployment"], u["requests"]) for u in usage] == [("fallback-500#1", 3)]
    per_request = (Decimal(12) * Decimal("1.75") + Decimal(5) * Decimal(14)) / Decimal(10**6)
    assert Decimal(usage[0]["cost_usd"]) == 3 * per_request
    assert admin.balance(org["id"])["consistent"]


def test_a_deployment_at_its_own_rate_limit_passes_traffic_to_the_next(tmp_path_factory: pytest.TempPathFactory, upstream: StandInUpstream) -> None:
    config = {"models": {"limited": {"deployments": [
        _dep(upstream, "ok", rpm=2), _dep(upstream, "ok"),
    ]}}}
    g = start_gateway(tmp_path_factory.mktemp("dep-limits"), config=config)
    try:
        served = [_create(g, "limited").headers["x-switchyard-deployment"] for _ in range(5)]
        assert served[:2] == ["limited#0", "limited#0"]
        assert served[2:] == ["limited#1"] * 3
    finally:
        g.stop()
