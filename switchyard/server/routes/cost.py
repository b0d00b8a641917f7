"""POST /v1/cost/estimate: what a Chat Completions request would cost, without sending it.

The prompt and every image are counted exactly (remote images by their header only); the
least the request can cost is its input alone, the most is input plus the most output the
model may write for it, for every one of its `n` choices. Nothing is billed and no request
rate limit is used; fetching remote images has its own small per-key allowance.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from switchyard.accounts.billing import billed_tier
from switchyard.config import FetchPolicy
from switchyard.fetch import GuardedSession
from switchyard.limits import Limits, Scope
from switchyard.metering.cost import TokenUsage, cost_nanos, usd
from switchyard.metering.estimate import Quote, output_limit
from switchyard.metering.remote_image import measure_images, remote_image_count
from switchyard.metering.tokens import acount_prompt_tokens
from switchyard.routing.fit import check_capabilities, check_size
from switchyard.routing.table import Deployment
from switchyard.server.auth import caller
from switchyard.server.body import read_json
from switchyard.server.responses import JSONResponse
from switchyard.server.state import AppState
from switchyard.wire.chat import ChatRequest, parse_chat_request
from switchyard.wire.errors import GatewayError, permission_denied


async def estimate_cost(request: Request) -> Response:
    state: AppState = request.app.state.sy
    principal = caller(request)
    raw = await read_json(request, state.settings.max_body_bytes, state.settings.limits)
    chat = parse_chat_request(raw)
    public, group = state.table.resolve(chat.model)
    if not principal.may_use(public):
        raise permission_denied(f"This API key is not allowed to use model `{chat.model}`.")
    policy = state.settings.fetch
    remote = remote_image_count(chat)
    if remote:
        # Fetches are work done for the caller at someone else's host: a key gets a few a minute.
        scope = Scope(f"fetch:key:{principal.key_id}", Limits(None, policy.per_key_per_minute))
        admission = await state.gateway.billing.limiter.admit([scope], min(remote, policy.per_key_per_minute))
        if not admission.allowed:
            headers = {"retry-after": str(max(1, math.ceil(admission.retry_after or 1)))}
            raise GatewayError(429, f"This key may have at most {policy.per_key_per_minute} remote images fetched "
                               "per minute for estimates; retry shortly.", type="requests",
                               code="rate_limit_exceeded", headers=headers)
    return JSONResponse(await quote(chat, public, group[0], state.gateway.billing.multiplier(principal, public), policy=policy,
                                    reserve_cap=state.gateway.billing.reserve_cap(principal)))


async def quote(
    chat: ChatRequest,
    public_name: str,
    dep: Deployment,
    price_multiplier: Decimal = Decimal(1),
    session: GuardedSession | None = None,
    policy: FetchPolicy = FetchPolicy(),
    reserve_cap: int | None = None,
) -> dict[str, Any]:
    """The `cost.estimate` object; shared by the endpoint and `switchyard cost`.

    `input_tokens` is the whole prompt, images included (as in OpenAI's `prompt_tokens`);
    `image_tokens` is the part of it that images take.
    """
    check_capabilities(chat, dep)  # refuse here exactly what the gateway would refuse
    images = await measure_images(chat, dep.spec.image_tokens, policy, session)
    image_total = sum(i.tokens for i in images)
    # Exact when the deployment counts as it bills (the local model, llama.cpp servers, Gemini's
    # countTokens). Otherwise the count (Anthropic's own estimate, else an OpenAI encoding's) is
    # the point estimate, and the range runs from what any tokenizer must count at least (o200k's
    # own count where o200k is the upstream's tokenizer) to the byte bound admission holds for.
    provider = dep.provider
    counted = await provider.count_prompt_tokens(chat)
    exact = counted is not None and provider.prompt_count_is_billed
    text = counted if counted is not None else await acount_prompt_tokens(chat)
    input_tokens = text + image_total
    bounds = Quote(chat).at(dep)
    least_input = most_input = input_tokens
    if not exact:
        most_input = max(input_tokens, bounds.input_bound)
        least_input = input_tokens if counted is None and provider.tokenizer_is_openai else bounds.input_floor
    check_size(chat, dep, input_tokens)
    # Each choice stops at the caller's cap (or the reservation cap or deployment default that
    # stands in for a missing one), the model's own cap, or the end of the context window.
    max_output = min(output_limit(chat, dep, reserve_cap), dep.context_window - input_tokens)
    choices = chat.n or 1
    tier = billed_tier(chat.service_tier, dep.spec)

    prices = dep.spec.prices
    writes_dearer = prices.cache_write is not None and prices.cache_write > prices.input

    def price(input_: int, output_tokens: int, dearest: bool = False) -> int:
        # The most prices input at its dearest rate: a provider may bill all of it as cache writes.
        usage = TokenUsage(input_tokens=input_, cache_write_tokens=input_ if dearest and writes_dearer else 0,
                           output_tokens=output_tokens)
        return cost_nanos(prices, usage, service_tier=tier, tier_multipliers=dep.spec.multipliers,
                          price_multiplier=price_multiplier)

    low, high = price(least_input, 0), price(most_input, max_output * choices, dearest=True)
    return {
        "object": "cost.estimate",
        "model": public_name,
        "input_tokens": input_tokens,
        "input_tokens_min": least_input,
        "input_tokens_max": most_input,
        "exact": exact,
        "text_tokens": text,
        "image_tokens": image_total,
        "images": [i.as_dict() for i in images],
        "max_output_tokens": max_output,
        "choices": choices,
        "service_tier": tier or "default",
        "price_multiplier": str(price_multiplier),
        "cost": {"min_usd": usd(low), "max_usd": usd(high), "min_nanos": low, "max_nanos": high},
    }
