"""The embedded local model through the real server and the official SDK."""

from __future__ import annotations

import json
import threading

import httpx
import openai
import pytest
from pydantic import BaseModel

from tests.conftest import Gateway

MODEL = "smollm2-135m-instruct"
CAPITAL = [{"role": "user", "content": "What is the capital city of France? Answer in one word."}]


def test_chat_answers_with_real_usage(local_gateway: Gateway) -> None:
    client = local_gateway.client()
    reply = client.chat.completions.create(model="default", messages=CAPITAL, max_tokens=24, temperature=0)
    choice = reply.choices[0]
    assert reply.object == "chat.completion"
    assert reply.model == MODEL
    assert "paris" in (choice.message.content or "").lower()
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage is not None
    assert reply.usage.prompt_tokens > 5
    assert 0 < reply.usage.completion_tokens <= 24
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert reply._request_id and reply._request_id.startswith("req_")


def test_max_tokens_cuts_with_length(local_gateway: Gateway) -> None:
    reply = local_gateway.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Write a long story about a dragon."}],
        max_completion_tokens=5, temperature=0,
    )
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 5


def test_same_seed_same_text(local_gateway: Gateway) -> None:
    client = local_gateway.client()
    kwargs = dict(model=MODEL, messages=[{"role": "user", "content": "Name three animals."}], max_tokens=30, temperature=1.0, seed=1234)
    first = client.chat.completions.create(**kwargs).choices[0].message.content
    other = client.chat.completions.create(**{**kwargs, "messages": [{"role": "user", "content": "Count to ten."}]})
    again = client.chat.completions.create(**kwargs).choices[0].message.content
    assert other.choices[0].message.content  # something else ran in between on the same instance
    assert first == again


def test_different_seeds_differ(local_gateway: Gateway) -> None:
    client = local_gateway.client()
    texts = {
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Tell me a joke."}], max_tokens=30, temperature=1.2, seed=s,
        ).choices[0].message.content
        for s in (1, 2, 3)
    }
    assert len(texts) > 1


def test_stop_sequence_ends_before_it(local_gateway: Gateway) -> None:
    client = local_gateway.client()
    messages = [{"role": "user", "content": "Count from 1 to 10, separated by commas."}]
    full = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=40, temperature=0).choices[0].message.content
    assert full and "4" in full
    stopped = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=40, temperature=0, stop=["4"])
    text = stopped.choices[0].message.content or ""
    assert "4" not in text
    assert full.startswith(text)
    assert stopped.choices[0].finish_reason == "stop"


def test_n_choices_are_indexed(local_gateway: Gateway) -> None:
    reply = local_gateway.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say a color."}], max_tokens=8, n=3, seed=7,
    )
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert all(c.message.content is not None for c in reply.choices)


def test_streaming_text_with_usage(local_gateway: Gateway) -> None:
    stream = local_gateway.client().chat.completions.create(
        model=MODEL, messages=CAPITAL, max_tokens=20, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes in (["stop"], ["length"])
    assert "paris" in text.lower()
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1 and chunks[-1] is usage_chunks[0] and chunks[-1].choices == []
    assert usage_chunks[0].usage.completion_tokens > 0
    assert len({c.id for c in chunks}) == 1


def test_streaming_without_include_usage_has_no_usage_chunk(local_gateway: Gateway) -> None:
    chunks = list(local_gateway.client().chat.completions.create(
        model=MODEL, messages=CAPITAL, max_tokens=8, stream=True,
    ))
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)


def test_stream_matches_non_stream_for_same_seed(local_gateway: Gateway) -> None:
    client = local_gateway.client()
    kwargs = dict(model=MODEL, messages=[{"role": "user", "content": "Describe the sea."}], max_tokens=25, seed=99, temperature=0.9)
    whole = client.chat.completions.create(**kwargs).choices[0].message.content
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(**kwargs, stream=True) if c.choices)
    assert whole == streamed


class City(BaseModel):
    name: str
    country: str
    population: int


def test_parse_with_pydantic_model(local_gateway: Gateway) -> None:
    completion = local_gateway.client().chat.completions.parse(
        model=MODEL,
        messages=[{"role": "user", "content": "Give the name, country and population of Paris as JSON."}],
        response_format=City, max_tokens=200, temperature=0,
    )
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, City)
    assert parsed.name


def test_json_object_output_parses(local_gateway: Gateway) -> None:
    reply = local_gateway.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Return a JSON object with the keys name and color for a cat."}],
        response_format={"type": "json_object"}, max_tokens=300, temperature=0, seed=3,
    )
    assert reply.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(reply.choices[0].message.content or ""), dict)


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}},
}
WEATHER_Q = [{"role": "user", "content": "What is the weather in Paris?"}]


def test_required_tool_choice_gives_valid_tool_call(local_gateway: Gateway) -> None:
    reply = local_gateway.client().chat.completions.create(
        model=MODEL, messages=WEATHER_Q, tools=[WEATHER_TOOL, TIME_TOOL], tool_choice="required", temperature=0,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    call = choice.message.tool_calls[0]
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name in ("get_weather", "get_time")
    args = json.loads(call.function.arguments)
    if call.function.name == "get_weather":
        assert set(args) == {"city", "unit"} and args["unit"] in ("c", "f")


def test_named_tool_choice_calls_that_tool(local_gateway: Gateway) -> None:
    reply = local_gateway.client().chat.completions.create(
        model=MODEL, messages=WEATHER_Q, tools=[WEATHER_TOOL, TIME_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_time"}}, temperature=0,
    )
    calls = reply.choices[0].message.tool_calls
    assert calls is not None and len(calls) == 1
    assert calls[0].function.name == "get_time"
    assert "zone" in json.loads(calls[0].function.arguments)


def test_tool_choice_none_answers_in_text(local_gateway: Gateway) -> None:
    reply = local_gateway.client().chat.completions.create(
        model=MODEL, messages=WEATHER_Q, tools=[WEATHER_TOOL], tool_choice="none", max_tokens=20, temperature=0,
    )
    assert reply.choices[0].message.tool_calls is None
    assert reply.choices[0].message.content


def test_auto_tool_choice_is_text_or_valid_call(local_gateway: Gateway) -> None:
    reply = local_gateway.client().chat.completions.create(
        model=MODEL, messages=WEATHER_Q, tools=[WEATHER_TOOL], max_tokens=80, temperature=0,
    )
    msg = reply.choices[0].message
    if msg.tool_calls:
        assert reply.choices[0].finish_reason == "tool_calls"
        assert json.loads(msg.tool_calls[0].function.arguments)["unit"] in ("c", "f")
    else:
        assert msg.content and not msg.content.startswith("<")


def test_streamed_tool_call_deltas(local_gateway: Gateway) -> None:
    client = local_gateway.client()
    stream = client.chat.completions.create(
        model=MODEL, messages=WEATHER_Q, tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}}, temperature=0, stream=True,
    )
    deltas = [c.choices[0].delta.tool_calls for c in stream if c.choices and c.choices[0].delta.tool_calls]
    first = deltas[0][0]
    assert first.index == 0 and first.id and first.type == "function"
    assert first.function.name == "get_weather" and first.function.arguments == ""
    later = [d[0] for d in deltas[1:]]
    assert later and all(d.id is None and d.function.name is None for d in later)
    args = "".join(d.function.arguments for d in later)
    assert set(json.loads(args)) == {"city", "unit"}
    # The SDK's stream helper accumulates the same call.
    with client.chat.completions.stream(
        model=MODEL, messages=WEATHER_Q, tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}}, temperature=0,
    ) as s:
        final = s.get_final_completion()
    assert final.choices[0].finish_reason == "tool_calls"
    assert json.loads(final.choices[0].message.tool_calls[0].function.arguments) == json.loads(args)


def test_tool_result_round_trip(local_gateway: Gateway) -> None:
    reply = local_gateway.client().chat.completions.create(
        model=MODEL, max_tokens=30, temperature=0, tools=[WEATHER_TOOL],
        messages=[
            *WEATHER_Q,
            {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "c"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 21, "sky": "sunny"}'},
        ],
    )
    assert reply.choices[0].message.content or reply.choices[0].message.tool_calls


def test_logprobs(local_gateway: Gateway) -> None:
    reply = local_gateway.client().chat.completions.create(
        model=MODEL, messages=CAPITAL, max_tokens=6, temperature=0, logprobs=True, top_logprobs=3,
    )
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens
    for item in content:
        assert item.logprob <= 0
        assert len(item.top_logprobs) == 3
        # Greedy decoding picks the most likely token.
        assert item.logprob == pytest.approx(item.top_logprobs[0].logprob)
    assert "".join(i.token for i in content) == reply.choices[0].message.content


def test_cached_tokens_only_when_prefix_was_reused(local_gateway: Gateway) -> None:
    client = local_gateway.client()
    system = {"role": "system", "content": "You are a terse assistant. " * 30}
    cold = client.chat.completions.create(
        model=MODEL, messages=[{"role": "system", "content": "Fresh prefix " + "zq " * 40}, CAPITAL[0]], max_tokens=3,
    )
    # Only the template's fixed "<|im_start|>system\n" header can have been reused.
    assert cold.usage.prompt_tokens_details.cached_tokens <= 3
    client.chat.completions.create(model=MODEL, messages=[system, CAPITAL[0]], max_tokens=3)
    warm = client.chat.completions.create(
        model=MODEL, messages=[system, {"role": "user", "content": "And of Spain?"}], max_tokens=3,
    )
    cached = warm.usage.prompt_tokens_details.cached_tokens
    assert 100 < cached < warm.usage.prompt_tokens


def test_images_rejected_for_text_only_model(local_gateway: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        local_gateway.client().chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ]}],
        )
    assert err.value.param == "messages"


def test_context_overflow_is_400_before_generation(local_gateway: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        local_gateway.client().chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "word " * 9000}], max_tokens=10,
        )
    assert err.value.code == "context_length_exceeded"


def test_the_catalog_window_is_the_models_window(local_gateway: Gateway) -> None:
    # A prompt past the 4,096 tokens the engine once had fits the 8,192-token window the catalog
    # lists. 4,400 words rather than a coding agent's 6,500 tokens: the CPU build reads about 200
    # tokens/s.
    reply = local_gateway.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "word " * 4400}], max_tokens=4)
    assert reply.usage.prompt_tokens > 4400
    assert reply.usage.completion_tokens <= 4


def test_a_request_without_a_limit_gets_the_default_output_limit(local_gateway: Gateway) -> None:
    reply = local_gateway.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Write a long story about a dragon."}], seed=3)
    assert reply.usage.completion_tokens <= 512  # the local provider's default, not thousands of tokens


def test_concurrent_requests_all_complete(local_gateway: Gateway) -> None:
    client = local_gateway.client()
    results: list[str | None] = []
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": f"Say the number {i}."}], max_tokens=8, seed=i)
            results.append(r.choices[0].message.content)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 6


def test_client_disconnect_stops_generation(local_gateway: Gateway) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Write a very long essay about rivers."}],
            "max_tokens": 3000, "stream": True, "temperature": 1.0, "seed": 5}
    headers = {"Authorization": f"Bearer {local_gateway.client().api_key}"}
    with httpx.Client(timeout=60) as http:
        with http.stream("POST", local_gateway.base_url + "/chat/completions", json=body, headers=headers) as resp:
            lines = resp.iter_lines()
            got = [next(lines) for _ in range(6)]
            assert any(line.startswith("data: ") for line in got)
            request_id = resp.headers["x-request-id"]
    # The engine logs how far a generation got when its client went away.
    reply = local_gateway.client().chat.completions.create(model=MODEL, messages=CAPITAL, max_tokens=4)
    assert reply.choices[0].message.content is not None
    logs = local_gateway.logs_with(request_id, "client went away")
    line = next(l for l in logs.splitlines() if request_id in l and "client went away" in l)
    generated = int(line.split("after ")[1].split(" ")[0])
    assert generated < 3000
