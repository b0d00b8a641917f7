"""Every upstream's own words for "the prompt does not fit" are recognised; look-alikes are not."""

from __future__ import annotations

import pytest

from switchyard.providers.overflow import is_overflow

# (status, message, error type, code) as each server sends them.
OVERFLOWS = [
    (400, "This model's maximum context length is 128000 tokens. However, your messages resulted in 130412 tokens. "
          "Please reduce the length of the messages.", "invalid_request_error", "context_length_exceeded"),  # OpenAI
    (400, "Your input exceeds the context window of this model. Please adjust your input and try again.",
     "invalid_request_error", "context_length_exceeded"),  # OpenAI, Responses API
    (400, "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens "
          "(4000 in the messages, 1000 in the completion).", "BadRequestError", None),  # vLLM
    (400, "Requested tokens (2100) exceed context window of 2048", "invalid_request_error", None),  # llama-cpp-python
    (400, "the request exceeds the available context size, try increasing it", "exceed_context_size_error", None),  # llama-server
    (400, "prompt is too long: 215134 tokens > 200000 maximum", "invalid_request_error", None),  # Anthropic
    (400, "input length and `max_tokens` exceed context limit: 198000 + 8192 > 200000, decrease input length or "
          "`max_tokens` and try again", "invalid_request_error", None),  # Anthropic, with max_tokens
    (413, "Prompt is too long", "request_too_large", None),  # Anthropic's 413 for a request over its size
    (400, "The input token count (1048577) exceeds the maximum number of tokens allowed (1048576).",
     "INVALID_ARGUMENT", None),  # Gemini
    (400, "litellm.ContextWindowExceededError: litellm.BadRequestError: ContextWindowExceededError: "
          "OpenAIException - This model's maximum context length is 2048 tokens", None, None),  # LiteLLM's proxy
    (422, "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. Given: 4000 `inputs` tokens "
          "and 500 `max_new_tokens`; input is too long", None, None),  # TGI
]

NOT_OVERFLOWS = [
    (400, "Invalid value for 'temperature': must be between 0 and 2.", "invalid_request_error", None),
    (413, "Request exceeds the maximum allowed number of bytes.", "request_too_large", None),  # size, not context
    (429, "Rate limit reached: too many tokens per minute", "tokens", "rate_limit_exceeded"),  # a rate limit
    (500, "maximum context length", "server_error", None),  # a server's own failure is not the caller's prompt
    (400, "'max_tokens' is too large: 999999.", "invalid_request_error", None),
]


@pytest.mark.parametrize(("status", "message", "kind", "code"), OVERFLOWS)
def test_overflow_wordings_are_recognised(status: int, message: str, kind: str | None, code: str | None) -> None:
    assert is_overflow(status, message, kind, code)


@pytest.mark.parametrize(("status", "message", "kind", "code"), NOT_OVERFLOWS)
def test_other_errors_are_not_overflows(status: int, message: str, kind: str | None, code: str | None) -> None:
    assert not is_overflow(status, message, kind, code)
