"""`POST /v1/images/generations`, `/edits` and `/variations`: held at the worst case for the
size, quality and count asked for, billed as OpenAI bills them (GPT image models by token,
DALL·E per image); images asked for as `url` are kept in the organisation's files and linked."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from typing import Any

from switchyard.accounts.records import Principal
from switchyard.gateway import Gateway, Outcome, Trace, new_trace
from switchyard.metering.cost import TokenUsage
from switchyard.metering.tokens import count_text
from switchyard.metering.units import Metered
from switchyard.providers import MediaCall
from switchyard.routing.table import Deployment
from switchyard.wire.errors import upstream_error
from switchyard.wire.images import ImagePricing, ImageRequest, check_uploads

# Stores one image's bytes for the organisation; returns the URL the client fetches it from.
Deliver = Callable[[bytes, str], Awaitable[str]]
_FINAL = frozenset({"image_generation.completed", "image_edit.completed"})


async def serve(gw: Gateway, req: ImageRequest, principal: Principal, request_id: str, deliver: Deliver,
                max_image_bytes: int) -> Outcome:
    path = f"/v1/images/{req.kind}"
    trace = new_trace({"model": req.model, "stream": req.stream}, principal, request_id, path, False)
    return await gw.traced(trace, _images(gw, req, trace, path, deliver, max_image_bytes))


async def _images(gw: Gateway, req: ImageRequest, trace: Trace, path: str, deliver: Deliver,
                  max_image_bytes: int) -> Outcome:
    prompt_bytes = len(req.prompt.encode())

    def quote(dep: Deployment) -> int:
        check_uploads(req, dep.spec, max_image_bytes)
        return ImagePricing(req, dep.spec).worst_case(prompt_bytes)

    admitted = await gw.admit_inputs(trace, req.model, [req.prompt or "."], req.endpoint, path, worst=quote,
                                     stream=req.stream)
    ticket = admitted.ticket
    counted_prompt = count_text(req.prompt) if req.prompt else 0

    def call(dep: Deployment) -> MediaCall:
        fields = dict(req.fields)
        if not dep.spec.image_output_tokens:
            fields["response_format"] = "b64_json"  # DALL·E: the bytes, never OpenAI's short-lived link
        kinds = check_uploads(req, dep.spec, max_image_bytes)
        name = "image[]" if len(req.images) > 1 else "image"
        files = [(name, up.filename or f"image{i}", kind, up.data) for i, (up, (kind, _)) in enumerate(zip(req.images, kinds))]
        if req.mask is not None:
            files.append(("mask", req.mask.filename or "mask.png", "image/png", req.mask.data))
        return MediaCall(f"/images/{req.kind}", fields, files, dep.config.model, trace.request_id)

    if req.stream:
        return admitted.headed(await gw.media_stream(
            ticket, admitted.candidates, lambda dep: dep.provider.images_stream(call(dep)),
            lambda e: e.get("type") in _FINAL,
            lambda dep, finals: _sum_metered(ImagePricing(req, dep.spec), finals, counted_prompt)))

    async def images_at(dep: Deployment) -> dict[str, Any]:
        await gw.deployment_limits(dep, ticket.rate_tokens)
        return await dep.provider.images(call(dep))

    outcome = await gw.answered(ticket, admitted.candidates, images_at, None, None,
                                meter=lambda body, dep: ImagePricing(req, dep.spec).metered(body, counted_prompt))
    body = outcome.body
    assert body is not None
    if req.response_format == "url":
        await _as_links(body, deliver, outcome.deployment)
    return admitted.headed(outcome)


def _sum_metered(pricing: ImagePricing, finals: list[dict[str, Any]], counted_prompt: int) -> Metered:
    """A stream's bill: each completed image's output (OpenAI reports usage per image); the
    prompt, read once, at the largest input any of them reports."""
    if not finals:
        return Metered(TokenUsage(0))
    each = [pricing.metered({"data": [e], "usage": e.get("usage"), "quality": e.get("quality"), "size": e.get("size")},
                            counted_prompt) for e in finals]
    widest = max(each, key=lambda m: m.usage.input_tokens)
    usage = TokenUsage(input_tokens=widest.usage.input_tokens, output_tokens=sum(m.usage.output_tokens for m in each))
    return Metered(usage, widest.units)


async def _as_links(body: dict[str, Any], deliver: Deliver, dep: Deployment) -> None:
    """Each b64_json image replaced by a link to its copy in the organisation's files."""
    fmt = str(body.get("output_format") or "png")
    for item in body.get("data") or ():
        if not isinstance(item, dict) or not isinstance(item.get("b64_json"), str):
            continue
        try:
            data = base64.b64decode(item.pop("b64_json"), validate=True)
        except binascii.Error:
            raise upstream_error(502, f"Deployment {dep.id} returned an unreadable image.",
                                 code="upstream_invalid_response") from None
        item["url"] = await deliver(data, fmt)
