"""The Anthropic provider against a stand-in that speaks the Messages API wire format.

The gateway is a real server process; the client is the official `openai` SDK. Golden tests
pin the translation both ways: the exact Messages body the stand-in received, and the
OpenAI objects the client got back (content, tool calls, finish reasons, usage and cost).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import openai
import pytest

from switchyard.catalog import load_catalog
from tests.conftest import Gateway, start_gateway
from tests.standins.anthropic_upstream import (
    ANSWER, CACHE_USAGE, JSON_ANSWER, TEXT, TOOL_INPUT, TOOL_PREFACE, USAGE, AnthropicStandIn, request_tokens,
)

CATALOG_ID = "claude-sonnet-4-5"
HELLO = [{"role": "user", "content": "Hello"}]
# A real 1x1 PNG.
PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
WEATHER_SCHEMA = {"type": "object", "properties": {"location": {"type": "string"}, "unit": {"type": "string"}},
                  "required": ["location"]}
WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Current weather",
                                                 "parameters": WEATHER_SCHEMA}}
BEHAVIOURS = ["tools", "cache", "thinking", "json", "stop-max_tokens", "stop-stop_sequence", "stop-refusal",
              "400", "401", "404", "413", "429", "500", "503", "529", "stream-error", "no-stop",
              "not-json", "small", "counted", "zero-usage"]


@pytest.fixture(scope="module")
def anthropic() -> Iterator[AnthropicStandIn]:
    stand_in = AnthropicStandIn().start()
    yield stand_in
    stand_in.stop()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, anthropic: AnthropicStandIn) -> Iterator[Gateway]:
    def dep(behaviour: str, **extra: Any) -> dict[str, Any]:
        return {"deployments": [{
            "provider": "anthropic", "base_url": anthropic.base_url, "api_key_env": "ANTHROPIC_TEST_KEY",
            "model": behaviour, "catalog": CATALOG_ID, "timeouts": {"connect": 2, "read": 10}, **extra,
        }]}

    models = {"claude": dep("claude-ok")} | {f"claude-{b}": dep(f"claude-{b}") for b in BEHAVIOURS}
    models["claude-budgets"] = dep("claude-ok", thinking_budgets={"medium": 2048, "high": 3000})
    # A small-window deployment first, a larger one behind it: an overflow moves to the second.
    models["claude-growing"] = {"deployments": [dep("claude-small", priority=0)["deployments"][0],
                                                dep("claude-ok", priority=1)["deployments"][0]]}
    gateway = start_gateway(tmp_path_factory.mktemp("anthropic-gateway"), config={"models": models},
                            env={"ANTHROPIC_TEST_KEY": "sk-ant-secret"})
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def client(gw: Gateway) -> openai.OpenAI:
    return gw.client()


def sent(anthropic: AnthropicStandIn) -> dict[str, Any]:
    return anthropic.last().body


# ---------------------------------------------------------------------- OpenAI → Messages
def test_golden_request_translation(client: openai.OpenAI, anthropic: AnthropicStandIn) -> None:
    reply = client.chat.completions.create(
        model="claude",
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": "Answer in English."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this image?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
            ]},
            {"role": "assistant", "content": "A cat."},
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'}},
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
            {"role": "user", "content": "And tomorrow?"},
        ],
        tools=[WEATHER_TOOL],
        tool_choice="auto",
        parallel_tool_calls=False,
        stop=["END"],
        reasoning_effort="low",
        max_completion_tokens=4000,
        user="user-42",
    )
    received = anthropic.last()
    assert received.path == "/v1/messages"
    assert received.headers["x-api-key"] == "sk-ant-secret"
    assert received.headers["anthropic-version"] == "2023-06-01"
    assert "Authorization" not in received.headers
    assert received.body == {
        "model": "claude-ok",
        "max_tokens": 4000,
        "system": "You are terse.\n\nAnswer in English.",
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this image?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
            ]},
            {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]},
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"location": "Paris"}},
            ]},
            # The tool result and the next user message merge into one user turn (roles must alternate).
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": '{"temp": 21}'},
                {"type": "text", "text": "And tomorrow?"},
            ]},
        ],
        "tools": [{"name": "get_weather", "description": "Current weather", "input_schema": WEATHER_SCHEMA}],
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
        "stop_sequences": ["END"],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "metadata": {"user_id": "user-42"},
    }
    # ... and the answer back as OpenAI's object.
    assert reply.object == "chat.completion"
    assert reply.id == "chatcmpl-msg_standin"
    assert reply.model == "claude"  # the public name, never the upstream's id
    choice = reply.choices[0]
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert choice.message.content == TEXT
    assert choice.message.tool_calls is None
    assert choice.finish_reason == "stop"
    assert reply.usage.prompt_tokens == USAGE["input_tokens"]
    assert reply.usage.completion_tokens == USAGE["output_tokens"]
    assert reply.usage.total_tokens == USAGE["input_tokens"] + USAGE["output_tokens"]
    assert reply.usage.prompt_tokens_details.cached_tokens == 0


def test_simple_request_defaults(client: openai.OpenAI, anthropic: AnthropicStandIn) -> None:
    client.chat.completions.create(model="claude", messages=HELLO, temperature=1.7, top_p=0.5)
    # max_tokens is required upstream: the catalog's max output; temperature capped to Anthropic's 0..1,
    # and only one of temperature / top_p (newer Claude models refuse both).
    assert sent(anthropic) == {
        "model": "claude-ok", "max_tokens": 64000, "temperature": 1.0,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
    }


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"tool_choice": "required"}, {"type": "any"}),
        ({"tool_choice": "none"}, {"type": "none"}),
        ({"tool_choice": {"type": "function", "function": {"name": "get_weather"}}}, {"type": "tool", "name": "get_weather"}),
        ({"parallel_tool_calls": False}, {"type": "auto", "disable_parallel_tool_use": True}),
        ({}, None),
    ],
)
def test_tool_choice(client: openai.OpenAI, anthropic: AnthropicStandIn, kwargs: dict[str, Any], expected: Any) -> None:
    client.chat.completions.create(model="claude", messages=HELLO, tools=[WEATHER_TOOL], **kwargs)
    assert sent(anthropic).get("tool_choice") == expected


@pytest.mark.parametrize(
    ("model", "effort", "thinking"),
    [
        ("claude", "medium", {"type": "enabled", "budget_tokens": 4096}),
        ("claude", "high", {"type": "enabled", "budget_tokens": 16384}),
        ("claude", "none", None),
        ("claude-budgets", "medium", {"type": "enabled", "budget_tokens": 2048}),  # deployment override
        ("claude-budgets", "low", {"type": "enabled", "budget_tokens": 1024}),  # the rest keep the defaults
    ],
)
def test_reasoning_effort_budgets(client: openai.OpenAI, anthropic: AnthropicStandIn, model: str, effort: str, thinking: Any) -> None:
    client.chat.completions.create(model=model, messages=HELLO, reasoning_effort=effort, temperature=0.2)
    body = sent(anthropic)
    assert body.get("thinking") == thinking
    assert ("temperature" in body) == (thinking is None)  # thinking refuses a changed temperature


def test_thinking_budget_stays_below_max_tokens(client: openai.OpenAI, anthropic: AnthropicStandIn) -> None:
    client.chat.completions.create(model="claude", messages=HELLO, reasoning_effort="high", max_completion_tokens=3000)
    assert sent(anthropic)["thinking"] == {"type": "enabled", "budget_tokens": 2999}
    client.chat.completions.create(model="claude", messages=HELLO, reasoning_effort="high", max_completion_tokens=1000)
    assert "thinking" not in sent(anthropic)  # no room for Anthropic's minimum budget


def test_image_url_becomes_url_source(client: openai.OpenAI, anthropic: AnthropicStandIn) -> None:
    client.chat.completions.create(model="claude", messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        {"type": "text", "text": "What is this?"},
    ]}])
    assert sent(anthropic)["messages"][0]["content"] == [
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {"type": "text", "text": "What is this?"},
    ]


def test_json_object_adds_an_instruction(client: openai.OpenAI, anthropic: AnthropicStandIn) -> None:
    reply = client.chat.completions.create(model="claude", messages=[{"role": "system", "content": "Be brief."}, *HELLO],
                                           response_format={"type": "json_object"})
    body = sent(anthropic)
    assert body["system"].startswith("Be brief.\n\n")
    assert "JSON object" in body["system"]
    assert "tools" not in body
    # The model fenced its JSON in Markdown; the client gets it bare, ready for json.loads.
    assert json.loads(reply.choices[0].message.content) == JSON_ANSWER


def test_json_object_streams_bare_json(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="claude", messages=HELLO, stream=True,
                                                 response_format={"type": "json_object"}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert json.loads(text) == JSON_ANSWER


def test_json_mode_answered_in_prose_is_a_clear_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as failed:
        client.chat.completions.create(model="claude-not-json", messages=HELLO, response_format={"type": "json_object"})
    assert failed.value.status_code == 502 and failed.value.code == "upstream_invalid_json"


def test_anthropics_prompt_too_long_falls_back_to_a_larger_deployment(gw: Gateway, client: openai.OpenAI) -> None:
    long_prompt = [{"role": "user", "content": "lorem ipsum " * 100}]
    with pytest.raises(openai.BadRequestError) as refused:  # the small deployment alone: Anthropic's wording
        client.chat.completions.create(model="claude-small", messages=long_prompt)
    assert refused.value.code == "context_length_exceeded" and "prompt is too long" in refused.value.message
    raw = client.chat.completions.with_raw_response.create(model="claude-growing", messages=long_prompt)
    assert raw.headers["x-switchyard-deployment"] == "claude-growing#1"
    assert raw.headers["x-switchyard-attempts"] == "2"


@pytest.mark.parametrize("stream", [False, True])
def test_missing_usage_is_counted_by_anthropics_own_count(
    client: openai.OpenAI, anthropic: AnthropicStandIn, gw: Gateway, stream: bool,
) -> None:
    before = len(anthropic.counts)
    if stream:
        chunks = list(client.chat.completions.create(model="claude-zero-usage", messages=HELLO, stream=True,
                                                     stream_options={"include_usage": True}))
        usage = chunks[-1].usage
    else:
        usage = client.chat.completions.create(model="claude-zero-usage", messages=HELLO).usage
    sent_body = sent(anthropic)
    assert usage.prompt_tokens == request_tokens(sent_body)  # as Anthropic counts it, not an OpenAI encoding
    assert usage.completion_tokens >= 1
    assert len(anthropic.counts) > before
    assert all("max_tokens" not in body for body in anthropic.counts)


def test_json_schema_is_a_forced_tool_answered_as_content(client: openai.OpenAI, anthropic: AnthropicStandIn) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "temp_c": {"type": "integer"}},
              "required": ["city", "temp_c"], "additionalProperties": False}
    fmt = {"type": "json_schema", "json_schema": {"name": "weather_report", "schema": schema, "strict": True}}
    reply = client.chat.completions.create(model="claude-json", messages=HELLO, response_format=fmt)
    body = sent(anthropic)
    assert body["tools"] == [{"name": "weather_report", "description": "Give the final answer as this tool's input.",
                              "input_schema": schema}]
    assert body["tool_choice"] == {"type": "tool", "name": "weather_report"}
    assert "weather_report" in body["system"]
    assert json.loads(reply.choices[0].message.content) == JSON_ANSWER
    assert reply.choices[0].message.tool_calls is None
    assert reply.choices[0].finish_reason == "stop"
    # Streamed the same way, and parsed by the SDK's structured-output helper.
    with client.chat.completions.stream(model="claude-json", messages=HELLO, response_format=fmt) as stream:
        final = stream.get_final_completion()
    assert json.loads(final.choices[0].message.content) == JSON_ANSWER
    assert final.choices[0].finish_reason == "stop"


def test_untranslatable_input_is_a_400_before_any_call(client: openai.OpenAI, anthropic: AnthropicStandIn) -> None:
    before = len(anthropic.received)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="claude", messages=HELLO, n=2)
    assert err.value.param == "n"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="claude", messages=[{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}])
    assert err.value.code == "unsupported_content"
    assert len(anthropic.received) == before


# ---------------------------------------------------------------------- Messages → OpenAI
def test_tool_use_becomes_tool_calls(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="claude-tools", messages=HELLO, tools=[WEATHER_TOOL])
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == TOOL_PREFACE
    [call] = choice.message.tool_calls
    assert call.id == "toolu_standin1"
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == TOOL_INPUT


def test_thinking_is_dropped_from_content(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="claude-thinking", messages=HELLO, reasoning_effort="low")
    assert reply.choices[0].message.content == TEXT
    assert reply.usage.completion_tokens == 60
    # Anthropic does not report thinking tokens apart from output tokens.
    assert reply.usage.completion_tokens_details.reasoning_tokens == 0


@pytest.mark.parametrize(
    ("model", "finish"),
    [("claude", "stop"), ("claude-stop-stop_sequence", "stop"), ("claude-stop-max_tokens", "length"),
     ("claude-stop-refusal", "content_filter"), ("claude-tools", "tool_calls")],
)
@pytest.mark.parametrize("stream", [False, True])
def test_stop_reasons(client: openai.OpenAI, model: str, finish: str, stream: bool) -> None:
    if stream:
        chunks = list(client.chat.completions.create(model=model, messages=HELLO, stream=True, tools=[WEATHER_TOOL]))
        assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [finish]
    else:
        reply = client.chat.completions.create(model=model, messages=HELLO, tools=[WEATHER_TOOL])
        assert reply.choices[0].finish_reason == finish


def expected_cost(prompt: int, cached: int, writes: int, output: int) -> Decimal:
    prices = load_catalog().get(CATALOG_ID).prices
    assert prices.cache_write is not None and prices.cached_input is not None
    return ((prompt - cached - writes) * prices.input + cached * prices.cached_input
            + writes * prices.cache_write + output * prices.output) / 1_000_000


@pytest.mark.parametrize("stream", [False, True])
def test_cache_tokens_mapped_and_priced(client: openai.OpenAI, stream: bool) -> None:
    read, write = CACHE_USAGE["cache_read_input_tokens"], CACHE_USAGE["cache_creation_input_tokens"]
    prompt = CACHE_USAGE["input_tokens"] + read + write
    # A prompt that can hold the 2,600 tokens the stand-in reports (no bill counts more than its bound).
    long_prompt = [{"role": "user", "content": "Summarise this. " + "lorem ipsum " * 250}]
    if stream:
        chunks = list(client.chat.completions.create(model="claude-cache", messages=long_prompt, stream=True,
                                                     stream_options={"include_usage": True}))
        assert chunks[-1].choices == []
        usage = chunks[-1].usage
    else:
        raw = client.chat.completions.with_raw_response.create(model="claude-cache", messages=long_prompt)
        usage = raw.parse().usage
        assert Decimal(raw.headers["x-switchyard-cost-usd"]) == expected_cost(prompt, read, write, CACHE_USAGE["output_tokens"])
    assert usage.prompt_tokens == prompt == 2600
    assert usage.completion_tokens == CACHE_USAGE["output_tokens"]
    assert usage.total_tokens == prompt + CACHE_USAGE["output_tokens"]
    assert usage.prompt_tokens_details.cached_tokens == read
    assert usage.prompt_tokens_details.cache_write_tokens == write
    cost = Decimal(str(usage.model_extra["cost"]))
    assert cost == expected_cost(prompt, read, write, CACHE_USAGE["output_tokens"]) == Decimal("0.003375")


# ---------------------------------------------------------------------- streaming
def test_streaming_text(client: openai.OpenAI, anthropic: AnthropicStandIn) -> None:
    chunks = list(client.chat.completions.create(model="claude", messages=HELLO, stream=True,
                                                 stream_options={"include_usage": True}))
    assert sent(anthropic)["stream"] is True
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.id == "chatcmpl-msg_standin" for c in chunks)
    assert [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content] == ANSWER
    assert chunks[-1].choices == []
    assert chunks[-1].usage.prompt_tokens == USAGE["input_tokens"]
    assert chunks[-1].usage.completion_tokens == USAGE["output_tokens"]  # from message_delta, not message_start
    # Without include_usage the gateway keeps the usage chunk to itself.
    plain = list(client.chat.completions.create(model="claude", messages=HELLO, stream=True))
    assert all(c.choices and c.usage is None for c in plain)
    assert "".join(c.choices[0].delta.content or "" for c in plain) == TEXT


def test_streaming_thinking_is_dropped(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="claude-thinking", messages=HELLO, stream=True,
                                                 reasoning_effort="low"))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == TEXT


def test_streamed_tool_calls(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="claude-tools", messages=HELLO, tools=[WEATHER_TOOL], stream=True))
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls[0].index == 0 and calls[0].id == "toolu_standin1" and calls[0].type == "function"
    assert calls[0].function.name == "get_weather" and calls[0].function.arguments == ""
    assert all(tc.index == 0 and tc.id is None and tc.function.name is None for tc in calls[1:])
    assert json.loads("".join(tc.function.arguments for tc in calls)) == TOOL_INPUT

    with client.chat.completions.stream(model="claude-tools", messages=HELLO, tools=[WEATHER_TOOL]) as stream:
        final = stream.get_final_completion()
    message = final.choices[0].message
    assert message.content == TOOL_PREFACE
    assert message.tool_calls[0].id == "toolu_standin1"
    assert message.tool_calls[0].function.name == "get_weather"
    assert json.loads(message.tool_calls[0].function.arguments) == TOOL_INPUT
    assert final.choices[0].finish_reason == "tool_calls"


# ---------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("model", "exc", "status", "code"),
    [
        ("claude-400", openai.BadRequestError, 400, None),
        ("claude-404", openai.NotFoundError, 404, None),
        ("claude-413", openai.APIStatusError, 413, "request_too_large"),
        ("claude-401", openai.InternalServerError, 502, "upstream_auth_error"),
        ("claude-429", openai.RateLimitError, 429, "rate_limit_exceeded"),
        ("claude-500", openai.InternalServerError, 502, "upstream_error"),
        ("claude-503", openai.InternalServerError, 503, "upstream_unavailable"),
        ("claude-529", openai.InternalServerError, 503, "upstream_overloaded"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_errors(client: openai.OpenAI, model: str, exc: type[openai.APIStatusError], status: int,
                         code: str | None, stream: bool) -> None:
    with pytest.raises(exc) as err:
        result = client.chat.completions.create(model=model, messages=HELLO, stream=stream)
        if stream:
            list(result)
    assert err.value.status_code == status
    assert err.value.code == code
    assert "sk-ant-secret" not in str(err.value.body)
    if status == 400:
        assert "stand-in failure 400" in err.value.message
        assert err.value.type == "invalid_request_error"
    if status == 429:
        assert err.value.response.headers["retry-after"] == "7"


@pytest.mark.parametrize(("model", "code"), [("claude-stream-error", "overloaded_error"), ("claude-no-stop", "upstream_stream_broken")])
def test_stream_failing_midway(client: openai.OpenAI, model: str, code: str) -> None:
    got = []
    with pytest.raises(openai.APIError) as err:
        for chunk in client.chat.completions.create(model=model, messages=HELLO, stream=True):
            got.append(chunk)
    assert got, "chunks before the failure reach the client"
    assert err.value.code == code


def test_gateway_still_serves_after_errors(client: openai.OpenAI) -> None:
    assert client.chat.completions.create(model="claude", messages=HELLO).choices[0].message.content == TEXT
