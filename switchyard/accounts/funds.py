"""Holds on money for requests in flight: reserve the worst case, settle or release afterwards.

`Funds` keeps holds in this process: exact for one worker, since the check and the hold happen
with no await between them. Several workers or replicas share holds through Redis instead
(`shared_funds.SharedFunds`, same interface).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

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


def insufficient_quota(message: str) -> GatewayError:
    return GatewayError(429, message, type="insufficient_quota", code="insufficient_quota")


class Funds:
    def __init__(self) -> None:
        self._org_held: defaultdict[str, int] = defaultdict(int)
        self._key_held: defaultdict[str, int] = defaultdict(int)

    def org_held(self, org_id: str) -> int:
        return self._org_held.get(org_id, 0)

    def key_held(self, key_id: str) -> int:
        return self._key_held.get(key_id, 0)

    async def reserve(self, principal: Principal, amount_nanos: int) -> Hold:
        org, key = principal.org, principal.key
        if org.prepaid:
            available = org.balance_nanos + org.overdraft_nanos - self._org_held[org.id]
            if amount_nanos > available:
                raise insufficient_quota(
                    f"You exceeded your current quota: this request may cost up to ${usd(amount_nanos)} and "
                    f"your organization has ${usd(max(available, 0))} available. Top up your balance."
                )
        if key.budget_nanos is not None:
            available = key.budget_nanos + key.overdraft_nanos - key.spent_nanos - self._key_held[key.id]
            if amount_nanos > available:
                raise insufficient_quota(
                    f"You exceeded this API key's budget: this request may cost up to ${usd(amount_nanos)} and "
                    f"the key has ${usd(max(available, 0))} left."
                )
        self._org_held[org.id] += amount_nanos
        self._key_held[key.id] += amount_nanos
        return Hold(org.id, key.id, amount_nanos)

    async def release(self, hold: Hold, settled_nanos: int = 0) -> None:
        """Drop the hold (once). The settled cost is already in the cached balance by then."""
        if hold.released:
            return
        hold.released = True
        for book, ident in ((self._org_held, hold.org_id), (self._key_held, hold.key_id)):
            left = book[ident] - hold.amount_nanos
            if left:
                book[ident] = left
            else:
                del book[ident]

    # Operators' changes reach this process through the change feed; nothing to do here.
    async def credit_org(self, org_id: str, delta_nanos: int) -> None:
        return None

    async def credit_key(self, key_id: str, delta_nanos: int) -> None:
        return None

    async def forget(self, org_id: str | None = None, key_id: str | None = None) -> None:
        return None

    async def reset(self) -> None:
        return None

    async def close(self) -> None:
        return None
