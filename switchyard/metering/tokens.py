"""Prompt token counts without the network: o200k/cl100k BPE bundled by `bpe-openai`.

Counting costs CPU and the encoding costs memory, so admission first uses a byte bound (a BPE
token is at least one byte) and counts exactly only when that bound cannot prove a fit.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Any

import orjson

from switchyard.wire.chat import ChatRequest, TextPart

# OpenAI's documented chat framing: each message costs a few tokens, the reply primer three.
PER_MESSAGE_TOKENS = 3
REPLY_PRIMER_TOKENS = 3
_CHUNK_CHARS = 500_000  # bpe-openai refuses single calls over 1M characters
_lock = threading.Lock()


@lru_cache(maxsize=4)
def _tokenizer(encoding: str) -> Any:
    from bpe_openai import _bindings  # lazy: the tables cost memory only once counting is needed

    with _lock:
        return _bindings.tokenizer_for_encoding(encoding)


def count_text(text: str, encoding: str = "o200k_base") -> int:
    if not text:
        return 0
    tok = _tokenizer(encoding)
    return sum(tok.count(text[i : i + _CHUNK_CHARS]) for i in range(0, len(text), _CHUNK_CHARS))


def _texts(request: ChatRequest) -> list[str]:
    out: list[str] = []
    for msg in request.messages:
        if isinstance(msg.content, str):
            out.append(msg.content)
        elif msg.content:
            out.extend(p.text for p in msg.content if isinstance(p, TextPart))
        if msg.name:
            out.append(msg.name)
        for call in msg.tool_calls or ():
            out.append(call.function.name)
            out.append(call.function.arguments)
    if request.tools:
        out.append(orjson.dumps([_tool_text(t) for t in request.tools]).decode())
    return out


def _tool_text(tool: Any) -> dict[str, Any]:
    fn = tool.function
    return {"name": fn.name, "description": fn.description, "parameters": fn.parameters} if fn else {}


def prompt_bytes_bound(request: ChatRequest) -> int:
    """An upper bound on prompt tokens: UTF-8 bytes plus framing."""
    framing = PER_MESSAGE_TOKENS * len(request.messages) + REPLY_PRIMER_TOKENS
    return framing + sum(len(t.encode()) for t in _texts(request))


def count_prompt_tokens(request: ChatRequest, encoding: str = "o200k_base") -> int:
    framing = PER_MESSAGE_TOKENS * len(request.messages) + REPLY_PRIMER_TOKENS
    return framing + sum(count_text(t, encoding) for t in _texts(request))
