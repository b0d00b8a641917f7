"""Legacy `POST /v1/completions` through the official SDK: the local model continues prompts
natively, an OpenAI-compatible upstream is passed through, chat-only models get a clear 400;
every generated completion (`best_of` x prompts) is held and billed."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.conftest import USER_KEY, Admin, Gateway, start_gateway
from tests.openapi_spec import Validate
from tests.standins.anthropic_upstream import AnthropicStandIn
from tests.standins.openai_upstream import StandInUpstream

LOCAL = "smollm2-135m-instruct"


def record(gw: Gateway, request_id: str, key: str = USER_KEY) -> dict:
    return httpx.get(f"{gw.base_url}/requests/{request_id}", headers={"authorization": f"Bearer {key}"}).json()


def test_the_local_model_continues_a_prompt(local_gateway: Gateway, openapi: Validate) -> None:
    client = local_gateway.client()
    raw = client.completions.with_raw_response.create(model=LOCAL, prompt="The capital of France is", max_tokens=8,
                                                      temperature=0, echo=True, logprobs=2)
    answer = raw.parse()
    choice = answer.choices[0]
    assert answer.object == "text_completion" and choice.text.startswith("The capital of France is")
    assert len(choice.text) > len("The capital of France is") and choice.finish_reason in ("stop", "length")
    assert choice.logprobs is not None and len(choice.logprobs.tokens) == answer.usage.completion_tokens
    assert all(len(top) <= 2 for top in choice.logprobs.top_logprobs)
    assert 0 < answer.usage.completion_tokens <= 8 and answer.usage.prompt_tokens >= 5
    row = record(local_gateway, raw.headers["x-request-id"])
    assert (row["endpoint"], row["status"], row["usage"]["output_tokens"]) == (
        "/v1/completions", "completed", answer.usage.completion_tokens)
    plain = httpx.post(f"{local_gateway.base_url}/completions", headers={"authorization": f"Bearer {USER_KEY}"},
                       json={"model": LOCAL, "prompt": "Once upon a time", "max_tokens": 4}, timeout=120).json()
    openapi(plain, "CreateCompletionResponse")
    # Two prompts, two choices each: four completions, each prompt counted once.
    many = client.completions.create(model=LOCAL, prompt=["Red is a", "Blue is a"], max_tokens=3, n=2, seed=7)
    assert [c.index for c in many.choices] == [0, 1, 2, 3]
    assert many.usage.completion_tokens <= 12


def test_the_local_model_streams_a_completion(local_gateway: Gateway) -> None:
    client = local_gateway.client()
    chunks = list(client.completions.create(model=LOCAL, prompt="1, 2, 3, 4,", max_tokens=6, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens <= 6
    assert all(c.object == "text_completion" for c in chunks)
    assert chunks[-1].usage.model_extra["cost"] == 0  # the local model is free, and says so


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstream: StandInUpstream) -> Iterator[Gateway]:
    anthropic = AnthropicStandIn().start()
    models = {
        "gpt-3.5-turbo-instruct": {"deployments": [{"provider": "openai", "base_url": upstream.base_url,
                                                    "api_key_env": "STANDIN_KEY", "model": "instruct",
                                                    "catalog": "gpt-3.5-turbo-instruct"}]},
        "gpt-5.2": {"deployments": [{"provider": "openai", "base_url": upstream.base_url, "model": "ok",
                                     "catalog": "gpt-5.2"}]},
        # A catalog override that claims completions for a model whose provider cannot serve them.
        "claude-text": {"deployments": [{"provider": "anthropic", "base_url": anthropic.base_url, "model": "claude",
                                         "catalog": "claude-text"}]},
    }
    catalog = {"claude-text": {"provider": "anthropic", "owned_by": "test", "created": 1700000000,
                               "context_window": 200000, "max_output_tokens": 8192,
                               "prices": {"input": "3", "cached_input": None, "output": "15"},
                               "capabilities": ["streaming"], "endpoints": ["chat.completions", "completions"]}}
    gateway = start_gateway(tmp_path_factory.mktemp("completions-gw"), config={"models": models, "catalog": catalog},
                            env={"STANDIN_KEY": "sk-upstream-completions"})
    yield gateway
    gateway.stop()
    anthropic.stop()


def test_an_openai_upstream_is_passed_through(gw: Gateway, upstream: StandInUpstream) -> None:
    client = gw.client()
    raw = client.completions.with_raw_response.create(model="gpt-3.5-turbo-instruct", prompt=["Say", "Write"],
                                                      max_tokens=5, best_of=3, n=2, suffix="!", echo=False,
                                                      extra_body={"custom_field": 1})
    answer = raw.parse()
    forwarded = [r for r in upstream.received if r.path == "/v1/completions"][-1].body
    assert forwarded == {"model": "instruct", "prompt": ["Say", "Write"], "max_tokens": 5, "best_of": 3, "n": 2,
                         "suffix": "!", "echo": False, "custom_field": 1, "_files": []}
    assert answer.model == "gpt-3.5-turbo-instruct" and len(answer.choices) == 4
    # The upstream bills best_of (3) completions per prompt: 5 words each.
    assert answer.usage.completion_tokens == 5 * 3 * 2
    row = record(gw, raw.headers["x-request-id"])
    assert row["cost_nanos"] == 2 * 1_500 + 30 * 2_000  # $1.50 / $2.00 per 1M


def test_streams_and_holds_count_every_completion(gw: Gateway) -> None:
    client = gw.client()
    chunks = list(client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Go", max_tokens=4, stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices).split() == ["and", "then", "it", "rained"]
    # The hold covers best_of x prompts x max_tokens: a budget for fewer refuses before the upstream.
    admin = Admin(gw)
    org = admin.org("instruct-buyer")
    admin.topup(org["id"], "1")
    key = admin.key(org["id"], name="tiny", budget_usd="0.00005")  # 50,000 nanos
    tight = openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0)
    tight.completions.create(model="gpt-3.5-turbo-instruct", prompt="Hi", max_tokens=10)  # 1.5k + 20k nanos at most
    with pytest.raises(openai.RateLimitError) as refused:
        tight.completions.create(model="gpt-3.5-turbo-instruct", prompt="Hi", max_tokens=10, best_of=5)
    assert refused.value.body["code"] == "insufficient_quota"


def test_chat_only_models_get_a_clear_400(gw: Gateway) -> None:
    client = gw.client()
    with pytest.raises(openai.BadRequestError) as chat_only:
        client.completions.create(model="gpt-5.2", prompt="hello")
    assert chat_only.value.body["code"] == "unsupported_endpoint" and chat_only.value.body["param"] == "model"
    assert "does not serve completions" in chat_only.value.body["message"]
    with pytest.raises(openai.BadRequestError) as no_method:
        client.completions.create(model="claude-text", prompt="hello")
    assert "anthropic provider does not implement completions" in no_method.value.body["message"]


@pytest.mark.parametrize(("body", "param"), [
    ({"prompt": "x"}, "model"),
    ({"model": "gpt-3.5-turbo-instruct", "prompt": [1, "a"]}, "prompt"),
    ({"model": "gpt-3.5-turbo-instruct", "prompt": "x", "best_of": 1, "n": 2}, "best_of"),
    ({"model": "gpt-3.5-turbo-instruct", "prompt": "x", "logprobs": 9}, "logprobs"),
    ({"model": "gpt-3.5-turbo-instruct", "prompt": ["x"] * 65, "best_of": 2}, "prompt"),
])
def test_bad_completion_requests(gw: Gateway, body: dict, param: str) -> None:
    answer = httpx.post(f"{gw.base_url}/completions", headers={"authorization": f"Bearer {USER_KEY}"}, json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param
