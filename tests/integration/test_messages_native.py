"""`/v1/messages` at Anthropic deployments: the client's request passed through as it was sent
(beta fields, cache_control, thinking, flags in `anthropic-beta`), the answer and its events
relayed as Anthropic sent them, billed from Anthropic's usage (cache reads and writes included);
a failing Anthropic deployment falls back to a translated one."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import httpx
import pytest

from tests.conftest import USER_KEY, Gateway, start_gateway
from tests.standins.anthropic_upstream import CACHE_USAGE, TEXT, AnthropicStandIn
from tests.standins.openai_upstream import StandInUpstream

# claude-sonnet-4-5 per token, in nano-dollars: input $3, cache read $0.30, cache write $3.75, output $15 per 1M.
CACHE_COST = (CACHE_USAGE["input_tokens"] * 3_000 + CACHE_USAGE["cache_read_input_tokens"] * 300
              + CACHE_USAGE["cache_creation_input_tokens"] * 3_750 + CACHE_USAGE["output_tokens"] * 15_000)


@pytest.fixture(scope="module")
def claude() -> Iterator[AnthropicStandIn]:
    stand_in = AnthropicStandIn().start()
    yield stand_in
    stand_in.stop()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, claude: AnthropicStandIn, upstream: StandInUpstream) -> Iterator[Gateway]:
    def native(model: str, **extra: object) -> dict:
        return {"provider": "anthropic", "base_url": claude.base_url, "api_key_env": "CLAUDE_KEY", "model": model,
                "catalog": "claude-sonnet-4-5", **extra}

    models = {
        "claude-sonnet-4-5": {"deployments": [native("claude-cache")]},
        "claude-tools": {"deployments": [native("claude-tools")]},
        "claude-broken": {"deployments": [native("claude-stream-error")]},
        "claude-or-gpt": {"deployments": [
            native("claude-529", priority=0, retries=0),
            {"provider": "openai", "base_url": upstream.base_url, "model": "ok", "catalog": "gpt-5.2", "priority": 1}]},
    }
    gateway = start_gateway(tmp_path_factory.mktemp("messages-native"), config={"models": models},
                            env={"CLAUDE_KEY": "sk-ant-upstream"})
    yield gateway
    gateway.stop()


def sdk(gw: Gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.root, api_key=USER_KEY, max_retries=0, timeout=60)


def record(gw: Gateway, request_id: str) -> dict:
    return httpx.get(f"{gw.base_url}/requests/{request_id}", headers={"authorization": f"Bearer {USER_KEY}"}).json()


CLAUDE_CODE_BODY = {
    "max_tokens": 64000,
    "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
               {"type": "text", "text": "Be careful."}],
    "messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]}],
    "thinking": {"type": "adaptive"}, "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
    "output_config": {"effort": "high"}, "metadata": {"user_id": "user_abc"}, "some_future_field": {"x": 1},
    "tools": [{"name": f"tool_{i}", "description": f"Tool {i}", "input_schema": {"type": "object", "properties": {}}}
              for i in range(25)],
}
BETA = "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27"


def test_a_claude_code_stream_is_passed_through_and_billed_from_anthropics_usage(
    gw: Gateway, claude: AnthropicStandIn,
) -> None:
    headers = {"x-api-key": USER_KEY, "anthropic-version": "2023-06-01", "anthropic-beta": BETA}
    body = {**CLAUDE_CODE_BODY, "model": "claude-sonnet-4-5", "stream": True}
    with httpx.stream("POST", f"{gw.root}/v1/messages?beta=true", headers=headers, json=body, timeout=60) as answer:
        assert answer.status_code == 200
        request_id = answer.headers["x-request-id"]
        text = answer.read().decode()
    sent = claude.received[-1]
    assert sent.body == {**body, "model": "claude-cache"}  # every field as the client sent it
    assert BETA in sent.headers["anthropic-beta"] and sent.headers["x-api-key"] == "sk-ant-upstream"
    kinds = [line.removeprefix("event: ") for line in text.splitlines() if line.startswith("event: ")]
    assert kinds[:2] == ["message_start", "ping"] and kinds[-2:] == ["message_delta", "message_stop"]
    assert '"model":"claude-sonnet-4-5"' in text.replace(" ", "")  # the client's name, not the upstream's
    row = record(gw, request_id)
    assert (row["status"], row["stream"], row["deployment"]) == ("completed", True, "claude-sonnet-4-5#0")
    assert row["usage"]["cached_tokens"] == CACHE_USAGE["cache_read_input_tokens"]
    assert row["usage"]["cache_write_tokens"] == CACHE_USAGE["cache_creation_input_tokens"]
    assert row["cost_nanos"] == CACHE_COST


def test_the_sdk_gets_anthropics_own_message(gw: Gateway, claude: AnthropicStandIn) -> None:
    # A prompt long enough for the 2,600 input tokens the stand-in reports (a bill never counts
    # more input than the prompt's bytes allow).
    prompt = "Summarise the design document. " * 400
    raw = sdk(gw).messages.with_raw_response.create(model="claude-sonnet-4-5", max_tokens=100,
                                                    messages=[{"role": "user", "content": prompt}])
    message = raw.parse()
    assert message.id == "msg_standin" and message.model == "claude-sonnet-4-5" and message.content[0].text == TEXT
    assert message.usage.cache_read_input_tokens == CACHE_USAGE["cache_read_input_tokens"]
    assert "anthropic-beta" not in claude.received[-1].headers  # no flags asked for, none sent
    assert record(gw, raw.headers["x-request-id"])["cost_nanos"] == CACHE_COST
    with sdk(gw).messages.stream(model="claude-tools", max_tokens=200, messages=[{"role": "user", "content": "w?"}],
                                 tools=[{"name": "get_weather", "input_schema": {"type": "object"}}]) as stream:
        final = stream.get_final_message()
    assert next(b for b in final.content if b.type == "tool_use").input == {"location": "Paris", "unit": "c"}


def test_an_error_mid_stream_reaches_the_client_as_anthropics_error_event(gw: Gateway) -> None:
    with pytest.raises(anthropic.APIStatusError) as failed:
        with sdk(gw).messages.stream(model="claude-broken", max_tokens=50,
                                     messages=[{"role": "user", "content": "hi"}]) as stream:
            for _ in stream:
                pass
    assert "Overloaded" in str(failed.value) or "overloaded" in str(failed.value.body).lower()


def test_a_failing_anthropic_deployment_falls_back_to_a_translated_one(gw: Gateway) -> None:
    raw = sdk(gw).messages.with_raw_response.create(model="claude-or-gpt", max_tokens=50,
                                                    messages=[{"role": "user", "content": "hello"}])
    message = raw.parse()
    assert raw.headers["x-switchyard-deployment"] == "claude-or-gpt#1"
    assert message.type == "message" and message.content[0].text == "Hello from the stand-in."
    with sdk(gw).messages.stream(model="claude-or-gpt", max_tokens=50,
                                 messages=[{"role": "user", "content": "hello"}]) as stream:
        assert "".join(stream.text_stream) == "Hello from the stand-in."
