"""Recognising "the prompt does not fit" in every upstream's own words.

Fallback to a larger deployment and `truncation: auto` act on `context_length_exceeded` only,
but upstreams word the refusal their own way, often with no code at all. Each provider's error
mapper asks `is_overflow` and sets the code.
"""

from __future__ import annotations

import re

# Real wordings, one per upstream (lower-cased when matched):
_PATTERNS = re.compile("|".join([
    r"maximum context length",  # OpenAI, vLLM, llama-cpp-python's server
    r"context[_ ]length[_ ]exceeded",  # OpenAI's code, LiteLLM's ContextWindowExceededError text
    r"context ?window ?exceeded",  # LiteLLM
    r"exceeds? (the )?(available )?context (size|window|length)",  # llama.cpp's llama-server
    r"exceed context window of",  # llama-cpp-python: "Requested tokens (N) exceed context window of M"
    r"prompt is too long",  # Anthropic: "prompt is too long: 215134 tokens > 200000 maximum"
    r"exceed context limit",  # Anthropic: "input length and `max_tokens` exceed context limit: ..."
    r"input token count .*exceeds the maximum number of tokens",  # Gemini
    r"input is too long",  # TGI, Bedrock
    r"too many tokens",
    r"reduce the length of the messages",  # OpenAI's advice
]))
_OVERFLOW_TYPES = frozenset({"exceed_context_size_error", "context_length_exceeded", "request_too_large"})


def is_overflow(status: int, message: str | None, kind: str | None = None, code: str | None = None) -> bool:
    """True when an upstream's error says the prompt (with its output limit) is too long for it."""
    if status not in (400, 413, 422):
        return False
    if code in ("context_length_exceeded", "string_above_max_length") or kind in _OVERFLOW_TYPES:
        return kind != "request_too_large" or bool(message and _PATTERNS.search(message.lower()))
    return bool(message and _PATTERNS.search(message.lower()))
