"""Property: whatever an upstream reports, a bill never exceeds its hold, and a key never spends
past its budget plus overdraft (random n, output limits, prices, multipliers and usage)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from switchyard.accounts.billing import Billing
from switchyard.accounts.funds import Funds
from switchyard.accounts.records import KeyRecord, OrgRecord, Principal
from switchyard.catalog import Catalog
from switchyard.config import DeploymentConfig
from switchyard.limits import LocalRateLimiter
from switchyard.metering.cost import TokenUsage
from switchyard.metering.estimate import Quote
from switchyard.providers import ChatCall, Provider
from switchyard.routing.table import Deployment
from switchyard.wire.chat import parse_chat_request
from switchyard.wire.errors import GatewayError


class _NoCalls(Provider):
    kind = "none"

    async def chat(self, call: ChatCall) -> dict[str, Any]:
        raise NotImplementedError

    def chat_stream(self, call: ChatCall) -> AsyncIterator[list[bytes]]:
        raise NotImplementedError


class _Writer:
    """The ledger writer's interface, in memory: what was settled, with each key's spend."""

    def __init__(self, key: KeyRecord) -> None:
        self.key = key
        self.settled: list[Any] = []

    def submit(self, settlement: Any) -> asyncio.Future[None]:
        self.settled.append(settlement)
        self.key.spent_nanos += settlement.cost_nanos
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    def record(self, settlement: Any) -> None:
        self.settled.append(settlement)


prices = st.decimals(min_value=Decimal("0"), max_value=Decimal("200"), places=3, allow_nan=False, allow_infinity=False)


def deployment(input_price: Decimal, cached: Decimal, write: Decimal | None, output: Decimal, max_output: int) -> Deployment:
    entry = {
        "provider": "openai", "owned_by": "test", "created": 0, "context_window": 400_000,
        "max_output_tokens": max_output, "capabilities": ["streaming"], "endpoints": ["chat.completions"],
        "prices": {"input": str(input_price), "cached_input": str(cached), "output": str(output),
                   "cache_write": None if write is None else str(write)},
        "multipliers": {"batch": "0.5", "priority": "2"},
        "prompt_overhead": {"per_request": 4, "per_message": 2},
    }
    spec = Catalog({"m": entry}).get("m")
    assert spec is not None
    cfg = DeploymentConfig(provider="openai", model="m", catalog="m", id="dep")
    return Deployment("m", cfg, spec, _NoCalls(cfg, spec))


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(1, 128),
    max_tokens=st.one_of(st.none(), st.integers(1, 4096)),
    reserve_cap=st.one_of(st.none(), st.integers(1, 2048)),
    price=st.tuples(prices, prices, st.one_of(st.none(), prices), prices),
    multiplier=st.decimals(min_value=Decimal("0"), max_value=Decimal("3"), places=2),
    text=st.text(min_size=1, max_size=200),
    reported=st.tuples(st.integers(0, 10**8), st.integers(0, 10**8), st.integers(0, 10**8), st.integers(0, 10**8)),
    tier=st.sampled_from([None, "default", "priority", "batch"]),
    budget=st.integers(0, 10**9),
    overdraft=st.integers(0, 10**6),
)
def test_a_bill_never_exceeds_its_hold_nor_a_budget(
    n: int, max_tokens: int | None, reserve_cap: int | None, price: tuple[Any, ...], multiplier: Decimal, text: str,
    reported: tuple[int, int, int, int], tier: str | None, budget: int, overdraft: int,
) -> None:
    dep = deployment(*price, max_output=4096)
    org = OrgRecord(id="org", name="o", tier="t", price_multiplier=multiplier, prepaid=False, balance_nanos=0,
                    overdraft_nanos=0, rpm_limit=None, tpm_limit=None)
    key = KeyRecord(id="key_x", org_id="org", name="k", allowed_models=None, budget_nanos=budget, spent_nanos=0,
                    overdraft_nanos=overdraft, rpm_limit=None, tpm_limit=None, expires_at=None, revoked_at=None,
                    max_reserve_tokens=reserve_cap)
    writer = _Writer(key)
    billing = Billing(Funds(), LocalRateLimiter(), {}, writer)  # type: ignore[arg-type]
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": text}], "n": n}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    quote = Quote(parse_chat_request(body), billing.reserve_cap(Principal(key, org)))
    prompt, cached, writes, output = reported
    usage = TokenUsage(input_tokens=prompt + cached + writes, cached_input_tokens=cached, cache_write_tokens=writes,
                       output_tokens=output)

    async def run() -> None:
        try:
            ticket, _ = await billing.admit("req", Principal(key, org), "m", quote, [dep])
        except GatewayError as exc:
            assert exc.code == "insufficient_quota"
            return
        cost = await billing.settle(ticket, usage, status="completed", service_tier=tier, image_tokens=0)
        assert cost <= ticket.hold.amount_nanos
        assert writer.settled[-1].output_tokens <= quote.at(dep).output_limit * n
        assert key.spent_nanos <= budget + overdraft

    asyncio.run(run())


def test_a_cancellation_during_the_commit_does_not_undo_the_bill() -> None:
    """A client that leaves while its bill commits: the bill stands (the writer commits it anyway),
    its hold is released as settled (not given back whole), and the cancellation goes on."""
    dep = deployment(Decimal("1"), Decimal("0.1"), None, Decimal("2"), max_output=100)
    org = OrgRecord(id="org", name="o", tier="t", price_multiplier=Decimal(1), prepaid=True, balance_nanos=10**9,
                    overdraft_nanos=0, rpm_limit=None, tpm_limit=None)
    key = KeyRecord(id="key_x", org_id="org", name="k", allowed_models=None, budget_nanos=10**6, spent_nanos=0,
                    overdraft_nanos=0, rpm_limit=None, tpm_limit=None, expires_at=None, revoked_at=None)

    class SlowWriter(_Writer):
        def submit(self, settlement: Any) -> asyncio.Future[None]:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

            def commit() -> None:  # as the ledger writer does: it commits whoever still waits
                self.settled.append(settlement)
                self.key.spent_nanos += settlement.cost_nanos
                if not future.done():
                    future.set_result(None)

            asyncio.get_running_loop().call_later(0.05, commit)
            return future

    funds = Funds()
    writer = SlowWriter(key)
    billing = Billing(funds, LocalRateLimiter(), {}, writer)  # type: ignore[arg-type]

    async def run() -> None:
        quote = Quote(parse_chat_request({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}))
        ticket, _ = await billing.admit("req", Principal(key, org), "m", quote, [dep])
        assert funds.key_held("key_x") == ticket.hold.amount_nanos > 0
        task = asyncio.get_running_loop().create_task(billing.settle(
            ticket, TokenUsage(input_tokens=5, output_tokens=5), status="completed", service_tier=None, image_tokens=0))
        await asyncio.sleep(0.01)  # the bill is queued, not yet committed
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        else:
            raise AssertionError("the cancellation was swallowed")
        assert ticket.billed
        assert funds.key_held("key_x") == 0 and funds.org_held("org") == 0
        await asyncio.sleep(0.1)  # the writer's commit lands
        assert len(writer.settled) == 1 and key.spent_nanos == writer.settled[0].cost_nanos > 0

    asyncio.run(run())
