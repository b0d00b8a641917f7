"""Admission and settlement of one request: rate limits, the worst-case hold, the exact bill.

`admit` runs before any upstream is called and refuses with 429 (`rate_limit_exceeded` or
`insufficient_quota`). `settle` prices what was used, commits it durably, and drops the hold;
whatever an upstream reports, a bill never exceeds its hold. `abandon` is for requests that
never reached an upstream (or got nothing back): nothing is billed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy import Table

from switchyard.accounts.funds import Funds, Hold
from switchyard.accounts.ledger import LedgerWriter, Settlement
from switchyard.accounts.periods import Periods
from switchyard.accounts.shared_funds import SharedFunds
from switchyard.accounts.records import Principal
from switchyard.catalog import ModelSpec
from switchyard.limits import Limits, RateLimiter, Scope, Tier
from switchyard.limits.limiter import Admission
from switchyard.limits.redis_limiter import RedisRateLimiter
from switchyard.metering.cost import TokenUsage, cost_nanos
from switchyard.metering.estimate import Estimate, Quote
from switchyard.metering.units import media_cost_nanos
from switchyard.observability import tracing
from switchyard.metering.usage import within_bounds
from switchyard.routing.table import Deployment
from switchyard.store.redis_client import ScriptBatch
from switchyard.store.redis_pipe import RedisPipe
from switchyard.store.script_chain import ScriptCall, run_chained
from switchyard.wire.chat import ChatRequest
from switchyard.wire.errors import GatewayError

log = logging.getLogger("switchyard.billing")

_STANDARD = ("default", "auto", None)


@dataclass(slots=True)
class Ticket:
    request_id: str
    principal: Principal
    public_model: str
    deployment: Deployment  # the first candidate; settlement sets the one that answered
    quote: Quote
    endpoint: str
    hold: Hold
    scopes: list[Scope]
    rate_tokens: int
    started: float = field(default_factory=time.perf_counter)
    settled: bool = False  # billed or abandoned: the hold is dealt with
    billed: bool = False  # a usage record and its ledger entries exist
    batch: bool = False  # a Batch API line: its own rate-limit pool, priced at the catalog's batch tier
    attempts: int | None = None  # deployments tried before one answered
    first_byte: float | None = None  # perf_counter when that answer (or its first chunk) arrived

    def answered_by(self, deployment: Deployment, attempts: int) -> None:
        """The deployment that answered, after how many attempts: billed at its prices."""
        self.deployment, self.attempts, self.first_byte = deployment, attempts, time.perf_counter()

    @property
    def request(self) -> ChatRequest:
        return self.quote.request

    @property
    def estimate(self) -> Estimate:
        """The bounds at the deployment that answers (or the first candidate, before one has)."""
        return self.quote.at(self.deployment)


def billed_tier(tier: object, spec: ModelSpec) -> str | None:
    """The service tier to price at: one the catalog prices, else standard."""
    return tier if isinstance(tier, str) and tier in spec.multipliers else None


class Billing:
    def __init__(
        self,
        funds: Funds | SharedFunds,
        limiter: RateLimiter,
        tiers: dict[str, Tier],
        writer: LedgerWriter,
        default_output_estimate: int = 1024,
        max_reserve_tokens: int | None = None,
        price_groups: Mapping[str, Mapping[str, Decimal]] | None = None,
        periods: Periods | None = None,
        redis: RedisPipe | None = None,
    ) -> None:
        """`redis`: the worker's lean Redis client when `funds` and `limiter` live in Redis (their
        settlement calls then go in one round trip)."""
        self.funds = funds
        self.limiter = limiter
        self.tiers = tiers
        self.writer = writer
        self.default_output_estimate = default_output_estimate
        self.max_reserve_tokens = max_reserve_tokens  # the default reservation cap (config)
        self.price_groups = price_groups or {}
        self.periods = periods or Periods()  # budget periods, in the configured time zone
        self.anomalies = 0  # bills this worker capped at their hold (see `settle`)
        self.redis = redis

    def multiplier(self, principal: Principal, model: str) -> Decimal:
        """What this organisation pays of the list price of `model` (a public name). In memory."""
        return self.factor(principal.org.price_multiplier, principal.org.price_group, model)

    def factor(self, org_multiplier: Decimal, price_group: str | None, model: str) -> Decimal:
        """An organisation's own multiplier times its price group's factor for the model (or the
        group's `*`, else 1)."""
        group = self.price_groups.get(price_group) if price_group else None
        if not group:
            return org_multiplier
        return org_multiplier * group.get(model, group.get("*", Decimal(1)))

    def reserve_cap(self, principal: Principal) -> int | None:
        """The output reserved for a request without its own limit: the key's cap, else its
        organisation's, else the configured default; None reserves the model's full max output."""
        for cap in (principal.key.max_reserve_tokens, principal.org.max_reserve_tokens, self.max_reserve_tokens):
            if cap is not None:
                return cap
        return None

    def scopes(self, principal: Principal, batch: bool = False) -> list[Scope]:
        org, key = principal.org, principal.key
        tier = self.tiers.get(org.tier)
        if batch:
            # Batch lines have their own pool: they never eat the org's interactive limits.
            return [Scope(f"batch:org:{org.id}", tier.batch_limits if tier else Limits(None, None))]
        base = tier.limits if tier else Limits(None, None)
        org_limits = Limits(org.rpm_limit if org.rpm_limit is not None else base.rpm,
                            org.tpm_limit if org.tpm_limit is not None else base.tpm)
        scopes = [Scope(f"org:{org.id}", org_limits)]
        if key.rpm_limit is not None or key.tpm_limit is not None:
            scopes.append(Scope(f"key:{key.id}", Limits(key.rpm_limit, key.tpm_limit)))
        return scopes

    async def admit(
        self, request_id: str, principal: Principal, public_model: str, quote: Quote,
        candidates: Sequence[Deployment], endpoint: str = "/v1/chat/completions", batch: bool = False,
        worst: Callable[[Deployment], int] | None = None,
    ) -> tuple[Ticket, dict[str, str]]:
        """Rate-limit and reserve; the hold covers the dearest candidate, since any may answer.
        `worst`: the most the request can cost at a deployment, at list price, for endpoints
        that bill in units of their own (images, audio); default: the quote's token bounds."""
        dep = candidates[0]
        request = quote.request
        est = quote.at(dep)
        scopes = self.scopes(principal, batch)
        # As OpenAI counts: the prompt once, the output limit of every choice.
        per_choice = request.output_limit or min(self.default_output_estimate, est.output_limit)
        rate_tokens = est.input_estimate + per_choice * est.choices
        multiplier = self.multiplier(principal, public_model)
        if worst is None:
            most = max(self.worst_case(quote, multiplier, d, batch) for d in candidates)
        else:
            most = max(_multiplied(worst(d), multiplier) for d in candidates)
        key_period, org_period, ttl = self.budget_periods(principal)
        limit_call = self.limiter.admit_call(scopes, rate_tokens) \
            if self.redis is not None and isinstance(self.limiter, RedisRateLimiter) else None
        hold_call, held = self.funds.reserve_call(principal, most, key_period, org_period, ttl, request_id) \
            if limit_call is not None and isinstance(self.funds, SharedFunds) else (None, None)
        if limit_call is not None and hold_call is not None and held is not None:
            # Both in Redis: one script, one round trip (limits first; a refused hold gives the tokens back).
            admission, hold = await self._admit_at_once(limit_call, hold_call, held, rate_tokens)
        else:
            admission = await self._admit_rate(scopes, rate_tokens)
            try:
                hold = await self.funds.reserve(principal, most, key_period, org_period, ttl, request_id)
            except GatewayError as exc:
                await self._correct(scopes, rate_tokens, 0)
                exc.headers.update(admission.headers)
                raise
            except RedisError as exc:
                log.error("shared funds unavailable: %s", exc)
                await self._correct(scopes, rate_tokens, 0)
                raise _shared_state_unavailable() from None
        ticket = Ticket(request_id, principal, public_model, dep, quote, endpoint, hold, scopes, rate_tokens,
                        batch=batch)
        return ticket, dict(admission.headers)

    async def _admit_rate(self, scopes: list[Scope], rate_tokens: int) -> Admission:
        try:
            admission = await self.limiter.admit(scopes, rate_tokens)
        except (RuntimeError, RedisError) as exc:
            log.error("rate limiter unavailable: %s", exc)
            raise _shared_state_unavailable() from None
        _raise_if_limited(admission)
        return admission

    async def _admit_at_once(self, limit_call: tuple[ScriptCall, list[Any], list[Scope]], hold_call: ScriptCall,
                             held: Callable[[Any], Hold], rate_tokens: int) -> tuple[Admission, Hold]:
        assert isinstance(self.limiter, RedisRateLimiter) and self.redis is not None
        call, undo, limited = limit_call
        try:
            limits_reply, hold_reply = await run_chained(self.redis, call, undo, hold_call)
        except RedisError as exc:
            log.error("rate limits and money holds unavailable: %s", exc)
            raise _shared_state_unavailable() from None
        admission = self.limiter.admission(limited, rate_tokens, limits_reply)
        _raise_if_limited(admission)
        try:
            return admission, held(hold_reply)
        except GatewayError as exc:
            exc.headers.update(admission.headers)
            raise

    def budget_periods(self, principal: Principal) -> tuple[int | None, int | None, int]:
        """The current periods of the key's and the organisation's budgets that reset, and how
        long a shared counter for them must live (past the later one's end, a day's margin)."""
        key, org = principal.key, principal.org
        key_period = self.periods.start(key.budget_period) if key.budget_nanos is not None else None
        org_period = self.periods.start(org.budget_period) if org.budget_nanos is not None else None
        if key_period is None and org_period is None:
            return None, None, 0
        ends = [self.periods.end(p) for p, s in ((key.budget_period, key_period), (org.budget_period, org_period))
                if p is not None and s is not None]
        now = int(self.periods.now() * 1000)
        return key_period, org_period, (max(ends) - now + 86_400_000) if ends else 0

    @staticmethod
    def worst_case(quote: Quote, multiplier: Decimal, dep: Deployment, batch: bool = False) -> int:
        """The most this request can cost at `dep`: every bound reached, input at its dearest rate
        (a provider that bills cache writes may bill the whole prompt as one)."""
        est = quote.at(dep)
        prices = dep.spec.prices
        writes = est.input_bound if prices.cache_write is not None and prices.cache_write > prices.input else 0
        usage = TokenUsage(input_tokens=est.input_bound, cache_write_tokens=writes, output_tokens=est.output_bound)
        return cost_nanos(
            prices, usage, service_tier=billed_tier("batch" if batch else quote.request.service_tier, dep.spec),
            tier_multipliers=dep.spec.multipliers, price_multiplier=multiplier,
        )

    def price(self, ticket: Ticket, usage: TokenUsage, service_tier: object) -> int:
        if ticket.batch:
            service_tier = "batch"
        spec = ticket.deployment.spec
        return cost_nanos(
            spec.prices, usage, service_tier=billed_tier(service_tier, spec), tier_multipliers=spec.multipliers,
            price_multiplier=self.multiplier(ticket.principal, ticket.public_model),
        )

    async def settle(
        self, ticket: Ticket, usage: TokenUsage, *, status: str, service_tier: object, image_tokens: int,
        free: bool = False, attach: Callable[[int], Sequence[tuple[Table, dict[str, Any]]]] | None = None,
        source: str = "upstream", error_code: str | None = None, units: Mapping[str, int] | None = None,
    ) -> int:
        """Bill exactly once; returns the cost in nano-dollars once it is committed.

        The usage billed is at most what admission reserved for the deployment that answered
        (input bound, output limit × n), and the cost at most the hold: an upstream that reports
        more is logged and recorded as an anomaly, and the answer still goes out.
        `free`: answered from the response cache; no upstream was paid, so the usage is
        recorded at zero cost. `attach(cost)`: rows committed in the same transaction as the
        bill (a stored response, a batch line's result). `source`: "counted" when the usage is
        our own count because the upstream reported none. `units`: a media endpoint's quantities
        (audio milliseconds, images, image tokens...), priced with the tokens by the catalog's
        `units`; such a bill is bounded by its hold alone."""
        if ticket.settled:
            raise RuntimeError(f"request {ticket.request_id} settled twice")
        ticket.settled = ticket.billed = True
        if units is None:
            bounds = ticket.estimate
            usage, anomaly = within_bounds(usage, bounds.input_bound, bounds.output_bound)
            cost = 0 if free else self.price(ticket, usage, service_tier)
        else:
            anomaly = None
            cost = 0 if free else media_cost_nanos(ticket.deployment.spec, usage, units,
                                                   self.multiplier(ticket.principal, ticket.public_model))
        if cost > ticket.hold.amount_nanos:
            over = f"cost {cost} > hold {ticket.hold.amount_nanos} nanos"
            anomaly = f"{anomaly}; {over}" if anomaly else over
            cost = ticket.hold.amount_nanos
        if anomaly:
            self.anomalies += 1
            log.warning("upstream anomaly on %s (deployment %s): %s; billed at the bound",
                        ticket.request_id, ticket.deployment.id, anomaly)
        if ticket.batch:
            service_tier = "batch"
        principal = ticket.principal
        settlement = Settlement(
            request_id=ticket.request_id, org_id=principal.org.id, key_id=principal.key.id,
            key_in_db=principal.key.id.startswith("key_"),  # keys from config are not rows
            reserved_nanos=ticket.hold.amount_nanos, cost_nanos=cost, model=ticket.public_model,
            deployment=ticket.deployment.id, endpoint=ticket.endpoint, status=status,
            stream=bool(ticket.request.stream), service_tier=str(billed_tier(service_tier, ticket.deployment.spec) or "default"),
            input_tokens=usage.input_tokens, cached_tokens=usage.cached_input_tokens,
            cache_write_tokens=usage.cache_write_tokens, output_tokens=usage.output_tokens,
            reasoning_tokens=usage.reasoning_tokens, image_tokens=min(image_tokens, usage.input_tokens),
            latency_ms=int((time.perf_counter() - ticket.started) * 1000), created_at=int(time.time() * 1000),
            error_code=error_code, usage_source=source, anomaly=anomaly[:200] if anomaly else None,
            ttfb_ms=int((ticket.first_byte - ticket.started) * 1000) if ticket.first_byte is not None else None,
            attempts=ticket.attempts, units=_units_text(units),
            key_period=ticket.hold.key_period, org_period=ticket.hold.org_period,
            rows=tuple(attach(cost)) if attach is not None else (),
        )
        if not tracing.traced():
            await self._commit(ticket, settlement, cost, usage)
            return cost
        attributes = {"gen_ai.usage.input_tokens": usage.input_tokens, "gen_ai.usage.output_tokens": usage.output_tokens,
                      "switchyard.cost_usd": usd_number(cost), "switchyard.billing": status}
        with tracing.span("switchyard.settle", attributes):
            await self._commit(ticket, settlement, cost, usage)
        return cost

    async def _commit(self, ticket: Ticket, settlement: Settlement, cost: int, usage: TokenUsage) -> None:
        """Wait for the bill to be durable, then drop the hold (given back whole if it never was)."""
        committed = self.writer.submit(settlement)
        try:
            await committed
        except asyncio.CancelledError:
            if committed.cancelled():
                # The client left while its bill commits: the writer commits it anyway, so the hold
                # is released as settled (not given back whole) before the cancellation goes on.
                await self._finish(ticket, cost, usage.input_tokens + usage.output_tokens)
            else:
                await self._release(ticket.hold, 0)
            raise
        except BaseException as exc:
            await self._release(ticket.hold, 0)
            if isinstance(exc, Exception) and not isinstance(exc, GatewayError):
                # The database stayed out of reach: nothing is billed, and the answer is withheld.
                raise GatewayError(503, "The request could not be billed because the database is unavailable; "
                                   "nothing was charged. Retry shortly.", type="server_error",
                                   code="service_unavailable", headers={"retry-after": "2"}) from exc
            raise
        await self._finish(ticket, cost, usage.input_tokens + usage.output_tokens)

    def record_unserved(
        self, request_id: str, principal: Principal, *, model: str, endpoint: str, status: str,
        http_status: int, error_code: str | None, error_param: str | None, stream: bool,
        deployment: str = "", started: float | None = None,
    ) -> None:
        """A request that got no answer (refused before any upstream, or every upstream failed)
        leaves a zero-cost record, so operators and the console can see why a client fails."""
        self.writer.record(Settlement(
            request_id=request_id, org_id=principal.org.id, key_id=principal.key.id, key_in_db=False,
            reserved_nanos=0, cost_nanos=0, model=model[:200], deployment=deployment[:200], endpoint=endpoint,
            status=status, stream=stream, service_tier="default", input_tokens=0, cached_tokens=0,
            cache_write_tokens=0, output_tokens=0, reasoning_tokens=0, image_tokens=0,
            latency_ms=int((time.perf_counter() - started) * 1000) if started is not None else 0,
            created_at=int(time.time() * 1000), http_status=http_status,
            error_code=(error_code or "")[:64] or None, error_param=(error_param or "")[:200] or None,
            usage_source="none",
        ))

    async def abandon(self, ticket: Ticket) -> None:
        """The request never reached an upstream (or got nothing back): bill nothing."""
        if ticket.settled:
            return
        ticket.settled = True
        await self._finish(ticket, 0, 0)

    async def _finish(self, ticket: Ticket, settled: int, tokens: int) -> None:
        """Drop the hold (keeping `settled`) and true up the rate-limit tokens. With Redis both
        are sent together and not waited for: the bill is already durable, and until Redis has
        them the shared counters only err on the safe side (a hold kept a moment longer). A
        release that fails is retried by the lease keeper."""
        if self.redis is None:
            await self._release(ticket.hold, settled)
            await self._correct(ticket.scopes, ticket.rate_tokens, tokens)
            return
        batch = ScriptBatch(self.redis)
        await self._release(ticket.hold, settled, batch)
        await self._correct(ticket.scopes, ticket.rate_tokens, tokens, batch)
        batch.dispatch(_settlement_unsent)

    # After a request is billed, a Redis outage must not turn its answer into an error: the
    # shared counters are then a little conservative (a hold kept, retried by the lease keeper).
    async def _release(self, hold: Hold, settled: int, batch: ScriptBatch | None = None) -> None:
        try:
            await self.funds.release(hold, settled, batch)
        except RedisError as exc:
            log.error("could not release a hold in Redis: %s", exc)

    async def _correct(self, scopes: list[Scope], estimated: int, actual: int, batch: ScriptBatch | None = None) -> None:
        try:
            await self.limiter.correct(scopes, estimated, actual, batch)
        except (RuntimeError, RedisError) as exc:
            log.error("could not correct rate-limit tokens: %s", exc)


def _settlement_unsent(exc: BaseException) -> None:
    log.error("could not release a hold or correct rate-limit tokens in Redis: %s", exc)


def _multiplied(nanos: int, multiplier: Decimal) -> int:
    """A list-price amount at an organisation's price multiplier, rounded up (a hold never falls short)."""
    exact = Decimal(nanos) * multiplier
    return int(exact.to_integral_value(rounding="ROUND_CEILING"))


def _units_text(units: Mapping[str, int] | None) -> str | None:
    """The quantities as the record keeps them: `audio_ms=90500 image.hd.1024x1024=1`."""
    if not units:
        return None
    return " ".join(f"{name}={quantity}" for name, quantity in sorted(units.items()))[:300]


def _raise_if_limited(admission: Admission) -> None:
    if not admission.allowed:
        headers = dict(admission.headers)
        if admission.retry_after:
            headers["retry-after"] = str(max(1, math.ceil(admission.retry_after)))
        raise GatewayError(429, admission.message or "Rate limit reached.", type="requests",
                           code="rate_limit_exceeded", headers=headers)


def _shared_state_unavailable() -> GatewayError:
    return GatewayError(503, "Rate limits and budgets cannot be checked right now; retry shortly.",
                        type="server_error", code="service_unavailable", headers={"retry-after": "1"})


def usd_number(nanos: int) -> float:
    """The cost as a JSON number whose shortest repr is the exact decimal (nano-dollars < 2**53)."""
    return float(Decimal(nanos) / Decimal(10**9))
