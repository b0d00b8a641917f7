"""A stand-in OpenAI upstream speaking the real wire format, with scripted behaviours.

It runs in a background thread of the test process; the gateway under test (a real server
process) calls it over HTTP. Every request it receives is recorded so tests can check that
what switchyard forwarded is what the client sent.

Behaviour is chosen by the upstream model id the gateway sends (configure deployments with
`model: <behaviour>`):
  ok               a normal answer (streams: role chunk, content chunks, finish, usage)
  tools            a tool call (streams: id/name chunk, argument fragments)
  status-<code>    an OpenAI error body with that status (429 adds Retry-After: 7)
  slow             waits `slow_seconds` before answering
  broken-stream    streams two chunks then drops the connection
  error-event      streams one chunk then an `error` event
  no-done          streams the answer but closes without [DONE]
  slow-stream      streams the answer with a pause of 0.3 s between chunks
  garbage          200 with a body that is not JSON
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.standins.server import ThreadedStandIn

ANSWER = ["Hello", " from", " the", " stand-in", "."]
TOOL_ARGS = ['{"loc', 'ation": "Par', 'is", "unit": "c"}']


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class StandInUpstream(ThreadedStandIn):
    slow_seconds: float = 3.0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.received.append(Received(request.path, dict(request.headers), body))
        behaviour = str(body.get("model"))
        if behaviour.startswith("status-"):
            status = int(behaviour.split("-", 1)[1])
            headers = {"Retry-After": "7"} if status == 429 else {}
            err = {"error": {"message": f"stand-in failure {status}", "type": "invalid_request_error" if status < 500 else "server_error",
                             "param": "messages" if status == 400 else None, "code": "stand_in_code"}}
            return web.json_response(err, status=status, headers=headers)
        if behaviour == "slow":
            await asyncio.sleep(self.slow_seconds)
        if behaviour == "garbage":
            return web.Response(text="<html>not json</html>", content_type="text/html")
        if body.get("stream"):
            return await self._stream(request, body, behaviour)
        return web.json_response(completion(body, tools=behaviour == "tools"))

    async def _stream(self, request: web.Request, body: dict[str, Any], behaviour: str) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        chunks = stream_chunks(body, tools=behaviour == "tools")
        for i, chunk in enumerate(chunks):
            if behaviour == "broken-stream" and i == 2:
                request.transport.close()  # type: ignore[union-attr]
                return resp
            if behaviour == "error-event" and i == 1:
                await resp.write(b'data: {"error": {"message": "stand-in exploded", "type": "server_error", "code": "boom"}}\n\n')
                return resp
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            if behaviour == "slow-stream":
                await asyncio.sleep(0.3)
        if behaviour != "no-done":
            await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


def usage() -> dict[str, Any]:
    return {
        "prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    }


def completion(body: dict[str, Any], tools: bool = False) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": "".join(ANSWER), "refusal": None, "annotations": []}
    finish = "stop"
    if tools:
        message["content"] = None
        message["tool_calls"] = [{"id": "call_standin1", "type": "function",
                                  "function": {"name": "get_weather", "arguments": "".join(TOOL_ARGS)}}]
        finish = "tool_calls"
    return {
        "id": "chatcmpl-standin", "object": "chat.completion", "created": int(time.time()),
        "model": body.get("model"), "system_fingerprint": "fp_standin", "service_tier": "default",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": usage(),
    }


def stream_chunks(body: dict[str, Any], tools: bool = False) -> list[dict[str, Any]]:
    head = {"id": "chatcmpl-standin", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": body.get("model"), "system_fingerprint": "fp_standin", "service_tier": "default"}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], "usage": None}

    out = [chunk({"role": "assistant", "content": "", "refusal": None})]
    if tools:
        out.append(chunk({"tool_calls": [{"index": 0, "id": "call_standin1", "type": "function",
                                          "function": {"name": "get_weather", "arguments": ""}}]}))
        out += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": a}}]}) for a in TOOL_ARGS]
        out.append(chunk({}, "tool_calls"))
    else:
        out += [chunk({"content": piece}) for piece in ANSWER]
        out.append(chunk({}, "stop"))
    if (body.get("stream_options") or {}).get("include_usage"):
        out.append({**head, "choices": [], "usage": usage()})
    return out
