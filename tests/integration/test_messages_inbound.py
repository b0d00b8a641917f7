"""Anthropic's Messages API inbound, through the official `anthropic` SDK: the local model and
an OpenAI upstream answer it by translation; streams in Anthropic's event order; errors in
Anthropic's shape; billed like chat."""

from __future__ import annotations

import anthropic
import httpx
import pytest

from tests.conftest import MASTER_KEY, USER_KEY, Gateway
from tests.standins.openai_upstream import StandInUpstream

LOCAL = "smollm2-135m-instruct"


def client(gw: Gateway, key: str = USER_KEY) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.root, api_key=key, max_retries=0, timeout=120)


def record(gw: Gateway, request_id: str) -> dict:
    return httpx.get(f"{gw.base_url}/requests/{request_id}", headers={"authorization": f"Bearer {USER_KEY}"}).json()


def test_the_local_model_answers_a_message(local_gateway: Gateway) -> None:
    raw = client(local_gateway).messages.with_raw_response.create(
        model=LOCAL, max_tokens=16, system="Answer in one word.",
        messages=[{"role": "user", "content": "What is the capital of France?"}])
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant" and message.model == LOCAL
    assert message.content[0].type == "text" and message.content[0].text.strip()
    assert message.stop_reason in ("end_turn", "max_tokens") and message.id.startswith("msg_")
    row = record(local_gateway, raw.headers["x-request-id"])
    assert row["endpoint"] == "/v1/messages" and row["status"] == "completed"
    usage = message.usage
    assert row["usage"]["input_tokens"] == usage.input_tokens + usage.cache_read_input_tokens
    assert row["usage"]["output_tokens"] == usage.output_tokens


def test_a_stream_has_anthropics_event_order(local_gateway: Gateway) -> None:
    body = {"model": LOCAL, "max_tokens": 12, "stream": True, "messages": [{"role": "user", "content": "Count to five."}]}
    with httpx.stream("POST", f"{local_gateway.root}/v1/messages", headers={"x-api-key": USER_KEY}, json=body,
                      timeout=120) as answer:
        assert answer.headers["content-type"].startswith("text/event-stream")
        kinds = [line.removeprefix("event: ") for line in answer.iter_lines() if line.startswith("event: ")]
    assert kinds[:3] == ["message_start", "ping", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(kinds[3:-3]) == {"content_block_delta"}
    sdk = client(local_gateway)
    with sdk.messages.create(model=LOCAL, max_tokens=12, stream=True,
                             messages=[{"role": "user", "content": "Count to five."}]) as events:
        assert [e.type for e in events][-1] == "message_stop"  # every event parses as the SDK's own type
    with sdk.messages.stream(model=LOCAL, max_tokens=12, messages=[{"role": "user", "content": "Say hello."}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert final.content[0].text == text and final.usage.output_tokens > 0 and final.usage.input_tokens > 0


def test_count_tokens_and_authentication(local_gateway: Gateway) -> None:
    counted = client(local_gateway).messages.count_tokens(model=LOCAL, messages=[{"role": "user", "content": "hello"}])
    assert counted.input_tokens > 1
    # Anthropic's clients send the key as x-api-key; Bearer works too.
    bearer = httpx.post(f"{local_gateway.root}/v1/messages", headers={"authorization": f"Bearer {USER_KEY}"},
                        json={"model": LOCAL, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}, timeout=60)
    assert bearer.status_code == 200 and bearer.json()["type"] == "message"
    with pytest.raises(anthropic.AuthenticationError) as denied:
        client(local_gateway, "sk-wrong").messages.create(model=LOCAL, max_tokens=4,
                                                          messages=[{"role": "user", "content": "hi"}])
    assert denied.value.body["type"] == "error" and denied.value.body["error"]["type"] == "authentication_error"


@pytest.mark.parametrize(("body", "status", "kind"), [
    ({"model": "no-such-model", "max_tokens": 4, "messages": [{"role": "user", "content": "x"}]}, 404, "not_found_error"),
    ({"model": LOCAL, "messages": [{"role": "user", "content": "x"}]}, 400, "invalid_request_error"),
    ({"model": LOCAL, "max_tokens": 4, "messages": []}, 400, "invalid_request_error"),
    ({"model": LOCAL, "max_tokens": 4, "messages": [{"role": "robot", "content": "x"}]}, 400, "invalid_request_error"),
    ({"model": LOCAL, "max_tokens": 4, "messages": [{"role": "user", "content": 7}]}, 400, "invalid_request_error"),
])
def test_bad_messages_get_anthropic_errors(local_gateway: Gateway, body: dict, status: int, kind: str) -> None:
    answer = httpx.post(f"{local_gateway.root}/v1/messages", headers={"x-api-key": USER_KEY,
                        "anthropic-version": "2023-06-01"}, json=body, timeout=60)
    assert answer.status_code == status
    assert answer.json()["type"] == "error" and answer.json()["error"]["type"] == kind


def test_a_tool_round_trip_through_an_openai_upstream(upstream_gateway: Gateway, upstream: StandInUpstream) -> None:
    sdk = client(upstream_gateway)
    tools = [{"name": "get_weather", "description": "Weather in a city",
              "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}}}]
    first = sdk.messages.create(model="sim-tools", max_tokens=200, tools=tools, tool_choice={"type": "any"},
                                messages=[{"role": "user", "content": "Weather in Paris?"}])
    call = next(b for b in first.content if b.type == "tool_use")
    assert first.stop_reason == "tool_use" and call.name == "get_weather" and call.input == {"location": "Paris", "unit": "c"}
    sent = [r for r in upstream.received if r.path == "/v1/chat/completions"][-1].body
    assert sent["tool_choice"] == "required" and sent["tools"][0]["function"]["name"] == "get_weather"
    second = sdk.messages.create(model="gpt-5.2", max_tokens=200, tools=tools, messages=[
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": call.id, "name": call.name, "input": call.input}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18 C and sunny"},
                                     {"type": "text", "text": "Thanks"}]}])
    assert second.content[0].text == "Hello from the stand-in."
    sent = [r for r in upstream.received if r.path == "/v1/chat/completions"][-1].body
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "tool", "user"]
    assert sent["messages"][2] == {"role": "tool", "tool_call_id": call.id, "content": "18 C and sunny"}
    # The streamed tool call arrives as input_json_delta pieces the SDK puts back together.
    with sdk.messages.stream(model="sim-tools", max_tokens=200, tools=tools,
                             messages=[{"role": "user", "content": "Weather in Paris?"}]) as stream:
        final = stream.get_final_message()
    assert next(b for b in final.content if b.type == "tool_use").input == {"location": "Paris", "unit": "c"}


def test_a_claude_code_shaped_request_is_accepted(upstream_gateway: Gateway, upstream: StandInUpstream) -> None:
    """What Claude Code sends: beta flags, ?beta=true, system blocks with cache_control, system
    turns mid-conversation, adaptive thinking, context management, an effort, many tools."""
    tools = [{"name": f"tool_{i}", "description": f"Tool {i}", "input_schema": {"type": "object", "properties": {}}}
             for i in range(25)]
    body = {
        "model": "gpt-5.2", "max_tokens": 64000, "stream": True,
        "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
                   {"type": "text", "text": " Be careful."}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]},
                     {"role": "system", "content": "A reminder."},
                     {"role": "user", "content": "Go on."}],
        "thinking": {"type": "adaptive"}, "context_management": {"edits": []}, "output_config": {"effort": "high"},
        "metadata": {"user_id": "user_abc"}, "tools": tools,
    }
    headers = {"x-api-key": MASTER_KEY, "anthropic-version": "2023-06-01",
               "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27"}
    with httpx.stream("POST", f"{upstream_gateway.root}/v1/messages?beta=true", headers=headers, json=body,
                      timeout=60) as answer:
        assert answer.status_code == 200
        text = answer.read().decode()
    assert text.startswith("event: message_start") and "event: message_stop" in text
    sent = [r for r in upstream.received if r.path == "/v1/chat/completions"][-1].body
    assert sent["messages"][0] == {"role": "system", "content": "You are Claude Code. Be careful."}
    assert [m["role"] for m in sent["messages"]] == ["system", "user", "system", "user"]
    assert sent["reasoning_effort"] == "high" and sent["user"] == "user_abc" and len(sent["tools"]) == 25
    assert "context_management" not in sent and "thinking" not in sent
