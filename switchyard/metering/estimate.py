"""What a request can use at most, known before any upstream is called.

Admission needs two numbers: an upper bound (budgets reserve the worst case, so no burst of
concurrent requests can spend past a limit) and an estimate (rate limits count tokens the way
OpenAI does: prompt estimate plus max output, corrected when the real usage is known).
"""

from __future__ import annotations

from dataclasses import dataclass

from switchyard.catalog import ModelSpec
from switchyard.metering.image_size import data_url_image_size
from switchyard.metering.images import image_tokens, worst_case_image_tokens
from switchyard.metering.tokens import prompt_bytes_bound
from switchyard.wire.chat import ChatRequest, ImagePart
from switchyard.wire.errors import invalid_request

# A BPE token averages about four bytes of English: OpenAI's own rule of thumb for estimates.
BYTES_PER_TOKEN_ESTIMATE = 4


@dataclass(frozen=True, slots=True)
class Estimate:
    input_bound: int  # no prompt can tokenize to more (text tokens <= bytes; images at their count)
    input_estimate: int  # a typical count, for rate limits
    image_tokens: int  # exact for inline images, worst case for remote URLs
    output_bound: int  # the most the model may generate for this request


def image_token_count(request: ChatRequest, spec: ModelSpec) -> int:
    if spec.image_tokens is None:
        return 0
    total = 0
    for i, msg in enumerate(request.messages):
        if not isinstance(msg.content, list):
            continue
        for j, part in enumerate(msg.content):
            if not isinstance(part, ImagePart):
                continue
            detail, url = part.image_url.detail, part.image_url.url
            try:
                if url.startswith("data:"):
                    width, height = data_url_image_size(url)
                    total += image_tokens(spec.image_tokens, width, height, detail)
                else:
                    total += worst_case_image_tokens(spec.image_tokens, detail)
            except ValueError as exc:
                raise invalid_request(f"Invalid image: {exc}", param=f"messages[{i}].content[{j}].image_url") from None
    return total


def estimate(request: ChatRequest, max_output_tokens: int, context_window: int, images: int) -> Estimate:
    """`images`: the request's image tokens (`image_token_count`), counted once by the caller."""
    text_bound = prompt_bytes_bound(request)
    output = request.output_limit or max_output_tokens
    return Estimate(
        input_bound=text_bound + images,
        input_estimate=-(-text_bound // BYTES_PER_TOKEN_ESTIMATE) + images,
        image_tokens=images,
        output_bound=min(output, max_output_tokens, max(context_window - 1, 1)),
    )
