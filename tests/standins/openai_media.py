"""OpenAI's media endpoints and legacy completions for the stand-in upstream, in the real wire
format: JSON and multipart requests, b64 PNG images of the size asked for, image stream events,
transcripts (json, verbose_json, streamed events), speech bytes (raw or SSE), text completions.

Behaviour by the model the gateway sends: a name containing "image" answers as a GPT image model
(token usage); "dall-e" per image (no usage); "whisper" with duration usage; "transcribe" with
token usage; "tts" raw audio, "-tts" (gpt-4o-mini-tts) SSE with usage when asked; `status-<code>`
fails with OpenAI's error body; `no-usage` leaves usage out.
"""

from __future__ import annotations

import base64
import json
import struct
import time
import zlib
from typing import Any

from aiohttp import web

OUTPUT_TOKENS = {"low": {"1024x1024": 272, "1024x1536": 408, "1536x1024": 400},
                 "medium": {"1024x1024": 1056, "1024x1536": 1584, "1536x1024": 1568},
                 "high": {"1024x1024": 4160, "1024x1536": 6240, "1536x1024": 6208}}
IMAGE_INPUT_TOKENS = 323  # per input image, as the stand-in counts them
TRANSCRIPT = "The quick brown fox jumps over the lazy dog."
SPEECH_CHUNK = 4000


def png(width: int, height: int) -> bytes:
    """A real PNG of that size (one grey colour: tiny once compressed)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + b"\x80" * width
    raw = zlib.compress(row * height, 9)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


def error(status: int, message: str, param: str | None = None, code: str | None = None) -> web.Response:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return web.json_response({"error": {"message": message, "type": kind, "param": param, "code": code}}, status=status)


def _words(text: str) -> int:
    return max(1, len(text.split()))


async def _fields(request: web.Request) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The request's fields and files (name, filename, content type, size, bytes), JSON or multipart."""
    if request.content_type == "application/json":
        return await request.json(), []
    form = await request.post()
    fields: dict[str, Any] = {}
    files = []
    for name, value in form.items():
        if isinstance(value, web.FileField):
            data = value.file.read()
            files.append({"name": name, "filename": value.filename, "content_type": value.content_type,
                          "size": len(data), "data": data})
        elif name.endswith("[]"):
            fields.setdefault(name[:-2], []).append(value)
        else:
            fields[name] = value
    return fields, files


class MediaRoutes:
    """Added to the OpenAI stand-in; records each request as (path, headers, fields, files)."""

    def __init__(self, received: list[Any], record: Any) -> None:
        self.received, self.record = received, record

    def add(self, app: web.Application) -> None:
        app.router.add_post("/v1/images/generations", self.images)
        app.router.add_post("/v1/images/edits", self.images)
        app.router.add_post("/v1/images/variations", self.images)
        app.router.add_post("/v1/audio/transcriptions", self.transcribe)
        app.router.add_post("/v1/audio/translations", self.transcribe)
        app.router.add_post("/v1/audio/speech", self.speech)
        app.router.add_post("/v1/completions", self.completions)

    async def _take(self, request: web.Request) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        fields, files = await _fields(request)
        self.received.append(self.record(request.path, dict(request.headers),
                                         {**fields, "_files": [{k: v for k, v in f.items() if k != "data"} for f in files]}))
        return fields, files

    # ---- images ---------------------------------------------------------------------------------

    async def images(self, request: web.Request) -> web.StreamResponse:
        fields, files = await self._take(request)
        model = str(fields.get("model"))
        if model.startswith("status-"):
            return error(int(model.split("-")[1]), "stand-in image failure")
        if "prompt" not in fields and not request.path.endswith("variations"):
            return error(400, "Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter")
        n = int(fields.get("n") or 1)
        gpt = "image" in model
        quality = str(fields.get("quality") or "auto")
        quality = "medium" if quality == "auto" else quality
        size = str(fields.get("size") or "auto")
        size = "1024x1024" if size == "auto" else size
        width, height = (int(x) for x in size.split("x"))
        picture = base64.b64encode(png(width, height)).decode()
        if not gpt:
            if fields.get("response_format", "url") == "url":
                data = [{"url": f"https://stand-in.invalid/img/{i}.png"} for i in range(n)]
            else:
                data = [{"b64_json": picture, "revised_prompt": fields.get("prompt")} for _ in range(n)]
            return web.json_response({"created": int(time.time()), "data": data})
        image_in = IMAGE_INPUT_TOKENS * sum(1 for f in files if f["name"].startswith(("image", "mask")))
        text_in = _words(str(fields.get("prompt") or ""))
        usage = {"total_tokens": 0, "input_tokens": text_in + image_in, "output_tokens": OUTPUT_TOKENS[quality][size] * n,
                 "input_tokens_details": {"text_tokens": text_in, "image_tokens": image_in}}
        usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
        common = {"background": "opaque" if fields.get("background") in (None, "auto") else fields["background"],
                  "output_format": fields.get("output_format") or "png", "size": size, "quality": quality}
        if str(fields.get("stream")).lower() == "true":
            return await self._image_stream(request, fields, n, picture, common, usage)
        body = {"created": int(time.time()), "data": [{"b64_json": picture} for _ in range(n)], **common}
        if model != "no-usage-image":
            body["usage"] = usage
        return web.json_response(body)

    async def _image_stream(self, request: web.Request, fields: dict[str, Any], n: int, picture: str,
                            common: dict[str, Any], usage: dict[str, Any]) -> web.StreamResponse:
        kind = "image_edit" if request.path.endswith("edits") else "image_generation"
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        per_image = {**usage, "output_tokens": usage["output_tokens"] // n}
        per_image["total_tokens"] = per_image["input_tokens"] + per_image["output_tokens"]
        partials = int(fields.get("partial_images") or 0)
        for _ in range(n):
            for k in range(partials):
                event = {"type": f"{kind}.partial_image", "b64_json": picture, "created_at": int(time.time()),
                         "partial_image_index": k, **common}
                await resp.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
            done = {"type": f"{kind}.completed", "b64_json": picture, "created_at": int(time.time()), **common,
                    "usage": per_image}
            await resp.write(f"event: {done['type']}\ndata: {json.dumps(done)}\n\n".encode())
        await resp.write_eof()
        return resp

    # ---- audio ----------------------------------------------------------------------------------

    async def transcribe(self, request: web.Request) -> web.StreamResponse:
        fields, files = await self._take(request)
        model = str(fields.get("model"))
        if model.startswith("status-"):
            return error(int(model.split("-")[1]), "stand-in audio failure")
        if not files:
            return error(400, "Missing required parameter: 'file'.", "file")
        audio = files[0]["data"]
        seconds = 0.0
        if audio[:4] == b"RIFF":
            rate = struct.unpack_from("<I", audio, 28)[0]
            seconds = (len(audio) - 44) / rate
        text = TRANSCRIPT if request.path.endswith("transcriptions") else "Translated: " + TRANSCRIPT
        if "whisper" in model:
            usage: dict[str, Any] = {"type": "duration", "seconds": round(seconds)}
        else:
            audio_tokens = max(1, int(seconds * 10))
            prompt = _words(str(fields.get("prompt") or "")) if fields.get("prompt") else 0
            usage = {"type": "tokens", "input_tokens": audio_tokens + prompt,
                     "input_token_details": {"text_tokens": prompt, "audio_tokens": audio_tokens},
                     "output_tokens": _words(text), "total_tokens": audio_tokens + prompt + _words(text)}
        if str(fields.get("stream")).lower() == "true":
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            for word in text.split(" "):
                event = {"type": "transcript.text.delta", "delta": word + " "}
                await resp.write(f"data: {json.dumps(event)}\n\n".encode())
            done = {"type": "transcript.text.done", "text": text, "usage": usage}
            await resp.write(f"data: {json.dumps(done)}\n\n".encode())
            await resp.write_eof()
            return resp
        if fields.get("response_format") == "verbose_json":
            half = seconds / 2
            return web.json_response({
                "task": "transcribe" if request.path.endswith("transcriptions") else "translate", "language": "english",
                "duration": seconds, "text": text,
                "segments": [
                    {"id": 0, "seek": 0, "start": 0.0, "end": half, "text": " The quick brown fox", "tokens": [1, 2],
                     "temperature": 0.0, "avg_logprob": -0.2, "compression_ratio": 1.1, "no_speech_prob": 0.01},
                    {"id": 1, "seek": 0, "start": half, "end": seconds, "text": " jumps over the lazy dog.",
                     "tokens": [3, 4], "temperature": 0.0, "avg_logprob": -0.2, "compression_ratio": 1.1,
                     "no_speech_prob": 0.01}],
                "usage": usage})
        if fields.get("response_format") not in (None, "json"):
            return error(400, "stand-in: switchyard should only ask for json or verbose_json", "response_format")
        return web.json_response({"text": text, "usage": usage})

    async def speech(self, request: web.Request) -> web.StreamResponse:
        fields, _ = await self._take(request)
        model = str(fields.get("model"))
        if model.startswith("status-"):
            return error(int(model.split("-")[1]), "stand-in speech failure")
        text = str(fields.get("input") or "")
        audio = (b"ID3\x03\x00\x00\x00\x00\x00\x00" + bytes(range(256)) * (1 + len(text) * 4))[:max(SPEECH_CHUNK * 3,
                                                                                                    len(text) * 100)]
        if fields.get("stream_format") == "sse":
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            for at in range(0, len(audio), SPEECH_CHUNK):
                event = {"type": "speech.audio.delta", "audio": base64.b64encode(audio[at:at + SPEECH_CHUNK]).decode()}
                await resp.write(f"data: {json.dumps(event)}\n\n".encode())
            tokens_in = _words(text)
            done = {"type": "speech.audio.done",
                    "usage": {"input_tokens": tokens_in, "output_tokens": len(audio) // 100,
                              "total_tokens": tokens_in + len(audio) // 100}}
            await resp.write(f"data: {json.dumps(done)}\n\n".encode())
            await resp.write_eof()
            return resp
        resp = web.StreamResponse(headers={"Content-Type": "audio/mpeg"})
        await resp.prepare(request)
        for at in range(0, len(audio), SPEECH_CHUNK):
            await resp.write(audio[at:at + SPEECH_CHUNK])
        await resp.write_eof()
        return resp

    # ---- legacy completions ---------------------------------------------------------------------

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body, _ = await self._take(request)
        model = str(body.get("model"))
        if model.startswith("status-"):
            return error(int(model.split("-")[1]), "stand-in completion failure")
        prompt = body.get("prompt", "")
        prompts = [prompt] if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)) else prompt
        n, best_of = int(body.get("n") or 1), int(body.get("best_of") or body.get("n") or 1)
        limit = int(body.get("max_tokens") or 16)
        words = ["and", "then", "it", "rained", "all", "day", "long", "."][:max(1, min(limit, 8))]
        choices, prompt_tokens = [], 0
        for p in prompts:
            prompt_tokens += _words(p) if isinstance(p, str) else len(p)
            for _ in range(n):
                text = (p if body.get("echo") and isinstance(p, str) else "") + " " + " ".join(words)
                choices.append({"text": text, "index": len(choices), "finish_reason": "length", "logprobs": None})
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(words) * best_of * len(prompts),
                 "total_tokens": prompt_tokens + len(words) * best_of * len(prompts)}
        head = {"id": "cmpl-standin", "object": "text_completion", "created": int(time.time()), "model": model}
        if not body.get("stream"):
            return web.json_response({**head, "choices": choices, "usage": usage})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for choice in choices:
            for piece in [" " + w for w in words]:
                chunk = {**head, "choices": [{"text": piece, "index": choice["index"], "logprobs": None,
                                              "finish_reason": None}]}
                await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
        if (body.get("stream_options") or {}).get("include_usage"):
            await resp.write(f"data: {json.dumps({**head, 'choices': [], 'usage': usage})}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp
