"""POST /v1/cost/estimate: what a Chat Completions request would cost, without sending it.

The prompt and every image are counted exactly (remote images by their header only); the
least the request can cost is its input alone, the most is input plus the most output the
model may write for it. Nothing is billed and no rate limit is used.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import aiohttp
from starlette.requests import Request
from starlette.responses import Response

from switchyard.accounts.billing import billed_tier
from switchyard.metering.cost import TokenUsage, cost_nanos, usd
from switchyard.metering.remote_image import measure_images
from switchyard.metering.tokens import count_prompt_tokens
from switchyard.routing.fit import check_capabilities, check_size
from switchyard.routing.table import Deployment
from switchyard.server.body import read_json
from switchyard.server.responses import JSONResponse
from switchyard.server.state import AppState
from switchyard.wire.chat import ChatRequest, parse_chat_request
from switchyard.wire.errors import permission_denied


async def estimate_cost(request: Request) -> Response:
    state: AppState = request.app.state.sy
    principal = state.directory.authenticate(request.headers.get("authorization"))
    raw = await read_json(request, state.settings.max_body_bytes)
    chat = parse_chat_request(raw)
    public, group = state.table.resolve(chat.model)
    if not principal.may_use(public):
        raise permission_denied(f"This API key is not allowed to use model `{chat.model}`.")
    return JSONResponse(await quote(chat, public, group[0], principal.org.price_multiplier))


async def quote(
    chat: ChatRequest,
    public_name: str,
    dep: Deployment,
    price_multiplier: Decimal = Decimal(1),
    session: aiohttp.ClientSession | None = None,
) -> dict[str, Any]:
    """The `cost.estimate` object; shared by the endpoint and `switchyard cost`.

    `input_tokens` is the whole prompt, images included (as in OpenAI's `prompt_tokens`);
    `image_tokens` is the part of it that images take.
    """
    check_capabilities(chat, dep)  # refuse here exactly what the gateway would refuse
    images = await measure_images(chat, dep.spec.image_tokens, session)
    text = dep.provider.count_prompt_tokens(chat)
    if text is None:
        text = count_prompt_tokens(chat)
    image_total = sum(i.tokens for i in images)
    input_tokens = text + image_total
    check_size(chat, dep, input_tokens)
    # The model stops at the caller's cap, its own cap, or the end of the context window.
    max_output = min(chat.output_limit or dep.max_output_tokens, dep.max_output_tokens,
                     dep.context_window - input_tokens)
    tier = billed_tier(chat.service_tier, dep.spec)

    def price(output_tokens: int) -> int:
        return cost_nanos(
            dep.spec.prices, TokenUsage(input_tokens=input_tokens, output_tokens=output_tokens),
            service_tier=tier, tier_multipliers=dep.spec.multipliers, price_multiplier=price_multiplier,
        )

    low, high = price(0), price(max_output)
    return {
        "object": "cost.estimate",
        "model": public_name,
        "input_tokens": input_tokens,
        "text_tokens": text,
        "image_tokens": image_total,
        "images": [i.as_dict() for i in images],
        "max_output_tokens": max_output,
        "service_tier": tier or "default",
        "price_multiplier": str(price_multiplier),
        "cost": {"min_usd": usd(low), "max_usd": usd(high), "min_nanos": low, "max_nanos": high},
    }
