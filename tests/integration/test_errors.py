"""Bad input gets an OpenAI error object with the right status; nothing crashes the worker."""

from __future__ import annotations

import socket

import httpx
import openai
import pytest

from tests.conftest import USER_KEY, Gateway

AUTH = {"Authorization": f"Bearer {USER_KEY}"}
HELLO = [{"role": "user", "content": "Hello"}]


def _error(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.headers["x-request-id"].startswith("req_")
    body = resp.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    return body["error"]


def test_malformed_json(upstream_gateway: Gateway) -> None:
    with upstream_gateway.http() as http:
        err = _error(http.post("/v1/chat/completions", content=b'{"model": "gpt-5.2", "messages": [', headers=AUTH), 400)
    assert "parse the JSON body" in err["message"]
    assert err["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "gpt-5.2"}, "messages"),
        ({"messages": HELLO}, "model"),
        ({"model": "gpt-5.2", "messages": "hi"}, "messages"),
        ({"model": "gpt-5.2", "messages": []}, "messages"),
        ({"model": "gpt-5.2", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"model": "gpt-5.2", "messages": [{"role": "user"}]}, "messages[0].content"),
        ({"model": "gpt-5.2", "messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
        ({"model": "gpt-5.2", "messages": HELLO, "max_tokens": "ten"}, "max_tokens"),
        ({"model": "gpt-5.2", "messages": HELLO, "max_tokens": 0}, "max_tokens"),
        ({"model": "gpt-5.2", "messages": HELLO, "temperature": 3}, "temperature"),
        ({"model": "gpt-5.2", "messages": HELLO, "top_p": -1}, "top_p"),
        ({"model": "gpt-5.2", "messages": HELLO, "n": 0}, "n"),
        ({"model": "gpt-5.2", "messages": HELLO, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"model": "gpt-5.2", "messages": HELLO, "stream": "yes"}, "stream"),
        ({"model": "gpt-5.2", "messages": HELLO, "stream_options": {"include_usage": True}}, "stream_options"),
        ({"model": "gpt-5.2", "messages": HELLO, "tools": [{"type": "function"}]}, "tools[0].function"),
        ({"model": "gpt-5.2", "messages": HELLO, "tool_choice": "sometimes"}, "tool_choice"),
        ({"model": "gpt-5.2", "messages": HELLO, "tool_choice": "required"}, "tool_choice"),
        ({"model": "gpt-5.2", "messages": HELLO, "response_format": {"type": "xml"}}, "response_format.type"),
        ({"model": "gpt-5.2", "messages": HELLO, "top_logprobs": 2}, "top_logprobs"),
        ({"model": "gpt-5.2", "messages": HELLO, "reasoning_effort": "max"}, "reasoning_effort"),
    ],
)
def test_invalid_body_names_the_param(upstream_gateway: Gateway, body: dict, param: str) -> None:
    with upstream_gateway.http() as http:
        err = _error(http.post("/v1/chat/completions", json=body, headers=AUTH), 400)
    assert err["param"] == param


def test_body_must_be_an_object(upstream_gateway: Gateway) -> None:
    with upstream_gateway.http() as http:
        _error(http.post("/v1/chat/completions", json=[1, 2], headers=AUTH), 400)
        _error(http.post("/v1/chat/completions", content=b"", headers=AUTH), 400)


def test_sdk_raises_bad_request_with_param(upstream_gateway: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        upstream_gateway.client().chat.completions.create(model="gpt-5.2", messages=HELLO, temperature=5)
    assert err.value.param == "temperature"
    assert err.value.code == "invalid_value"


@pytest.mark.parametrize("key", [None, "sk-wrong", "Basic abc"])
def test_bad_or_missing_key_is_401(upstream_gateway: Gateway, key: str | None) -> None:
    headers = {} if key is None else {"Authorization": key if " " in key else f"Bearer {key}"}
    with upstream_gateway.http() as http:
        err = _error(http.post("/v1/chat/completions", json={"model": "gpt-5.2", "messages": HELLO}, headers=headers), 401)
        _error(http.get("/v1/models", headers=headers), 401)
    assert err["code"] == "invalid_api_key"
    if key:
        assert key not in err["message"]


def test_sdk_authentication_error(upstream_gateway: Gateway) -> None:
    with pytest.raises(openai.AuthenticationError):
        upstream_gateway.client(key="sk-sy-not-a-key").chat.completions.create(model="gpt-5.2", messages=HELLO)


def test_master_key_is_accepted(upstream_gateway: Gateway) -> None:
    reply = upstream_gateway.client(key="sk-sy-test-master").chat.completions.create(model="gpt-5.2", messages=HELLO)
    assert reply.choices[0].message.content


def test_unknown_model_is_404(upstream_gateway: Gateway) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        upstream_gateway.client().chat.completions.create(model="gpt-9000", messages=HELLO)
    assert err.value.code == "model_not_found"
    assert err.value.param == "model"


def test_huge_body_is_413(tmp_path, upstream) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import start_gateway, upstream_config

    gw = start_gateway(tmp_path, config=upstream_config(upstream), env={"SWITCHYARD_MAX_BODY_BYTES": "100000"})
    try:
        big = {"model": "gpt-5.2", "messages": [{"role": "user", "content": "x" * 200_000}]}
        with gw.http() as http:
            err = _error(http.post("/v1/chat/completions", json=big, headers=AUTH), 413)
            assert err["code"] == "request_too_large"

            def chunks():  # no Content-Length: the limit must hold while reading
                for _ in range(30):
                    yield b"x" * 10_000

            _error(http.post("/v1/chat/completions", content=chunks(), headers=AUTH), 413)
        with pytest.raises(openai.APIStatusError) as e:
            gw.client().chat.completions.create(model="gpt-5.2", messages=big["messages"])
        assert e.value.status_code == 413
        assert gw.client().chat.completions.create(model="gpt-5.2", messages=HELLO).choices
    finally:
        gw.stop()


def test_context_window_overflow_is_400_before_upstream(upstream_gateway: Gateway, upstream) -> None:  # type: ignore[no-untyped-def]
    before = len(upstream.received)
    with pytest.raises(openai.BadRequestError) as err:
        upstream_gateway.client().chat.completions.create(
            model="small-window", messages=[{"role": "user", "content": "lorem ipsum " * 600}],
        )
    assert err.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as err:
        upstream_gateway.client().chat.completions.create(
            model="small-window", messages=[{"role": "user", "content": "lorem ipsum " * 450}], max_tokens=150,
        )
    assert err.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as err:
        upstream_gateway.client().chat.completions.create(model="small-window", messages=HELLO, max_tokens=500)
    assert err.value.param == "max_tokens"
    with pytest.raises(openai.BadRequestError) as err:
        upstream_gateway.client().chat.completions.create(model="gpt-5.2", messages=HELLO, max_completion_tokens=200_000)
    assert err.value.param == "max_completion_tokens"
    assert len(upstream.received) == before, "nothing reached the upstream"
    # Just under the window passes (the byte bound alone would refuse it: exact counting decides).
    ok = upstream_gateway.client().chat.completions.create(
        model="small-window", messages=[{"role": "user", "content": "lorem ipsum " * 200}], max_tokens=100,
    )
    assert ok.choices


def test_capability_checks(upstream_gateway: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        upstream_gateway.client().chat.completions.create(
            model="small-window", messages=HELLO,
            tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        )
    assert err.value.param == "tools"


def test_unknown_url_and_method(upstream_gateway: Gateway) -> None:
    with upstream_gateway.http() as http:
        assert _error(http.get("/v1/nothing-here", headers=AUTH), 404)["code"] == "unknown_url"
        _error(http.get("/v1/chat/completions", headers=AUTH), 405)


def test_broken_clients_do_not_hurt_the_worker(upstream_gateway: Gateway) -> None:
    host, port = upstream_gateway.root.removeprefix("http://").split(":")
    for payload in (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nAuthorization: Bearer " + USER_KEY.encode() + b"\r\n\r\n{\"model\":",
        b"GARBAGE\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
    ):
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(payload)
    reply = upstream_gateway.client().chat.completions.create(model="gpt-5.2", messages=HELLO)
    assert reply.choices[0].message.content


def test_models_list_and_get(upstream_gateway: Gateway) -> None:
    client = upstream_gateway.client()
    ids = {m.id for m in client.models.list()}
    assert {"gpt-5.2", "fast", "default", "small-window"} <= ids
    model = client.models.retrieve("gpt-5.2")
    assert model.id == "gpt-5.2" and model.object == "model" and model.owned_by == "openai"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")
