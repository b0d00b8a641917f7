"""Token counts from an OpenAI-compatible server itself, for when it reports no usage.

OpenAI-compatible servers tokenize with their own model's tokenizer and chat template, so an
OpenAI encoding miscounts them (llama.cpp's server streams no usage at all: 19 tokens counted
where it used 43). Two servers let us ask:
- llama.cpp's `llama-server`: `POST /apply-template` renders the chat template, `POST /tokenize`
  counts;
- llama-cpp-python's server: `POST /extras/tokenize/count` counts text; it has no template
  endpoint, so a prompt is counted by a one-token non-streamed call, whose usage is the
  server's own count of exactly that prompt.
The kind is the deployment's `count_tokens` option (`llama.cpp`, `llama-cpp-python`, `none`),
else found by asking once. OpenAI itself needs none of it: its encodings are ours.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from switchyard.wire.chat import ChatRequest

log = logging.getLogger("switchyard.providers.openai")

KINDS = ("llama.cpp", "llama-cpp-python", "none")


class CompatibleCounter:
    """Counts through one deployment's server, if it can; its own calls never fail a request."""

    def __init__(self, provider: Any, configured: str | None, root: str) -> None:
        if configured is not None and configured not in KINDS:
            raise ValueError(f"count_tokens must be one of {', '.join(KINDS)}, not {configured!r}")
        self._provider = provider  # an HTTPProvider: its `ask` sends the gateway's own small requests
        self._kind = configured
        self._root = root  # the server's root path, where its own endpoints live

    async def kind(self) -> str:
        if self._kind is None:
            self._kind = await self._detect()
            log.info("deployment %s counts tokens with: %s", self._provider.deployment.id,
                     self._kind if self._kind != "none" else "an OpenAI encoding (the server offers no count)")
        return self._kind

    async def _detect(self) -> str:
        found = await self._provider.ask(self._root + "/extras/tokenize/count", {"input": "hi"}, from_root=True)
        if isinstance(found, dict) and isinstance(found.get("count"), int):
            return "llama-cpp-python"
        found = await self._provider.ask(self._root + "/tokenize", {"content": "hi"}, from_root=True)
        if isinstance(found, dict) and isinstance(found.get("tokens"), list):
            return "llama.cpp"
        return "none"

    async def prompt(self, request: ChatRequest, upstream_model: str) -> int | None:
        kind = await self.kind()
        if kind == "llama.cpp":
            rendered = await self._provider.ask(self._root + "/apply-template", _template_body(request), from_root=True)
            if not isinstance(rendered, dict) or not isinstance(rendered.get("prompt"), str):
                return None
            tokens = await self._provider.ask(self._root + "/tokenize", {
                "content": rendered["prompt"], "add_special": True, "parse_special": True}, from_root=True)
            return len(tokens["tokens"]) if isinstance(tokens, dict) and isinstance(tokens.get("tokens"), list) else None
        if kind == "llama-cpp-python":
            body = {**_template_body(request), "model": upstream_model, "max_tokens": 1, "stream": False}
            answer = await self._provider.ask("/chat/completions", body, timeout=60)
            usage = answer.get("usage") if isinstance(answer, dict) else None
            count = usage.get("prompt_tokens") if isinstance(usage, dict) else None
            return count if isinstance(count, int) and count > 0 else None
        return None

    async def text(self, text: str) -> int | None:
        if not text:
            return 0
        kind = await self.kind()
        if kind == "llama.cpp":
            tokens = await self._provider.ask(self._root + "/tokenize", {"content": text, "add_special": False},
                                              from_root=True)
            return len(tokens["tokens"]) if isinstance(tokens, dict) and isinstance(tokens.get("tokens"), list) else None
        if kind == "llama-cpp-python":
            found = await self._provider.ask(self._root + "/extras/tokenize/count", {"input": text}, from_root=True)
            return found["count"] if isinstance(found, dict) and isinstance(found.get("count"), int) else None
        return None


def _template_body(request: ChatRequest) -> dict[str, Any]:
    """What a chat template reads: the messages, the tools and the tool choice, as a client sends them (fields it
    left out stay out: a template renders `"strict": null` as tokens too)."""
    body: dict[str, Any] = {"messages": _present(msgspec.to_builtins(request.messages))}
    if request.tools:
        body["tools"] = _present(msgspec.to_builtins(request.tools))
        if request.tool_choice is not None:  # a named choice changes the function-calling prompt
            body["tool_choice"] = _present(msgspec.to_builtins(request.tool_choice))
    for message in body["messages"]:
        if message.get("role") == "assistant" and "content" not in message:
            message["content"] = ""  # as the provider sends it (see openai._compatible_messages)
    return body


def _present(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _present(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_present(v) for v in value]
    return value
