"""The request pipeline, start to end: validate, route, admit, call, meter, settle, relay.

Each step lives in its own part (wire, routing, accounts, metering, providers); this module
only strings them together, so one request's path can be read top to bottom here.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import Table

from switchyard.accounts.billing import Billing, Ticket, usd_number
from switchyard.accounts.records import Principal
from switchyard.metering.cost import usd
from switchyard.limits import Limits, Scope
from switchyard.metering.cost import TokenUsage
from switchyard.metering.estimate import BYTES_PER_TOKEN_ESTIMATE, image_token_count
from switchyard.metering.tokens import count_prompt_tokens, prompt_bytes_bound
from switchyard.metering.usage import counted, from_openai, image_tokens_reported
from switchyard.providers import ChatCall, ResponsesCall
from switchyard.responses.store import ResponseStore
from switchyard.responses.streams import TERMINAL, EventSource, NativeEvents, TranslatedEvents
from switchyard.responses.turns import FileReader, adopt, as_responses_error, inline_files, native_body, usage_of
from switchyard.routing.cache import ResponseCache, cache_key, cache_ttl, strip_cache_fields
from switchyard.routing.fallback import first_answer
from switchyard.routing.router import Router
from switchyard.routing.smart import Decision
from switchyard.routing.table import Deployment, ModelTable
from switchyard.wire.chat import ChatRequest, parse_chat_request
from switchyard.wire.errors import GatewayError, invalid_request, not_found, permission_denied
from switchyard.wire.responses import input_items, new_id, parse_responses_request
from switchyard.wire.responses_chat import ResponseEvents, chat_body, response_from_chat
from switchyard.wire.sse import DONE, data_frame, event_frame

log = logging.getLogger("switchyard.requests")
# Rows to commit with a request's bill, made from the final answer (usage.cost set) and its cost.
Record = Callable[[dict[str, Any], int], Sequence[tuple[Table, dict[str, Any]]]]
# A chunk whose `usage` is an object (not null), however the upstream spaces its JSON.
_HAS_USAGE = re.compile(rb'"usage"\s*:\s*\{').search


@dataclass(slots=True)
class Outcome:
    """What the server sends back: a body, or SSE frames, plus headers about the route and limits."""

    deployment: Deployment
    body: dict[str, Any] | None = None
    frames: AsyncGenerator[bytes, None] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # For streams: run when the response is over, however it ended. A client that leaves before
    # the first frame is sent never starts `frames`, so its bill and hold are settled here.
    finish: Callable[[], Awaitable[None]] | None = None
    attempts: int = 1


class Gateway:
    def __init__(
        self, table: ModelTable, billing: Billing, router: Router, cache: ResponseCache,
        responses: ResponseStore | None = None, files: FileReader | None = None,
    ) -> None:
        self.table = table
        self.billing = billing
        self.router = router
        self.cache = cache
        self.responses = responses
        self.files = files
        self._background: set[asyncio.Task[Any]] = set()

    async def chat(
        self, raw: Any, principal: Principal, request_id: str, *, batch: bool = False, record: Record | None = None,
    ) -> Outcome:
        """One chat completion. `batch`: a Batch API line (own rate-limit pool, batch prices, never
        streamed). `record`: rows committed with the bill (non-streaming answers only)."""
        request = parse_chat_request(raw)
        public, group, decision = self._resolve(request, request_id)
        if not principal.may_use(public):
            raise permission_denied(f"This API key is not allowed to use model `{request.model}`.")
        if "chat.completions" not in group[0].spec.endpoints:
            raise invalid_request(f"Model `{request.model}` is only supported in v1/responses, not in v1/chat/completions.",
                                  param="model", code="unsupported_endpoint")
        images = image_token_count(request, group[0].spec) if request.has_images else 0
        candidates = self.router.candidates(
            request, group, self.table.strategy(public),
            lambda dep: self._prompt_tokens(request, dep, images),
            request.output_limit or self.billing.default_output_estimate,
        )
        ttl = cache_ttl(raw, principal.key.cache_ttl)
        upstream_body = strip_cache_fields(raw) if "cache" in raw or "switchyard_cache" in raw else raw
        ticket, limit_headers = await self.billing.admit(
            request_id, principal, public, request, candidates, images, batch=batch)

        def call(dep: Deployment) -> ChatCall:
            return ChatCall(request=request, body=upstream_body, upstream_model=dep.config.model, request_id=request_id)

        if request.stream:
            outcome = await self._streamed(ticket, candidates, call)
        else:
            cache_key_ = cache_key(public, raw, principal.org.id) if ttl else None

            async def chat_at(dep: Deployment) -> dict[str, Any]:
                await self._deployment_limits(dep, ticket.rate_tokens)
                return await dep.provider.chat(call(dep))

            outcome = await self._answered(ticket, candidates, chat_at, cache_key_, ttl, record)
            if decision is not None:
                outcome.body["model"] = public  # type: ignore[index]  # the tier the smart router chose
        outcome.headers.update(_route_headers(outcome.deployment, outcome.attempts, decision))
        outcome.headers.update(limit_headers)
        return outcome

    async def respond(
        self, raw: Any, principal: Principal, request_id: str, *, batch: bool = False, record: Record | None = None,
    ) -> Outcome:
        """One Responses API turn: the conversation is rebuilt from stored responses, routed and
        billed through its chat view, and answered natively by upstreams that speak Responses
        or translated from chat for the others. The stored response commits with its bill."""
        req = parse_responses_request(raw)
        org_id = principal.org.id
        history: list[dict[str, Any]] = []
        if req.previous_response_id:
            found = await self.responses.conversation(org_id, req.previous_response_id) if self.responses else None
            if found is None:
                raise not_found(f"Previous response with id '{req.previous_response_id}' not found.",
                                param="previous_response_id")
            history = found
        items = input_items(req)
        # Uploaded images as data URLs, once: truncation below only drops history items.
        current = await inline_files(items, org_id, self.files)
        history = await inline_files(history, org_id, self.files)
        while True:
            conversation = history + current
            chat = chat_body(req, raw, conversation)
            try:
                request = parse_chat_request(chat)
                public, group, decision = self._resolve(request, request_id)
                if not principal.may_use(public):
                    raise permission_denied(f"This API key is not allowed to use model `{req.model}`.")
                images = image_token_count(request, group[0].spec) if request.has_images else 0
                candidates = self.router.candidates(
                    request, group, self.table.strategy(public),
                    lambda dep: self._prompt_tokens(request, dep, images),
                    request.output_limit or self.billing.default_output_estimate,
                )
                break
            except GatewayError as exc:
                # truncation "auto": drop the oldest turns' items until the conversation fits.
                if exc.code == "context_length_exceeded" and req.truncation == "auto" and history:
                    history = history[1:]
                    continue
                raise as_responses_error(exc) from None
        ticket, limit_headers = await self.billing.admit(
            request_id, principal, public, request, candidates, images, endpoint="/v1/responses", batch=batch)
        response_id, created_at = new_id("resp"), time.time()
        previous = req.previous_response_id

        def make_ours(response: dict[str, Any]) -> None:
            adopt(response, response_id=response_id, model=public, previous_response_id=previous,
                  store=req.store, metadata=req.metadata, truncation=req.truncation)

        def chat_call(dep: Deployment) -> ChatCall:
            return ChatCall(request=request, body=chat, upstream_model=dep.config.model, request_id=request_id)

        def native_call(dep: Deployment) -> ResponsesCall:
            return ResponsesCall(body=native_body(raw, conversation), upstream_model=dep.config.model, request_id=request_id)

        def keep(response: dict[str, Any], cost: int) -> Sequence[tuple[Table, dict[str, Any]]]:
            rows = list(record(response, cost)) if record is not None else []
            if req.store and self.responses is not None:
                rows += self.responses.rows(org_id, principal.key_id, response, items)
            return rows

        if req.stream and not batch:
            async def open_at(dep: Deployment) -> tuple[EventSource, None]:
                await self._deployment_limits(dep, ticket.rate_tokens)
                if dep.provider.native_responses:
                    upstream = dep.provider.respond_stream(native_call(dep))
                    first = await _first(dep, upstream)
                    return NativeEvents(upstream, first, make_ours), None
                chunks, first_chunks = await _open_stream(dep, chat_call(dep))
                events = ResponseEvents(req, response_id=response_id, created_at=created_at, model=public,
                                        previous_response_id=previous)
                return TranslatedEvents(chunks, first_chunks, events), None

            try:
                dep, (source, _), attempts = await first_answer(candidates, self.router, open_at)
            except BaseException:
                await self.billing.abandon(ticket)
                raise
            ticket.deployment = dep
            frames = self._relay_events(ticket, source, keep)

            async def finish() -> None:
                await frames.aclose()
                if not ticket.settled:
                    await source.aclose()
                    await self._settle(ticket, None, None, "", "cancelled")

            outcome = Outcome(dep, frames=frames, finish=finish, attempts=attempts)
        else:
            async def answer_at(dep: Deployment) -> dict[str, Any]:
                await self._deployment_limits(dep, ticket.rate_tokens)
                if dep.provider.native_responses:
                    response = await dep.provider.respond(native_call(dep))
                    make_ours(response)
                    return response
                completion = await dep.provider.chat(chat_call(dep))
                return response_from_chat(completion, req, response_id=response_id, created_at=created_at,
                                          model=public, previous_response_id=previous)

            outcome = await self._answered(ticket, candidates, answer_at, None, None, keep)
        outcome.headers.update(_route_headers(outcome.deployment, outcome.attempts, decision))
        outcome.headers.update(limit_headers)
        return outcome

    async def _relay_events(
        self, ticket: Ticket, source: EventSource, keep: Callable[[dict[str, Any], int], Sequence[tuple[Table, dict[str, Any]]]],
    ) -> AsyncGenerator[bytes, None]:
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
            usage = response.get("usage")

            def attach(cost: int, metered: TokenUsage) -> Sequence[tuple[Table, dict[str, Any]]]:
                if not isinstance(response.get("usage"), dict):
                    response["usage"] = usage_of(metered)
                _set_cost(response, cost)
                return keep(response, cost) if response.get("status") != "failed" else ()

            status = "completed" if final["type"] != "response.failed" else "partial"
            await self._settle(ticket, usage, response.get("service_tier"), source.delivered() if usage is None else "",
                               status, attach=attach)
            yield _event_frame(final)
        except GatewayError as exc:
            # Headers are gone: bill what was delivered, then close the stream as failed.
            if not ticket.settled:
                await self._settle(ticket, None, None, source.delivered(), "partial")
            yield b"".join(_event_frame(e) for e in source.failed(exc))
        finally:
            await source.aclose()
            if not ticket.settled:
                task = asyncio.get_running_loop().create_task(
                    self._settle(ticket, None, None, source.delivered(), "cancelled"))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
                await asyncio.shield(task)

    def _resolve(self, request: ChatRequest, request_id: str) -> tuple[str, list[Deployment], Decision | None]:
        """The public model and its deployments; `switchyard/auto` first picks a tier by its rules."""
        smart = self.table.smart
        if smart is None or request.model != smart.name:
            public, group = self.table.resolve(request.model)
            return public, group, None
        decision = smart.choose(request, prompt_bytes_bound(request) // BYTES_PER_TOKEN_ESTIMATE)
        public, group = self.table.resolve(decision.model)
        log.info("%s %s -> %s (rule %s: %s)", request_id, smart.name, public, decision.rule, decision.reason)
        return public, group, decision

    async def _answered(
        self, ticket: Ticket, candidates: list[Deployment], answer_at: Callable[[Deployment], Awaitable[dict[str, Any]]],
        key: str | None, ttl: int | None, record: Record | None = None,
    ) -> Outcome:
        """A whole answer: from the response cache (opt-in) or the first candidate that gives one.
        The answer is the endpoint's object (a chat completion or a response) with its usage."""
        cached = await self.cache.get(key) if key else None
        try:
            if cached is not None:
                dep, body, attempts = candidates[0], orjson.loads(cached), 0
            else:
                dep, body, attempts = await first_answer(candidates, self.router, answer_at)
        except BaseException:
            await self.billing.abandon(ticket)
            raise
        ticket.deployment = dep  # billed at the prices of the deployment that answered
        status = "cache_hit" if cached is not None else "completed"

        def attach(cost: int, metered: TokenUsage) -> Sequence[tuple[Table, dict[str, Any]]]:
            if body.get("object") == "response" and not isinstance(body.get("usage"), dict):
                body["usage"] = usage_of(metered)  # an upstream that reported none: our count
            _set_cost(body, cost)
            return record(body, cost) if record is not None else ()

        cost, _ = await self._settle(ticket, body.get("usage"), body.get("service_tier"), "", status,
                                     free=cached is not None, attach=attach)
        if key and cached is None and ttl:
            await self.cache.put(key, orjson.dumps(_without_cost(body)), ttl)
        headers = {"x-switchyard-cost-usd": usd(cost)}
        if key:
            headers["x-switchyard-cache"] = "hit" if cached is not None else "miss"
        return Outcome(dep, body=body, headers=headers, attempts=attempts)

    async def _streamed(
        self, ticket: Ticket, candidates: list[Deployment], call: Callable[[Deployment], ChatCall]
    ) -> Outcome:
        """A stream from the first candidate that sends its first chunk; relayed and billed after."""

        async def stream_at(dep: Deployment) -> tuple[AsyncIterator[list[bytes]], list[bytes]]:
            await self._deployment_limits(dep, ticket.rate_tokens)
            return await _open_stream(dep, call(dep))

        try:
            dep, (stream, first), attempts = await first_answer(candidates, self.router, stream_at)
        except BaseException:
            await self.billing.abandon(ticket)
            raise
        ticket.deployment = dep
        frames = self._relay(ticket, first, stream)

        async def finish() -> None:
            await frames.aclose()  # runs the relay's own cleanup if it started
            if not ticket.settled:
                await stream.aclose()  # type: ignore[attr-defined]
                await self._settle(ticket, None, None, "", "cancelled")

        return Outcome(dep, frames=frames, finish=finish, attempts=attempts)

    async def _deployment_limits(self, dep: Deployment, tokens: int) -> None:
        """A deployment's own RPM/TPM (e.g. an upstream account's quota): full means try the next."""
        rpm, tpm = dep.config.options.get("rpm"), dep.config.options.get("tpm")
        if rpm is None and tpm is None:
            return
        admission = await self.billing.limiter.admit([Scope(f"deployment:{dep.id}", Limits(rpm, tpm))], tokens)
        if not admission.allowed:
            headers = {"retry-after": str(max(1, math.ceil(admission.retry_after)))} if admission.retry_after else {}
            raise GatewayError(429, f"Deployment {dep.id} is at its own rate limit.", type="requests",
                               code="rate_limit_exceeded", headers=headers)

    @staticmethod
    def _prompt_tokens(request: ChatRequest, dep: Deployment, image_tokens: int) -> int:
        """Prompt size for the context check; exact counting only when the cheap bound cannot prove a fit."""
        bound = prompt_bytes_bound(request) + image_tokens
        if bound + (request.output_limit or 0) <= dep.context_window:
            return min(bound, dep.context_window - 1)
        exact = dep.provider.count_prompt_tokens(request)
        return (exact if exact is not None else count_prompt_tokens(request)) + image_tokens

    async def _settle(
        self, ticket: Ticket, usage: Any, service_tier: Any, delivered: str, status: str, free: bool = False,
        attach: Callable[[int, TokenUsage], Sequence[tuple[Table, dict[str, Any]]]] | None = None,
    ) -> tuple[int, TokenUsage]:
        metered = from_openai(usage)
        images = image_tokens_reported(usage)
        if images is None:
            images = ticket.estimate.image_tokens
        if metered is None:
            metered = counted(ticket.request, delivered, images)
        cost = await self.billing.settle(
            ticket, metered, status=status, service_tier=service_tier, image_tokens=images, free=free,
            attach=(lambda cost: attach(cost, metered)) if attach is not None else None)
        _log(ticket, metered, cost, status)
        return cost, metered

    async def _relay(
        self, ticket: Ticket, first: list[bytes], stream: AsyncIterator[list[bytes]]
    ) -> AsyncGenerator[bytes, None]:
        """Frame chunks as SSE; bill before the last frame; keep the usage chunk only if asked for."""
        want_usage = ticket.request.wants_usage_chunk
        usage_obj: dict[str, Any] | None = None
        usage_chunk: dict[str, Any] | None = None
        tier: Any = None
        sent: list[bytes] = []  # what reached the client, to count if the upstream never reports usage
        status = "cancelled"
        try:
            batch: list[bytes] | None = first
            while batch is not None:
                frames = []
                for chunk in batch:
                    if _HAS_USAGE(chunk):
                        obj = orjson.loads(chunk)
                        usage_obj, tier = obj.get("usage") or usage_obj, obj.get("service_tier", tier)
                        if not obj.get("choices"):
                            usage_chunk = obj  # held back until the bill is committed
                            continue
                        obj["usage"] = None
                        chunk = orjson.dumps(obj)
                    sent.append(chunk)
                    frames.append(data_frame(chunk))
                if frames:
                    yield b"".join(frames)
                batch = await anext(stream, None)
            status = "completed"
            cost, metered = await self._settle(
                ticket, usage_obj, tier, _delivered_text(sent) if usage_obj is None else "", status)
            tail = []
            if want_usage:
                if usage_chunk is None:  # the upstream reported none: send our own count
                    usage_chunk = {**_head(first[0]), "choices": [], "usage": _usage_object(metered)}
                usage_chunk["usage"]["cost"] = usd_number(cost)
                tail.append(data_frame(orjson.dumps(usage_chunk)))
            tail.append(DONE)
            yield b"".join(tail)
        except GatewayError as exc:
            # Headers are gone: bill what was delivered, then an `error` event (the SDK raises APIError).
            status = "partial"
            await self._settle(ticket, None, tier, _delivered_text(sent), status)
            yield data_frame(exc.to_json())
        finally:
            await stream.aclose()
            if not ticket.settled:
                # The client went away: bill what it was sent. Shielded, so the bill is made even if
                # this task is cancelled while it waits.
                task = asyncio.get_running_loop().create_task(
                    self._settle(ticket, None, tier, _delivered_text(sent), "cancelled"))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
                await asyncio.shield(task)


async def _first(dep: Deployment, stream: AsyncIterator[Any]) -> Any:
    """The first batch of a stream: until it is in, a failure may still fall back."""
    try:
        first = await anext(stream)
        if not first:
            raise StopAsyncIteration
    except BaseException as exc:
        await stream.aclose()  # type: ignore[attr-defined]
        if isinstance(exc, StopAsyncIteration):
            raise GatewayError(502, f"Deployment {dep.id} sent an empty stream.", type="upstream_error",
                               code="upstream_invalid_response") from None
        raise
    return first


async def _open_stream(dep: Deployment, call: ChatCall) -> tuple[AsyncIterator[list[bytes]], list[bytes]]:
    """Start a stream and wait for its first chunks: until then, a failure may still fall back."""
    stream = dep.provider.chat_stream(call)
    return stream, await _first(dep, stream)


def _event_frame(event: dict[str, Any]) -> bytes:
    response = event.get("response")
    if isinstance(response, dict) and "usage" in response and response["usage"] is None:
        del response["usage"]  # not known yet: OpenAI sends null, which its own spec does not allow
    return event_frame(event["type"], orjson.dumps(event))


def _set_cost(body: dict[str, Any], cost: int) -> None:
    if isinstance(body.get("usage"), dict):
        body["usage"]["cost"] = usd_number(cost)


def _without_cost(body: dict[str, Any]) -> dict[str, Any]:
    """The answer as the upstream gave it: a cache hit is priced (at zero) when it is served."""
    usage = body.get("usage")
    if not isinstance(usage, dict) or "cost" not in usage:
        return body
    return {**body, "usage": {k: v for k, v in usage.items() if k != "cost"}}


def _route_headers(dep: Deployment, attempts: int, decision: Decision | None) -> dict[str, str]:
    headers = {"x-switchyard-deployment": dep.id, "x-switchyard-attempts": str(attempts)}
    if decision is not None:
        headers["x-switchyard-route"] = f"{decision.model}; rule={decision.rule}"
    return headers


def _head(chunk: bytes) -> dict[str, Any]:
    obj = orjson.loads(chunk)
    return {k: obj[k] for k in ("id", "object", "created", "model", "system_fingerprint", "service_tier") if k in obj}


def _usage_object(usage: TokenUsage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def _delivered_text(frames: list[bytes]) -> str:
    parts: list[str] = []
    for raw in frames:
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        for choice in obj.get("choices") or ():
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str):
                parts.append(delta["content"])
            for call in delta.get("tool_calls") or ():
                fn = call.get("function") or {}
                parts.append((fn.get("name") or "") + (fn.get("arguments") or ""))
    return "".join(parts)


def _log(ticket: Ticket, usage: Any, cost: int, status: str) -> None:
    if log.isEnabledFor(logging.INFO):
        log.info(
            "%s key=%s org=%s model=%s deployment=%s stream=%s status=%s in=%d cached=%d out=%d cost=%s",
            ticket.request_id, ticket.principal.key_id, ticket.principal.org.id, ticket.public_model,
            ticket.deployment.id, bool(ticket.request.stream), status, usage.input_tokens,
            usage.cached_input_tokens, usage.output_tokens, usd(cost),
        )
