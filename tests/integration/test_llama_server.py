"""switchyard in front of a real OpenAI-compatible server it did not write: llama.cpp's, from
`llama-cpp-python[server]`, serving the packaged SmolLM2. Every bill is checked against the
server's own count, asked directly; no bill may pass its hold (no usage anomaly)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import Admin, Gateway, start_gateway
from tests.integration.test_batches import is_final, jsonl, upload, wait_batch
from tests.real_servers import ALIAS, LlamaServer, start_llama_server

pytestmark = pytest.mark.local_model  # llama.cpp's own server, on the real model

CATALOG = {"smollm2-server": {
    # What the catalog claims; the small server is started with less context than this.
    "provider": "openai", "owned_by": "test", "created": 1730419200, "context_window": 8192,
    "max_output_tokens": 2048, "prices": {"input": "1", "cached_input": None, "output": "2"},
    "prompt_overhead": {"per_request": 32, "per_message": 6, "tools": 256},
    "capabilities": ["streaming", "tools", "json_object"], "endpoints": ["chat.completions", "responses"],
}}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def nanos(prompt: int, output: int) -> int:
    return prompt * 1000 + output * 2000  # $1 and $2 per 1M tokens


@pytest.fixture(scope="module")
def tools_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """Small context, the server's function-calling chat format (tools and tool_choice honoured)."""
    server = start_llama_server(tmp_path_factory.mktemp("llama-tools"), n_ctx=2048, chat_format="chatml-function-calling")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """The model's own chat template (seed honoured), a larger context."""
    server = start_llama_server(tmp_path_factory.mktemp("llama-plain"), n_ctx=8192)
    yield server
    server.stop()


def _dep(server: LlamaServer, dep_id: str) -> dict[str, Any]:
    return {"id": dep_id, "provider": "openai", "base_url": server.base_url, "model": ALIAS,
            "catalog": "smollm2-server", "timeouts": {"connect": 2, "read": 120}}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, tools_server: LlamaServer, plain_server: LlamaServer) -> Iterator[Gateway]:
    config = {"catalog": CATALOG, "models": {
        "llama": {"deployments": [_dep(plain_server, "plain")]},
        "llama-tools": {"deployments": [_dep(tools_server, "tools")]},
        "llama-growing": {"deployments": [_dep(tools_server, "small-ctx"), _dep(plain_server, "big-ctx")]},
    }}
    gateway = start_gateway(tmp_path_factory.mktemp("llama-gw"), config=config)
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def org(gw: Gateway) -> tuple[str, str]:
    admin = Admin(gw)
    org = admin.org("llama-users", tier="unlimited")
    admin.topup(org["id"], "10")
    return org["id"], admin.key(org["id"])


@pytest.fixture(scope="module")
def client(gw: Gateway, org: tuple[str, str]) -> openai.OpenAI:
    return gw.client(org[1])


def record(gw: Gateway, request_id: str) -> dict[str, Any]:
    """The request's usage record; whatever it says, its bill stayed within its hold."""
    row = gw.usage_record(request_id)
    assert row["anomaly"] is None, row["anomaly"]  # the server's counts stayed within admission's bounds
    assert row["cost_nanos"] == nanos(row["input_tokens"], row["output_tokens"])
    return row


def test_chat_is_billed_as_the_server_reported(gw: Gateway, client: openai.OpenAI, plain_server: LlamaServer) -> None:
    body = {"messages": QUESTION, "max_tokens": 24, "temperature": 0}
    raw = client.chat.completions.with_raw_response.create(model="llama", **body)
    reply = raw.parse()
    direct = plain_server.ask("/v1/chat/completions", {**body, "model": ALIAS})
    assert reply.choices[0].message.content == direct["choices"][0]["message"]["content"]
    assert reply.model == "llama"  # the public name, not the server's
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (
        direct["usage"]["prompt_tokens"], direct["usage"]["completion_tokens"])
    row = record(gw, raw.headers["x-request-id"])
    assert row["usage_source"] == "upstream" and row["input_tokens"] == direct["usage"]["prompt_tokens"]


def test_a_stream_without_usage_is_billed_by_the_servers_count(gw: Gateway, client: openai.OpenAI, plain_server: LlamaServer) -> None:
    body = {"messages": QUESTION, "max_tokens": 24, "temperature": 0}
    raw = client.chat.completions.with_raw_response.create(
        model="llama", stream=True, stream_options={"include_usage": True}, **body)
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage = chunks[-1].usage
    # The server streams no usage; the bill is its own count of this prompt and of the text sent.
    prompt = plain_server.prompt_tokens(body)
    assert usage.prompt_tokens == prompt and usage.completion_tokens == plain_server.text_tokens(text) > 0
    direct = plain_server.ask("/v1/chat/completions", {**body, "model": ALIAS})
    assert direct["usage"]["prompt_tokens"] == prompt
    assert abs(direct["usage"]["completion_tokens"] - usage.completion_tokens) <= 2  # re-tokenised text
    row = record(gw, raw.headers["x-request-id"])
    assert row["usage_source"] == "counted" and (row["input_tokens"], row["output_tokens"]) == (prompt, usage.completion_tokens)
    assert Decimal(str(usage.model_extra["cost"])) * 10**9 == row["cost_nanos"]


def test_responses_are_served_by_translation(gw: Gateway, client: openai.OpenAI, plain_server: LlamaServer) -> None:
    raw = client.responses.with_raw_response.create(model="llama", input="What is the capital of France?",
                                                    max_output_tokens=16, temperature=0)
    resp = raw.parse()
    assert resp.status in ("completed", "incomplete") and resp.output_text
    assert 0 < resp.usage.output_tokens <= 16  # the limit reached the server as max_tokens
    gw.logs_with("deployment plain has no /responses (HTTP 404)")
    record(gw, raw.headers["x-request-id"])

    with client.responses.stream(model="llama", input="And the capital of Italy?", max_output_tokens=16) as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == final.output_text and 0 < final.usage.output_tokens <= 16
    assert final.usage.output_tokens == plain_server.text_tokens(text)


def test_a_tool_round_trip(gw: Gateway, client: openai.OpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    raw = client.chat.completions.with_raw_response.create(
        model="llama-tools", messages=messages, tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}}, max_tokens=40)
    reply = raw.parse()
    call = reply.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and isinstance(json.loads(call.function.arguments)["city"], str)
    record(gw, raw.headers["x-request-id"])
    # The SDK sends the assistant turn back with `content: null`, which this server refuses alone.
    messages += [reply.choices[0].message.model_dump(exclude_none=False, include={"role", "content", "tool_calls"}),
                 {"role": "tool", "tool_call_id": call.id, "content": '{"temperature_c": 21}'}]
    raw = client.chat.completions.with_raw_response.create(model="llama-tools", messages=messages, tools=[WEATHER],
                                                           max_tokens=24, temperature=0)
    assert raw.parse().choices[0].message.content
    record(gw, raw.headers["x-request-id"])

    first = client.responses.create(model="llama-tools", input="Weather in Paris?", max_output_tokens=40,
                                    tools=[{"type": "function", **WEATHER["function"]}],
                                    tool_choice={"type": "function", "name": "get_weather"})
    fn = next(i for i in first.output if i.type == "function_call")
    follow = client.responses.create(model="llama-tools", previous_response_id=first.id, max_output_tokens=24,
                                     input=[{"type": "function_call_output", "call_id": fn.call_id, "output": "21C"}])
    assert follow.output_text


def test_stop_and_seed(client: openai.OpenAI) -> None:
    counted = client.chat.completions.create(
        model="llama", messages=[{"role": "user", "content": "Count from 1 to 10, separated by commas."}],
        max_tokens=30, temperature=0, stop=["5"])
    assert counted.choices[0].finish_reason == "stop" and "5" not in counted.choices[0].message.content

    story = [{"role": "user", "content": "Tell me a story."}]
    runs = [client.chat.completions.create(model="llama", messages=story, max_tokens=16, temperature=1.0, seed=42)
            .choices[0].message.content for _ in range(2)]
    assert runs[0] == runs[1]  # the seed reached the server (its template honours it)


def test_context_overflow_falls_back_to_the_larger_server(gw: Gateway, client: openai.OpenAI) -> None:
    long_prompt = [{"role": "user", "content": "Paris is lovely in spring. " * 500}]  # ~3000 tokens: over 2048
    raw = client.chat.completions.with_raw_response.create(model="llama-growing", messages=long_prompt, max_tokens=8)
    assert raw.parse().choices[0].message.content
    assert raw.headers["x-switchyard-deployment"] == "big-ctx" and raw.headers["x-switchyard-attempts"] == "2"
    record(gw, raw.headers["x-request-id"])

    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="llama-tools", messages=long_prompt, max_tokens=8)
    assert refused.value.code == "context_length_exceeded" and "maximum context length is 2048" in refused.value.message


def test_the_estimate_contains_the_bill(gw: Gateway, org: tuple[str, str], client: openai.OpenAI) -> None:
    http = httpx.Client(base_url=gw.base_url, headers={"Authorization": f"Bearer {org[1]}"}, timeout=120)
    body = {"model": "llama", "messages": QUESTION, "max_tokens": 24}
    est = http.post("/cost/estimate", json=body).json()
    assert est["exact"] is True  # the server counted it
    raw = client.chat.completions.with_raw_response.create(**body)
    row = record(gw, raw.headers["x-request-id"])
    assert est["input_tokens"] == row["input_tokens"]
    assert est["cost"]["min_nanos"] <= row["cost_nanos"] <= est["cost"]["max_nanos"]


def test_a_batch(gw: Gateway, org: tuple[str, str], client: openai.OpenAI, plain_server: LlamaServer) -> None:
    lines = [{"custom_id": f"q{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": "llama", "messages": [{"role": "user", "content": f"What is {i} plus {i}?"}],
                       "max_tokens": 16, "temperature": 0}} for i in range(3)]
    batch = client.batches.create(input_file_id=upload(client, lines), endpoint="/v1/chat/completions",
                                  completion_window="24h")
    batch = wait_batch(client, batch.id, is_final)
    assert batch.status == "completed" and batch.request_counts.completed == 3
    outputs = {o["custom_id"]: o["response"]["body"] for o in jsonl(client, batch.output_file_id)}
    for line in lines:
        usage = outputs[line["custom_id"]]["usage"]
        assert usage["prompt_tokens"] == plain_server.prompt_tokens(line["body"])
        assert 0 < usage["completion_tokens"] <= 16
