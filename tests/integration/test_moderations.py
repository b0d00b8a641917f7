"""POST /v1/moderations through the official SDK: passed to a configured OpenAI upstream,
objects as OpenAI's spec defines them, free unless the catalog prices the model."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.conftest import USER_KEY, Gateway, start_gateway
from tests.openapi_spec import Validate
from tests.standins.openai_upstream import StandInUpstream


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstream: StandInUpstream) -> Iterator[Gateway]:
    def dep(catalog: str) -> dict:
        return {"deployments": [{"provider": "openai", "base_url": upstream.base_url, "api_key_env": "STANDIN_KEY",
                                 "model": "omni-upstream", "catalog": catalog}]}

    models = {"omni-moderation-latest": dep("omni-moderation-latest"), "priced-moderation": dep("priced-moderation"),
              "gpt-5.2": {"deployments": [{"provider": "openai", "base_url": upstream.base_url,
                                           "api_key_env": "STANDIN_KEY", "model": "ok", "catalog": "gpt-5.2"}]}}
    catalog = {"priced-moderation": {
        "provider": "openai", "owned_by": "test", "created": 1700000000, "context_window": 32768,
        "max_output_tokens": 1, "prices": {"input": "1", "cached_input": None, "output": "0"},
        "capabilities": [], "endpoints": ["moderations"]}}
    gateway = start_gateway(tmp_path_factory.mktemp("moderations-gw"), config={"models": models, "catalog": catalog},
                            env={"STANDIN_KEY": "sk-upstream-moderation"})
    yield gateway
    gateway.stop()


def record(gw: Gateway, request_id: str) -> dict:
    return httpx.get(f"{gw.base_url}/requests/{request_id}", headers={"authorization": f"Bearer {USER_KEY}"}).json()


def test_moderation_is_passed_to_the_upstream(gw: Gateway, upstream: StandInUpstream, openapi: Validate) -> None:
    client = gw.client()
    raw = client.moderations.with_raw_response.create(input=["I will kill the process", "a nice day"])
    answer = raw.parse()
    assert [r.flagged for r in answer.results] == [True, False]
    assert answer.results[0].categories.violence and answer.results[0].category_scores.violence > 0.9
    sent = [r for r in upstream.received if r.path == "/v1/moderations"][-1]
    assert sent.body["model"] == "omni-upstream" and sent.body["input"] == ["I will kill the process", "a nice day"]
    assert sent.headers["Authorization"] == "Bearer sk-upstream-moderation"
    openapi(httpx.post(f"{gw.base_url}/moderations", headers={"authorization": f"Bearer {USER_KEY}"},
                       json={"input": "hello"}).json(), "CreateModerationResponse")
    row = record(gw, raw.headers["x-request-id"])
    assert (row["endpoint"], row["status"], row["cost_nanos"]) == ("/v1/moderations", "completed", 0)
    assert row["usage"]["input_tokens"] > 0  # counted, though free
    # Text and image parts, as omni models take them.
    parts = client.moderations.create(model="omni-moderation-latest", input=[
        {"type": "text", "text": "hello"}, {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}])
    assert len(parts.results) == 2


def test_a_priced_moderation_model_is_billed_and_bad_input_is_refused(gw: Gateway) -> None:
    client = gw.client()
    raw = client.moderations.with_raw_response.create(model="priced-moderation", input="hello there")
    assert record(gw, raw.headers["x-request-id"])["cost_nanos"] > 0
    for body, param in (({"input": 5}, "input"), ({"input": [{"type": "audio"}]}, "input[0]"),
                        ({"model": "gpt-5.2", "input": "x"}, "model")):
        answer = httpx.post(f"{gw.base_url}/moderations", headers={"authorization": f"Bearer {USER_KEY}"}, json=body)
        assert answer.status_code == 400 and answer.json()["error"]["param"] == param
    with pytest.raises(openai.NotFoundError):
        client.moderations.create(model="text-moderation-unknown", input="x")
