"""An OpenAI-compatible upstream that misbehaves on demand, as broken or hostile servers do.

It speaks the real chat-completions wire format (JSON answers, SSE streams ending in [DONE]);
the behaviour is chosen by the upstream model id the gateway sends:
  n-choices      honours `n`: n choices, usage counts the prompt once and every choice's output
  huge-usage     reports 10,000,000 prompt and 10,000,000 completion tokens for a short answer
  no-usage       no `usage` at all (streams: no usage chunk even when asked for)
  zero-usage     a usage object of zeros for a non-empty answer (as some proxies send)
  ignore-limit   ignores max_tokens: writes and reports `IGNORED_LIMIT_TOKENS` tokens
  internal-id    answers with its own model id ("internal/model-7b-v3"), not the one asked for
  trickle        200 and headers at once, then one byte every `trickle_seconds`, never finishing
  trickle-stream an SSE chunk every `trickle_seconds`, never finishing
  huge-body      a 40 MB JSON answer
  huge-stream    a stream of 40 MB in 64 KB content chunks
Every request body is recorded; `closed` records when a trickling connection was dropped by
the gateway (so tests can see the upstream call was cancelled).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.standins.server import ThreadedStandIn

TEXT = "Hello from the misbehaving stand-in."
TEXT_TOKENS = 9  # o200k tokens of TEXT
IGNORED_LIMIT_TOKENS = 5000
INTERNAL_ID = "internal/model-7b-v3"
HUGE_BYTES = 40 * 1024 * 1024


@dataclass
class MisbehavingUpstream(ThreadedStandIn):
    trickle_seconds: float = 3.0
    closed: list[float] = field(default_factory=list)  # monotonic times trickling connections were dropped
    opened: list[float] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.received.append(body)
        behaviour = str(body.get("model"))
        if behaviour == "trickle":
            return await self._trickle(request, stream=False)
        if behaviour == "trickle-stream":
            return await self._trickle(request, stream=True)
        if behaviour == "huge-body":
            answer = completion(body, "x" * HUGE_BYTES, usage(1, HUGE_BYTES // 4))
            return web.Response(body=json.dumps(answer).encode(), content_type="application/json")
        if body.get("stream"):
            return await self._stream(request, body, behaviour)
        return web.json_response(answer_for(body, behaviour))

    async def _stream(self, request: web.Request, body: dict[str, Any], behaviour: str) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        answer = answer_for(body, behaviour)
        head = {k: answer[k] for k in ("id", "object", "created", "model")}
        head["object"] = "chat.completion.chunk"

        async def send(obj: dict[str, Any]) -> None:
            await resp.write(b"data: " + json.dumps(obj).encode() + b"\n\n")

        if behaviour == "huge-stream":
            piece = "y" * 65536
            for _ in range(HUGE_BYTES // len(piece)):
                await send({**head, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
        else:
            for choice in answer["choices"]:
                i, text = choice["index"], choice["message"]["content"]
                await send({**head, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
                await send({**head, "choices": [{"index": i, "delta": {"content": text}, "finish_reason": None}]})
                await send({**head, "choices": [{"index": i, "delta": {}, "finish_reason": "stop"}]})
        wants_usage = (body.get("stream_options") or {}).get("include_usage")
        if wants_usage and "usage" in answer:
            await send({**head, "choices": [], "usage": answer["usage"]})
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _trickle(self, request: web.Request, stream: bool) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream" if stream else "application/json"})
        await resp.prepare(request)
        self.opened.append(time.monotonic())
        head = {"id": "chatcmpl-trickle", "object": "chat.completion.chunk", "created": int(time.time()), "model": "trickle"}
        try:
            if stream:
                await resp.write(b"data: " + json.dumps({**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}).encode() + b"\n\n")
            while True:
                await asyncio.sleep(self.trickle_seconds)
                if stream:
                    chunk = {**head, "choices": [{"index": 0, "delta": {"content": "tick "}, "finish_reason": None}]}
                    await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                else:
                    await resp.write(b" ")  # whitespace before the JSON: valid, endless
                if request.transport is None or request.transport.is_closing():
                    raise ConnectionResetError
        except (ConnectionResetError, asyncio.CancelledError, RuntimeError):
            self.closed.append(time.monotonic())
            raise


def usage(prompt: int, completion_tokens: int) -> dict[str, Any]:
    return {"prompt_tokens": prompt, "completion_tokens": completion_tokens, "total_tokens": prompt + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}}


def completion(body: dict[str, Any], text: str, use: dict[str, Any] | None, n: int = 1, model: str | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "id": "chatcmpl-misbehaving", "object": "chat.completion", "created": int(time.time()),
        "model": model or body.get("model"), "system_fingerprint": "fp_mis",
        "choices": [{"index": i, "message": {"role": "assistant", "content": text, "refusal": None},
                     "logprobs": None, "finish_reason": "stop"} for i in range(n)],
    }
    if use is not None:
        answer["usage"] = use
    return answer


def answer_for(body: dict[str, Any], behaviour: str) -> dict[str, Any]:
    prompt = 20
    if behaviour == "n-choices":
        # Every choice writes up to its limit, as a long answer would: n times the output.
        n = int(body.get("n") or 1)
        per_choice = int(body.get("max_completion_tokens") or body.get("max_tokens") or TEXT_TOKENS)
        return completion(body, TEXT, usage(prompt, per_choice * n), n=n)
    if behaviour == "huge-usage":
        return completion(body, TEXT, usage(10_000_000, 10_000_000))
    if behaviour == "no-usage":
        return completion(body, TEXT, None)
    if behaviour == "zero-usage":
        return completion(body, TEXT, usage(0, 0))
    if behaviour == "ignore-limit":
        return completion(body, "word " * IGNORED_LIMIT_TOKENS, usage(prompt, IGNORED_LIMIT_TOKENS))
    if behaviour == "internal-id":
        return completion(body, TEXT, usage(prompt, TEXT_TOKENS), model=INTERNAL_ID)
    return completion(body, TEXT, usage(prompt, TEXT_TOKENS))
