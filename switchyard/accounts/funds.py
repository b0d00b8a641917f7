"""Holds on money for requests in flight: reserve the worst case, settle or release afterwards.

`Funds` keeps holds in this process: exact for one worker, since the check and the hold happen
with no await between them. Several workers or replicas share holds through Redis instead
(`shared_funds.SharedFunds`, same interface).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from switchyard.accounts.records import Principal
from switchyard.metering.cost import usd
from switchyard.wire.errors import GatewayError


@dataclass(slots=True)
class Hold:
    org_id: str
    key_id: str
    amount_nanos: int
    counted_org: bool = True
    counted_key: bool = True
    released: bool = False
    # The budget periods the request was admitted in (their starts, epoch ms): it is billed to them.
    key_period: int | None = None
    org_period: int | None = None
    counted_org_budget: bool = False
    id: str = ""  # shared holds: its name under its owner
    request_id: str = ""  # whose bill settles it


def insufficient_quota(message: str) -> GatewayError:
    return GatewayError(429, message, type="insufficient_quota", code="insufficient_quota")


def budget_refusal(whose: str, period: str | None, amount_nanos: int, available: int) -> GatewayError:
    span = {"daily": " today", "weekly": " this week", "monthly": " this month"}.get(period or "", "")
    return insufficient_quota(
        f"You exceeded {whose} budget: this request may cost up to ${usd(amount_nanos)} and {whose} budget has "
        f"${usd(max(available, 0))} left{span}.")


class Funds:
    def __init__(self) -> None:
        self._org_held: defaultdict[str, int] = defaultdict(int)
        # Budgets are held per period: what is in flight from the last period does not count in this one.
        self._key_held: defaultdict[tuple[str, int | None], int] = defaultdict(int)
        self._org_budget_held: defaultdict[tuple[str, int | None], int] = defaultdict(int)

    def org_held(self, org_id: str) -> int:
        return self._org_held.get(org_id, 0)

    def key_held(self, key_id: str) -> int:
        return sum(v for (k, _), v in self._key_held.items() if k == key_id)

    async def start(self) -> None:
        return None

    async def reserve(self, principal: Principal, amount_nanos: int, key_period: int | None = None,
                      org_period: int | None = None, ttl_ms: int = 0, request_id: str = "") -> Hold:
        """Hold `amount_nanos` against the balance and every budget, or refuse; `key_period` and
        `org_period`: the current periods' starts for budgets that reset (see periods.py)."""
        org, key = principal.org, principal.key
        if org.prepaid:
            available = org.balance_nanos + org.overdraft_nanos - self._org_held[org.id]
            if amount_nanos > available:
                raise insufficient_quota(
                    f"You exceeded your current quota: this request may cost up to ${usd(amount_nanos)} and "
                    f"your organization has ${usd(max(available, 0))} available. Top up your balance."
                )
        if org.budget_nanos is not None:
            available = org.budget_nanos - org.spent_in(org_period) - self._org_budget_held[(org.id, org_period)]
            if amount_nanos > available:
                raise budget_refusal("your organization's", org.budget_period, amount_nanos, available)
        if key.budget_nanos is not None:
            held = self._key_held[(key.id, key_period)]
            available = key.budget_nanos + key.overdraft_nanos - key.spent_in(key_period) - held
            if amount_nanos > available:
                raise budget_refusal("this API key's", key.budget_period, amount_nanos, available)
        self._org_held[org.id] += amount_nanos
        self._key_held[(key.id, key_period)] += amount_nanos
        if org.budget_nanos is not None:
            self._org_budget_held[(org.id, org_period)] += amount_nanos
        return Hold(org.id, key.id, amount_nanos, key_period=key_period, org_period=org_period,
                    counted_org_budget=org.budget_nanos is not None)

    async def release(self, hold: Hold, settled_nanos: int = 0, batch: Any = None) -> None:
        """Drop the hold (once). The settled cost is already in the cached balance by then."""
        if hold.released:
            return
        hold.released = True
        books: list[tuple[defaultdict[Any, int], Any]] = [
            (self._org_held, hold.org_id), (self._key_held, (hold.key_id, hold.key_period))]
        if hold.counted_org_budget:
            books.append((self._org_budget_held, (hold.org_id, hold.org_period)))
        for book, ident in books:
            left = book[ident] - hold.amount_nanos
            if left:
                book[ident] = left
            else:
                del book[ident]

    # Operators' changes reach this process through the change feed; nothing to do here.
    async def credit_org(self, org_id: str, delta_nanos: int) -> None:
        return None

    async def credit_key(self, key_id: str, delta_nanos: int, period: int | None = None) -> None:
        return None

    async def credit_org_budget(self, org_id: str, delta_nanos: int, period: int | None = None) -> None:
        return None

    async def forget(self, org_id: str | None = None, key_id: str | None = None, period: int | None = None) -> None:
        return None

    async def reset(self) -> None:
        return None

    async def close(self) -> None:
        return None
