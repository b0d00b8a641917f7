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
from switchyard.config import ServerLimits
from switchyard.limits import Limits, Scope
from switchyard.metering.cost import TokenUsage, usd
from switchyard.metering.estimate import BYTES_PER_TOKEN_ESTIMATE, Quote
from switchyard.metering.tokens import acount_prompt_tokens, prompt_bytes_bound
from switchyard.metering.usage import counted, from_openai, image_tokens_reported, unreported
from switchyard.providers import ChatCall, ResponsesCall, ResponsesUnsupported
from switchyard.responses.compaction import (
    MAX_SUMMARY_TOKENS, compaction_fields, compaction_from_chat, native_compaction_body, summary_chat,
)
from switchyard.responses.store import ResponseStore
from switchyard.responses.streams import TERMINAL, EventSource, NativeEvents, TranslatedEvents
from switchyard.responses.turns import FileReader, adopt, as_responses_error, inline_files, native_body, usage_of
from switchyard.routing.cache import ResponseCache, cache_key, cache_ttl, strip_cache_fields
from switchyard.routing.fallback import first_answer
from switchyard.routing.fit import check_endpoint
from switchyard.routing.router import Router
from switchyard.routing.smart import Decision
from switchyard.routing.table import Deployment, ModelTable
from switchyard.wire.answers import answer_text, public_model_name
from switchyard.wire.chat import ChatRequest, parse_chat_request
from switchyard.wire.errors import GatewayError, invalid_request, not_found, permission_denied
from switchyard.wire.responses import ResponsesRequest, input_items, new_id, parse_responses_request
from switchyard.wire.responses_chat import ResponseEvents, chat_body, dropped_tools, response_from_chat
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


@dataclass(slots=True)
class Admitted:
    """A request past admission: the model it resolved to, where it may go, its hold."""

    public: str
    decision: Decision | None
    candidates: list[Deployment]
    ticket: Ticket
    limit_headers: dict[str, str]

    def headed(self, outcome: Outcome) -> Outcome:
        """The outcome with where it was served and how the limits stand."""
        outcome.headers.update(route_headers(outcome.deployment, outcome.attempts, self.decision))
        outcome.headers.update(self.limit_headers)
        return outcome


@dataclass(slots=True)
class Trace:
    """What is known of a request as it goes, for the record it leaves if it gets no answer."""

    request_id: str
    principal: Principal
    endpoint: str
    model: str
    stream: bool
    batch: bool
    started: float = field(default_factory=time.perf_counter)
    ticket: Ticket | None = None
    limit_headers: dict[str, str] = field(default_factory=dict)


class Gateway:
    def __init__(
        self, table: ModelTable, billing: Billing, router: Router, cache: ResponseCache,
        responses: ResponseStore | None = None, files: FileReader | None = None,
        limits: ServerLimits = ServerLimits(),
    ) -> None:
        self.table = table
        self.limits = limits
        self.billing = billing
        self.router = router
        self.cache = cache
        self.responses = responses
        self.files = files
        self._background: set[asyncio.Task[Any]] = set()

    # ---- the endpoints -------------------------------------------------------------------

    async def chat(
        self, raw: Any, principal: Principal, request_id: str, *, batch: bool = False, record: Record | None = None,
    ) -> Outcome:
        """One chat completion. `batch`: a Batch API line (own rate-limit pool, batch prices, never
        streamed). `record`: rows committed with the bill (non-streaming answers only)."""
        trace = new_trace(raw, principal, request_id, "/v1/chat/completions", batch)
        return await self.traced(trace, self.chat_turn(raw, trace, record))

    async def respond(
        self, raw: Any, principal: Principal, request_id: str, *, batch: bool = False, record: Record | None = None,
    ) -> Outcome:
        """One Responses API turn: the conversation is rebuilt from stored responses, routed and
        billed through its chat view, and answered natively by upstreams that speak Responses
        or translated from chat for the others. The stored response commits with its bill."""
        trace = new_trace(raw, principal, request_id, "/v1/responses", batch)
        return await self.traced(trace, self._respond(raw, trace, record))

    async def chat_turn(self, raw: Any, trace: Trace, record: Record | None) -> Outcome:
        principal, request_id, batch = trace.principal, trace.request_id, trace.batch
        request = parse_chat_request(raw)
        _at_most(len(request.messages), self.limits.max_messages, "messages")
        public, group, decision = self.resolve(request, request_id)
        if not principal.may_use(public):
            raise permission_denied(f"This API key is not allowed to use model `{request.model}`.")
        check_endpoint(request.model, group, "chat.completions")
        quote = Quote(request, self.billing.reserve_cap(principal))
        candidates = await self._candidates(quote, group, public)
        ticket, limit_headers = await self.billing.admit(request_id, principal, public, quote, candidates,
                                                         endpoint=trace.endpoint, batch=batch)
        trace.ticket, trace.limit_headers = ticket, limit_headers
        ttl = cache_ttl(raw, principal.key.cache_ttl)
        upstream_body = strip_cache_fields(raw) if "cache" in raw or "switchyard_cache" in raw else raw

        def call(dep: Deployment) -> ChatCall:
            return ChatCall(request=request, body=upstream_body, upstream_model=dep.config.model,
                            request_id=request_id, output_limit=quote.limit_to_send(dep))

        if request.stream:
            outcome = await self._streamed(ticket, candidates, call, public)
        else:
            cache_key_ = cache_key(public, raw, principal.org.id) if ttl else None

            async def chat_at(dep: Deployment) -> dict[str, Any]:
                await self.deployment_limits(dep, ticket.rate_tokens)
                return await dep.provider.chat(call(dep))

            outcome = await self.answered(ticket, candidates, chat_at, cache_key_, ttl, record)
            body = outcome.body
            assert body is not None
            # The tier the smart router chose, or the public name in place of an upstream's own id.
            body["model"] = public if decision is not None else public_model_name(body.get("model"), public, outcome.deployment.spec)
        outcome.headers.update(route_headers(outcome.deployment, outcome.attempts, decision))
        outcome.headers.update(limit_headers)
        return outcome

    async def _respond(self, raw: Any, trace: Trace, record: Record | None) -> Outcome:
        principal, request_id, batch = trace.principal, trace.request_id, trace.batch
        req = parse_responses_request(raw)
        org_id = principal.org.id
        items, history, current = await self._conversation(req, org_id)
        while True:
            conversation = history + current
            chat = chat_body(req, raw, conversation)
            try:
                request = parse_chat_request(chat)
                public, group, decision = self.resolve(request, request_id)
                check_endpoint(req.model, group, "responses", "chat.completions")
                if not principal.may_use(public):
                    raise permission_denied(f"This API key is not allowed to use model `{req.model}`.")
                # Items the chat view leaves out (encrypted reasoning, say) still reach a native
                # upstream and count as input there: their bytes widen the bound.
                quote = Quote(request, self.billing.reserve_cap(principal), extra_bytes=_unviewed_bytes(conversation))
                candidates = await self._candidates(quote, group, public)
                break
            except GatewayError as exc:
                # truncation "auto": drop the oldest turns' items until the conversation fits.
                if exc.code == "context_length_exceeded" and req.truncation == "auto" and history:
                    history = history[1:]
                    continue
                raise as_responses_error(exc) from None
        ticket, limit_headers = await self.billing.admit(
            request_id, principal, public, quote, candidates, endpoint="/v1/responses", batch=batch)
        trace.ticket, trace.limit_headers = ticket, limit_headers
        response_id, created_at = new_id("resp"), int(time.time())
        previous = req.previous_response_id

        def make_ours(response: dict[str, Any]) -> None:
            adopt(response, response_id=response_id, model=public, previous_response_id=previous,
                  store=req.store, metadata=req.metadata, truncation=req.truncation)

        def chat_call(dep: Deployment) -> ChatCall:
            return ChatCall(request=request, body=chat, upstream_model=dep.config.model, request_id=request_id,
                            output_limit=quote.limit_to_send(dep))

        def native_call(dep: Deployment) -> ResponsesCall:
            body = native_body(raw, conversation)
            sent = quote.limit_to_send(dep)
            if sent is not None and body.get("max_output_tokens") is None:
                body["max_output_tokens"] = max(sent, 16)  # the reservation cap; OpenAI's floor is 16
            return ResponsesCall(body=body, upstream_model=dep.config.model, request_id=request_id)

        def keep(response: dict[str, Any], cost: int) -> Sequence[tuple[Table, dict[str, Any]]]:
            rows = list(record(response, cost)) if record is not None else []
            if req.store and self.responses is not None:
                rows += self.responses.rows(org_id, principal.key_id, response, items)
            return rows

        if req.stream and not batch:
            async def open_at(dep: Deployment) -> tuple[EventSource, None]:
                await self.deployment_limits(dep, ticket.rate_tokens)
                if dep.provider.native_responses:
                    try:
                        upstream = dep.provider.respond_stream(native_call(dep))
                        first = await _first(dep, upstream)
                        return NativeEvents(upstream, first, make_ours), None
                    except ResponsesUnsupported:
                        pass  # a server without /responses: translated, now and from now on
                chunks, first_chunks = await _open_stream(dep, chat_call(dep))
                events = ResponseEvents(req, response_id=response_id, created_at=created_at, model=public,
                                        previous_response_id=previous)
                return TranslatedEvents(chunks, first_chunks, events), None

            try:
                dep, (source, _), attempts = await first_answer(candidates, self.router, open_at)
            except BaseException:
                await self.billing.abandon(ticket)
                raise
            ticket.answered_by(dep, attempts)
            frames = self._relay_events(ticket, source, keep)

            async def finish() -> None:
                await frames.aclose()
                if not ticket.settled:
                    await source.aclose()
                    await self._settle(ticket, None, None, "", "cancelled")

            outcome = Outcome(dep, frames=frames, finish=finish, attempts=attempts)
        else:
            async def answer_at(dep: Deployment) -> dict[str, Any]:
                await self.deployment_limits(dep, ticket.rate_tokens)
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

            outcome = await self.answered(ticket, candidates, answer_at, None, None, keep)
        if not outcome.deployment.provider.native_responses and (dropped := dropped_tools(req)):
            # Hosted tools (web_search, ...) a chat model cannot run: left out rather than refused.
            outcome.headers["x-switchyard-dropped-tools"] = ", ".join(dropped)
            log.info("request %s: deployment %s cannot run hosted tools %s; left out",
                     request_id, outcome.deployment.id, ", ".join(dropped))
        outcome.headers.update(route_headers(outcome.deployment, outcome.attempts, decision))
        outcome.headers.update(limit_headers)
        return outcome

    async def compact(self, raw: Any, principal: Principal, request_id: str) -> Outcome:
        """`POST /v1/responses/compact`: a long conversation as a short one to continue from.
        Deployments that speak Responses compact it themselves; for the others the model
        summarises it through chat, and the summary becomes a compaction item of ours."""
        trace = new_trace(raw, principal, request_id, "/v1/responses/compact", False)
        return await self.traced(trace, self._compact(raw, trace))

    async def _compact(self, raw: Any, trace: Trace) -> Outcome:
        principal, request_id = trace.principal, trace.request_id
        if not isinstance(raw, dict):
            raise invalid_request("The request body must be a JSON object.")
        fields = compaction_fields(raw)
        req = parse_responses_request({**fields, "store": False})
        _, history, current = await self._conversation(req, principal.org.id)
        conversation = history + current
        chat = summary_chat(req, fields, conversation, MAX_SUMMARY_TOKENS)
        public, group, decision = self.resolve(parse_chat_request(chat), request_id)
        check_endpoint(req.model, group, "responses", "chat.completions")
        # Within every candidate model's own max output: a summary's limit is ours, not the caller's.
        chat = summary_chat(req, fields, conversation, min(dep.spec.max_output_tokens for dep in group))
        request = parse_chat_request(chat)
        if not principal.may_use(public):
            raise permission_denied(f"This API key is not allowed to use model `{req.model}`.")
        quote = Quote(request, self.billing.reserve_cap(principal), extra_bytes=_unviewed_bytes(conversation))
        candidates = await self._candidates(quote, group, public)
        ticket, limit_headers = await self.billing.admit(
            request_id, principal, public, quote, candidates, endpoint="/v1/responses/compact")
        trace.ticket, trace.limit_headers = ticket, limit_headers
        compaction_id, created_at = new_id("resp"), int(time.time())

        async def compact_at(dep: Deployment) -> dict[str, Any]:
            await self.deployment_limits(dep, ticket.rate_tokens)
            if dep.provider.native_responses:
                try:
                    answer = await dep.provider.compact(ResponsesCall(
                        body=native_compaction_body(fields, conversation), upstream_model=dep.config.model,
                        request_id=request_id))
                    answer["id"] = compaction_id
                    return answer
                except ResponsesUnsupported:
                    pass  # a server without /responses/compact: summarised through chat below
            completion = await dep.provider.chat(ChatCall(request=request, body=chat, upstream_model=dep.config.model,
                                                          request_id=request_id, output_limit=quote.limit_to_send(dep)))
            return compaction_from_chat(completion, conversation, compaction_id=compaction_id, created_at=created_at)

        outcome = await self.answered(ticket, candidates, compact_at, None, None)
        outcome.headers.update(route_headers(outcome.deployment, outcome.attempts, decision))
        outcome.headers.update(limit_headers)
        return outcome

    # ---- shared steps --------------------------------------------------------------------

    async def _conversation(
        self, req: ResponsesRequest, org_id: str,
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
        """This turn's items as stored, and the conversation to send: the earlier turns (from
        `previous_response_id`) and this turn's, uploaded images inlined as data URLs."""
        history: list[dict[str, Any]] = []
        if req.previous_response_id:
            found = await self.responses.conversation(org_id, req.previous_response_id) if self.responses else None
            if found is None:
                raise not_found(f"Previous response with id '{req.previous_response_id}' not found.",
                                param="previous_response_id")
            history = found
        items = input_items(req)
        _at_most(len(items), self.limits.max_input_items, "input")
        return items, await inline_files(history, org_id, self.files), await inline_files(items, org_id, self.files)

    async def admit_inputs(self, trace: Trace, model: str, texts: list[str], kind: str, path: str,
                           extra_bytes: int = 0) -> Admitted:
        """Resolve, authorise and admit a request that reads inputs and generates nothing
        (embeddings, moderations): served by the model's deployments whose catalog lists
        `kind`, each input sized by its deployment, held at the inputs' byte bound."""
        principal, request_id = trace.principal, trace.request_id
        messages = [{"role": "user", "content": t} for t in texts] or [{"role": "user", "content": "."}]
        request = parse_chat_request({"model": model, "messages": messages, "max_completion_tokens": 1})
        public, group, decision = self.resolve(request, request_id)
        if not principal.may_use(public):
            raise permission_denied(f"This API key is not allowed to use model `{model}`.")
        check_endpoint(model, group, kind)
        group = [dep for dep in group if kind in dep.spec.endpoints]
        quote = Quote(request, self.billing.reserve_cap(principal), extra_bytes=extra_bytes)
        candidates = self.router.candidates(request, group, self.table.strategy(public), lambda dep: 1, 0)
        ticket, limit_headers = await self.billing.admit(request_id, principal, public, quote, candidates, endpoint=path)
        trace.ticket, trace.limit_headers = ticket, limit_headers
        return Admitted(public, decision, candidates, ticket, limit_headers)

    async def traced(self, trace: Trace, work: Awaitable[Outcome]) -> Outcome:
        """Run one request; one that gets no answer leaves a zero-cost record (refused before
        any upstream, failed when none answered, cancelled when its client left first)."""
        try:
            return await work
        except GatewayError as exc:
            exc.headers.update(trace.limit_headers)  # limits were checked: say where they stand
            self._unserved(trace, "failed" if trace.ticket is not None else "refused", exc.status, exc.code, exc.param)
            raise
        except asyncio.CancelledError:
            if trace.ticket is not None and trace.ticket.billed:
                raise  # answered and billed just as the client left: that record stands
            if trace.ticket is not None:
                await self.billing.abandon(trace.ticket)  # a no-op if the pipeline did already
            self._unserved(trace, "cancelled", 499, "client_disconnected", None)
            raise

    def _unserved(self, trace: Trace, status: str, http_status: int, code: str | None, param: str | None) -> None:
        if trace.batch:
            return  # a batch line's failure goes to the batch's error file
        try:
            self.billing.record_unserved(
                trace.request_id, trace.principal, model=trace.model, endpoint=trace.endpoint, status=status,
                http_status=http_status, error_code=code, error_param=param, stream=trace.stream,
                deployment=trace.ticket.deployment.id if trace.ticket is not None else "", started=trace.started)
        except Exception:  # a trace must never turn into the request's error
            log.exception("could not record request %s", trace.request_id)

    def resolve(self, request: ChatRequest, request_id: str) -> tuple[str, list[Deployment], Decision | None]:
        """The public model and its deployments; `switchyard/auto` first picks a tier by its rules."""
        smart = self.table.smart
        if smart is None or request.model != smart.name:
            public, group = self.table.resolve(request.model)
            return public, group, None
        decision = smart.choose(request, prompt_bytes_estimate(request))
        public, group = self.table.resolve(decision.model)
        log.info("%s %s -> %s (rule %s: %s)", request_id, smart.name, public, decision.rule, decision.reason)
        return public, group, decision

    async def _candidates(self, quote: Quote, group: list[Deployment], public: str) -> list[Deployment]:
        """The deployments that can serve this request, in the order to try them."""
        tokens: dict[str, int] = {}
        for dep in group:
            known = self._prompt_size_bound(quote, dep)
            tokens[dep.id] = known if known is not None else await self._prompt_count(quote, dep)
        request = quote.request
        return self.router.candidates(
            request, group, self.table.strategy(public), lambda dep: tokens[dep.id],
            (request.output_limit or self.billing.default_output_estimate) * quote.choices,
        )

    async def answered(
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
        ticket.answered_by(dep, attempts)
        status = "cache_hit" if cached is not None else "completed"

        def attach(cost: int, metered: TokenUsage) -> Sequence[tuple[Table, dict[str, Any]]]:
            _set_cost(body, cost)
            return record(body, cost) if record is not None else ()

        cost, _, _ = await self._settle(ticket, body.get("usage"), body.get("service_tier"), lambda: answer_text(body), status,
                                     free=cached is not None, attach=attach, replace_usage=body)
        if key and cached is None and ttl:
            await self.cache.put(key, orjson.dumps(_without_cost(body)), ttl)
        headers = {"x-switchyard-cost-usd": usd(cost)}
        if key:
            headers["x-switchyard-cache"] = "hit" if cached is not None else "miss"
        return Outcome(dep, body=body, headers=headers, attempts=attempts)

    async def _streamed(
        self, ticket: Ticket, candidates: list[Deployment], call: Callable[[Deployment], ChatCall], public: str,
    ) -> Outcome:
        """A stream from the first candidate that sends its first chunk; relayed and billed after."""

        async def stream_at(dep: Deployment) -> tuple[AsyncIterator[list[bytes]], list[bytes]]:
            await self.deployment_limits(dep, ticket.rate_tokens)
            return await _open_stream(dep, call(dep))

        try:
            dep, (stream, first), attempts = await first_answer(candidates, self.router, stream_at)
        except BaseException:
            await self.billing.abandon(ticket)
            raise
        ticket.answered_by(dep, attempts)
        frames = self._relay(ticket, first, stream, _ModelRename.of(first, public, dep))

        async def finish() -> None:
            await frames.aclose()  # runs the relay's own cleanup if it started
            if not ticket.settled:
                await stream.aclose()  # type: ignore[attr-defined]
                await self._settle(ticket, None, None, "", "cancelled")

        return Outcome(dep, frames=frames, finish=finish, attempts=attempts)

    async def deployment_limits(self, dep: Deployment, tokens: int) -> None:
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
    def _prompt_size_bound(quote: Quote, dep: Deployment) -> int | None:
        """Prompt size for the context check when cheap bounds decide it: the byte bound when it
        proves a fit, a floor when that proves an overflow; None when only a count can tell."""
        request = quote.request
        bound = quote.text_bound + quote.image_tokens(dep.spec)
        window = dep.context_window
        if bound + (request.output_limit or 0) <= window:
            return min(bound, window - 1)
        floor = quote.at(dep).input_floor  # rejects a prompt far over the window without counting it
        return floor if floor >= window else None

    @staticmethod
    async def _prompt_count(quote: Quote, dep: Deployment) -> int:
        """The exact count, as the deployment counts if it can, else sliced and stopping just past the window."""
        request = quote.request
        exact = await dep.provider.count_prompt_tokens(request)
        if exact is None:
            exact = await acount_prompt_tokens(request, stop_after=dep.context_window)
        return exact + quote.image_tokens(dep.spec)

    async def _settle(
        self, ticket: Ticket, usage: Any, service_tier: Any, delivered: str | Callable[[], str], status: str,
        free: bool = False,
        attach: Callable[[int, TokenUsage], Sequence[tuple[Table, dict[str, Any]]]] | None = None,
        replace_usage: dict[str, Any] | None = None, error_code: str | None = None,
    ) -> tuple[int, TokenUsage, bool]:
        """Meter (the upstream's report, or our own count of the prompt and of what was delivered
        when it gave none or zeros), then bill. `delivered`: the text the client got, or a
        function giving it (read only when the report is missing or says zero output). `replace_usage`: the answer (a chat completion or
        a response) whose usage becomes our count when we counted, so the client sees what it was
        billed for. Returns the cost, the usage billed and whether it is our own count."""
        metered = from_openai(usage)
        images = image_tokens_reported(usage)
        if images is None:
            images = ticket.estimate.image_tokens
        text = ""
        if metered is None or metered.output_tokens == 0:  # only then does the text matter
            text = delivered() if callable(delivered) else delivered
        ours = unreported(metered, text)
        if ours:
            # Counted as the upstream counts, where it says how (its tokenizer and chat template).
            provider = ticket.deployment.provider
            prompt, output = await asyncio.gather(provider.count_prompt_tokens(ticket.request),
                                                  provider.count_output_tokens(text))
            metered = await counted(ticket.request, text, images, prompt, output)
            if replace_usage is not None:
                is_response = str(replace_usage.get("object")).startswith("response")  # a response or a compaction
                replace_usage["usage"] = usage_of(metered) if is_response else _usage_object(metered)
        assert metered is not None
        cost = await self.billing.settle(
            ticket, metered, status=status, service_tier=service_tier, image_tokens=images, free=free,
            attach=(lambda cost: attach(cost, metered)) if attach is not None else None,
            source="counted" if ours else "upstream", error_code=error_code)
        _log(ticket, metered, cost, status)
        return cost, metered, ours

    async def _relay(
        self, ticket: Ticket, first: list[bytes], stream: AsyncIterator[list[bytes]], rename: _ModelRename | None,
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
                    if rename is not None:
                        chunk = rename(chunk)
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
            cost, metered, ours = await self._settle(ticket, usage_obj, tier, lambda: _delivered_text(sent), status)
            tail = []
            if want_usage:
                if usage_chunk is None or ours:
                    # The upstream reported none (or zeros): send our own count.
                    usage_chunk = {**_head(sent[0] if sent else first[0]), "choices": [], "usage": _usage_object(metered)}
                usage_chunk["usage"]["cost"] = usd_number(cost)
                tail.append(data_frame(orjson.dumps(usage_chunk)))
            tail.append(DONE)
            yield b"".join(tail)
        except GatewayError as exc:
            # Headers are gone: bill what was delivered, then an `error` event (the SDK raises APIError).
            status = "partial"
            await self._settle(ticket, None, tier, _delivered_text(sent), status, error_code=exc.code)
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

            def attach(cost: int, metered: TokenUsage) -> Sequence[tuple[Table, dict[str, Any]]]:
                _set_cost(response, cost)
                return keep(response, cost) if response.get("status") != "failed" else ()

            status = "completed" if final["type"] != "response.failed" else "partial"
            await self._settle(ticket, response.get("usage"), response.get("service_tier"), source.delivered,
                               status, attach=attach, replace_usage=response)
            yield _event_frame(final)
        except GatewayError as exc:
            # Headers are gone: bill what was delivered, then close the stream as failed.
            if not ticket.settled:
                await self._settle(ticket, None, None, source.delivered(), "partial", error_code=exc.code)
            yield b"".join(_event_frame(e) for e in source.failed(exc))
        finally:
            await source.aclose()
            if not ticket.settled:
                task = asyncio.get_running_loop().create_task(
                    self._settle(ticket, None, None, source.delivered(), "cancelled"))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
                await asyncio.shield(task)


def prompt_bytes_estimate(request: ChatRequest) -> int:
    """Prompt tokens by OpenAI's four-bytes rule (smart routing's size rules)."""
    return prompt_bytes_bound(request) // BYTES_PER_TOKEN_ESTIMATE


def _at_most(count: int, limit: int, param: str) -> None:
    if count > limit:
        raise invalid_request(f"Invalid '{param}': {count:,} items, at most {limit:,} are allowed in one request.",
                              param=param, code="array_above_max_length")


def new_trace(raw: Any, principal: Principal, request_id: str, endpoint: str, batch: bool) -> Trace:
    model = raw.get("model") if isinstance(raw, dict) else None
    stream = bool(raw.get("stream")) if isinstance(raw, dict) else False
    return Trace(request_id, principal, endpoint, model if isinstance(model, str) else "", stream, batch)


def _unviewed_bytes(conversation: list[dict[str, Any]]) -> int:
    """Bytes of Responses items with no place in the chat view (reasoning, hosted tool calls)."""
    shown = ("message", "function_call", "function_call_output", None)
    return sum(len(orjson.dumps(item)) for item in conversation if item.get("type") not in shown)


class _ModelRename:
    """Puts the public model name in every chunk of a stream whose upstream names its own model id."""

    __slots__ = ("_pairs",)

    def __init__(self, pairs: list[tuple[bytes, bytes]]) -> None:
        self._pairs = pairs

    @classmethod
    def of(cls, first: list[bytes], public: str, dep: Deployment) -> _ModelRename | None:
        if not first:
            return None
        name = orjson.dumps(public)
        if b'"model":' + name in first[0] or b'"model": ' + name in first[0]:
            return None  # the usual case, told without parsing the chunk
        try:
            returned = orjson.loads(first[0]).get("model")
        except (orjson.JSONDecodeError, AttributeError):
            return None
        if not isinstance(returned, str) or public_model_name(returned, public, dep.spec) == returned:
            return None
        old, new = orjson.dumps(returned), orjson.dumps(public)
        return cls([(b'"model":' + old, b'"model":' + new), (b'"model": ' + old, b'"model": ' + new)])

    def __call__(self, chunk: bytes) -> bytes:
        for old, new in self._pairs:
            chunk = chunk.replace(old, new)
        return chunk


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


def route_headers(dep: Deployment, attempts: int, decision: Decision | None) -> dict[str, str]:
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
