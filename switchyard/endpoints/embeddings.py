"""`POST /v1/embeddings`: billed per input token, held at the inputs' byte bound."""

from __future__ import annotations

from typing import Any

from switchyard.accounts.records import Principal
from switchyard.gateway import Gateway, Outcome, Record, Trace, new_trace
from switchyard.providers import EmbedCall
from switchyard.routing.table import Deployment
from switchyard.wire.embeddings import embeddings_object, parse_embeddings_request

ENDPOINT = "/v1/embeddings"


async def serve(gw: Gateway, raw: Any, principal: Principal, request_id: str, *, batch: bool = False,
                record: Record | None = None) -> Outcome:
    """`batch`: a Batch API line (its own rate-limit pool, batch prices); `record`: rows committed with the bill."""
    trace = new_trace(raw, principal, request_id, ENDPOINT, batch)
    return await gw.traced(trace, _embed(gw, raw, trace, record))


async def _embed(gw: Gateway, raw: Any, trace: Trace, record: Record | None) -> Outcome:
    req = parse_embeddings_request(raw)
    if req.texts is not None:
        admitted = await gw.admit_inputs(trace, req.model, list(req.texts), "embeddings", ENDPOINT)
    else:  # token arrays: a token is at least one byte of bound, so the count bounds the bill
        admitted = await gw.admit_inputs(trace, req.model, ["."] * req.count, "embeddings", ENDPOINT,
                                         extra_bytes=sum(len(t) for t in req.token_ids or ()))
    ticket = admitted.ticket

    async def embed_at(dep: Deployment) -> dict[str, Any]:
        await gw.deployment_limits(dep, ticket.rate_tokens)
        embedded = await dep.provider.embed(EmbedCall(req, dep.config.model, trace.request_id))
        body = embeddings_object(embedded.vectors, admitted.public, embedded.prompt_tokens or 0, req.encoding_format)
        if embedded.prompt_tokens is None:
            del body["usage"]  # counted at settlement, as the deployment counts
        return body

    return admitted.headed(await gw.answered(ticket, admitted.candidates, embed_at, None, None, record))
