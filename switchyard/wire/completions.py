"""OpenAI's legacy `POST /v1/completions`: a prompt (or several) continued as text.

Admission sees it as the chat request it bounds like: each prompt a message (its bytes bound
its tokens), `max_tokens` (16 when unset, as OpenAI) for every completion generated, and
`best_of` completions per prompt (OpenAI bills every one it generates, returns `n`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from switchyard.wire.chat import ChatRequest, parse_chat_request
from switchyard.wire.errors import invalid_request

DEFAULT_MAX_TOKENS = 16  # OpenAI's default for completions
MAX_CHOICES = 128  # completions generated for one request (prompts x best_of)
_SAMPLING = ("temperature", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty", "logit_bias", "user",
             "stream_options")


@dataclass(slots=True)
class CompletionRequest:
    raw: dict[str, Any]  # the client's body, unknown fields included (passed through)
    model: str
    prompts: list[str | list[int]]
    max_tokens: int
    n: int
    best_of: int
    echo: bool
    suffix: str | None
    logprobs: int | None
    stream: bool
    chat: ChatRequest  # the chat view admission and routing work on

    @property
    def token_ids(self) -> int:
        return sum(len(p) for p in self.prompts if isinstance(p, list))


def parse_completion_request(raw: Any) -> CompletionRequest:
    if not isinstance(raw, dict):
        raise invalid_request("The request body must be a JSON object.")
    model = raw.get("model")
    if not isinstance(model, str) or not model:
        raise invalid_request("Missing required parameter: 'model'.", param="model", code="missing_required_parameter")
    prompts = _prompts(raw.get("prompt", "<|endoftext|>"))
    max_tokens = raw.get("max_tokens")
    max_tokens = DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens
    n, best_of = raw.get("n") or 1, raw.get("best_of")
    for name, value, top in (("max_tokens", max_tokens, None), ("n", n, 128), ("best_of", best_of or n, 20)):
        if type(value) is not int or value < (0 if name == "max_tokens" else 1) or (top is not None and value > top):
            raise invalid_request(f"Invalid '{name}': {value!r}.", param=name)
    best_of = best_of or n
    if best_of < n:
        raise invalid_request("'best_of' must be at least 'n'.", param="best_of")
    stream = bool(raw.get("stream"))
    if stream and best_of > 1 and best_of != n:
        raise invalid_request("'best_of' cannot be used with streaming.", param="best_of")
    logprobs = raw.get("logprobs")
    if logprobs is not None and (type(logprobs) is not int or not 0 <= logprobs <= 5):
        raise invalid_request("Invalid 'logprobs': an integer from 0 to 5.", param="logprobs")
    suffix = raw.get("suffix")
    if suffix is not None and not isinstance(suffix, str):
        raise invalid_request("Invalid 'suffix': expected a string.", param="suffix")
    choices = len(prompts) * best_of
    if choices > MAX_CHOICES:
        raise invalid_request(f"{len(prompts)} prompts x best_of {best_of} is {choices} completions; at most "
                              f"{MAX_CHOICES} in one request.", param="prompt")
    texts = [p if isinstance(p, str) else "." for p in prompts]
    chat: dict[str, Any] = {
        "model": model, "messages": [{"role": "user", "content": t or "."} for t in texts], "n": choices,
        "max_completion_tokens": max(max_tokens, 1), "stream": stream,
        **{k: raw[k] for k in _SAMPLING if raw.get(k) is not None},
    }
    if logprobs:
        chat["logprobs"], chat["top_logprobs"] = True, logprobs
    return CompletionRequest(raw=raw, model=model, prompts=prompts, max_tokens=max_tokens, n=n, best_of=best_of,
                             echo=bool(raw.get("echo")), suffix=suffix, logprobs=logprobs, stream=stream,
                             chat=parse_chat_request(chat))


def _prompts(value: Any) -> list[str | list[int]]:
    """A string, a list of strings, a token array, or a list of token arrays."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(type(t) is int and t >= 0 for t in value):
            return [value]
        if all(isinstance(p, str) for p in value):
            return list(value)
        if all(isinstance(p, list) and p and all(type(t) is int and t >= 0 for t in p) for p in value):
            return list(value)
    raise invalid_request("Invalid 'prompt': a string, a list of strings, a list of token ids, or a list of lists of "
                          "token ids.", param="prompt")
