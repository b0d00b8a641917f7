"""Prompt token counts without the network: o200k/cl100k BPE bundled by `bpe-openai`.

Counting costs CPU and the encoding costs memory (about 140 MB, and a second to load), so
admission first uses a byte bound (a BPE token is at least one byte) and counts exactly only
when that bound cannot prove a fit. On the request path counting is `acount_*`: the tables
load in a thread, and long texts are counted in slices with the event loop running between
them, stopping as soon as the count passes what the caller needs to know.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import orjson

from switchyard.wire.chat import ChatRequest, TextPart

# OpenAI's documented chat framing: each message costs a few tokens, the reply primer three.
PER_MESSAGE_TOKENS = 3
REPLY_PRIMER_TOKENS = 3
_CHUNK_CHARS = 500_000  # bpe-openai refuses single calls over 1M characters
_SLICE_CHARS = 64 * 1024  # about 1.5 ms of counting: the most one step holds the event loop
_lock = threading.Lock()
_tables: dict[str, Any] = {}


def _tokenizer(encoding: str) -> Any:
    """The encoding's tables, built once per process (whichever thread asks first builds them)."""
    found = _tables.get(encoding)
    if found is None:
        with _lock:
            found = _tables.get(encoding)
            if found is None:
                from bpe_openai import _bindings  # lazy: the tables cost memory only once counting is needed

                found = _tables[encoding] = _bindings.tokenizer_for_encoding(encoding)
    return found


def count_text(text: str, encoding: str = "o200k_base") -> int:
    if not text:
        return 0
    tok = _tokenizer(encoding)
    return sum(tok.count(text[i : i + _CHUNK_CHARS]) for i in range(0, len(text), _CHUNK_CHARS))


def _texts(request: ChatRequest) -> Iterator[str]:
    """Every text the model reads: contents, names, tool calls, tool definitions, the output schema."""
    for msg in request.messages:
        if isinstance(msg.content, str):
            yield msg.content
        elif msg.content:
            for p in msg.content:
                if isinstance(p, TextPart):
                    yield p.text
        if msg.name:
            yield msg.name
        for call in msg.tool_calls or ():
            yield call.function.name
            yield call.function.arguments
    if request.tools:
        yield orjson.dumps([_tool_text(t) for t in request.tools]).decode()
    schema = request.json_schema
    if schema is not None and schema.schema is not None:
        yield orjson.dumps(schema.schema).decode()


def _tool_text(tool: Any) -> dict[str, Any]:
    fn = tool.function
    return {"name": fn.name, "description": fn.description, "parameters": fn.parameters} if fn else {}


def _utf8_len(text: str) -> int:
    # isascii() reads a flag of the string object: no copy for the common case.
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def framing_tokens(request: ChatRequest) -> int:
    return PER_MESSAGE_TOKENS * len(request.messages) + REPLY_PRIMER_TOKENS


def prompt_bytes_bound(request: ChatRequest) -> int:
    """An upper bound on prompt text tokens in OpenAI's encodings: UTF-8 bytes plus framing."""
    return framing_tokens(request) + sum(_utf8_len(t) for t in _texts(request))


def count_prompt_tokens(request: ChatRequest, encoding: str = "o200k_base") -> int:
    return framing_tokens(request) + sum(count_text(t, encoding) for t in _texts(request))


async def ensure_tokenizer(encoding: str = "o200k_base") -> None:
    """Build the tables off the event loop, once per process (about a second of work)."""
    if encoding not in _tables:
        await asyncio.to_thread(_tokenizer, encoding)


async def acount_text(text: str, encoding: str = "o200k_base", stop_after: int | None = None) -> int:
    """`count_text` in slices, yielding to the loop between them; past `stop_after`, it returns
    early with a count that is already larger. Slices end at whitespace where one is near,
    so a slice boundary rarely splits a token (the sum is then exact, else within a token or
    two per slice)."""
    if not text:
        return 0
    await ensure_tokenizer(encoding)
    tok = _tokenizer(encoding)
    if len(text) <= _SLICE_CHARS:
        return int(tok.count(text))
    total, start = 0, 0
    while start < len(text):
        end = min(start + _SLICE_CHARS, len(text))
        if end < len(text):
            cut = text.rfind(" ", start + _SLICE_CHARS // 2, end)
            end = cut if cut > start else end
        total += tok.count(text[start:end])
        start = end
        if stop_after is not None and total > stop_after:
            return total
        await asyncio.sleep(0)
    return total


async def acount_prompt_tokens(request: ChatRequest, encoding: str = "o200k_base", stop_after: int | None = None) -> int:
    """`count_prompt_tokens` without holding the event loop for long; may stop past `stop_after`."""
    total = framing_tokens(request)
    for text in _texts(request):
        left = None if stop_after is None else stop_after - total
        total += await acount_text(text, encoding, left)
        if stop_after is not None and total > stop_after:
            return total
    return total
