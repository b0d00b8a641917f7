"""`POST /v1/embeddings`: billed per input token, held at the inputs' byte bound."""

from __future__ import annotations

from typing import Any

from switchyard.accounts.records import Principal
from switchyard.gateway import Gateway, Outcome, Trace, new_trace, route_headers
from switchyard.metering.estimate import Quote
from switchyard.providers import EmbedCall
from switchyard.routing.table import Deployment
from switchyard.wire.chat import parse_chat_request
from switchyard.wire.embeddings import embeddings_object, parse_embeddings_request
from switchyard.wire.errors import invalid_request, permission_denied

ENDPOINT = "/v1/embeddings"


async def serve(gw: Gateway, raw: Any, principal: Principal, request_id: str) -> Outcome:
    trace = new_trace(raw, principal, request_id, ENDPOINT, False)
    return await gw.traced(trace, _embed(gw, raw, trace))


async def _embed(gw: Gateway, raw: Any, trace: Trace) -> Outcome:
    principal, request_id = trace.principal, trace.request_id
    req = parse_embeddings_request(raw)
    # Admission, limits and settlement see the inputs as one prompt of that many messages.
    if req.texts is not None:
        chat, extra = [{"role": "user", "content": t} for t in req.texts], 0
    else:  # a token is at least one byte of bound: the count itself bounds the bill
        chat, extra = [{"role": "user", "content": "."}] * req.count, sum(len(t) for t in req.token_ids or ())
    request = parse_chat_request({"model": req.model, "messages": chat, "max_completion_tokens": 1})
    public, group, decision = gw.resolve(request, request_id)
    if not principal.may_use(public):
        raise permission_denied(f"This API key is not allowed to use model `{req.model}`.")
    group = [dep for dep in group if "embeddings" in dep.spec.endpoints]
    if not group:
        raise invalid_request(f"Model `{req.model}` does not serve embeddings.", param="model",
                              code="unsupported_endpoint")
    quote = Quote(request, gw.billing.reserve_cap(principal), extra_bytes=extra)
    # Each input is sized by its deployment (a window per input, not per request).
    candidates = gw.router.candidates(request, group, gw.table.strategy(public), lambda dep: 1, 0)
    ticket, limit_headers = await gw.billing.admit(request_id, principal, public, quote, candidates, endpoint=ENDPOINT)
    trace.ticket, trace.limit_headers = ticket, limit_headers

    async def embed_at(dep: Deployment) -> dict[str, Any]:
        await gw.deployment_limits(dep, ticket.rate_tokens)
        embedded = await dep.provider.embed(EmbedCall(req, dep.config.model, request_id))
        body = embeddings_object(embedded.vectors, public, embedded.prompt_tokens or 0, req.encoding_format)
        if embedded.prompt_tokens is None:
            del body["usage"]  # counted at settlement, as the deployment counts
        return body

    outcome = await gw.answered(ticket, candidates, embed_at, None, None)
    outcome.headers.update(route_headers(outcome.deployment, outcome.attempts, decision))
    outcome.headers.update(limit_headers)
    return outcome
