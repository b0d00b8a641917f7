"""The tokens a request really used: the upstream's report, or our own count where it gave none."""

from __future__ import annotations

from typing import Any

from switchyard.metering.cost import TokenUsage
from switchyard.metering.tokens import count_prompt_tokens, count_text
from switchyard.wire.chat import ChatRequest


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def from_openai(usage: Any) -> TokenUsage | None:
    """OpenAI's `usage` object (chat or Responses shape) as TokenUsage; None if absent or unusable."""
    if not isinstance(usage, dict):
        return None
    if "prompt_tokens" in usage:
        prompt = _int(usage.get("prompt_tokens"))
        completion = _int(usage.get("completion_tokens"))
        pd = usage.get("prompt_tokens_details") or {}
        cd = usage.get("completion_tokens_details") or {}
    elif "input_tokens" in usage:
        prompt = _int(usage.get("input_tokens"))
        completion = _int(usage.get("output_tokens"))
        pd = usage.get("input_tokens_details") or {}
        cd = usage.get("output_tokens_details") or {}
    else:
        return None
    cached = min(_int(pd.get("cached_tokens")), prompt)
    writes = min(_int(pd.get("cache_write_tokens")), prompt - cached)
    return TokenUsage(
        input_tokens=prompt, cached_input_tokens=cached, cache_write_tokens=writes,
        output_tokens=completion, reasoning_tokens=min(_int(cd.get("reasoning_tokens")), completion),
    )


def image_tokens_reported(usage: Any) -> int | None:
    if isinstance(usage, dict):
        details = usage.get("prompt_tokens_details") or {}
        if isinstance(details, dict) and isinstance(details.get("image_tokens"), int):
            return details["image_tokens"]
    return None


def counted(request: ChatRequest, delivered_text: str, image_tokens: int) -> TokenUsage:
    """Our own count, for upstreams that report no usage or break off mid-stream."""
    return TokenUsage(
        input_tokens=count_prompt_tokens(request) + image_tokens,
        output_tokens=count_text(delivered_text),
    )
