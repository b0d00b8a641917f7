"""Objects on the wire, checked against OpenAI's OpenAPI spec (skipped only if the spec file is missing).

The Responses and Batch tests check their own objects; this covers the rest of the surface:
chat completions and chunks, models, errors and files.
"""

from __future__ import annotations

import io
import json
from typing import Any

import httpx

from tests.conftest import USER_KEY, Gateway


def _http(gw: Gateway) -> httpx.Client:
    return httpx.Client(base_url=gw.root, headers={"Authorization": f"Bearer {USER_KEY}"}, timeout=60)


def test_chat_completion_and_chunks(upstream_gateway: Gateway, openapi: Any) -> None:
    body = {"model": "gpt-5.2", "messages": [{"role": "user", "content": "Hi"}]}
    with _http(upstream_gateway) as http:
        openapi(http.post("/v1/chat/completions", json=body).json(), "CreateChatCompletionResponse")
        tools = {**body, "model": "sim-tools", "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]}
        openapi(http.post("/v1/chat/completions", json=tools).json(), "CreateChatCompletionResponse")
        with http.stream("POST", "/v1/chat/completions",
                         json={**body, "stream": True, "stream_options": {"include_usage": True}}) as resp:
            chunks = [json.loads(line[6:]) for line in resp.iter_lines() if line.startswith("data: {")]
    assert len(chunks) > 2
    for chunk in chunks:
        openapi(chunk, "CreateChatCompletionStreamResponse")


def test_local_model_completion(local_gateway: Gateway, openapi: Any) -> None:
    body = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8}
    with _http(local_gateway) as http:
        openapi(http.post("/v1/chat/completions", json=body).json(), "CreateChatCompletionResponse")


def test_models_and_errors(upstream_gateway: Gateway, openapi: Any) -> None:
    with _http(upstream_gateway) as http:
        models = http.get("/v1/models").json()
        openapi(models, "ListModelsResponse")
        openapi(http.get(f"/v1/models/{models['data'][0]['id']}").json(), "Model")
        for resp in (http.get("/v1/models/nope"), http.post("/v1/chat/completions", json={"model": "gpt-5.2"}),
                     http.post("/v1/responses", json={"model": "gpt-5.2", "input": "x", "temperature": 9}),
                     http.get("/v1/files/file-nope"), http.get("/v1/batches/batch_nope"),
                     httpx.get(upstream_gateway.base_url + "/models")):
            assert resp.status_code >= 400
            openapi(resp.json(), "ErrorResponse")


def test_file_objects(upstream_gateway: Gateway, openapi: Any) -> None:
    line = json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                       "body": {"model": "gpt-5.2", "messages": [{"role": "user", "content": "x"}]}})
    with _http(upstream_gateway) as http:
        created = http.post("/v1/files", data={"purpose": "batch"},
                            files={"file": ("in.jsonl", io.BytesIO(line.encode()), "application/jsonl")}).json()
        openapi(created, "OpenAIFile")
        openapi(http.get(f"/v1/files/{created['id']}").json(), "OpenAIFile")
        openapi(http.get("/v1/files").json(), "ListFilesResponse")
        openapi(http.delete(f"/v1/files/{created['id']}").json(), "DeleteFileResponse")
