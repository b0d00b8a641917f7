"""`POST /v1/chat/completions`: the pipeline's own shape, every step shared with the endpoints
built on chat (Messages, Responses, legacy completions): plan (resolve, authorise, size and
route), admit, the answer (cached, or the first candidate's) or the stream, relayed and billed."""

from __future__ import annotations

from typing import Any

from switchyard.accounts.records import Principal
from switchyard.gateway import Gateway, Outcome, Record, Trace, new_trace
from switchyard.providers import ChatCall
from switchyard.routing.cache import cache_key, cache_ttl, strip_cache_fields
from switchyard.routing.table import Deployment
from switchyard.wire.answers import public_model_name
from switchyard.wire.chat import parse_chat_request

ENDPOINT = "/v1/chat/completions"


async def serve(gw: Gateway, raw: Any, principal: Principal, request_id: str, *, batch: bool = False,
                record: Record | None = None) -> Outcome:
    """One chat completion. `batch`: a Batch API line (own rate-limit pool, batch prices, never
    streamed). `record`: rows committed with the bill (non-streaming answers only)."""
    trace = new_trace(raw, principal, request_id, ENDPOINT, batch)
    return await gw.traced(trace, turn(gw, raw, trace, record))


async def turn(gw: Gateway, raw: Any, trace: Trace, record: Record | None) -> Outcome:
    """A chat completion in `trace`'s name: the endpoints that speak another API but are served
    as chat (Anthropic's Messages) call this with the chat body they translate to."""
    request = parse_chat_request(raw)
    gw.check_size(request)
    admitted = await gw.admit(trace, await gw.plan(request, trace, "chat.completions"))
    ticket, public, quote = admitted.ticket, admitted.public, admitted.ticket.quote
    ttl = cache_ttl(raw, trace.principal.key.cache_ttl)
    upstream_body = strip_cache_fields(raw) if "cache" in raw or "switchyard_cache" in raw else raw

    def call(dep: Deployment) -> ChatCall:
        return ChatCall(request=request, body=upstream_body, upstream_model=dep.config.model,
                        request_id=trace.request_id, output_limit=quote.limit_to_send(dep))

    if request.stream:
        outcome = await gw.streamed(ticket, admitted.candidates, lambda dep: dep.provider.chat_stream(call(dep)), public)
    else:
        key = cache_key(public, raw, trace.principal.org.id) if ttl else None

        async def chat_at(dep: Deployment) -> dict[str, Any]:
            await gw.deployment_limits(dep, ticket.rate_tokens)
            return await dep.provider.chat(call(dep))

        outcome = await gw.answered(ticket, admitted.candidates, chat_at, key, ttl, record)
        body = outcome.body
        assert body is not None
        # The tier the smart router chose, or the public name in place of an upstream's own id.
        body["model"] = (public if admitted.decision is not None
                         else public_model_name(body.get("model"), public, outcome.deployment.spec))
    return admitted.headed(outcome)
