"""How an output limit reaches an OpenAI-protocol upstream: OpenAI itself takes only
`max_completion_tokens`; compatible servers get both forms (llama.cpp ignores the newer one)."""

from __future__ import annotations

from typing import Any

import orjson

from switchyard.catalog import load_catalog
from switchyard.config import DeploymentConfig
from switchyard.providers import ChatCall
from switchyard.providers.openai import OpenAIProvider
from switchyard.wire.chat import parse_chat_request


def payload(base_url: str | None, body: dict[str, Any], limit: int | None, **options: Any) -> dict[str, Any]:
    cfg = DeploymentConfig(provider="openai", model="up", catalog="gpt-5.2", id="d", base_url=base_url, options=options)
    provider = OpenAIProvider(cfg, load_catalog().get("gpt-5.2"))  # type: ignore[arg-type]
    call = ChatCall(request=parse_chat_request(body), body=body, upstream_model="up", request_id="r", output_limit=limit)
    return orjson.loads(provider._payload(call, stream=False))


BODY = {"model": "gpt-5.2", "messages": [{"role": "user", "content": "hi"}]}


def test_openai_itself_gets_max_completion_tokens_only() -> None:
    sent = payload(None, BODY, 50)
    assert sent["max_completion_tokens"] == 50 and "max_tokens" not in sent
    # The client's own max_tokens is left as it is (OpenAI refuses both at once).
    sent = payload("https://api.openai.com/v1", {**BODY, "max_tokens": 20}, 20)
    assert sent["max_tokens"] == 20 and "max_completion_tokens" not in sent


def test_compatible_servers_get_both_forms() -> None:
    sent = payload("http://127.0.0.1:8000/v1", {**BODY, "max_completion_tokens": 16}, 16)
    assert (sent["max_tokens"], sent["max_completion_tokens"]) == (16, 16)


def test_no_limit_sends_none_and_a_deployment_may_choose_its_fields() -> None:
    sent = payload("http://127.0.0.1:8000/v1", BODY, None)
    assert "max_tokens" not in sent and "max_completion_tokens" not in sent
    sent = payload("http://127.0.0.1:8000/v1", BODY, 30, output_limit_fields=["max_tokens"])
    assert sent["max_tokens"] == 30 and "max_completion_tokens" not in sent
