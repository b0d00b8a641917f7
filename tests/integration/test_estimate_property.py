"""Property: for any prompt and any model, `/v1/cost/estimate`'s range contains what the request
is then billed. Each stand-in bills its own count of what it received (its tokenizer, its chat
template), the way the real provider does; some of those counts switchyard can ask for (exact
estimates), some it cannot (the range must hold anyway)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Admin, Gateway, start_gateway
from tests.standins.anthropic_upstream import AnthropicStandIn
from tests.standins.gemini_upstream import StandInGemini
from tests.standins.llama_server import LlamaServerStandIn
from tests.standins.openai_upstream import StandInUpstream

LLAMA_CATALOG = {"smollm-standin": {
    "provider": "openai", "owned_by": "test", "created": 1700000000, "context_window": 100000,
    "max_output_tokens": 1024, "prices": {"input": "1", "cached_input": None, "output": "2"},
    "prompt_overhead": {"per_request": 8, "per_message": 12, "tools": 64},
    "capabilities": ["streaming"], "endpoints": ["chat.completions"],
}}
# Exact where switchyard can ask the server (llama's /tokenize, Gemini's countTokens); an
# estimate for Anthropic (its count_tokens is one), OpenAI-compatible ones counted as o200k, and
# a llama server whose tokenizer switchyard is told not to ask.
MODELS = ["p-openai", "p-claude", "p-gemini", "p-llama", "p-llama-blind"]


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, Any]]:
    started = {"openai": StandInUpstream().start(), "anthropic": AnthropicStandIn().start(),
               "gemini": StandInGemini().start(), "llama": LlamaServerStandIn().start()}
    yield started
    for server in started.values():
        server.stop()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, servers: dict[str, Any]) -> Iterator[Gateway]:
    def one(dep: dict[str, Any]) -> dict[str, Any]:
        return {"deployments": [{"timeouts": {"connect": 2, "read": 20}, **dep}]}

    llama = {"provider": "openai", "base_url": servers["llama"].base_url, "model": "ok", "catalog": "smollm-standin"}
    config = {"catalog": LLAMA_CATALOG, "models": {
        "p-openai": one({"provider": "openai", "base_url": servers["openai"].base_url, "model": "counted",
                         "catalog": "gpt-5.2"}),
        "p-claude": one({"provider": "anthropic", "base_url": servers["anthropic"].base_url, "api_key_env": "ANTHROPIC_KEY",
                         "model": "claude-counted", "catalog": "claude-sonnet-4-5"}),
        "p-gemini": one({"provider": "gemini", "base_url": servers["gemini"].base_url, "api_key_env": "GEMINI_KEY",
                         "model": "gemini-counted", "catalog": "gemini-2.5-flash"}),
        "p-llama": one(llama),
        "p-llama-blind": one({**llama, "count_tokens": "none"}),
    }}
    gateway = start_gateway(tmp_path_factory.mktemp("estimate-property"), config=config,
                            env={"ANTHROPIC_KEY": "sk-ant-test", "GEMINI_KEY": "gm-upstream-secret"})
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def http(gw: Gateway) -> Iterator[httpx.Client]:
    admin = Admin(gw)
    org = admin.org("estimators", tier="unlimited")
    admin.topup(org["id"], "100")
    with httpx.Client(base_url=gw.base_url, headers={"Authorization": f"Bearer {admin.key(org['id'])}"}, timeout=60) as client:
        yield client




texts = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=300).filter(str.strip)


@st.composite
def conversations(draw: st.DrawFn) -> list[dict[str, str]]:
    turns = draw(st.integers(min_value=0, max_value=2))
    messages = [{"role": "system", "content": draw(texts)}] if draw(st.booleans()) else []
    for _ in range(turns):
        messages += [{"role": "user", "content": draw(texts)}, {"role": "assistant", "content": draw(texts)}]
    return [*messages, {"role": "user", "content": draw(texts)}]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(model=st.sampled_from(MODELS), messages=conversations(), max_tokens=st.integers(min_value=16, max_value=400))
def test_the_estimates_range_contains_the_bill(
    gw: Gateway, http: httpx.Client, model: str, messages: list[dict[str, str]], max_tokens: int,
) -> None:
    body = {"model": model, "messages": messages, "max_tokens": max_tokens}
    est = http.post("/cost/estimate", json=body)
    assert est.status_code == 200, est.text
    estimate = est.json()
    answer = http.post("/chat/completions", json=body)
    assert answer.status_code == 200, answer.text
    row = gw.usage_record(answer.headers["x-request-id"])
    assert row["anomaly"] is None, row["anomaly"]  # what was billed is what the upstream counted
    assert estimate["cost"]["min_nanos"] <= row["cost_nanos"] <= estimate["cost"]["max_nanos"], (estimate, row)
    assert estimate["input_tokens_min"] <= row["input_tokens"] <= estimate["input_tokens_max"]
    if estimate["exact"]:
        assert row["input_tokens"] == estimate["input_tokens"]
