"""What a request can use at most, known before any upstream is called.

Admission needs two numbers per deployment that may serve a request: an upper bound (budgets
reserve the worst case, so no burst of concurrent requests can spend past a limit, and no
bill may count more than it) and an estimate (rate limits count tokens the way OpenAI does:
prompt estimate plus max output, corrected when the real usage is known).

The bound on input is the prompt's UTF-8 bytes (no BPE token is shorter than a byte) plus
OpenAI's framing plus the catalog's `prompt_overhead` for the model; on output it is the
per-choice limit times `n`, as OpenAI bills every choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from switchyard.catalog import ModelSpec
from switchyard.metering.image_size import data_url_image_size
from switchyard.metering.images import image_tokens, worst_case_image_tokens
from switchyard.metering.tokens import prompt_bytes_bound
from switchyard.wire.chat import ChatRequest, ImagePart
from switchyard.wire.errors import invalid_request

# A BPE token averages about four bytes of English: OpenAI's own rule of thumb for estimates.
BYTES_PER_TOKEN_ESTIMATE = 4
# No o200k token (nor any common BPE vocabulary's) spans more bytes: a floor on any tokenizer's count.
MAX_TOKEN_BYTES = 256


class Serving(Protocol):
    """What admission needs to know of a deployment (routing's `Deployment` is one)."""

    @property
    def id(self) -> str: ...
    @property
    def spec(self) -> ModelSpec: ...
    @property
    def context_window(self) -> int: ...
    @property
    def max_output_tokens(self) -> int: ...
    @property
    def default_output_limit(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class Estimate:
    input_bound: int  # no prompt can bill more (text bytes + framing + overhead + images)
    input_floor: int  # nor less, whatever the upstream's tokenizer (bytes / MAX_TOKEN_BYTES + images)
    input_estimate: int  # a typical count, for rate limits
    image_tokens: int  # exact for inline images, worst case for remote URLs
    output_limit: int  # the most one choice may generate at this deployment
    choices: int  # `n`

    @property
    def output_bound(self) -> int:
        """The most output this request may bill: every choice at its limit."""
        return self.output_limit * self.choices


def image_token_count(request: ChatRequest, spec: ModelSpec) -> int:
    """Image input tokens of a request at one model: its catalog rule, else the per-image worst case."""
    total = 0
    for i, msg in enumerate(request.messages):
        if not isinstance(msg.content, list):
            continue
        for j, part in enumerate(msg.content):
            if not isinstance(part, ImagePart):
                continue
            if spec.image_tokens is None:
                total += spec.prompt_overhead.image
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


def output_limit(request: ChatRequest, dep: Serving, reserve_cap: int | None) -> int:
    """What one choice may generate here: the caller's limit; else the reservation cap of its org
    or key, or the deployment's own default; else the model's max. Never past the window."""
    limit = request.output_limit
    if limit is None:
        limit = reserve_cap if reserve_cap is not None else dep.default_output_limit
    cap = min(dep.max_output_tokens, max(dep.context_window - 1, 1))
    return min(limit, cap) if limit is not None else cap


class Quote:
    """One request's bounds at each deployment that may serve it, each computed once.

    Built before routing (the router checks sizes with it) and kept on the ticket, so
    settlement caps the bill at exactly what admission reserved for the deployment that
    answered."""

    __slots__ = ("request", "reserve_cap", "text_bound", "_images", "_estimates")

    def __init__(self, request: ChatRequest, reserve_cap: int | None = None, extra_bytes: int = 0) -> None:
        """`reserve_cap`: the output reserved for a request without its own limit (None: the
        model's max). `extra_bytes`: input the upstream reads beyond the chat view's texts."""
        self.request = request
        self.reserve_cap = reserve_cap
        self.text_bound = prompt_bytes_bound(request) + extra_bytes
        self._images: dict[str, int] = {}
        self._estimates: dict[str, Estimate] = {}

    @property
    def choices(self) -> int:
        return self.request.n or 1

    def image_tokens(self, spec: ModelSpec) -> int:
        if not self.request.has_images:
            return 0
        found = self._images.get(spec.id)
        if found is None:
            found = self._images[spec.id] = image_token_count(self.request, spec)
        return found

    def limit_to_send(self, dep: Serving) -> int | None:
        """The output limit the upstream must be told: the caller's own, or the reservation cap
        or deployment default that replaces a missing one (so the answer stays within its hold).
        None: the request has none and none applies (the model's max is the bound)."""
        if self.request.output_limit is not None:
            return self.request.output_limit
        if self.reserve_cap is None and dep.default_output_limit is None:
            return None
        return self.at(dep).output_limit

    def at(self, dep: Serving) -> Estimate:
        found = self._estimates.get(dep.id)
        if found is None:
            found = self._estimates[dep.id] = self._estimate(dep)
        return found

    def _estimate(self, dep: Serving) -> Estimate:
        spec = dep.spec
        images = self.image_tokens(spec)
        overhead = spec.prompt_overhead
        request = self.request
        extra = overhead.per_request + overhead.per_message * len(request.messages)
        if request.tools:
            extra += overhead.tools
        return Estimate(
            input_bound=self.text_bound + extra + images,
            input_floor=self.text_bound // MAX_TOKEN_BYTES + images,
            input_estimate=-(-self.text_bound // BYTES_PER_TOKEN_ESTIMATE) + images,
            image_tokens=images,
            output_limit=output_limit(request, dep, self.reserve_cap),
            choices=self.choices,
        )
