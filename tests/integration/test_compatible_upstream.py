"""OpenAI-compatible servers with the habits of real ones (llama.cpp's): no usage in streams,
zeros for usage, `max_completion_tokens` ignored, no Responses API, their own overflow wording.
switchyard must bill what the server itself counted, keep every limit, translate, and fall back."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import Admin, Gateway, start_gateway
from tests.standins.llama_server import ANSWER, LlamaServerStandIn, chatml, prompt_tokens, pseudo_tokens

PRICES = {"input": "1", "cached_input": None, "output": "2"}  # $ per 1M tokens
CATALOG = {"smollm-8k": {
    # The catalog promises 8K; a server started with a smaller context refuses past its own.
    "provider": "openai", "owned_by": "test", "created": 1700000000, "context_window": 8192,
    "max_output_tokens": 1024, "prices": PRICES,
    # ChatML as the stand-in counts it: 11 tokens a message, 7 for BOS and the generation prompt.
    "prompt_overhead": {"per_request": 8, "per_message": 12, "tools": 64}, "capabilities": ["streaming", "tools", "json_object"],
    "endpoints": ["chat.completions", "responses"],
}}
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def nanos(prompt: int, output: int) -> int:
    return prompt * 1000 + output * 2000  # $1 and $2 per 1M tokens, in nano-dollars


@pytest.fixture(scope="module")
def llama() -> Iterator[LlamaServerStandIn]:
    server = LlamaServerStandIn().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def llama_plain() -> Iterator[LlamaServerStandIn]:
    """llama-server's own 404 body (an integer `code`); a small context, to overflow."""
    server = LlamaServerStandIn(missing_route="llama-server", context_window=300).start()
    yield server
    server.stop()


def _dep(server: LlamaServerStandIn, model: str = "ok", **extra: Any) -> dict[str, Any]:
    return {"provider": "openai", "base_url": server.base_url, "model": model, "catalog": "smollm-8k",
            "timeouts": {"connect": 2, "read": 20}, **extra}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, llama: LlamaServerStandIn,
       llama_plain: LlamaServerStandIn) -> Iterator[Gateway]:
    config = {
        "catalog": CATALOG,
        "models": {
            "llama": {"deployments": [_dep(llama)]},
            "llama-zero": {"deployments": [_dep(llama, "zero-usage")]},
            "llama-long": {"deployments": [_dep(llama, "long")]},
            "llama-plain": {"deployments": [_dep(llama_plain)]},
            # Tried in order: the small server first, the big one when the prompt does not fit.
            "llama-growing": {"deployments": [_dep(llama_plain, id="small-ctx"), _dep(llama, id="big-ctx")]},
        },
    }
    gateway = start_gateway(tmp_path_factory.mktemp("compatible"), config=config)
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def key(gw: Gateway) -> str:
    admin = Admin(gw)
    org = admin.org("compatible", tier="unlimited")
    admin.topup(org["id"], "10")
    return admin.key(org["id"])




def _chat_sent(server: LlamaServerStandIn) -> dict[str, Any]:
    """The last completion request the server got (not the gateway's own counting calls)."""
    return next(r for r in reversed(server.received) if r["path"] == "/v1/chat/completions")


def _server_count(messages: list[dict[str, Any]]) -> int:
    """The prompt as the server itself counts it: its template, its tokenizer, its BOS."""
    return prompt_tokens({"messages": messages})


def test_a_stream_without_usage_is_billed_by_the_servers_own_count(gw: Gateway, key: str, llama: LlamaServerStandIn) -> None:
    raw = gw.client(key).chat.completions.with_raw_response.create(
        model="llama", messages=QUESTION, stream=True, stream_options={"include_usage": True})
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ANSWER
    usage = chunks[-1].usage
    # 25 pseudo-tokens with the chat template and BOS, where an OpenAI encoding of the bare
    # question says 7: the server's count is what it spent.
    assert usage.prompt_tokens == _server_count(QUESTION) == 25
    assert usage.completion_tokens == len(pseudo_tokens(ANSWER))
    row = gw.usage_record(raw.headers["x-request-id"])
    assert row["usage_source"] == "counted"
    assert (row["input_tokens"], row["output_tokens"]) == (usage.prompt_tokens, usage.completion_tokens)
    assert row["cost_nanos"] == nanos(usage.prompt_tokens, usage.completion_tokens)
    assert Decimal(str(usage.model_extra["cost"])) * 10**9 == row["cost_nanos"]


def test_a_usage_of_zeros_is_counted_not_free(gw: Gateway, key: str) -> None:
    raw = gw.client(key).chat.completions.with_raw_response.create(model="llama-zero", messages=QUESTION)
    reply = raw.parse()
    assert reply.choices[0].message.content == ANSWER
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (_server_count(QUESTION), len(pseudo_tokens(ANSWER)))
    row = gw.usage_record(raw.headers["x-request-id"])
    assert row["usage_source"] == "counted" and row["cost_nanos"] == nanos(_server_count(QUESTION), len(pseudo_tokens(ANSWER))) > 0


def test_a_reported_usage_is_billed_as_reported(gw: Gateway, key: str) -> None:
    raw = gw.client(key).chat.completions.with_raw_response.create(model="llama", messages=QUESTION, max_tokens=5)
    reply = raw.parse()
    assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == 5
    assert gw.usage_record(raw.headers["x-request-id"])["usage_source"] == "upstream"


def test_tools_count_in_the_servers_template(gw: Gateway, key: str, llama: LlamaServerStandIn) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "description": "Look a city up.",
                                                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    chunks = list(gw.client(key).chat.completions.create(
        model="llama", messages=QUESTION, tools=tools, stream=True, stream_options={"include_usage": True}))
    sent = _chat_sent(llama)
    assert chunks[-1].usage.prompt_tokens == prompt_tokens(sent) > _server_count(QUESTION)


@pytest.mark.parametrize("model", ["llama", "llama-plain"])  # FastAPI's 404 body, and llama-server's
def test_a_server_without_the_responses_api_is_served_by_translation(
    gw: Gateway, key: str, model: str, llama: LlamaServerStandIn, llama_plain: LlamaServerStandIn,
) -> None:
    server = llama if model == "llama" else llama_plain
    client = gw.client(key)
    first = client.responses.create(model=model, input="What is the capital of France?")
    assert first.status == "completed" and first.output_text == ANSWER
    assert first.usage.input_tokens == prompt_tokens(_chat_sent(server))  # the server reports non-streamed usage
    before = server.paths().count("/v1/responses")
    with client.responses.stream(model=model, input="And of Italy?") as stream:
        deltas = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert deltas == ANSWER == final.output_text
    # Found out once, then remembered: the second turn went straight to chat.
    assert before == 1 and server.paths().count("/v1/responses") == 1
    said = [line for line in gw.logs_with(f"deployment {model}#0 has no /responses (HTTP 404)").splitlines()
            if f"deployment {model}#0 has no /responses (HTTP 404)" in line]
    assert len(said) == 1  # logged once, not per request


def test_an_output_limit_reaches_a_server_that_ignores_max_completion_tokens(
    gw: Gateway, key: str, llama: LlamaServerStandIn,
) -> None:
    raw = gw.client(key).responses.with_raw_response.create(model="llama-long", input="Write a lot.", max_output_tokens=16)
    resp = raw.parse()
    sent = _chat_sent(llama)
    assert sent["max_tokens"] == 16  # the form llama.cpp honours, with max_completion_tokens beside it
    assert len(pseudo_tokens(resp.output_text)) == 16 and resp.status == "incomplete"
    row = gw.usage_record(raw.headers["x-request-id"])
    assert row["output_tokens"] == 16 and row["anomaly"] is None


def test_the_servers_overflow_wording_falls_back_to_a_larger_deployment(gw: Gateway, key: str) -> None:
    long_prompt = [{"role": "user", "content": "Paris is lovely. " * 120}]  # 360+ pseudo-tokens: over the small server's 300
    raw = gw.client(key).chat.completions.with_raw_response.create(model="llama-growing", messages=long_prompt, max_tokens=8)
    assert raw.parse().choices[0].message.content
    assert raw.headers["x-switchyard-deployment"] == "big-ctx" and raw.headers["x-switchyard-attempts"] == "2"

    with pytest.raises(openai.BadRequestError) as refused:  # with nowhere to fall back: the client's 400, coded
        gw.client(key).chat.completions.create(model="llama-plain", messages=long_prompt, max_tokens=8)
    assert refused.value.code == "context_length_exceeded"
    assert "available context size" in refused.value.message


def test_the_estimate_counts_as_the_server_does_and_contains_the_bill(gw: Gateway, key: str) -> None:
    http = httpx.Client(base_url=gw.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
    est = http.post("/cost/estimate", json={"model": "llama", "messages": QUESTION, "max_tokens": 100}).json()
    assert est["input_tokens"] == _server_count(QUESTION) and est["exact"] is True
    chunks = list(gw.client(key).chat.completions.create(
        model="llama", messages=QUESTION, max_tokens=100, stream=True, stream_options={"include_usage": True}))
    billed = Decimal(str(chunks[-1].usage.model_extra["cost"])) * 10**9
    assert est["cost"]["min_nanos"] <= billed <= est["cost"]["max_nanos"]


def test_a_conversation_compacted_by_translation_continues(gw: Gateway, key: str, llama: LlamaServerStandIn) -> None:
    client = gw.client(key)
    history = [
        {"role": "user", "content": "We are planning a trip to France."},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Lovely. Where to?"}]},
        {"role": "user", "content": "Paris, in May."},
    ]
    raw = client.responses.with_raw_response.compact(model="llama", input=history)
    compacted = raw.parse()
    assert compacted.object == "response.compaction" and compacted.id.startswith("resp_")
    assert [i.type for i in compacted.output] == ["message", "message", "compaction"]  # the user's turns, then ours
    summary = compacted.output[-1].encrypted_content
    assert summary.startswith("sy-compaction-v1:") and base64.b64decode(summary.split(":", 1)[1]).decode() == ANSWER
    asked = _chat_sent(llama)["messages"]
    assert asked[-1]["role"] == "user" and "Summarise this conversation" in asked[-1]["content"]
    assert compacted.usage.output_tokens == len(pseudo_tokens(ANSWER))
    row = gw.usage_record(raw.headers["x-request-id"])
    assert row["endpoint"] == "/v1/responses/compact" and row["cost_nanos"] > 0

    follow_up = [*[i.model_dump(exclude_none=True, warnings=False) for i in compacted.output], {"role": "user", "content": "What should we see?"}]
    assert client.responses.create(model="llama", input=follow_up).output_text == ANSWER
    sent = _chat_sent(llama)["messages"]
    assert {"role": "system", "content": "Summary of the conversation so far:\n" + ANSWER} in sent
    assert sent[-1] == {"role": "user", "content": "What should we see?"}
    assert chatml(sent).count("<|im_start|>user") == 3
