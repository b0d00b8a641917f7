"""A stand-in Gemini upstream (Generative Language API wire format), with scripted behaviours.

Runs in a background thread of the test process, like the OpenAI stand-in; every request is
recorded (path, query, headers, JSON body). It serves
`POST /v1beta/models/{model}:generateContent` and `…:streamGenerateContent?alt=sse`, and the
behaviour is chosen by the model id in the path:
  gemini-ok        a text answer (streams: three text events, the last with STOP + usage)
  gemini-tools     two parallel function calls (streams: text, then both calls at once)
  gemini-cached    a text answer whose usage reports cached prompt tokens
  gemini-thinking  a thought part (to be hidden) and an answer, usage with thoughts tokens
  gemini-length    finishReason MAX_TOKENS
  gemini-safety    finishReason SAFETY after some text
  gemini-blocked   no candidates, promptFeedback.blockReason
  gemini-two       two candidates (candidateCount 2)
  gemini-error-event  streams one event then an error object
  gemini-no-finish    streams text and closes without a finishReason
  gemini-badkey    400 INVALID_ARGUMENT with reason API_KEY_INVALID (what Gemini sends for a bad key)
  gemini-<code>    an error body with that HTTP status (429 adds a RetryInfo detail of 37s)
  gemini-small     a 100-token window: longer prompts get Gemini's own "input token count ... exceeds" 400
  gemini-counted   usage as `:countTokens` counts the request (prompt) and the answer's text parts
  gemini-zero-usage  streams a text answer whose usage says zero tokens (as LiteLLM's Gemini endpoint does)
`:countTokens` counts with `pseudo_tokens` (a third of the UTF-8 bytes of every text part).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.standins.server import ThreadedStandIn

ANSWER = ["Hello", " from", " Gemini."]
WEATHER_ARGS = {"location": "Paris", "unit": "c"}
TIME_ARGS = {"tz": "Europe/Paris"}

_STATUS_NAMES = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED",
                 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


@dataclass
class Received:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def model(self) -> str:
        return self.path.rsplit("/", 1)[-1].split(":", 1)[0]


@dataclass
class StandInGemini(ThreadedStandIn):
    counts: list[dict[str, Any]] = field(default_factory=list)  # countTokens bodies (not in `received`)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1beta/models/{call}", self._handle)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.received.append(Received(request.path, dict(request.query), dict(request.headers), body))
        model, _, method = request.match_info["call"].partition(":")
        if method not in ("generateContent", "streamGenerateContent", "countTokens", "batchEmbedContents"):
            return error(404, f"Method {method} not found.")
        if request.headers.get("x-goog-api-key") != "gm-upstream-secret":
            return error(403, "Method doesn't allow unregistered callers.")
        if method == "countTokens":
            self.received.pop()  # kept apart: tests read `received` for what was generated
            self.counts.append(body)
            return web.json_response({"totalTokens": count_tokens(body.get("generateContentRequest") or body)})
        if method == "batchEmbedContents":
            return embeddings(body)
        behaviour = model.removeprefix("gemini-")
        if behaviour == "small" and count_tokens(body) > 100:
            return error(400, f"The input token count ({count_tokens(body)}) exceeds the maximum number of tokens "
                              "allowed (100).")
        if behaviour == "badkey":
            return error(400, "API key not valid. Please pass a valid API key.", reason="API_KEY_INVALID")
        if behaviour.isdigit():
            return error(int(behaviour), f"stand-in failure {behaviour}")
        events = script(behaviour, model, body)
        if method == "generateContent":
            return web.json_response(merge(events))
        if request.query.get("alt") != "sse":  # without alt=sse Gemini streams one JSON array
            return web.json_response(events)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i, event in enumerate(events):
            if behaviour == "error-event" and i == 1:
                await resp.write(b'data: {"error": {"code": 500, "message": "stand-in exploded", "status": "INTERNAL"}}\r\n\r\n')
                return resp
            await resp.write(b"data: " + json.dumps(event).encode() + b"\r\n\r\n")
        await resp.write_eof()
        return resp


def error(status: int, message: str, reason: str | None = None) -> web.Response:
    err: dict[str, Any] = {"code": status, "message": message, "status": _STATUS_NAMES.get(status, "UNKNOWN")}
    if reason:
        err["details"] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason,
                           "domain": "googleapis.com"}]
    if status == 429:
        err["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "36.2s"}]
    return web.json_response({"error": err}, status=status)


def usage(prompt: int = 12, out: int = 5, cached: int = 0, thoughts: int = 0) -> dict[str, Any]:
    meta: dict[str, Any] = {"promptTokenCount": prompt, "candidatesTokenCount": out,
                            "totalTokenCount": prompt + out + thoughts,
                            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}]}
    if cached:
        meta["cachedContentTokenCount"] = cached
    if thoughts:
        meta["thoughtsTokenCount"] = thoughts
    return meta


def _event(model: str, parts: list[dict[str, Any]] | None, finish: str | None = None,
           meta: dict[str, Any] | None = None, index: int = 0) -> dict[str, Any]:
    cand: dict[str, Any] = {"content": {"role": "model", "parts": parts or []}, "index": index}
    if finish:
        cand["finishReason"] = finish
    event: dict[str, Any] = {"candidates": [cand], "modelVersion": model, "responseId": "resp-standin"}
    if meta:
        event["usageMetadata"] = meta
    return event


def pseudo_tokens(text: str) -> int:
    return max(1, len(text.encode()) // 3)


def count_tokens(body: dict[str, Any]) -> int:
    """The stand-in's count of a request (or of bare contents): every text part, a few per turn."""
    parts = [p for c in body.get("contents") or [] for p in c.get("parts") or []]
    parts += (body.get("systemInstruction") or {}).get("parts") or []
    return sum(pseudo_tokens(str(p.get("text", ""))) for p in parts) + 2 * len(body.get("contents") or [])


def script(behaviour: str, model: str, body: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The streamed events of a behaviour; the non-streamed answer is their merge."""
    text = [{"text": t} for t in ANSWER]
    if behaviour == "counted":  # usage as countTokens counts the request, and the answer's parts
        billed = usage(prompt=count_tokens(body or {}), out=sum(pseudo_tokens(t) for t in ANSWER))
        return [_event(model, [text[0]]), _event(model, [text[1], text[2]], "STOP", billed)]
    small = {"promptTokenCount": 12, "totalTokenCount": 12}  # interim usage, as Gemini sends
    if behaviour == "zero-usage":
        zero = {"promptTokenCount": 0, "candidatesTokenCount": 0, "totalTokenCount": 0}
        return [_event(model, [text[0]], meta=zero), _event(model, [text[1], text[2]], "STOP", zero)]
    if behaviour in ("ok", "error-event", "small"):
        return [_event(model, [text[0]], meta=small), _event(model, [text[1]], meta=small),
                _event(model, [text[2]], "STOP", usage())]
    if behaviour == "no-finish":
        return [_event(model, [text[0]], meta=small), _event(model, [text[1]], meta=small)]
    if behaviour == "tools":
        calls = [{"functionCall": {"name": "get_weather", "args": WEATHER_ARGS}},
                 {"functionCall": {"name": "get_time", "args": TIME_ARGS}}]
        return [_event(model, [{"text": "Checking."}], meta=small), _event(model, calls, "STOP", usage(40, 20))]
    if behaviour == "cached":
        return [_event(model, text, "STOP", usage(prompt=2000, out=100, cached=1500))]
    if behaviour == "thinking":
        return [_event(model, [{"text": "Let me think about this", "thought": True}], meta=small),
                _event(model, text, "STOP", usage(prompt=100, out=50, thoughts=300))]
    if behaviour == "length":
        return [_event(model, [text[0]], "MAX_TOKENS", usage(out=1))]
    if behaviour == "safety":
        return [_event(model, [text[0]], meta=small), _event(model, [], "SAFETY", usage(out=1))]
    if behaviour == "blocked":
        return [{"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": usage(out=0), "modelVersion": model}]
    if behaviour == "two":
        both = _event(model, text, "STOP", usage(out=10))
        both["candidates"].append({"content": {"role": "model", "parts": [{"text": "Second answer."}]},
                                   "finishReason": "STOP", "index": 1})
        return [both]
    raise ValueError(f"unknown stand-in behaviour {behaviour!r}")


def merge(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The `generateContent` answer equivalent to a stream of events."""
    out: dict[str, Any] = {"modelVersion": events[-1].get("modelVersion"), "responseId": "resp-standin"}
    candidates: dict[int, dict[str, Any]] = {}
    for event in events:
        for cand in event.get("candidates") or ():
            slot = candidates.setdefault(cand["index"], {"content": {"role": "model", "parts": []}, "index": cand["index"]})
            for part in cand["content"]["parts"]:
                parts = slot["content"]["parts"]
                if "text" in part and parts and "text" in parts[-1] and part.get("thought") == parts[-1].get("thought"):
                    parts[-1] = {**parts[-1], "text": parts[-1]["text"] + part["text"]}
                else:
                    parts.append(dict(part))
            if cand.get("finishReason"):
                slot["finishReason"] = cand["finishReason"]
        for key in ("usageMetadata", "promptFeedback"):
            if key in event:
                out[key] = event[key]
    if candidates:
        out["candidates"] = [candidates[i] for i in sorted(candidates)]
    return out


def embeddings(body: dict[str, Any]) -> web.Response:
    """`batchEmbedContents`: a vector per request (length `outputDimensionality`, default 6), and,
    as Gemini does, no token count."""
    out = []
    for one in body["requests"]:
        text = "".join(p.get("text", "") for p in one["content"]["parts"])
        dims = int(one.get("outputDimensionality") or 6)
        out.append({"values": [((ord(text[k % len(text)]) + k) % 13) / 13 for k in range(dims)]})
    return web.json_response({"embeddings": out})
