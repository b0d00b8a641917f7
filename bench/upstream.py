#!/usr/bin/env python3
"""Fast stand-in OpenAI upstream for the switchyard benchmark.

A raw asyncio Protocol HTTP/1.1 server (uvloop when installed, no framework) that answers

* ``POST /v1/chat/completions`` with a fixed, realistic ``chat.completion`` (the ``model``
  field echoes the request's model), or, for ``"stream": true``, a realistic SSE stream in
  chunked transfer encoding: a role chunk, ten content chunks, a finish chunk, a usage chunk
  (``choices: []``) when ``stream_options.include_usage`` is true, then ``data: [DONE]``;
  for model ``gpt-5.2-many``, 200 small content chunks, one every ``--many-delay-ms``;
* ``GET /v1/models`` with a model list;
* ``GET /healthz`` with ``ok``.

It supports keep-alive (HTTP/1.1 default, HTTP/1.0 with ``Connection: keep-alive``),
``Content-Length`` and chunked request bodies, ``Expect: 100-continue`` and pipelined
requests (answered in order). Rendered responses are cached per (model, stream,
include_usage, keep-alive), so the per-request cost is one small ``json.loads`` and one
``transport.write``.

Run alone:  python bench/upstream.py --port 9100   (prints ``READY <port>`` once listening)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sys
import time

MAX_HEAD = 64 * 1024
MAX_BODY = 8 * 1024 * 1024
ID_SUFFIX = os.urandom(6).hex()

REPLY_PIECES = [
    "Hello",
    "! This",
    " is",
    " a fixed",
    " reply",
    " from the",
    " benchmark's",
    " stand-in",
    " upstream",
    ".",
]
REPLY_TEXT = "".join(REPLY_PIECES)
# Streams for this model have MANY_CHUNKS small content chunks, each after a pause (--many-delay-ms):
# the per-chunk cost of relaying, apart from the per-request cost.
MANY_MODEL = "gpt-5.2-many"
MANY_CHUNKS = 200
MANY_PIECE = " tok"
PROMPT_TOKENS = 19
COMPLETION_TOKENS = 16


def _usage() -> dict:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": COMPLETION_TOKENS,
        "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _dumps(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _head(status: str, ctype: str, keep_alive: bool, extra: str = "") -> bytes:
    conn = "keep-alive" if keep_alive else "close"
    return (
        f"HTTP/1.1 {status}\r\n"
        f"content-type: {ctype}\r\n"
        f"x-request-id: req_bench_{ID_SUFFIX}\r\n"
        f"openai-processing-ms: 1\r\n"
        f"connection: {conn}\r\n"
        f"{extra}"
    ).encode()


def render_completion(model: str, keep_alive: bool) -> bytes:
    body = _dumps(
        {
            "id": f"chatcmpl-bench{ID_SUFFIX}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": REPLY_TEXT,
                        "refusal": None,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": _usage(),
            "service_tier": "default",
            "system_fingerprint": "fp_bench",
        }
    )
    return _head("200 OK", "application/json", keep_alive) + f"content-length: {len(body)}\r\n\r\n".encode() + body


def render_stream_events(model: str, include_usage: bool, pieces: list[str] = REPLY_PIECES) -> list[bytes]:
    """The SSE events (each b'data: ...\\n\\n') of one streamed completion."""
    created = int(time.time())
    base = {
        "id": f"chatcmpl-bench{ID_SUFFIX}",
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "service_tier": "default",
        "system_fingerprint": "fp_bench",
    }

    def chunk(delta: dict, finish: str | None) -> dict:
        c = dict(base)
        c["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        if include_usage:
            c["usage"] = None
        return c

    chunks = [chunk({"role": "assistant", "content": "", "refusal": None}, None)]
    chunks += [chunk({"content": piece}, None) for piece in pieces]
    chunks.append(chunk({}, "stop"))
    if include_usage:
        u = dict(base)
        u["choices"] = []
        u["usage"] = _usage()
        chunks.append(u)
    events = [b"data: " + _dumps(c) + b"\n\n" for c in chunks]
    events.append(b"data: [DONE]\n\n")
    return events


def render_stream(model: str, include_usage: bool, keep_alive: bool, chunked: bool) -> tuple[bytes, list[bytes]]:
    """(response head, list of framed body pieces). Last piece ends the body."""
    extra = "cache-control: no-cache\r\n"
    if chunked:
        extra += "transfer-encoding: chunked\r\n"
    head = _head("200 OK", "text/event-stream; charset=utf-8", keep_alive, extra) + b"\r\n"
    events = render_stream_events(model, include_usage, [MANY_PIECE] * MANY_CHUNKS if model == MANY_MODEL else REPLY_PIECES)
    if not chunked:
        return head, events
    pieces = [f"{len(e):x}\r\n".encode() + e + b"\r\n" for e in events]
    pieces[-1] += b"0\r\n\r\n"
    return head, pieces


def render_models(keep_alive: bool) -> bytes:
    created = int(time.time())
    body = _dumps(
        {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": created, "owned_by": "bench"}
                for m in ("gpt-5.2", "gpt-5.2-mini", "gpt-4o-mini")
            ],
        }
    )
    return _head("200 OK", "application/json", keep_alive) + f"content-length: {len(body)}\r\n\r\n".encode() + body


def render_error(status: str, message: str, code: str | None, keep_alive: bool) -> bytes:
    body = _dumps({"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}})
    return _head(status, "application/json", keep_alive) + f"content-length: {len(body)}\r\n\r\n".encode() + body


def render_plain(status: str, text: str, keep_alive: bool) -> bytes:
    body = text.encode()
    return _head(status, "text/plain", keep_alive) + f"content-length: {len(body)}\r\n\r\n".encode() + body


class Cache(dict):
    LIMIT = 512

    def put(self, key, value):
        if len(self) >= self.LIMIT:
            self.clear()
        self[key] = value
        return value


CACHE = Cache()
STREAM_DELAY = 0.0  # seconds between SSE events; 0 = write the whole stream at once
MANY_DELAY = 0.005  # seconds between the events of a many-chunk stream


def _decode_chunked(buf: bytearray, start: int):
    """Decode a chunked body starting at buf[start]. Returns (body, end) or None if incomplete.
    Raises ValueError on malformed input."""
    pos = start
    out = bytearray()
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            if len(buf) - pos > 1024:
                raise ValueError("chunk size line too long")
            return None
        size_s = bytes(buf[pos:eol]).split(b";", 1)[0].strip()
        size = int(size_s, 16)
        pos = eol + 2
        if size == 0:
            # trailers until an empty line
            while True:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    return None
                if eol == pos:
                    return bytes(out), eol + 2
                pos = eol + 2
        if len(buf) < pos + size + 2:
            return None
        out += buf[pos : pos + size]
        if len(out) > MAX_BODY:
            raise ValueError("body too large")
        pos += size + 2


def _header(low_head: bytes, key: bytes) -> bytes | None:
    """Value of a header in a lower-cased request head; key is b"\\r\\nname:"."""
    i = low_head.find(key)
    if i < 0:
        return None
    i += len(key)
    j = low_head.find(b"\r\n", i)
    return (low_head[i:] if j < 0 else low_head[i:j]).strip()


# Rendered answers keyed by the exact request body: clients (wrk, the gateways) repeat the
# same bytes, so most requests skip json.loads entirely.
BODY_CACHE: dict = {}
BODY_CACHE_LIMIT = 1024


class HTTPProtocol(asyncio.Protocol):
    __slots__ = ("transport", "buf", "closing", "sent_continue", "busy", "pending")

    def connection_made(self, transport):
        self.transport = transport
        self.buf = bytearray()
        self.closing = False
        self.sent_continue = False
        self.busy = False  # a delayed stream is being written
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def connection_lost(self, exc):
        self.closing = True

    def data_received(self, data):
        if self.closing:
            return
        self.buf += data
        if not self.busy:
            self._drain()

    def _drain(self):
        while self.buf and not self.closing and not self.busy:
            try:
                if not self._one():
                    return
            except Exception as exc:  # malformed request: answer 400 and close
                self.transport.write(render_error("400 Bad Request", f"bad request: {exc}", None, False))
                self._close()
                return

    def _close(self):
        self.closing = True
        self.transport.close()

    def _one(self) -> bool:
        buf = self.buf
        idx = buf.find(b"\r\n\r\n")
        if idx < 0:
            if len(buf) > MAX_HEAD:
                raise ValueError("request head too large")
            return False
        head = bytes(buf[:idx])
        eol = head.find(b"\r\n")
        method, target, version = (head if eol < 0 else head[:eol]).split(b" ", 2)
        low = head.lower()
        clen = 0
        chunked = expect = False
        conn = b""
        if eol >= 0:  # look up only the headers that matter (C-speed finds, no per-line loop)
            v = _header(low, b"\r\ncontent-length:")
            if v is not None:
                clen = int(v)
                if clen < 0 or clen > MAX_BODY:
                    raise ValueError("bad content-length")
            v = _header(low, b"\r\ntransfer-encoding:")
            chunked = v is not None and b"chunked" in v
            conn = _header(low, b"\r\nconnection:") or b""
            expect = _header(low, b"\r\nexpect:") == b"100-continue"
        if version == b"HTTP/1.1":
            keep_alive = b"close" not in conn
        else:
            keep_alive = b"keep-alive" in conn
        start = idx + 4
        if chunked:
            res = _decode_chunked(buf, start)
            if res is None:
                if expect and not self.sent_continue:
                    self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    self.sent_continue = True
                return False
            body, end = res
        else:
            end = start + clen
            if len(buf) < end:
                if expect and not self.sent_continue:
                    self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    self.sent_continue = True
                return False
            body = bytes(buf[start:end])
        del buf[:end]
        self.sent_continue = False
        self._handle(method, target, version, body, keep_alive)
        if not keep_alive:
            self._close()
        return True

    def _handle(self, method: bytes, target: bytes, version: bytes, body: bytes, keep_alive: bool):
        path = target.split(b"?", 1)[0]
        w = self.transport.write
        if path.endswith(b"/chat/completions"):
            bkey = (body, keep_alive, version, method)
            hit = BODY_CACHE.get(bkey)
            if hit is not None:
                w(hit)
                return
            if method != b"POST":
                w(render_error("405 Method Not Allowed", "use POST", None, keep_alive))
                return
            try:
                req = json.loads(body)
                model = req["model"]
                if not isinstance(model, str) or not isinstance(req.get("messages"), list):
                    raise ValueError
            except Exception:
                w(render_error("400 Bad Request", "body must be a JSON chat completion request with model and messages", None, keep_alive))
                return
            stream = req.get("stream") is True
            if not stream:
                key = (model, False, False, keep_alive, True)
                resp = CACHE.get(key) or CACHE.put(key, render_completion(model, keep_alive))
                self._remember(bkey, resp)
                w(resp)
                return
            so = req.get("stream_options")
            include_usage = isinstance(so, dict) and so.get("include_usage") is True
            chunked_ok = version == b"HTTP/1.1"
            if not chunked_ok:
                keep_alive = False  # HTTP/1.0: body ends at connection close
            key = (model, True, include_usage, keep_alive, chunked_ok)
            cached = CACHE.get(key)
            if cached is None:
                head, pieces = render_stream(model, include_usage, keep_alive, chunked_ok)
                cached = CACHE.put(key, (head + b"".join(pieces), head, pieces))
            if model == MANY_MODEL:
                self._write_slowly(cached[1], cached[2], keep_alive, MANY_DELAY)
            elif STREAM_DELAY <= 0:
                self._remember(bkey, cached[0])
                w(cached[0])
            else:
                self._write_slowly(cached[1], cached[2], keep_alive, STREAM_DELAY)
            return
        if path in (b"/v1/models", b"/models"):
            key = ("models", keep_alive)
            w(CACHE.get(key) or CACHE.put(key, render_models(keep_alive)))
            return
        if path in (b"/healthz", b"/health", b"/"):
            w(render_plain("200 OK", "ok", keep_alive))
            return
        w(render_error("404 Not Found", f"unknown path {path.decode(errors='replace')}", "not_found", keep_alive))

    @staticmethod
    def _remember(bkey, resp: bytes) -> None:
        if len(bkey[0]) <= 16384:
            if len(BODY_CACHE) >= BODY_CACHE_LIMIT:
                BODY_CACHE.clear()
            BODY_CACHE[bkey] = resp

    def _write_slowly(self, head: bytes, pieces: list[bytes], keep_alive: bool, delay: float):
        loop = asyncio.get_running_loop()
        self.busy = True
        self.transport.write(head + pieces[0])
        it = iter(pieces[1:])

        def step():
            if self.closing:
                return
            piece = next(it, None)
            if piece is None:
                self.busy = False
                if not keep_alive:
                    self._close()
                elif self.buf:
                    self._drain()
                return
            self.transport.write(piece)
            loop.call_later(delay, step)

        loop.call_later(delay, step)


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(HTTPProtocol, host, port, reuse_address=True, backlog=4096)
    real_port = server.sockets[0].getsockname()[1]
    print(f"READY {real_port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    async with server:
        await stop.wait()


def main() -> None:
    global STREAM_DELAY, MANY_DELAY
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9100, help="0 picks a free port (printed as READY <port>)")
    ap.add_argument("--stream-delay-ms", type=float, default=0.0, help="pause between SSE events (default 0: whole stream in one write)")
    ap.add_argument("--many-delay-ms", type=float, default=5.0, help=f"pause between the SSE events of {MANY_MODEL} streams (default 5)")
    args = ap.parse_args()
    STREAM_DELAY = args.stream_delay_ms / 1000.0
    MANY_DELAY = args.many_delay_ms / 1000.0
    try:
        import uvloop  # type: ignore

        runner = uvloop.run
    except ImportError:
        print("upstream: uvloop not installed, using the default asyncio loop (slower)", file=sys.stderr, flush=True)
        runner = asyncio.run
    runner(serve(args.host, args.port))


if __name__ == "__main__":
    main()
