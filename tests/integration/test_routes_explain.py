"""`switchyard routes explain`: every deployment of a group, why it can or cannot serve, its cost, and the order."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from switchyard.metering.tokens import count_prompt_tokens
from switchyard.wire.chat import parse_chat_request

PRICES = {"big": (Decimal("1.75"), Decimal("14")), "nano": (Decimal("0.10"), Decimal("0.40")),
          "small": (Decimal("1"), Decimal("2"))}


def _dep(model: str, catalog: str, **extra: Any) -> dict[str, Any]:
    # The base URL is never contacted: the command is offline.
    return {"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "model": model, "catalog": catalog, **extra}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    work = tmp_path_factory.mktemp("routes-explain")
    config = {
        "models": {"text": {"deployments": [
            _dep("instruct", "gpt-3.5-turbo-instruct"), _dep("chat", "gpt-5.2"),
            {"provider": "anthropic", "base_url": "http://127.0.0.1:9", "model": "claude", "catalog": "claude-text"},
        ]}, "pick": {"strategy": "cheapest", "deployments": [
            _dep("big", "gpt-5.2"), _dep("nano", "gpt-4.1-nano", weight=3, retries=2), _dep("small", "small-window", priority=0),
        ]}},
        "aliases": {"pick-alias": "pick"},
        "catalog": {"claude-text": {
            "provider": "anthropic", "owned_by": "test", "created": 1700000000, "context_window": 200000,
            "max_output_tokens": 8192, "prices": {"input": "3", "cached_input": None, "output": "15"},
            "capabilities": ["streaming"], "endpoints": ["chat.completions", "completions"],
        }, "small-window": {
            "provider": "openai", "owned_by": "test", "created": 1700000000, "context_window": 1000,
            "max_output_tokens": 200, "prices": {"input": "1", "cached_input": None, "output": "2"},
            "capabilities": ["streaming"], "endpoints": ["chat.completions"],
        }},
    }
    path = work / "switchyard.yaml"
    path.write_text(yaml.safe_dump(config))
    out = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    out.update({"SWITCHYARD_CONFIG": str(path), "SWITCHYARD_DATA_DIR": str(work / "data")})
    return out


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "switchyard", "routes", "explain", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def _explain(env: dict[str, str], *args: str) -> dict[str, Any]:
    proc = _run(env, *args, "--json")
    assert proc.returncode == 0, proc.stderr
    return orjson.loads(proc.stdout)


def _by_model(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["upstream_model"]: d for d in result["deployments"]}


def _usd(model: str, prompt: int, output: int) -> Decimal:
    inp, out = PRICES[model]
    return (prompt * inp + output * out) / Decimal(1_000_000)


def test_cheapest_first_with_exact_costs(env: dict[str, str]) -> None:
    result = _explain(env, "--model", "pick-alias", "--message", "Hello")
    assert result["public_name"] == "pick" and result["strategy"] == "cheapest"
    assert "breaker" in result["router"] and result["refused"] is None
    # 1 text token + 3 for the message + 3 for the reply primer.
    prompt = count_prompt_tokens(parse_chat_request({"model": "pick", "messages": [{"role": "user", "content": "Hello"}]}))
    assert prompt == 7 and result["prompt_tokens"] == prompt
    assert result["expected_output_tokens"] == 1024
    deps = _by_model(result)
    assert [deps[m]["id"] for m in ("nano", "small", "big")] == result["order"]
    assert [deps[m]["rank"] for m in ("nano", "small", "big")] == [1, 2, 3]
    assert all(d["can_serve"] and d["reason"] is None for d in deps.values())
    for model, d in deps.items():
        assert d["prompt_tokens"] == 7 and d["expected_output_tokens"] == 1024
        assert Decimal(d["cost_usd"]) == _usd(model, 7, 1024)
        assert Decimal(d["worst_case_usd"]) == _usd(model, 7, d["max_output_tokens"])
    assert Decimal(deps["nano"]["cost_usd"]) == Decimal("0.0004103")
    assert Decimal(deps["big"]["worst_case_usd"]) == Decimal("1.79201225")  # 7 * 1.75 + 128,000 * 14, per 1M
    assert (deps["nano"]["weight"], deps["nano"]["retries"], deps["nano"]["priority"]) == (3, 2, 0)
    assert (deps["big"]["catalog"], deps["big"]["provider"]) == ("gpt-5.2", "openai")


def test_max_tokens_sets_the_expected_output(env: dict[str, str]) -> None:
    deps = _by_model(_explain(env, "--model", "pick", "--message", "Hello", "--max-tokens", "100"))
    for model, d in deps.items():
        assert d["expected_output_tokens"] == 100 and d["worst_case_output_tokens"] == 100
        assert Decimal(d["cost_usd"]) == Decimal(d["worst_case_usd"]) == _usd(model, 7, 100)


def test_tools_exclude_the_deployment_without_them(env: dict[str, str]) -> None:
    result = _explain(env, "--model", "pick", "--message", "Hello", "--tools")
    deps = _by_model(result)
    assert not deps["small"]["can_serve"] and deps["small"]["rank"] is None
    assert deps["small"]["reason"]["message"] == "Model `pick` does not support tools."
    assert deps["small"]["reason"]["param"] == "tools"
    assert result["order"] == [deps["nano"]["id"], deps["big"]["id"]]
    assert deps["nano"]["prompt_tokens"] > 7  # the tool definition is counted


def test_a_long_prompt_excludes_the_small_window(env: dict[str, str]) -> None:
    result = _explain(env, "--model", "pick", "--message", "word " * 2000)
    deps = _by_model(result)
    assert result["prompt_tokens"] > 1000
    assert not deps["small"]["can_serve"]
    assert deps["small"]["reason"]["code"] == "context_length_exceeded"
    assert "maximum context length is 1000 tokens" in deps["small"]["reason"]["message"]
    assert result["order"] == [deps["nano"]["id"], deps["big"]["id"]]
    prompt = result["prompt_tokens"]
    assert Decimal(deps["big"]["cost_usd"]) == _usd("big", prompt, 1024)


def test_a_request_nobody_can_serve_is_explained_then_refused(env: dict[str, str], tmp_path: Path) -> None:
    body = {"model": "ignored", "max_completion_tokens": 150_000, "messages": [{"role": "user", "content": "Hi"}]}
    request = tmp_path / "request.json"
    request.write_bytes(orjson.dumps(body))
    result = _explain(env, "--model", "pick", "--file", str(request))
    assert result["order"] == [] and not any(d["can_serve"] for d in result["deployments"])
    assert result["refused"]["code"] == "invalid_value" and result["refused"]["status"] == 400
    assert "150000" in result["refused"]["message"]
    proc = _run(env, "--model", "pick", "--file", str(request))
    assert proc.returncode == 0, proc.stderr
    assert "REFUSED" in proc.stdout and "too large: 150000" in proc.stdout


def test_the_human_table(env: dict[str, str]) -> None:
    proc = _run(env, "--model", "pick", "--message", "Hello", "--tools")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for text in ("pick#0", "pick#1", "pick#2", "gpt-4.1-nano", "small-window", "does not support tools",
                 "pick#1 -> pick#0", "circuit breaker closed"):
        assert text in out, text


def test_unknown_model_is_one_line(env: dict[str, str]) -> None:
    proc = _run(env, "--model", "no-such-model", "--message", "Hello")
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "no-such-model" in proc.stderr


def test_explain_another_endpoint_says_which_provider_lacks_it(env: dict[str, str]) -> None:
    result = _explain(env, "--model", "text", "--message", "Once upon a time", "--endpoint", "completions")
    rows = {row["id"]: row for row in result["deployments"]}
    assert result["endpoint"] == "completions" and result["order"] == ["text#0"]
    assert rows["text#0"]["can_serve"] is True
    assert "does not serve completions" in rows["text#1"]["reason"]["message"]
    assert "anthropic provider does not implement completions" in rows["text#2"]["reason"]["message"]
    unknown = _run(env, "--model", "text", "--message", "x", "--endpoint", "fax")
    assert unknown.returncode == 2 and "unknown endpoint" in unknown.stderr
