"""Legacy `POST /v1/completions`: routed, held and billed through its chat view (prompts as
messages, every generated completion counted), answered by deployments whose model does text
completion: OpenAI-compatible servers pass it through, the local model continues the prompt."""

from __future__ import annotations

from typing import Any

from switchyard.accounts.records import Principal
from switchyard.gateway import Gateway, Outcome, Record, Trace, new_trace
from switchyard.providers import CompletionCall
from switchyard.routing.table import Deployment
from switchyard.wire.answers import public_model_name
from switchyard.wire.completions import parse_completion_request

ENDPOINT = "/v1/completions"


async def serve(gw: Gateway, raw: Any, principal: Principal, request_id: str, *, batch: bool = False,
                record: Record | None = None) -> Outcome:
    """`batch`: a Batch API line (its own rate-limit pool, batch prices); `record`: rows committed with the bill."""
    trace = new_trace(raw, principal, request_id, ENDPOINT, batch)
    return await gw.traced(trace, _complete(gw, raw, trace, record))


async def _complete(gw: Gateway, raw: Any, trace: Trace, record: Record | None) -> Outcome:
    req = parse_completion_request(raw)
    plan = await gw.plan(req.chat, trace, "completions", extra_bytes=req.token_ids, serving_only=True)
    admitted = await gw.admit(trace, plan)
    ticket, public = admitted.ticket, admitted.public

    def call(dep: Deployment) -> CompletionCall:
        return CompletionCall(req, dep.config.model, trace.request_id, req.max_tokens or 1)

    if req.stream:
        outcome = await gw.streamed(ticket, admitted.candidates, lambda dep: dep.provider.complete_stream(call(dep)),
                                    public)
    else:
        async def complete_at(dep: Deployment) -> dict[str, Any]:
            await gw.deployment_limits(dep, ticket.rate_tokens)
            return await dep.provider.complete(call(dep))

        outcome = await gw.answered(ticket, admitted.candidates, complete_at, None, None, record)
        assert outcome.body is not None
        outcome.body["model"] = public_model_name(outcome.body.get("model"), public, outcome.deployment.spec)
    return admitted.headed(outcome)
