"""Holds on money shared by every worker and replica, in Redis.

Each prepaid organisation (and each key or organisation budget) has one integer in Redis: what
it may still commit, `balance + overdraft - holds` (for a key: `budget + overdraft - spent - holds`).
A budget that resets has one counter per period (its start in the name, expiring after it), so
every worker moves to the new period's counter at the boundary.
A reservation decrements it atomically and is refused if it would go below zero; settlement
gives back the hold minus the cost; operators' top-ups and limit changes add their delta. The
database stays the record; Redis only arbitrates between concurrent requests. `switchyard
serve` clears these counters on start, so they are rebuilt from the database.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from typing import Any

import redis.asyncio as aioredis

from switchyard.accounts.funds import Hold, budget_refusal, insufficient_quota
from switchyard.accounts.records import Principal
from switchyard.metering.cost import usd
from switchyard.store.redis_client import bounded_client

# KEYS: counters to charge. ARGV[1]: amount; ARGV[1+i]: the value to start KEYS[i] from if absent;
# ARGV[1+n+i]: its lifetime in ms when it is started (0: for good).
# Returns 0 on success, else the index of the counter that refused and what it had left.
_RESERVE = """
local amount = ARGV[1]
local n = #KEYS
for i = 1, n do
  if redis.call('SET', KEYS[i], ARGV[i + 1], 'NX') and tonumber(ARGV[n + i + 1]) > 0 then
    redis.call('PEXPIRE', KEYS[i], ARGV[n + i + 1])
  end
  local left = redis.call('DECRBY', KEYS[i], amount)
  if left < 0 then
    for j = 1, i do redis.call('INCRBY', KEYS[j], amount) end
    return {i, left + tonumber(amount)}
  end
end
return {0, 0}
"""
# Add ARGV[1] to each counter that exists (an absent one will be rebuilt from the database).
_CREDIT = """
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('INCRBY', KEYS[i], ARGV[1]) end
end
return 0
"""


def namespace(database_url: str) -> str:
    """Counters belong to one database: gateways on different databases never share them."""
    return "sy:" + hashlib.sha256(database_url.encode()).hexdigest()[:12] + ":funds:"


class SharedFunds:
    def __init__(self, url: str, database_url: str, client: aioredis.Redis | None = None) -> None:
        """`client`: the worker's bounded Redis client (shared, not closed here); by default one of
        its own, as the CLI uses."""
        self._owned = client is None
        self._redis = client if client is not None else bounded_client(url, timeout=2.0)
        self._prefix = namespace(database_url)
        self._reserve = self._redis.register_script(_RESERVE)
        self._credit = self._redis.register_script(_CREDIT)
        self._held: defaultdict[str, int] = defaultdict(int)  # this worker's share, for operators

    def org_held(self, org_id: str) -> int:
        return self._held.get(org_id, 0)

    def _org(self, org_id: str) -> str:
        return f"{self._prefix}org:{org_id}"

    def _key(self, key_id: str, period: int | None = None) -> str:
        return f"{self._prefix}key:{key_id}" if period is None else f"{self._prefix}key:{key_id}:{period}"

    def _org_budget(self, org_id: str, period: int | None = None) -> str:
        return f"{self._prefix}orgbudget:{org_id}" + ("" if period is None else f":{period}")

    async def reserve(self, principal: Principal, amount_nanos: int, key_period: int | None = None,
                      org_period: int | None = None, ttl_ms: int = 0) -> Hold:
        """`ttl_ms`: how long a new period's counters live (past the period's end)."""
        org, key = principal.org, principal.key
        keys: list[str] = []
        starts: list[int] = []
        ttls: list[int] = []
        if org.prepaid:
            keys.append(self._org(org.id))
            starts.append(org.balance_nanos + org.overdraft_nanos)
            ttls.append(0)
        if org.budget_nanos is not None:
            keys.append(self._org_budget(org.id, org_period))
            starts.append(org.budget_nanos - org.spent_in(org_period))
            ttls.append(ttl_ms if org_period is not None else 0)
        if key.budget_nanos is not None:
            keys.append(self._key(key.id, key_period))
            starts.append(key.budget_nanos + key.overdraft_nanos - key.spent_in(key_period))
            ttls.append(ttl_ms if key_period is not None else 0)
        if keys:
            refused, left = await self._reserve(keys=keys, args=[amount_nanos, *starts, *ttls])
            if refused:
                name = keys[refused - 1]
                if name.startswith(self._org("")):
                    raise insufficient_quota(
                        f"You exceeded your current quota: this request may cost up to ${usd(amount_nanos)} and "
                        f"your organization has ${usd(max(int(left), 0))} available.")
                if name.startswith(self._org_budget("")):
                    raise budget_refusal("your organization's", org.budget_period, amount_nanos, int(left))
                raise budget_refusal("this API key's", key.budget_period, amount_nanos, int(left))
        self._held[org.id] += amount_nanos
        return Hold(org.id, key.id, amount_nanos, counted_org=org.prepaid, counted_key=key.budget_nanos is not None,
                    key_period=key_period, org_period=org_period, counted_org_budget=org.budget_nanos is not None)

    async def release(self, hold: Hold, settled_nanos: int = 0) -> None:
        if hold.released:
            return
        hold.released = True
        self._held[hold.org_id] -= hold.amount_nanos
        if not self._held[hold.org_id]:
            del self._held[hold.org_id]
        back = hold.amount_nanos - settled_nanos
        keys = ([self._org(hold.org_id)] if hold.counted_org else []) + (
            [self._key(hold.key_id, hold.key_period)] if hold.counted_key else []) + (
            [self._org_budget(hold.org_id, hold.org_period)] if hold.counted_org_budget else [])
        if keys and back:
            await self._credit(keys=keys, args=[back])

    async def credit_org(self, org_id: str, delta_nanos: int) -> None:
        if delta_nanos:
            await self._credit(keys=[self._org(org_id)], args=[delta_nanos])

    async def credit_key(self, key_id: str, delta_nanos: int, period: int | None = None) -> None:
        if delta_nanos:
            await self._credit(keys=[self._key(key_id, period)], args=[delta_nanos])

    async def credit_org_budget(self, org_id: str, delta_nanos: int, period: int | None = None) -> None:
        if delta_nanos:
            await self._credit(keys=[self._org_budget(org_id, period)], args=[delta_nanos])

    async def forget(self, org_id: str | None = None, key_id: str | None = None, period: int | None = None) -> None:
        """Drop counters so they are rebuilt from the database (after a prepaid/postpaid switch, a
        budget added, removed or given another period); `period`: the current one's too."""
        names = [self._org(org_id), self._org_budget(org_id)] if org_id else []
        names += [self._key(key_id)] if key_id else []
        if period is not None:
            names += ([self._org_budget(org_id, period)] if org_id else []) + ([self._key(key_id, period)] if key_id else [])
        if names:
            await self._redis.delete(*names)

    async def reset(self) -> None:
        """Clear every counter of this database: they are rebuilt from it on first use."""
        batch: list[Any] = []
        async for name in self._redis.scan_iter(match=self._prefix + "*", count=1000):
            batch.append(name)
            if len(batch) >= 1000:
                await self._redis.delete(*batch)
                batch = []
        if batch:
            await self._redis.delete(*batch)

    async def close(self) -> None:
        if self._owned:
            await self._redis.aclose()
