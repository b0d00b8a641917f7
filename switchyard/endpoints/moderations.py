"""`POST /v1/moderations`: passed to a configured upstream that classifies; billed at the
catalog's price (OpenAI's moderation models are free, so usually nothing), limited like any
request."""

from __future__ import annotations

from typing import Any

from switchyard.accounts.records import Principal
from switchyard.gateway import Gateway, Outcome, Trace, new_trace
from switchyard.providers import ModerateCall
from switchyard.routing.table import Deployment
from switchyard.wire.moderations import parse_moderation_request

ENDPOINT = "/v1/moderations"


async def serve(gw: Gateway, raw: Any, principal: Principal, request_id: str) -> Outcome:
    trace = new_trace(raw, principal, request_id, ENDPOINT, False)
    return await gw.traced(trace, _moderate(gw, raw, trace))


async def _moderate(gw: Gateway, raw: Any, trace: Trace) -> Outcome:
    req = parse_moderation_request(raw)
    # The texts are metered; images are classified but not billed.
    admitted = await gw.admit_inputs(trace, req.model, list(req.texts), "moderations", ENDPOINT)
    ticket = admitted.ticket

    async def moderate_at(dep: Deployment) -> dict[str, Any]:
        await gw.deployment_limits(dep, ticket.rate_tokens)
        return await dep.provider.moderate(ModerateCall(req, dep.config.model, trace.request_id))

    outcome = await gw.answered(ticket, admitted.candidates, moderate_at, None, None)
    assert outcome.body is not None
    outcome.body.pop("usage", None)  # a moderation object has none: the count is on the record
    return admitted.headed(outcome)
