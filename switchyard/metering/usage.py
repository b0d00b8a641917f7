"""The tokens a request really used: the upstream's report, or our own count where it gave none."""

from __future__ import annotations

from typing import Any

from switchyard.metering.cost import TokenUsage
from switchyard.metering.tokens import acount_prompt_tokens, acount_text
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


def unreported(usage: TokenUsage | None, delivered_text: str) -> bool:
    """No usable report: none at all, or zero output for an answer that has text (some
    OpenAI-compatible servers send zeros rather than nothing)."""
    return usage is None or (usage.output_tokens == 0 and bool(delivered_text))


async def counted(
    request: ChatRequest, delivered_text: str, image_tokens: int,
    prompt_tokens: int | None = None, output_tokens: int | None = None,
) -> TokenUsage:
    """Our own count, for upstreams that report no usage or break off mid-stream: the upstream's
    own counts where it gave them (`prompt_tokens`, `output_tokens`), else an OpenAI encoding."""
    if prompt_tokens is None:
        prompt_tokens = await acount_prompt_tokens(request) + image_tokens
    if output_tokens is None:
        output_tokens = await acount_text(delivered_text)
    return TokenUsage(input_tokens=prompt_tokens, output_tokens=output_tokens)


def within_bounds(usage: TokenUsage, input_bound: int, output_bound: int) -> tuple[TokenUsage, str | None]:
    """The usage to bill: never more input or output than admission reserved for. Returns what
    was cut, for the operator (an upstream reporting more than it can have used)."""
    if usage.input_tokens <= input_bound and usage.output_tokens <= output_bound:
        return usage, None
    cut = []
    if usage.input_tokens > input_bound:
        cut.append(f"input {usage.input_tokens} > bound {input_bound}")
    if usage.output_tokens > output_bound:
        cut.append(f"output {usage.output_tokens} > bound {output_bound}")
    inp = min(usage.input_tokens, input_bound)
    cached = min(usage.cached_input_tokens, inp)
    out = min(usage.output_tokens, output_bound)
    capped = TokenUsage(
        input_tokens=inp, cached_input_tokens=cached, cache_write_tokens=min(usage.cache_write_tokens, inp - cached),
        output_tokens=out, reasoning_tokens=min(usage.reasoning_tokens, out),
    )
    return capped, "; ".join(cut)
