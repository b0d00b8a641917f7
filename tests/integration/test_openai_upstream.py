"""The OpenAI-compatible provider against a stand-in upstream that speaks OpenAI's wire format."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.conftest import Gateway
from tests.standins.openai_upstream import ANSWER, TOOL_ARGS, StandInUpstream

HELLO = [{"role": "user", "content": "Hello"}]


def test_non_streaming_answer_and_forwarded_body(upstream_gateway: Gateway, upstream: StandInUpstream) -> None:
    client = upstream_gateway.client()
    reply = client.chat.completions.create(
        model="gpt-5.2", messages=HELLO, max_completion_tokens=50, temperature=0.3,
        extra_body={"some_future_param": {"nested": [1, 2]}, "verbosity": "low"},
    )
    assert reply.choices[0].message.content == "".join(ANSWER)
    assert reply.usage.total_tokens == 17
    sent = upstream.last()
    # Everything the client sent reaches the upstream; only the model id is the deployment's, and the
    # output limit goes in both forms compatible servers read (llama.cpp ignores max_completion_tokens).
    assert sent.body == {
        "model": "ok", "messages": HELLO, "max_completion_tokens": 50, "max_tokens": 50, "temperature": 0.3,
        "some_future_param": {"nested": [1, 2]}, "verbosity": "low",
    }
    assert sent.headers["Authorization"] == "Bearer sk-upstream-secret"


def test_alias_resolves_to_the_same_deployment(upstream_gateway: Gateway, upstream: StandInUpstream) -> None:
    with upstream_gateway.http() as http:
        resp = http.post("/v1/chat/completions", json={"model": "fast", "messages": HELLO},
                         headers={"Authorization": "Bearer sk-sy-test-user"})
    assert resp.status_code == 200
    assert resp.headers["x-switchyard-deployment"] == "gpt-5.2#0"
    assert resp.headers["x-request-id"].startswith("req_")
    assert upstream.last().body["model"] == "ok"


def test_streaming_relays_chunks_and_usage_when_asked(upstream_gateway: Gateway, upstream: StandInUpstream) -> None:
    chunks = list(upstream_gateway.client().chat.completions.create(
        model="gpt-5.2", messages=HELLO, stream=True, stream_options={"include_usage": True},
    ))
    assert [c.choices[0].delta.content for c in chunks if c.choices][1:-1] == ANSWER
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 17
    assert upstream.last().body["stream_options"] == {"include_usage": True}


def test_streaming_hides_usage_chunk_the_client_did_not_ask_for(upstream_gateway: Gateway, upstream: StandInUpstream) -> None:
    chunks = list(upstream_gateway.client().chat.completions.create(model="gpt-5.2", messages=HELLO, stream=True))
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)
    # The gateway still asked the upstream for usage: metering needs it.
    assert upstream.last().body["stream_options"] == {"include_usage": True}
    assert "stream_options" not in {k for k, v in upstream.last().body.items() if v is None}


def test_raw_stream_is_sse_ending_in_done(upstream_gateway: Gateway) -> None:
    with httpx.Client(timeout=30) as http:
        with http.stream("POST", upstream_gateway.base_url + "/chat/completions",
                         json={"model": "gpt-5.2", "messages": HELLO, "stream": True},
                         headers={"Authorization": "Bearer sk-sy-test-user"}) as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            body = resp.read().decode()
    frames = [f for f in body.split("\n\n") if f]
    assert all(f.startswith("data: ") for f in frames)
    assert frames[-1] == "data: [DONE]"
    assert json.loads(frames[0][6:])["object"] == "chat.completion.chunk"


def test_tool_call_deltas_relayed(upstream_gateway: Gateway) -> None:
    client = upstream_gateway.client()
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}
    with client.chat.completions.stream(model="sim-tools", messages=HELLO, tools=[tool]) as stream:
        final = stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert call.function.arguments == "".join(TOOL_ARGS)
    assert final.choices[0].finish_reason == "tool_calls"
    reply = client.chat.completions.create(model="sim-tools", messages=HELLO, tools=[tool])
    assert reply.choices[0].message.tool_calls[0].function.arguments == "".join(TOOL_ARGS)


@pytest.mark.parametrize(
    ("model", "exc", "status", "code"),
    [
        ("sim-status-400", openai.BadRequestError, 400, "stand_in_code"),
        ("sim-status-404", openai.NotFoundError, 404, "stand_in_code"),
        ("sim-status-401", openai.InternalServerError, 502, "upstream_auth_error"),
        ("sim-status-500", openai.InternalServerError, 502, "upstream_error"),
        ("sim-status-503", openai.InternalServerError, 503, "upstream_unavailable"),
        ("sim-garbage", openai.InternalServerError, 502, "upstream_invalid_response"),
        ("sim-slow", openai.APIStatusError, 504, "upstream_timeout"),
        ("unreachable", openai.InternalServerError, 502, "upstream_connection_error"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_errors_map_to_openai_errors(
    upstream_gateway: Gateway, model: str, exc: type[Exception], status: int, code: str, stream: bool
) -> None:
    with pytest.raises(exc) as err:
        result = upstream_gateway.client().chat.completions.create(model=model, messages=HELLO, stream=stream)
        if stream:
            list(result)
    assert err.value.status_code == status
    assert err.value.code == code
    assert err.value.request_id.startswith("req_")
    assert "sk-upstream-secret" not in str(err.value.body)


def test_upstream_400_keeps_its_param(upstream_gateway: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        upstream_gateway.client().chat.completions.create(model="sim-status-400", messages=HELLO)
    assert err.value.param == "messages"
    assert "stand-in failure 400" in err.value.message


def test_upstream_429_keeps_retry_after(upstream_gateway: Gateway) -> None:
    with pytest.raises(openai.RateLimitError) as err:
        upstream_gateway.client().chat.completions.create(model="sim-status-429", messages=HELLO)
    assert err.value.response.headers["retry-after"] == "7"
    assert err.value.code == "stand_in_code"


@pytest.mark.parametrize("model", ["sim-broken-stream", "sim-error-event", "sim-no-done"])
def test_stream_failing_midway_ends_with_error_event(upstream_gateway: Gateway, model: str) -> None:
    stream = upstream_gateway.client().chat.completions.create(model=model, messages=HELLO, stream=True)
    got = []
    with pytest.raises(openai.APIError) as err:
        for chunk in stream:
            got.append(chunk)
    assert got, "chunks before the failure reach the client"
    assert err.value.code in ("upstream_stream_broken", "boom")


def test_gateway_survives_all_of_the_above(upstream_gateway: Gateway) -> None:
    reply = upstream_gateway.client().chat.completions.create(model="gpt-5.2", messages=HELLO)
    assert reply.choices[0].message.content == "".join(ANSWER)


def test_many_concurrent_streams_relay_exactly(upstream_gateway: Gateway) -> None:
    import concurrent.futures

    client = upstream_gateway.client()

    def one(_: int) -> str:
        return "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="gpt-5.2", messages=HELLO, stream=True) if c.choices)

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        texts = list(pool.map(one, range(64)))
    assert texts == ["".join(ANSWER)] * 64
