"""`POST /v1/responses`: one turn of the Responses API. The conversation is rebuilt from stored
responses, planned and billed through its chat view, and answered natively by upstreams that
speak Responses or translated from chat for the others; the stored response commits with its bill."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any

import orjson
from sqlalchemy import Table

from switchyard.accounts.billing import Ticket
from switchyard.accounts.records import Principal
from switchyard.gateway import Gateway, Outcome, Plan, Record, Trace, at_most, first_batch, new_trace, set_cost
from switchyard.metering.cost import TokenUsage
from switchyard.providers import ChatCall, ResponsesCall, ResponsesUnsupported
from switchyard.responses.streams import TERMINAL, EventSource, NativeEvents, TranslatedEvents
from switchyard.responses.turns import adopt, as_responses_error, inline_files, native_body
from switchyard.routing.table import Deployment
from switchyard.wire.chat import parse_chat_request
from switchyard.wire.errors import GatewayError, not_found
from switchyard.wire.responses import ResponsesRequest, input_items, new_id, parse_responses_request
from switchyard.wire.responses_chat import ResponseEvents, chat_body, dropped_tools, response_from_chat
from switchyard.wire.sse import LastFrame, event_frame

log = logging.getLogger("switchyard.requests")
ENDPOINT = "/v1/responses"
Keep = Callable[[dict[str, Any], int], Sequence[tuple[Table, dict[str, Any]]]]


async def serve(gw: Gateway, raw: Any, principal: Principal, request_id: str, *, batch: bool = False,
                record: Record | None = None) -> Outcome:
    trace = new_trace(raw, principal, request_id, ENDPOINT, batch)
    return await gw.traced(trace, _respond(gw, raw, trace, record))


async def conversation(
    gw: Gateway, req: ResponsesRequest, org_id: str,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """This turn's items as stored, and the conversation to send: the earlier turns (from
    `previous_response_id`) and this turn's, uploaded images inlined as data URLs."""
    history: list[dict[str, Any]] = []
    if req.previous_response_id:
        found = await gw.responses.conversation(org_id, req.previous_response_id) if gw.responses else None
        if found is None:
            raise not_found(f"Previous response with id '{req.previous_response_id}' not found.",
                            param="previous_response_id")
        history = found
    items = input_items(req)
    at_most(len(items), gw.limits.max_input_items, "input")
    return items, await inline_files(history, org_id, gw.files), await inline_files(items, org_id, gw.files)


def unviewed_bytes(items: list[dict[str, Any]]) -> int:
    """Bytes of Responses items with no place in the chat view (reasoning, hosted tool calls):
    they still reach a native upstream and count as input there, so they widen the bound."""
    shown = ("message", "function_call", "function_call_output", None)
    return sum(len(orjson.dumps(item)) for item in items if item.get("type") not in shown)


async def _respond(gw: Gateway, raw: Any, trace: Trace, record: Record | None) -> Outcome:
    principal, request_id, batch = trace.principal, trace.request_id, trace.batch
    req = parse_responses_request(raw)
    org_id = principal.org.id
    items, history, current = await conversation(gw, req, org_id)
    while True:
        turns = history + current
        chat = chat_body(req, raw, turns)
        try:
            request = parse_chat_request(chat)
            plan: Plan = await gw.plan(request, trace, "responses", "chat.completions", extra_bytes=unviewed_bytes(turns))
            break
        except GatewayError as exc:
            # truncation "auto": drop the oldest turns' items until the conversation fits.
            if exc.code == "context_length_exceeded" and req.truncation == "auto" and history:
                history = history[1:]
                continue
            raise as_responses_error(exc) from None
    admitted = await gw.admit(trace, plan)
    ticket, public, quote = admitted.ticket, admitted.public, plan.quote
    response_id, created_at = new_id("resp"), int(time.time())
    previous = req.previous_response_id

    def make_ours(response: dict[str, Any]) -> None:
        adopt(response, response_id=response_id, model=public, previous_response_id=previous,
              store=req.store, metadata=req.metadata, truncation=req.truncation)

    def chat_call(dep: Deployment) -> ChatCall:
        return ChatCall(request=request, body=chat, upstream_model=dep.config.model, request_id=request_id,
                        output_limit=quote.limit_to_send(dep))

    def native_call(dep: Deployment) -> ResponsesCall:
        body = native_body(raw, turns)
        sent = quote.limit_to_send(dep)
        if sent is not None and body.get("max_output_tokens") is None:
            body["max_output_tokens"] = max(sent, 16)  # the reservation cap; OpenAI's floor is 16
        return ResponsesCall(body=body, upstream_model=dep.config.model, request_id=request_id)

    def keep(response: dict[str, Any], cost: int) -> Sequence[tuple[Table, dict[str, Any]]]:
        rows = list(record(response, cost)) if record is not None else []
        if req.store and gw.responses is not None:
            rows += gw.responses.rows(org_id, principal.key_id, response, items)
        return rows

    if req.stream and not batch:
        async def open_at(dep: Deployment) -> EventSource:
            await gw.deployment_limits(dep, ticket.rate_tokens)
            if dep.provider.native_responses:
                try:
                    upstream = dep.provider.respond_stream(native_call(dep))
                    return NativeEvents(upstream, await first_batch(dep, upstream), make_ours)
                except ResponsesUnsupported:
                    pass  # a server without /responses: translated, now and from now on
            chunks = dep.provider.chat_stream(chat_call(dep))
            first_chunks = await first_batch(dep, chunks)
            events = ResponseEvents(req, response_id=response_id, created_at=created_at, model=public,
                                    previous_response_id=previous)
            return TranslatedEvents(chunks, first_chunks, events)

        dep, source, attempts = await gw.first_stream(ticket, admitted.candidates, open_at)
        frames = _relay_events(gw, ticket, source, keep)
        outcome = gw.stream_outcome(ticket, dep, frames, source, attempts, metered=False)
    else:
        async def answer_at(dep: Deployment) -> dict[str, Any]:
            await gw.deployment_limits(dep, ticket.rate_tokens)
            if dep.provider.native_responses:
                try:
                    response = await dep.provider.respond(native_call(dep))
                    make_ours(response)
                    return response
                except ResponsesUnsupported:
                    pass  # a server without /responses: translated, now and from now on
            completion = await dep.provider.chat(chat_call(dep))
            return response_from_chat(completion, req, response_id=response_id, created_at=created_at,
                                      model=public, previous_response_id=previous)

        outcome = await gw.answered(ticket, admitted.candidates, answer_at, None, None, keep)
    if not outcome.deployment.provider.native_responses and (dropped := dropped_tools(req)):
        # Hosted tools (web_search, ...) a chat model cannot run: left out rather than refused.
        outcome.headers["x-switchyard-dropped-tools"] = ", ".join(dropped)
        log.info("request %s: deployment %s cannot run hosted tools %s; left out",
                 request_id, outcome.deployment.id, ", ".join(dropped))
    return admitted.headed(outcome)


async def _relay_events(gw: Gateway, ticket: Ticket, source: EventSource, keep: Keep) -> AsyncGenerator[bytes, None]:
    """Frame Responses events as SSE; the final event (with usage and cost) waits for the bill."""
    final: dict[str, Any] | None = None
    try:
        batch: list[dict[str, Any]] | None = source.first
        while batch is not None:
            frames = []
            for event in batch:
                if event.get("type") in TERMINAL:
                    final = event
                    continue
                frames.append(_event_frame(event))
            if frames:
                yield b"".join(frames)
            batch = await source.next()
        if final is None:
            raise GatewayError(502, f"Deployment {ticket.deployment.id} ended the stream without a final event.",
                               type="upstream_error", code="upstream_stream_broken")
        response = final["response"]

        def attach(cost: int, metered: TokenUsage) -> Sequence[tuple[Table, dict[str, Any]]]:
            set_cost(response, cost)
            return keep(response, cost) if response.get("status") != "failed" else ()

        status = "completed" if final["type"] != "response.failed" else "partial"
        await gw.settle(ticket, response.get("usage"), response.get("service_tier"), source.delivered,
                        status, attach=attach, replace_usage=response)
        yield LastFrame(_event_frame(final))
    except GatewayError as exc:
        # Headers are gone: bill what was delivered, then close the stream as failed.
        if not ticket.settled:
            await gw.settle(ticket, None, None, source.delivered(), "partial", error_code=exc.code)
        yield LastFrame(b"".join(_event_frame(e) for e in source.failed(exc)))
    finally:
        await source.aclose()
        if not ticket.settled:
            await gw.shielded_settle(ticket, gw.settle(ticket, None, None, source.delivered(), "cancelled"))


def _event_frame(event: dict[str, Any]) -> bytes:
    response = event.get("response")
    if isinstance(response, dict) and "usage" in response and response["usage"] is None:
        del response["usage"]  # not known yet: OpenAI sends null, which its own spec does not allow
    return event_frame(event["type"], orjson.dumps(event))
