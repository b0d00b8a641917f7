"""`switchyard/auto`: the request itself picks the tier, by rules from config."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import Gateway, StandInUpstream, start_gateway


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstream: StandInUpstream) -> Iterator[Gateway]:
    def dep(catalog: str) -> dict[str, Any]:
        return {"deployments": [{"provider": "openai", "base_url": upstream.base_url, "model": "ok", "catalog": catalog}]}

    config = {
        "models": {"cheap": dep("gpt-4.1-nano"), "strong": dep("gpt-5.2")},
        "smart_routing": {
            "default": "cheap",
            "rules": [
                {"name": "hard-reasoning", "route": "strong", "when": {"reasoning_effort": ["medium", "high", "xhigh"]}},
                {"name": "agentic", "route": "strong", "when": {"has_tools": True}},
                {"name": "long-context", "route": "strong", "when": {"min_prompt_tokens": 2000}},
                {"name": "code-or-maths", "route": "strong", "when": {"has_code": True}},
                {"name": "maths", "route": "strong", "when": {"has_maths": True}},
                {"name": "classification", "route": "cheap", "when": {"keywords": ["classify", "extract"]}},
            ],
        },
    }
    g = start_gateway(tmp_path_factory.mktemp("smart"), config=config)
    yield g
    g.stop()


TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}


@pytest.mark.parametrize(
    ("content", "extra", "model", "rule"),
    [
        ("Classify this review as positive or negative: great phone.", {}, "cheap", "classification"),
        ("Hello there", {}, "cheap", "default"),
        ("Plan my week.", {"reasoning_effort": "high"}, "strong", "hard-reasoning"),
        ("What is the weather?", {"tools": [TOOL]}, "strong", "agentic"),
        ("Why does this fail?\n```python\ndef f(x):\n    return x[1]\n```", {}, "strong", "code-or-maths"),
        ("Prove the theorem that there are infinitely many primes.", {}, "strong", "maths"),
        ("Summarise: " + "lorem ipsum dolor sit amet " * 400, {}, "strong", "long-context"),
    ],
)
def test_auto_picks_the_tier_from_the_request(gw: Gateway, content: str, extra: dict, model: str, rule: str) -> None:
    raw = gw.client().chat.completions.with_raw_response.create(
        model="switchyard/auto", messages=[{"role": "user", "content": content}], **extra)
    assert raw.headers["x-switchyard-route"] == f"{model}; rule={rule}"
    assert raw.headers["x-switchyard-deployment"] == f"{model}#0"
    completion = raw.parse()
    assert completion.model == model
    request_id = raw.headers["x-request-id"]
    gw.logs_with(request_id, f"-> {model} (rule {rule}")


def test_auto_is_listed_and_billed_at_the_chosen_tier(gw: Gateway) -> None:
    assert "switchyard/auto" in {m.id for m in gw.client().models.list()}
    raw = gw.client().chat.completions.with_raw_response.create(
        model="switchyard/auto", messages=[{"role": "user", "content": "Hi"}])
    # 12 prompt + 5 completion tokens at gpt-4.1-nano's $0.10 / $0.40 per 1M.
    assert raw.headers["x-switchyard-cost-usd"] == "0.0000032"


def test_streams_report_the_route_too(gw: Gateway) -> None:
    with gw.client().chat.completions.with_streaming_response.create(
        model="switchyard/auto", messages=[{"role": "user", "content": "Hi"}], stream=True,
        reasoning_effort="high",
    ) as resp:
        assert resp.headers["x-switchyard-route"] == "strong; rule=hard-reasoning"
        assert "data: [DONE]" in resp.read().decode()
