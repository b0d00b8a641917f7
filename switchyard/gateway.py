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
from switchyard.observability import logs, tracing
from switchyard.accounts.records import Principal
from switchyard.config import ServerLimits
from switchyard.limits import Limits, Scope
from switchyard.metering.cost import TokenUsage, usd
from switchyard.metering.estimate import BYTES_PER_TOKEN_ESTIMATE, Quote
from switchyard.metering.tokens import acount_prompt_tokens, prompt_bytes_bound
from switchyard.metering.units import Metered
from switchyard.metering.usage import counted, from_openai, image_tokens_reported, unreported
from switchyard.responses.store import ResponseStore
from switchyard.responses.turns import FileReader, usage_of
from switchyard.routing.cache import ResponseCache
from switchyard.routing.fallback import first_answer
from switchyard.routing.fit import check_endpoint, serving
from switchyard.routing.router import Router
from switchyard.routing.smart import Decision
from switchyard.routing.table import Deployment, ModelTable
from switchyard.wire.answers import answer_text, public_model_name
from switchyard.wire.chat import ChatRequest, parse_chat_request
from switchyard.wire.errors import GatewayError, invalid_request, permission_denied
from switchyard.wire.sse import DONE, LastFrame, data_frame, event_frame

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
    media_type: str | None = None  # of streamed audio, or of `content`
    content: bytes | None = None  # a body that is not JSON (a transcript as text, SRT or WebVTT)


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
class Plan:
    """A request resolved, authorised and sized: the model it resolved to, where it may go."""

    public: str
    decision: Decision | None
    quote: Quote
    candidates: list[Deployment]


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

    # ---- plan and admit: the steps before any upstream ------------------------------------

    def check_size(self, request: ChatRequest) -> None:
        at_most(len(request.messages), self.limits.max_messages, "messages")

    async def plan(self, request: ChatRequest, trace: Trace, endpoint: str, *also: str, extra_bytes: int = 0,
                   serving_only: bool = False) -> Plan:
        """Resolve the model (a smart-routing tier first), authorise the key, check the model
        serves `endpoint` (or one of `also`, translated), size the request at each deployment
        and order the ones that fit. `extra_bytes`: input the upstream reads beyond the chat
        view's texts. `serving_only`: keep only deployments whose entry and provider serve `endpoint`."""
        public, group, decision = self.resolve(request, trace.request_id)
        if not trace.principal.may_use(public):
            raise permission_denied(f"This API key is not allowed to use model `{request.model}`.")
        if serving_only:
            group = serving(request.model, group, endpoint)
        else:
            check_endpoint(request.model, group, endpoint, *also)
        quote = Quote(request, self.billing.reserve_cap(trace.principal), extra_bytes=extra_bytes)
        return Plan(public, decision, quote, await self.candidates(quote, group, public))

    async def admit(self, trace: Trace, plan: Plan, worst: Callable[[Deployment], int] | None = None) -> Admitted:
        """Rate limits and the hold: the request may now reach an upstream."""
        with tracing.span("switchyard.admit", {"gen_ai.request.model": plan.public}):
            ticket, limit_headers = await self.billing.admit(
                trace.request_id, trace.principal, plan.public, plan.quote, plan.candidates, endpoint=trace.endpoint,
                batch=trace.batch, worst=worst)
        trace.ticket, trace.limit_headers = ticket, limit_headers
        return Admitted(plan.public, plan.decision, plan.candidates, ticket, limit_headers)

    async def admit_inputs(self, trace: Trace, model: str, texts: list[str], kind: str, path: str,
                           extra_bytes: int = 0, worst: Callable[[Deployment], int] | None = None,
                           stream: bool = False) -> Admitted:
        """Resolve, authorise and admit a request that is not a chat turn (embeddings,
        moderations, images, audio): served by the model's deployments whose catalog lists
        `kind`, held at the inputs' byte bound, or at `worst` (list-price nano-dollars at a
        deployment) for endpoints that bill in units of their own."""
        principal, request_id = trace.principal, trace.request_id
        messages = [{"role": "user", "content": t} for t in texts] or [{"role": "user", "content": "."}]
        request = parse_chat_request({"model": model, "messages": messages, "max_completion_tokens": 1, "stream": stream})
        public, group, decision = self.resolve(request, request_id)
        if not principal.may_use(public):
            raise permission_denied(f"This API key is not allowed to use model `{model}`.")
        group = serving(model, group, kind)
        quote = Quote(request, self.billing.reserve_cap(principal), extra_bytes=extra_bytes)
        candidates = self.router.candidates(request, group, self.table.strategy(public), lambda dep: 1, 0)
        # Quoted before any limit is counted: a quote also checks the request against each model.
        holds = {dep.id: worst(dep) for dep in candidates} if worst is not None else None
        return await self.admit(trace, Plan(public, decision, quote, candidates),
                                worst=(lambda dep: holds[dep.id]) if holds is not None else None)

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

    async def candidates(self, quote: Quote, group: list[Deployment], public: str) -> list[Deployment]:
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
        meter: Callable[[dict[str, Any], Deployment], Metered] | None = None,
        usage_of: Callable[[dict[str, Any]], Any] | None = None, text_of: Callable[[dict[str, Any]], str] | None = None,
    ) -> Outcome:
        """A whole answer: from the response cache (opt-in) or the first candidate that gives one.
        The answer is the endpoint's object (a chat completion or a response) with its usage;
        `meter` reads what a media answer used (in the catalog's units) instead; `usage_of` and
        `text_of` read the usage (as chat usage) and text of an answer in another API's shape."""
        cached = await self.cache.get(key) if key else None
        try:
            if cached is not None:
                dep, body, attempts = candidates[0], orjson.loads(cached), 0
            else:
                dep, body, attempts = await first_answer(candidates, self.router, answer_at,
                                                         operation=tracing.operation_of(ticket.endpoint))
        except BaseException:
            await self.billing.abandon(ticket)
            raise
        ticket.answered_by(dep, attempts)
        status = "cache_hit" if cached is not None else "completed"

        def attach(cost: int, metered: TokenUsage) -> Sequence[tuple[Table, dict[str, Any]]]:
            set_cost(body, cost)
            return record(body, cost) if record is not None else ()

        if meter is None:
            usage = usage_of(body) if usage_of is not None else body.get("usage")
            text = text_of or answer_text
            cost, _, _ = await self.settle(ticket, usage, body.get("service_tier"), lambda: text(body), status,
                                           free=cached is not None, attach=attach,
                                           replace_usage=body if usage_of is None else None)
        else:
            cost = await self.settle_metered(ticket, meter(body, dep), status)
            set_cost(body, cost)
        if key and cached is None and ttl:
            await self.cache.put(key, orjson.dumps(_without_cost(body)), ttl)
        headers = {"x-switchyard-cost-usd": usd(cost)}
        if key:
            headers["x-switchyard-cache"] = "hit" if cached is not None else "miss"
        return Outcome(dep, body=body, headers=headers, attempts=attempts)

    async def streamed(
        self, ticket: Ticket, candidates: list[Deployment], start: Callable[[Deployment], AsyncIterator[list[bytes]]],
        public: str,
    ) -> Outcome:
        """A stream of chunks (chat completions, or legacy completions) from the first candidate
        that sends its first chunk; relayed and billed after."""

        async def stream_at(dep: Deployment) -> tuple[AsyncIterator[list[bytes]], list[bytes]]:
            await self.deployment_limits(dep, ticket.rate_tokens)
            stream = start(dep)
            return stream, await first_batch(dep, stream)

        dep, (stream, first), attempts = await self.first_stream(ticket, candidates, stream_at)
        return self.chunk_stream(ticket, dep, stream, first, attempts, public)

    def chunk_stream(self, ticket: Ticket, dep: Deployment, stream: AsyncIterator[list[bytes]], first: list[bytes],
                     attempts: int, public: str) -> Outcome:
        """An opened stream of chunks, relayed as SSE and billed before its last frame."""
        frames = self._relay(ticket, first, stream, _ModelRename.of(first, public, dep))
        return self.stream_outcome(ticket, dep, frames, stream, attempts, metered=False)

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

    async def settle(
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

    async def first_stream(
        self, ticket: Ticket, candidates: list[Deployment], open_at: Callable[[Deployment], Awaitable[Any]],
    ) -> tuple[Deployment, Any, int]:
        """The first candidate whose stream opens (its first events in); none: the hold is released."""
        try:
            dep, opened, attempts = await first_answer(candidates, self.router, open_at,
                                                         operation=tracing.operation_of(ticket.endpoint))
        except BaseException:
            await self.billing.abandon(ticket)
            raise
        ticket.answered_by(dep, attempts)
        return dep, opened, attempts

    def stream_outcome(
        self, ticket: Ticket, dep: Deployment, frames: AsyncGenerator[bytes, None], source: Any, attempts: int,
        metered: bool = True,
    ) -> Outcome:
        """A stream's outcome: a client that leaves before its first frame pays nothing (the
        frames' own cleanup bills what was sent once they have started). `metered`: billed in
        the catalog's units (media), else in tokens."""
        async def finish() -> None:
            await frames.aclose()
            if not ticket.settled:
                await source.aclose()
                if metered:
                    await self.settle_metered(ticket, Metered(TokenUsage(0)), "cancelled")
                else:
                    await self.settle(ticket, None, None, "", "cancelled")

        return Outcome(dep, frames=frames, finish=finish, attempts=attempts)

    async def settle_metered(self, ticket: Ticket, metered: Metered, status: str, error_code: str | None = None) -> int:
        """Bill a media request's usage in the catalog's units; returns the cost once committed."""
        cost = await self.billing.settle(ticket, metered.usage, status=status, service_tier=None,
                                         image_tokens=metered.image_tokens, units=metered.units, error_code=error_code)
        _log(ticket, metered.usage, cost, status)
        return cost

    def shielded_settle(self, ticket: Ticket, settle: Awaitable[Any]) -> Awaitable[Any]:
        """A settlement that completes even if the task waiting for it is cancelled (a client left)."""
        task = asyncio.get_running_loop().create_task(settle)  # type: ignore[arg-type]
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return asyncio.shield(task)

    async def media_stream(
        self, ticket: Ticket, candidates: list[Deployment], start: Callable[[Deployment], AsyncIterator[list[dict[str, Any]]]],
        final: Callable[[dict[str, Any]], bool], meter: Callable[[Deployment, list[dict[str, Any]]], Metered],
    ) -> Outcome:
        """A media endpoint's event stream (images, transcripts) from the first candidate whose
        first events arrive; `meter` bills the final events at the deployment that answered."""
        async def open_at(dep: Deployment) -> tuple[AsyncIterator[list[dict[str, Any]]], list[dict[str, Any]]]:
            await self.deployment_limits(dep, ticket.rate_tokens)
            events = start(dep)
            return events, await first_batch(dep, events)

        dep, (events, first), attempts = await self.first_stream(ticket, candidates, open_at)
        frames = self.metered_events(ticket, events, first, final, lambda finals: meter(dep, finals))
        return self.stream_outcome(ticket, dep, frames, events, attempts)

    async def metered_events(
        self, ticket: Ticket, source: AsyncIterator[list[dict[str, Any]]], first: list[dict[str, Any]],
        final: Callable[[dict[str, Any]], bool], meter: Callable[[list[dict[str, Any]]], Metered],
    ) -> AsyncGenerator[bytes, None]:
        """Relay a media stream's events (images, transcripts) as SSE. Events for which `final`
        holds carry usage: `meter` bills them all when the stream ends, and the last one is sent
        only once that bill is committed. A failure mid-stream bills what was reported so far."""
        finals: list[dict[str, Any]] = []
        held: dict[str, Any] | None = None
        try:
            batch: list[dict[str, Any]] | None = first
            while batch is not None:
                out = []
                for event in batch:
                    if held is not None:
                        out.append(_media_frame(held))
                        held = None
                    if final(event):
                        finals.append(event)
                        held = event
                        continue
                    out.append(_media_frame(event))
                if out:
                    yield b"".join(out)
                batch = await anext(source, None)
            cost = await self.settle_metered(ticket, meter(finals), "completed")
            if held is not None:
                set_cost(held, cost)
                yield LastFrame(_media_frame(held))
        except GatewayError as exc:
            if not ticket.settled:
                await self.settle_metered(ticket, meter(finals), "partial", error_code=exc.code)
            yield event_frame("error", orjson.dumps({"type": "error", **exc.to_dict()}))
        finally:
            await source.aclose()  # type: ignore[attr-defined]
            if not ticket.settled:
                await self.shielded_settle(ticket, self.settle_metered(ticket, meter(finals), "cancelled"))

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
            cost, metered, ours = await self.settle(ticket, usage_obj, tier, lambda: _delivered_text(sent), status)
            tail = []
            if want_usage:
                if usage_chunk is None or ours:
                    # The upstream reported none (or zeros): send our own count.
                    usage_chunk = {**_head(sent[0] if sent else first[0]), "choices": [], "usage": _usage_object(metered)}
                usage_chunk["usage"]["cost"] = usd_number(cost)
                tail.append(data_frame(orjson.dumps(usage_chunk)))
            tail.append(DONE)
            yield LastFrame(b"".join(tail))
        except GatewayError as exc:
            # Headers are gone: bill what was delivered, then an `error` event (the SDK raises APIError).
            # (Unless the failure was the bill itself: then nothing is billed, and the client is told.)
            status = "partial"
            if not ticket.settled:
                await self.settle(ticket, None, tier, _delivered_text(sent), status, error_code=exc.code)
            yield LastFrame(data_frame(exc.to_json()))
        finally:
            await stream.aclose()
            if not ticket.settled:
                # The client went away: bill what it was sent. Shielded, so the bill is made even if
                # this task is cancelled while it waits.
                task = asyncio.get_running_loop().create_task(
                    self.settle(ticket, None, tier, _delivered_text(sent), "cancelled"))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
                await asyncio.shield(task)

def prompt_bytes_estimate(request: ChatRequest) -> int:
    """Prompt tokens by OpenAI's four-bytes rule (smart routing's size rules)."""
    return prompt_bytes_bound(request) // BYTES_PER_TOKEN_ESTIMATE


def at_most(count: int, limit: int, param: str) -> None:
    if count > limit:
        raise invalid_request(f"Invalid '{param}': {count:,} items, at most {limit:,} are allowed in one request.",
                              param=param, code="array_above_max_length")


def new_trace(raw: Any, principal: Principal, request_id: str, endpoint: str, batch: bool) -> Trace:
    model = raw.get("model") if isinstance(raw, dict) else None
    stream = bool(raw.get("stream")) if isinstance(raw, dict) else False
    return Trace(request_id, principal, endpoint, model if isinstance(model, str) else "", stream, batch)


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


async def first_batch(dep: Deployment, stream: AsyncIterator[Any]) -> Any:
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


def _media_frame(event: dict[str, Any]) -> bytes:
    return event_frame(str(event.get("type") or "message"), orjson.dumps(event))


def set_cost(body: dict[str, Any], cost: int) -> None:
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
            if isinstance(choice.get("text"), str):  # a legacy completion's chunk
                parts.append(choice["text"])
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str):
                parts.append(delta["content"])
            for call in delta.get("tool_calls") or ():
                fn = call.get("function") or {}
                parts.append((fn.get("name") or "") + (fn.get("arguments") or ""))
    return "".join(parts)


def _log(ticket: Ticket, usage: Any, cost: int, status: str) -> None:
    if tracing.traced():
        tracing.on_request({"gen_ai.request.model": ticket.public_model,
                            "gen_ai.response.model": ticket.deployment.config.model,
                            "gen_ai.usage.input_tokens": usage.input_tokens, "gen_ai.usage.output_tokens": usage.output_tokens,
                            "switchyard.deployment": ticket.deployment.id, "switchyard.cost_usd": usd_number(cost)})
    if logs.json_lines():  # the request's one JSON line carries it
        logs.add(org_id=ticket.principal.org.id, deployment=ticket.deployment.id, stream=bool(ticket.request.stream),
                 billing=status, input_tokens=usage.input_tokens, cached_tokens=usage.cached_input_tokens,
                 output_tokens=usage.output_tokens, reasoning_tokens=usage.reasoning_tokens, cost_usd=usd_number(cost))
        return
    if log.isEnabledFor(logging.INFO):
        log.info(
            "%s key=%s org=%s model=%s deployment=%s stream=%s status=%s in=%d cached=%d out=%d cost=%s",
            ticket.request_id, ticket.principal.key_id, ticket.principal.org.id, ticket.public_model,
            ticket.deployment.id, bool(ticket.request.stream), status, usage.input_tokens,
            usage.cached_input_tokens, usage.output_tokens, usd(cost),
        )
