"""POST /v1/embeddings through the official SDK: the embedded local model offline, an
OpenAI-compatible upstream passed through, Gemini's batchEmbedContents; billed per input token."""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.conftest import USER_KEY, Admin, Gateway, start_gateway
from tests.openapi_spec import Validate
from tests.integration.test_gemini import gemini  # noqa: F401  (the Gemini stand-in fixture)
from tests.standins.gemini_upstream import StandInGemini
from tests.standins.openai_upstream import StandInUpstream

UPSTREAM_KEY = "sk-upstream-embeddings"


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def record(gw: Gateway, request_id: str) -> dict:
    return httpx.get(f"{gw.base_url}/requests/{request_id}", headers={"authorization": f"Bearer {USER_KEY}"}).json()


# ---- the local model -------------------------------------------------------------------------


def test_the_local_model_embeds_offline(local_gateway: Gateway, openapi: Validate) -> None:
    client = local_gateway.client()
    texts = ["The cat sits on the mat.", "A cat is sitting on a rug.", "Quarterly revenue grew by 12 percent."]
    raw = client.embeddings.with_raw_response.create(model="multilingual-e5-small", input=texts, encoding_format="float")
    answer = raw.parse()
    assert [d.index for d in answer.data] == [0, 1, 2]
    vectors = [d.embedding for d in answer.data]
    assert all(len(v) == 384 and abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-3 for v in vectors)
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.05  # meaning, not noise
    assert answer.model == "multilingual-e5-small" and answer.usage.prompt_tokens > 3 * 5
    openapi(httpx.post(f"{local_gateway.base_url}/embeddings", headers={"authorization": f"Bearer {USER_KEY}"},
                       json={"model": "multilingual-e5-small", "input": "hello"}).json(), "CreateEmbeddingResponse")
    # The SDK's default (base64) decodes to the same vector.
    again = client.embeddings.create(model="multilingual-e5-small", input=texts[0])
    assert max(abs(x - y) for x, y in zip(again.data[0].embedding, vectors[0])) < 1e-6
    row = record(local_gateway, raw.headers["x-request-id"])
    assert (row["endpoint"], row["status"], row["usage"]["input_tokens"]) == (
        "/v1/embeddings", "completed", answer.usage.prompt_tokens)
    assert row["cost_nanos"] == 0 and raw.headers["x-switchyard-cost-usd"] == "0"


@pytest.mark.parametrize(("body", "status", "param", "code"), [
    ({"model": "multilingual-e5-small", "input": [[101, 2023]]}, 400, "input", None),
    ({"model": "multilingual-e5-small", "input": "word " * 600}, 400, "input", "context_length_exceeded"),
    ({"model": "multilingual-e5-small", "input": []}, 400, "input", None),
    ({"model": "multilingual-e5-small", "input": ["ok", ""]}, 400, "input", None),
    ({"model": "multilingual-e5-small", "input": "x", "encoding_format": "hex"}, 400, "encoding_format", None),
    ({"model": "multilingual-e5-small", "input": "x", "dimensions": 128}, 400, "dimensions", None),
    ({"model": "smollm2-135m-instruct", "input": "x"}, 400, "model", "unsupported_endpoint"),
    ({"model": "no-such-model", "input": "x"}, 404, "model", "model_not_found"),
])
def test_bad_embedding_requests_get_openai_errors(local_gateway: Gateway, body: dict, status: int, param: str,
                                                  code: str | None) -> None:
    answer = httpx.post(f"{local_gateway.base_url}/embeddings", headers={"authorization": f"Bearer {USER_KEY}"},
                        json=body, timeout=60)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert (error["param"], error["code"]) == (param, code)


# ---- upstreams ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstream: StandInUpstream, gemini: StandInGemini) -> Iterator[Gateway]:
    def openai_dep(model: str) -> dict:
        return {"deployments": [{"provider": "openai", "base_url": upstream.base_url, "api_key_env": "STANDIN_KEY",
                                 "model": model, "catalog": "text-embedding-3-small"}]}

    models = {
        "text-embedding-3-small": openai_dep("ok"),
        "shuffled": openai_dep("shuffled"),
        "broken-then-ok": {"deployments": [openai_dep("status-500")["deployments"][0] | {"priority": 0},
                                           openai_dep("ok")["deployments"][0] | {"priority": 1}]},
        "gemini-embedding-001": {"deployments": [{"provider": "gemini", "base_url": gemini.base_url,
                                                  "api_key_env": "GEMINI_API_KEY", "model": "gemini-embedding-001",
                                                  "catalog": "gemini-embedding-001"}]},
        "chat": {"deployments": [{"provider": "openai", "base_url": upstream.base_url, "api_key_env": "STANDIN_KEY",
                                  "model": "ok", "catalog": "gpt-5.2"}]},
    }
    gateway = start_gateway(tmp_path_factory.mktemp("embeddings-gw"), config={"models": models},
                            env={"STANDIN_KEY": UPSTREAM_KEY, "GEMINI_API_KEY": "gm-upstream-secret"})
    yield gateway
    gateway.stop()


def test_an_openai_upstream_is_passed_through_and_billed_per_token(gw: Gateway, upstream: StandInUpstream,
                                                                    openapi: Validate) -> None:
    client = gw.client()
    before = len(upstream.received)
    raw = client.embeddings.with_raw_response.create(model="text-embedding-3-small", input=["alpha", "beta gamma"],
                                                     dimensions=16, user="u-42", encoding_format="float")
    answer = raw.parse()
    sent = [r for r in upstream.received[before:] if r.path == "/v1/embeddings"][-1]
    assert sent.body == {"model": "ok", "input": ["alpha", "beta gamma"], "dimensions": 16, "user": "u-42",
                         "encoding_format": "base64"}  # the upstream's model; base64 on the wire
    assert sent.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert [len(d.embedding) for d in answer.data] == [16, 16]
    tokens = 1 + 2  # the stand-in: a token per 4 bytes, at least one
    assert answer.usage.prompt_tokens == tokens
    row = record(gw, raw.headers["x-request-id"])
    assert row["cost_nanos"] == tokens * 20  # $0.02 per 1M tokens = 20 nano-dollars a token
    assert raw.headers["x-switchyard-cost-usd"] == "0.00000006"
    openapi(httpx.post(f"{gw.base_url}/embeddings", headers={"authorization": f"Bearer {USER_KEY}"},
                       json={"model": "text-embedding-3-small", "input": "hi"}).json(), "CreateEmbeddingResponse")
    # Token arrays go to OpenAI models as they are; base64 back to the client is float32 little-endian.
    ids = client.embeddings.with_raw_response.create(model="text-embedding-3-small", input=[[1, 2, 3], [4, 5]],
                                                     encoding_format="base64")
    decoded = struct.unpack("<8f", base64.b64decode(ids.parse().data[0].embedding))
    assert abs(sum(x * x for x in decoded) - 1) < 1e-5
    assert record(gw, ids.headers["x-request-id"])["cost_nanos"] == 5 * 20


def test_upstream_order_and_failures(gw: Gateway) -> None:
    client = gw.client()
    plain = client.embeddings.create(model="text-embedding-3-small", input=["one", "two", "three"], encoding_format="float")
    shuffled = client.embeddings.create(model="shuffled", input=["one", "two", "three"], encoding_format="float")
    assert [d.index for d in shuffled.data] == [0, 1, 2]
    # The same inputs give the same vectors whatever order the upstream listed them in.
    assert [d.embedding for d in shuffled.data] == [d.embedding for d in plain.data]
    fell_back = client.embeddings.with_raw_response.create(model="broken-then-ok", input="hello", encoding_format="float")
    assert int(fell_back.headers["x-switchyard-attempts"]) >= 2  # the failing one (retried), then the next
    assert fell_back.headers["x-switchyard-deployment"] == "broken-then-ok#1"
    with pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(model="chat", input="hello")
    assert refused.value.body["code"] == "unsupported_endpoint"


def test_gemini_embeddings_are_counted_with_count_tokens(gw: Gateway, gemini: StandInGemini) -> None:
    client = gw.client()
    raw = client.embeddings.with_raw_response.create(model="gemini-embedding-001", input=["hello world", "good night"],
                                                     dimensions=4, encoding_format="float")
    answer = raw.parse()
    sent = [r for r in gemini.received if r.path.endswith(":batchEmbedContents")][-1]
    assert sent.body["requests"][1] == {"model": "models/gemini-embedding-001", "outputDimensionality": 4,
                                        "content": {"parts": [{"text": "good night"}]}}
    assert [len(d.embedding) for d in answer.data] == [4, 4]
    # Gemini's answer has no count: switchyard asks countTokens (the stand-in: a third of the
    # bytes per text, 2 per turn) and says the count is its own.
    expected = (11 // 3 + 2) + (10 // 3 + 2)
    assert answer.usage.prompt_tokens == expected
    row = record(gw, raw.headers["x-request-id"])
    assert row["usage"]["source"] == "counted"
    assert row["cost_nanos"] == expected * 150


def test_an_embedding_model_answers_no_chat(local_gateway: Gateway) -> None:
    headers = {"authorization": f"Bearer {USER_KEY}"}
    for path, body in (("/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
                       ("/responses", {"input": "hi"}), ("/responses/compact", {"input": "hi"})):
        answer = httpx.post(f"{local_gateway.base_url}{path}", headers=headers,
                            json={"model": "multilingual-e5-small", **body}, timeout=60)
        assert answer.status_code == 400, (path, answer.text)
        error = answer.json()["error"]
        assert error["code"] == "unsupported_endpoint" and "it serves embeddings" in error["message"]


def test_an_embeddings_batch_is_billed_at_the_batch_price(gw: Gateway, openapi: Validate) -> None:
    from tests.integration.test_batches import is_final, jsonl, upload, wait_batch

    admin = Admin(gw)
    org = admin.org("embedding-batches")
    admin.topup(org["id"], "1")
    client = gw.client(admin.key(org["id"], name="batcher"))
    texts = ["alpha", "beta gamma", "delta epsilon zeta"]
    lines = [{"custom_id": f"e{i}", "method": "POST", "url": "/v1/embeddings",
              "body": {"model": "text-embedding-3-small", "input": text, "encoding_format": "float"}}
             for i, text in enumerate(texts)]
    created = client.batches.create(input_file_id=upload(client, lines), endpoint="/v1/embeddings",
                                    completion_window="24h")
    final = wait_batch(client, created.id, is_final, timeout=60)
    assert final.status == "completed" and final.request_counts.completed == 3, final
    outputs = sorted(jsonl(client, final.output_file_id), key=lambda line: line["custom_id"])
    assert [len(o["response"]["body"]["data"][0]["embedding"]) for o in outputs] == [8, 8, 8]
    openapi(outputs[0]["response"]["body"], "CreateEmbeddingResponse")
    tokens = sum(max(1, len(t) // 4) for t in texts)  # the stand-in's count
    spent = 10**9 - admin.balance(org["id"])["balance_nanos"]
    assert spent == tokens * 10  # $0.01 per 1M tokens in the Batch API: half the live price
