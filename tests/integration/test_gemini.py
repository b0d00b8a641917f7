"""The Gemini provider against a stand-in speaking Gemini's wire format, driven by the `openai` SDK."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import openai
import pytest

from tests.conftest import Gateway, start_gateway
from tests.standins.gemini_upstream import ANSWER, TIME_ARGS, WEATHER_ARGS, StandInGemini, count_tokens

HELLO = [{"role": "user", "content": "Hello"}]
PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather at a place.",
    "parameters": {"type": "object", "additionalProperties": False, "$schema": "http://json-schema.org/draft-07/schema#",
                   "properties": {"location": {"type": "string"}, "unit": {"type": ["string", "null"], "enum": ["c", "f", None]}},
                   "required": ["location"]}}}
TIME_TOOL = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
# gemini-2.5-flash in the catalog: $0.30 input, $0.03 cached input, $2.50 output per 1M tokens.
PRICE_IN, PRICE_CACHED, PRICE_OUT = Decimal("0.30"), Decimal("0.03"), Decimal("2.50")
BEHAVIOURS = ["ok", "tools", "cached", "thinking", "length", "safety", "blocked", "two", "error-event",
              "no-finish", "badkey", "400", "403", "404", "429", "500", "503", "small", "zero-usage"]


def expected_cost(prompt: int, cached: int, completion: int) -> Decimal:
    return ((prompt - cached) * PRICE_IN + cached * PRICE_CACHED + completion * PRICE_OUT) / 1_000_000


@pytest.fixture(scope="module")
def gemini() -> Iterator[StandInGemini]:
    stand_in = StandInGemini().start()
    yield stand_in
    stand_in.stop()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, gemini: StandInGemini) -> Iterator[Gateway]:
    def dep(model: str, catalog: str = "gemini-2.5-flash", **extra: Any) -> dict[str, Any]:
        return {"deployments": [{"provider": "gemini", "base_url": gemini.base_url, "api_key_env": "GEMINI_API_KEY",
                                 "model": model, "catalog": catalog, "timeouts": {"connect": 2, "read": 10}, **extra}]}

    models = {f"gemini-{b}": dep(f"gemini-{b}") for b in BEHAVIOURS}
    models["gemini-2.5-flash"] = dep("gemini-ok")
    models["custom-budgets"] = dep("gemini-ok", thinking_budgets={"low": 2048})
    models["gemini-growing"] = {"deployments": [dep("gemini-small", priority=0)["deployments"][0],
                                                dep("gemini-ok", priority=1)["deployments"][0]]}
    models["levels"] = dep("gemini-ok", catalog="gemini-3-flash-preview", thinking_style="level")
    models["bad-secret"] = {"deployments": [{"provider": "gemini", "base_url": gemini.base_url, "api_key_env": "NOT_SET_ANYWHERE",
                                             "model": "gemini-ok", "catalog": "gemini-2.5-flash"}]}
    gateway = start_gateway(tmp_path_factory.mktemp("gemini-gateway"), config={"models": models},
                            env={"GEMINI_API_KEY": "gm-upstream-secret"})
    yield gateway
    gateway.stop()


# ---------------------------------------------------------------------- request translation
def test_golden_request_translation(gw: Gateway, gemini: StandInGemini) -> None:
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "additionalProperties": False,
              "$defs": {"City": {"type": "object", "additionalProperties": False,
                                 "properties": {"name": {"type": "string"}}, "required": ["name"]}},
              "properties": {"city": {"$ref": "#/$defs/City"}, "temp": {"type": "number"}},
              "required": ["city", "temp"]}
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in JSON."}]},
        {"role": "user", "content": [
            {"type": "text", "text": "What is in this picture, and the weather there?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/photos/paris.webp"}},
        ]},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'}},
            {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": ""}},
        ]},
        {"role": "tool", "tool_call_id": "call_a", "content": '{"temp": 21}'},
        {"role": "tool", "tool_call_id": "call_b", "content": "14:05"},
        {"role": "user", "content": "Thanks. Now the JSON."},
    ]
    reply = gw.client().chat.completions.create(
        model="gemini-2.5-flash", messages=messages, tools=[WEATHER_TOOL, TIME_TOOL], tool_choice="auto",
        temperature=0.2, top_p=0.9, max_completion_tokens=500, stop=["END"], seed=7,
        presence_penalty=0.5, frequency_penalty=0.25, reasoning_effort="low",
        response_format={"type": "json_schema", "json_schema": {"name": "weather", "strict": True, "schema": schema}},
    )
    sent = gemini.last()
    assert sent.path == "/v1beta/models/gemini-ok:generateContent"
    assert sent.query == {}
    assert sent.headers["x-goog-api-key"] == "gm-upstream-secret"
    assert "Authorization" not in sent.headers
    assert sent.body == {
        "systemInstruction": {"parts": [{"text": "You are terse."}, {"text": "Answer in JSON."}]},
        "contents": [
            {"role": "user", "parts": [
                {"text": "What is in this picture, and the weather there?"},
                {"inlineData": {"mimeType": "image/png", "data": PNG}},
                {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/photos/paris.webp"}},
            ]},
            {"role": "model", "parts": [
                {"text": "Let me check."},
                {"functionCall": {"name": "get_weather", "args": {"location": "Paris"}}},
                {"functionCall": {"name": "get_time", "args": {}}},
            ]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
                {"functionResponse": {"name": "get_time", "response": {"result": "14:05"}}},
            ]},
            {"role": "user", "parts": [{"text": "Thanks. Now the JSON."}]},
        ],
        "tools": [{"functionDeclarations": [
            {"name": "get_weather", "description": "Weather at a place.",
             "parameters": {"type": "object", "properties": {
                 "location": {"type": "string"}, "unit": {"type": "string", "nullable": True, "enum": ["c", "f", None]}},
                 "required": ["location"]}},
            {"name": "get_time"},
        ]}],
        "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}},
        "generationConfig": {
            "temperature": 0.2, "topP": 0.9, "maxOutputTokens": 500, "stopSequences": ["END"], "seed": 7,
            "presencePenalty": 0.5, "frequencyPenalty": 0.25,
            "responseMimeType": "application/json",
            "responseSchema": {"type": "object", "properties": {
                "city": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
                "temp": {"type": "number"}}, "required": ["city", "temp"]},
            "thinkingConfig": {"thinkingBudget": 1024},
        },
    }
    assert reply.choices[0].message.content == "".join(ANSWER)


def test_minimal_request_body(gw: Gateway, gemini: StandInGemini) -> None:
    gw.client().chat.completions.create(model="gemini-ok", messages=HELLO)
    assert gemini.last().body == {"contents": [{"role": "user", "parts": [{"text": "Hello"}]}]}


@pytest.mark.parametrize(
    ("tool_choice", "config"),
    [
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        ({"type": "function", "function": {"name": "get_time"}}, {"mode": "ANY", "allowedFunctionNames": ["get_time"]}),
    ],
)
def test_tool_choice(gw: Gateway, gemini: StandInGemini, tool_choice: Any, config: dict[str, Any]) -> None:
    gw.client().chat.completions.create(model="gemini-ok", messages=HELLO, tools=[WEATHER_TOOL, TIME_TOOL], tool_choice=tool_choice)
    assert gemini.last().body["toolConfig"] == {"functionCallingConfig": config}


def test_generation_options_and_json_object(gw: Gateway, gemini: StandInGemini) -> None:
    gw.client().chat.completions.create(model="gemini-ok", messages=HELLO, max_tokens=64, stop="STOP!", n=1,
                                        response_format={"type": "json_object"}, reasoning_effort="none",
                                        extra_body={"safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT",
                                                                        "threshold": "BLOCK_NONE"}]})
    body = gemini.last().body
    assert body["generationConfig"] == {"maxOutputTokens": 64, "stopSequences": ["STOP!"], "candidateCount": 1,
                                        "responseMimeType": "application/json", "thinkingConfig": {"thinkingBudget": 0}}
    assert body["safetySettings"] == [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]


def test_thinking_budget_overrides_and_levels(gw: Gateway, gemini: StandInGemini) -> None:
    client = gw.client()
    client.chat.completions.create(model="custom-budgets", messages=HELLO, reasoning_effort="low")
    assert gemini.last().body["generationConfig"] == {"thinkingConfig": {"thinkingBudget": 2048}}
    client.chat.completions.create(model="custom-budgets", messages=HELLO, reasoning_effort="high")
    assert gemini.last().body["generationConfig"] == {"thinkingConfig": {"thinkingBudget": 24576}}
    client.chat.completions.create(model="levels", messages=HELLO, reasoning_effort="minimal")
    assert gemini.last().body["generationConfig"] == {"thinkingConfig": {"thinkingLevel": "minimal"}}


def test_unknown_tool_call_id_is_a_400(gw: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        gw.client().chat.completions.create(model="gemini-ok", messages=[
            *HELLO, {"role": "tool", "tool_call_id": "call_nope", "content": "x"}])
    assert err.value.param == "messages[1].tool_call_id"


# ---------------------------------------------------------------------- response translation
def test_text_answer_and_usage(gw: Gateway) -> None:
    raw = gw.client().chat.completions.with_raw_response.create(model="gemini-ok", messages=HELLO)
    reply = raw.parse()
    assert reply.object == "chat.completion"
    assert reply.id == "chatcmpl-resp-standin"
    assert reply.model == "gemini-ok"
    assert [c.index for c in reply.choices] == [0]
    msg = reply.choices[0].message
    assert (msg.role, msg.content, msg.tool_calls) == ("assistant", "".join(ANSWER), None)
    assert reply.choices[0].finish_reason == "stop"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (12, 5, 17)
    cost = expected_cost(12, 0, 5)
    assert Decimal(str(reply.usage.cost)) == cost
    assert Decimal(raw.headers["x-switchyard-cost-usd"]) == cost


def test_tool_calls_answer(gw: Gateway) -> None:
    reply = gw.client().chat.completions.create(model="gemini-tools", messages=HELLO, tools=[WEATHER_TOOL, TIME_TOOL])
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Checking."
    calls = choice.message.tool_calls
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]
    assert [json.loads(c.function.arguments) for c in calls] == [WEATHER_ARGS, TIME_ARGS]
    assert all(c.id.startswith("call_") and c.type == "function" for c in calls)
    assert len({c.id for c in calls}) == 2


# A prompt that can hold the 2,000 tokens the stand-ins report (no bill counts more than its bound).
LONG_PROMPT = [{"role": "user", "content": "Summarise this. " + "lorem ipsum " * 200}]


def test_geminis_token_count_overflow_falls_back_to_a_larger_deployment(gw: Gateway) -> None:
    long_prompt = [{"role": "user", "content": "lorem ipsum " * 100}]
    with pytest.raises(openai.BadRequestError) as refused:
        gw.client().chat.completions.create(model="gemini-small", messages=long_prompt)
    assert refused.value.code == "context_length_exceeded"
    raw = gw.client().chat.completions.with_raw_response.create(model="gemini-growing", messages=long_prompt)
    assert (raw.headers["x-switchyard-deployment"], raw.headers["x-switchyard-attempts"]) == ("gemini-growing#1", "2")


def test_zero_usage_for_an_answer_is_counted_by_geminis_own_count(gw: Gateway, gemini: StandInGemini) -> None:
    chunks = list(gw.client().chat.completions.create(model="gemini-zero-usage", messages=HELLO, stream=True,
                                                      stream_options={"include_usage": True}))
    usage = chunks[-1].usage
    assert usage.prompt_tokens == count_tokens(gemini.last().body) > 0  # as Gemini counts, not zero
    answer = {"contents": [{"role": "model", "parts": [{"text": "".join(ANSWER)}]}]}
    assert usage.completion_tokens == count_tokens(answer)  # the answer, counted by Gemini too
    assert usage.model_extra["cost"] > 0


def test_cached_tokens_priced_at_the_cached_rate(gw: Gateway) -> None:
    reply = gw.client().chat.completions.create(model="gemini-cached", messages=LONG_PROMPT)
    usage = reply.usage
    assert (usage.prompt_tokens, usage.prompt_tokens_details.cached_tokens, usage.completion_tokens) == (2000, 1500, 100)
    assert Decimal(str(usage.cost)) == expected_cost(2000, 1500, 100)


def test_thoughts_hidden_and_billed_as_output(gw: Gateway) -> None:
    reply = gw.client().chat.completions.create(model="gemini-thinking", messages=LONG_PROMPT, reasoning_effort="medium")
    assert reply.choices[0].message.content == "".join(ANSWER)  # the thought part is not content
    usage = reply.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (100, 350, 450)
    assert usage.completion_tokens_details.reasoning_tokens == 300
    assert Decimal(str(usage.cost)) == expected_cost(100, 0, 350)


@pytest.mark.parametrize(("model", "finish"), [("gemini-length", "length"), ("gemini-safety", "content_filter"),
                                               ("gemini-blocked", "content_filter")])
@pytest.mark.parametrize("stream", [False, True])
def test_finish_reasons(gw: Gateway, model: str, finish: str, stream: bool) -> None:
    client = gw.client()
    if stream:
        chunks = list(client.chat.completions.create(model=model, messages=HELLO, stream=True))
        assert [c.choices[0].finish_reason for c in chunks][-1] == finish
    else:
        assert client.chat.completions.create(model=model, messages=HELLO).choices[0].finish_reason == finish


def test_one_choice_per_candidate(gw: Gateway, gemini: StandInGemini) -> None:
    reply = gw.client().chat.completions.create(model="gemini-two", messages=HELLO, n=2)
    assert gemini.last().body["generationConfig"] == {"candidateCount": 2}
    assert [(c.index, c.message.content) for c in reply.choices] == [(0, "".join(ANSWER)), (1, "Second answer.")]


# ---------------------------------------------------------------------- streaming
def test_streaming_text_with_usage(gw: Gateway, gemini: StandInGemini) -> None:
    chunks = list(gw.client().chat.completions.create(model="gemini-ok", messages=HELLO, stream=True,
                                                      stream_options={"include_usage": True}))
    sent = gemini.last()
    assert sent.path == "/v1beta/models/gemini-ok:streamGenerateContent"
    assert sent.query == {"alt": "sse"}
    assert "stream" not in sent.body and "stream_options" not in sent.body
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].delta.content for c in chunks[1:-2]] == ANSWER
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (12, 5)
    assert Decimal(str(chunks[-1].usage.cost)) == expected_cost(12, 0, 5)
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)


def test_streaming_usage_hidden_unless_asked(gw: Gateway) -> None:
    chunks = list(gw.client().chat.completions.create(model="gemini-thinking", messages=HELLO, stream=True))
    assert all(c.choices and c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "".join(ANSWER)


def test_streaming_thinking_usage(gw: Gateway) -> None:
    chunks = list(gw.client().chat.completions.create(model="gemini-thinking", messages=LONG_PROMPT, stream=True,
                                                      stream_options={"include_usage": True}))
    usage = chunks[-1].usage
    assert (usage.completion_tokens, usage.completion_tokens_details.reasoning_tokens) == (350, 300)
    assert Decimal(str(usage.cost)) == expected_cost(100, 0, 350)


def test_streaming_tool_calls(gw: Gateway) -> None:
    client = gw.client()
    with client.chat.completions.stream(model="gemini-tools", messages=HELLO, tools=[WEATHER_TOOL, TIME_TOOL]) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Checking."
    calls = choice.message.tool_calls
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("get_weather", WEATHER_ARGS), ("get_time", TIME_ARGS)]
    assert all(c.id.startswith("call_") for c in calls)
    # Each call arrives as an id/name delta, then its arguments.
    raw = list(client.chat.completions.create(model="gemini-tools", messages=HELLO, tools=[WEATHER_TOOL], stream=True))
    deltas = [c.choices[0].delta.tool_calls[0] for c in raw if c.choices[0].delta.tool_calls]
    assert [(d.index, d.id is not None, d.function.name, d.function.arguments) for d in deltas] == [
        (0, True, "get_weather", ""), (0, False, None, json.dumps(WEATHER_ARGS, separators=(",", ":"))),
        (1, True, "get_time", ""), (1, False, None, json.dumps(TIME_ARGS, separators=(",", ":")))]


@pytest.mark.parametrize(("model", "code"), [("gemini-error-event", "upstream_error"), ("gemini-no-finish", "upstream_stream_broken")])
def test_stream_failing_midway(gw: Gateway, model: str, code: str) -> None:
    got = []
    with pytest.raises(openai.APIError) as err:
        for chunk in gw.client().chat.completions.create(model=model, messages=HELLO, stream=True):
            got.append(chunk)
    assert got, "chunks before the failure reach the client"
    assert err.value.code == code


# ---------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("model", "exc", "status", "code"),
    [
        ("gemini-400", openai.BadRequestError, 400, "invalid_argument"),
        ("gemini-404", openai.NotFoundError, 404, "not_found"),
        ("gemini-403", openai.InternalServerError, 502, "upstream_auth_error"),
        ("gemini-badkey", openai.InternalServerError, 502, "upstream_auth_error"),
        ("bad-secret", openai.InternalServerError, 502, "upstream_auth_error"),
        ("gemini-429", openai.RateLimitError, 429, "resource_exhausted"),
        ("gemini-500", openai.InternalServerError, 502, "upstream_error"),
        ("gemini-503", openai.InternalServerError, 503, "upstream_unavailable"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_errors(gw: Gateway, model: str, exc: type[openai.APIStatusError], status: int, code: str, stream: bool) -> None:
    with pytest.raises(exc) as err:
        result = gw.client().chat.completions.create(model=model, messages=HELLO, stream=stream)
        if stream:
            list(result)
    assert err.value.status_code == status
    assert err.value.code == code
    assert "gm-upstream-secret" not in str(err.value.body)
    if status == 400:
        assert "stand-in failure 400" in err.value.message
    if status == 429:
        assert err.value.response.headers["retry-after"] == "37"


def test_gateway_still_serves_after_errors(gw: Gateway) -> None:
    assert gw.client().chat.completions.create(model="gemini-ok", messages=HELLO).choices[0].message.content == "".join(ANSWER)
