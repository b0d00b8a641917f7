"""A stand-in for llama.cpp's `llama-server` as switchyard meets it: OpenAI's chat wire format
with the habits of a real compatible server, and the server's own tokenizer endpoints.

What it does that OpenAI does not (each a habit of a real server):
- streams carry no usage chunk, even with `include_usage` (llama-cpp-python's server);
- `max_completion_tokens` is ignored, only `max_tokens` cuts the answer (llama.cpp);
- there is no Responses API: `/v1/responses` and `/v1/responses/compact` are 404 with the
  body `missing_route` picks: `fastapi` (`{"detail":"Not Found"}`, llama-cpp-python) or
  `llama-server` (`{"error":{"code":404,...}}`, an integer code);
- a prompt over `context_window` pseudo-tokens is refused in llama-server's words;
- `POST /tokenize` and `POST /apply-template` count and render as the server itself does.
Tokens are "pseudo-tokens" (`pseudo_tokens`): words and punctuation marks; the chat template is
ChatML, so a prompt's count includes the template's own tokens, as a real server's does.
Behaviour by model id: `ok` (usage in non-streamed answers), `zero-usage` (a usage of zeros,
as LiteLLM's proxy sends for some streams), `long` (writes LONG_TOKENS unless `max_tokens`).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.standins.server import ThreadedStandIn

ANSWER = "The capital of France is Paris, a city on the Seine."
LONG_TOKENS = 400
BOS = "<s>"
_TOKEN = re.compile(r"\w+|[^\w\s]")


def pseudo_tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def chatml(messages: list[dict[str, Any]], tools: list[Any] | None = None) -> str:
    """The server's chat template: ChatML, tools listed in the system turn, the generation prompt."""
    out = []
    if tools:
        out.append("<|im_start|>system\nTools: " + json.dumps(tools) + "<|im_end|>\n")
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        text = str(content or "")
        for call in m.get("tool_calls") or ():
            text += json.dumps(call.get("function"))
        out.append(f"<|im_start|>{m.get('role')}\n{text}<|im_end|>\n")
    return "".join(out) + "<|im_start|>assistant\n"


def prompt_tokens(body: dict[str, Any]) -> int:
    return 1 + len(pseudo_tokens(chatml(body.get("messages") or [], body.get("tools"))))  # BOS first


@dataclass
class LlamaServerStandIn(ThreadedStandIn):
    missing_route: str = "fastapi"
    context_window: int = 2048

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/tokenize", self._tokenize)
        app.router.add_post("/apply-template", self._apply_template)
        app.router.add_route("*", "/v1/responses", self._not_found)
        app.router.add_route("*", "/v1/responses/compact", self._not_found)

    def paths(self) -> list[str]:
        return [r["path"] for r in self.received]

    async def _not_found(self, request: web.Request) -> web.Response:
        self.received.append({"path": request.path})
        if self.missing_route == "fastapi":
            return web.json_response({"detail": "Not Found"}, status=404)
        return web.json_response({"error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}}, status=404)

    async def _tokenize(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.received.append({"path": request.path, **body})
        content = str(body.get("content", ""))
        tokens = pseudo_tokens(content)
        if body.get("add_special"):
            tokens = [BOS, *tokens]
        return web.json_response({"tokens": list(range(len(tokens)))})

    async def _apply_template(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.received.append({"path": request.path, **body})
        return web.json_response({"prompt": chatml(body.get("messages") or [], body.get("tools"))})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.received.append({"path": request.path, **body})
        behaviour = str(body.get("model"))
        prompt = prompt_tokens(body)
        if prompt > self.context_window:
            return web.json_response({"error": {
                "code": 400, "type": "exceed_context_size_error",
                "message": f"the request exceeds the available context size, try increasing it "
                           f"(n_prompt_tokens={prompt}, n_ctx={self.context_window})"}}, status=400)
        whole = pseudo_tokens(ANSWER) if behaviour != "long" else ["word"] * LONG_TOKENS
        words = whole  # max_completion_tokens: ignored, as llama.cpp does
        if body.get("max_tokens") is not None:
            words = whole[:int(body["max_tokens"])]
        finish = "length" if len(words) < len(whole) else "stop"
        text = _join(words)
        head = {"id": "chatcmpl-llama", "created": int(time.time()), "model": "/models/SmolLM2.gguf"}
        if body.get("stream"):
            return await self._stream(request, head, text, finish)
        completion_tokens = len(pseudo_tokens(text))
        use = {"prompt_tokens": prompt, "completion_tokens": completion_tokens, "total_tokens": prompt + completion_tokens}
        if behaviour == "zero-usage":
            use = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        return web.json_response({
            **head, "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                         "finish_reason": finish}],
            "usage": use,
        })

    async def _stream(self, request: web.Request, head: dict[str, Any], text: str, finish: str) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        head = {**head, "object": "chat.completion.chunk"}

        async def send(delta: dict[str, Any], reason: str | None = None) -> None:
            chunk = {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}]}
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n")

        await send({"role": "assistant"})
        for piece in re.findall(r"\S+\s*", text):
            await send({"content": piece})
        await send({}, finish)
        await resp.write(b"data: [DONE]\r\n\r\n")  # and no usage chunk, whatever was asked
        await resp.write_eof()
        return resp


def _join(words: list[str]) -> str:
    out = ""
    for w in words:
        out += w if (not out or not w[0].isalnum()) else " " + w
    return out
