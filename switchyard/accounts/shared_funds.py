"""Holds on money shared by every worker and replica, in Redis.

Each prepaid organisation (and each key with a budget) has one integer in Redis: what it may
still commit, `balance + overdraft - holds` (for a key: `budget + overdraft - spent - holds`).
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

from switchyard.accounts.funds import Hold, insufficient_quota
from switchyard.accounts.records import Principal
from switchyard.metering.cost import usd
from switchyard.store.redis_client import bounded_client

# KEYS: counters to charge. ARGV[1]: amount; ARGV[1+i]: the value to start KEYS[i] from if absent.
# Returns 0 on success, else the index of the counter that refused and what it had left.
_RESERVE = """
local amount = ARGV[1]
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i + 1], 'NX')
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

    def _key(self, key_id: str) -> str:
        return f"{self._prefix}key:{key_id}"

    async def reserve(self, principal: Principal, amount_nanos: int) -> Hold:
        org, key = principal.org, principal.key
        keys: list[str] = []
        starts: list[int] = []
        if org.prepaid:
            keys.append(self._org(org.id))
            starts.append(org.balance_nanos + org.overdraft_nanos)
        if key.budget_nanos is not None:
            keys.append(self._key(key.id))
            starts.append(key.budget_nanos + key.overdraft_nanos - key.spent_nanos)
        if keys:
            refused, left = await self._reserve(keys=keys, args=[amount_nanos, *starts])
            if refused:
                whose = "your organization has" if keys[refused - 1].startswith(self._org("")) else "the key has"
                raise insufficient_quota(
                    f"You exceeded your current quota: this request may cost up to ${usd(amount_nanos)} and "
                    f"{whose} ${usd(max(int(left), 0))} available."
                )
        self._held[org.id] += amount_nanos
        return Hold(org.id, key.id, amount_nanos, counted_org=org.prepaid, counted_key=key.budget_nanos is not None)

    async def release(self, hold: Hold, settled_nanos: int = 0) -> None:
        if hold.released:
            return
        hold.released = True
        self._held[hold.org_id] -= hold.amount_nanos
        if not self._held[hold.org_id]:
            del self._held[hold.org_id]
        back = hold.amount_nanos - settled_nanos
        keys = ([self._org(hold.org_id)] if hold.counted_org else []) + ([self._key(hold.key_id)] if hold.counted_key else [])
        if keys and back:
            await self._credit(keys=keys, args=[back])

    async def credit_org(self, org_id: str, delta_nanos: int) -> None:
        if delta_nanos:
            await self._credit(keys=[self._org(org_id)], args=[delta_nanos])

    async def credit_key(self, key_id: str, delta_nanos: int) -> None:
        if delta_nanos:
            await self._credit(keys=[self._key(key_id)], args=[delta_nanos])

    async def forget(self, org_id: str | None = None, key_id: str | None = None) -> None:
        """Drop a counter so it is rebuilt from the database (after a prepaid/postpaid switch)."""
        names = ([self._org(org_id)] if org_id else []) + ([self._key(key_id)] if key_id else [])
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
