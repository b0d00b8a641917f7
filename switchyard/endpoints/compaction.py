"""`POST /v1/responses/compact`: a long conversation as a short one to continue from.
Deployments that speak Responses compact it themselves; for the others the model summarises it
through chat, and the summary becomes a compaction item of ours."""

from __future__ import annotations

import time
from typing import Any

from switchyard.accounts.records import Principal
from switchyard.endpoints.responses import conversation, unviewed_bytes
from switchyard.gateway import Gateway, Outcome, Trace, new_trace
from switchyard.providers import ChatCall, ResponsesCall, ResponsesUnsupported
from switchyard.responses.compaction import (
    MAX_SUMMARY_TOKENS, compaction_fields, compaction_from_chat, native_compaction_body, summary_chat,
)
from switchyard.routing.fit import check_endpoint
from switchyard.routing.table import Deployment
from switchyard.wire.chat import parse_chat_request
from switchyard.wire.errors import invalid_request
from switchyard.wire.responses import new_id, parse_responses_request

ENDPOINT = "/v1/responses/compact"


async def serve(gw: Gateway, raw: Any, principal: Principal, request_id: str) -> Outcome:
    trace = new_trace(raw, principal, request_id, ENDPOINT, False)
    return await gw.traced(trace, _compact(gw, raw, trace))


async def _compact(gw: Gateway, raw: Any, trace: Trace) -> Outcome:
    request_id = trace.request_id
    if not isinstance(raw, dict):
        raise invalid_request("The request body must be a JSON object.")
    fields = compaction_fields(raw)
    req = parse_responses_request({**fields, "store": False})
    _, history, current = await conversation(gw, req, trace.principal.org.id)
    turns = history + current
    chat = summary_chat(req, fields, turns, MAX_SUMMARY_TOKENS)
    _, group, _ = gw.resolve(parse_chat_request(chat), request_id)
    check_endpoint(req.model, group, "responses", "chat.completions")
    # Within every candidate model's own max output: a summary's limit is ours, not the caller's.
    chat = summary_chat(req, fields, turns, min(dep.spec.max_output_tokens for dep in group))
    request = parse_chat_request(chat)
    plan = await gw.plan(request, trace, "responses", "chat.completions", extra_bytes=unviewed_bytes(turns))
    admitted = await gw.admit(trace, plan)
    ticket, quote = admitted.ticket, plan.quote
    compaction_id, created_at = new_id("resp"), int(time.time())

    async def compact_at(dep: Deployment) -> dict[str, Any]:
        await gw.deployment_limits(dep, ticket.rate_tokens)
        if dep.provider.native_responses:
            try:
                answer = await dep.provider.compact(ResponsesCall(
                    body=native_compaction_body(fields, turns), upstream_model=dep.config.model, request_id=request_id))
                answer["id"] = compaction_id
                return answer
            except ResponsesUnsupported:
                pass  # a server without /responses/compact: summarised through chat below
        completion = await dep.provider.chat(ChatCall(request=request, body=chat, upstream_model=dep.config.model,
                                                      request_id=request_id, output_limit=quote.limit_to_send(dep)))
        return compaction_from_chat(completion, turns, compaction_id=compaction_id, created_at=created_at)

    return admitted.headed(await gw.answered(ticket, admitted.candidates, compact_at, None, None))
