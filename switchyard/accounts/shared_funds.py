"""Holds on money shared by every worker and replica, in Redis.

Each prepaid organisation (and each key or organisation budget) has one integer in Redis: what
it may still commit, `balance + overdraft - holds` (for a key: `budget + overdraft - spent - holds`).
A budget that resets has one counter per period (its start in the name, expiring after it), so
every worker moves to the new period's counter at the boundary.
A reservation decrements it atomically and is refused if it would go below zero; settlement
gives back the hold minus the cost; operators' top-ups and limit changes add their delta. The
database stays the record; Redis only arbitrates between concurrent requests.

Every hold has an owner (one worker process) holding a lease it renews every second. A hold is
recorded under its owner (`holds:<owner>`: hold id -> amount, request id, counters) and each
counter's live holds are summed beside it (`<counter>:held`), so a counter rebuilt from the
database (first use, an operator's change, Redis restarted) starts from what is not held; bills
settled while a counter was absent are kept for 30 s (`<counter>:recent`) and left out of it too,
since the worker rebuilding it may not have read them yet (a rebuild errs low, never high). When an
owner's lease lapses (its process died), any worker reaps its holds: for each, what its request's
committed bill says it cost (none: nothing) is kept and the rest given back; so one replica's
restart never forgets another's holds, and a dead one's are not held for ever. If Redis loses its
data, admissions wait a short grace (`recovering`) while every live worker records its holds
again, then counters are rebuilt net of them.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import socket
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from switchyard.accounts.funds import Hold, budget_refusal, insufficient_quota
from switchyard.accounts.records import Principal
from switchyard.background import stop
from switchyard.metering.cost import usd
from switchyard.store.redis_client import ScriptBatch, bounded_client
from switchyard.store.redis_pipe import RedisPipe
from switchyard.store.script_chain import ScriptCall
from switchyard.wire.errors import GatewayError

log = logging.getLogger("switchyard.funds")

LEASE_SECONDS = 10.0  # an owner not heard from for this long is presumed dead and reaped (redis.hold_lease_seconds)
GRACE_MS = 3_000  # after Redis lost its data: long enough for every live worker to record its holds again

# Keys of a hold: its counters C1..Cn, their held sums H1..Hn (what live holds have taken from
# them) and R1..Rn (what was settled while the counter was absent, for 30 s: a counter rebuilt from
# a worker's view of the database, which may not have those bills yet, leaves them out).
# KEYS: epoch, recovering, the owner's holds, then C, H, R.
# ARGV: amount, hold id, hold record, a new epoch's token, grace ms, n starts, n lifetimes (ms, 0: for good).
# Returns {0, 0} when held; {i, left} when counter i refused (what it had left); {-1, ms} while recovering.
_RESERVE = """
local n = (#KEYS - 3) / 3
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SET', KEYS[1], ARGV[4])
  redis.call('SET', KEYS[2], 1, 'PX', ARGV[5])
  return {-1, tonumber(ARGV[5])}
end
local wait = redis.call('PTTL', KEYS[2])
if wait > 0 then return {-1, wait} end
local amount = tonumber(ARGV[1])
for i = 1, n do
  local c = KEYS[3 + i]
  if redis.call('EXISTS', c) == 0 then
    local taken = tonumber(redis.call('GET', KEYS[3 + n + i]) or '0') + tonumber(redis.call('GET', KEYS[3 + 2 * n + i]) or '0')
    redis.call('SET', c, tonumber(ARGV[5 + i]) - taken)
    local ttl = tonumber(ARGV[5 + n + i])
    if ttl > 0 then redis.call('PEXPIRE', c, ttl) end
  end
  local left = redis.call('DECRBY', c, amount)
  if left < 0 then
    for j = 1, i do redis.call('INCRBY', KEYS[3 + j], amount) end
    return {i, left + amount}
  end
end
for i = 1, n do
  redis.call('INCRBY', KEYS[3 + n + i], amount)
  local ttl = tonumber(ARGV[5 + n + i])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[3 + n + i], ttl) end
end
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
return {0, 0}
"""
# KEYS: a key that must not exist (the owner's lease, when reaping; for a plain release the
# holds key itself), the owner's holds, then C, H, R. ARGV: hold id, what to give back, the hold.
# A hold already released or reaped gives nothing back twice.
_RELEASE = """
if KEYS[1] ~= KEYS[2] and redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
if redis.call('HDEL', KEYS[2], ARGV[1]) == 0 then return 0 end
local n = (#KEYS - 2) / 3
local spent = tonumber(ARGV[3]) - tonumber(ARGV[2])
for i = 1, n do
  if redis.call('EXISTS', KEYS[2 + i]) == 1 then
    redis.call('INCRBY', KEYS[2 + i], ARGV[2])
  elseif spent > 0 then
    redis.call('INCRBY', KEYS[2 + 2 * n + i], spent)
    redis.call('PEXPIRE', KEYS[2 + 2 * n + i], 30000)
  end
  local h = KEYS[2 + n + i]
  if redis.call('EXISTS', h) == 1 and redis.call('DECRBY', h, ARGV[3]) <= 0 then redis.call('DEL', h) end
end
return 1
"""
# Record a live hold again (Redis lost it, or this owner's lease lapsed and it was reaped).
# KEYS: the owner's holds, then C, H, R. ARGV: hold id, record, amount.
_RESTORE = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
local n = (#KEYS - 1) / 3
for i = 1, n do
  if redis.call('EXISTS', KEYS[1 + i]) == 1 then redis.call('DECRBY', KEYS[1 + i], ARGV[3]) end
  redis.call('INCRBY', KEYS[1 + n + i], ARGV[3])
end
return 1
"""
# Renew the owner's lease. KEYS: lease, owners, epoch, recovering. ARGV: owner, lease ms, a new
# epoch's token, grace ms. Returns the epoch and whether the lease had lapsed.
_RENEW = """
local lapsed = redis.call('SET', KEYS[1], 1, 'PX', ARGV[2], 'GET') == false
redis.call('SADD', KEYS[2], ARGV[1])
local epoch = redis.call('GET', KEYS[3])
if not epoch then
  redis.call('SET', KEYS[3], ARGV[3])
  redis.call('SET', KEYS[4], 1, 'PX', ARGV[4])
  epoch = ARGV[3]
end
return {epoch, lapsed and 1 or 0}
"""
# Add ARGV[1] to each counter that exists (an absent one will be rebuilt from the database).
_CREDIT = """
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('INCRBY', KEYS[i], ARGV[1]) end
end
return 0
"""
# KEYS: lease, the owner's holds, owners. Forget an owner that is gone and holds nothing.
_FORGET_OWNER = """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('HLEN', KEYS[2]) > 0 then return 0 end
redis.call('SREM', KEYS[3], ARGV[1])
return 1
"""

# The bills of requests whose holds are reaped: request id -> cost committed (absent: none).
CommittedCosts = Callable[[Sequence[str]], Awaitable[dict[str, int]]]


@dataclass(slots=True)
class _Live:
    hold: Hold
    keys: list[str]  # counters, then their held sums, then what was settled while they were absent
    record: str


def owner_name() -> str:
    """This worker process among every replica's: host, pid and a random part (pids repeat)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def namespace(database_url: str) -> str:
    """Counters belong to one database: gateways on different databases never share them."""
    return "sy:" + hashlib.sha256(database_url.encode()).hexdigest()[:12] + ":funds:"


class SharedFunds:
    def __init__(self, url: str, database_url: str, client: aioredis.Redis | None = None,
                 committed: CommittedCosts | None = None, lease_seconds: float = LEASE_SECONDS,
                 pipe: RedisPipe | None = None) -> None:
        """`client`: the worker's bounded Redis client (shared, not closed here); by default one of
        its own, as the CLI uses. `committed`: looks up bills by request id, for reaping a dead
        owner's holds; a worker that serves requests has it and `start`s its lease. `pipe`: the
        worker's lean client, for the calls every request makes (reserve, release)."""
        self._owned = client is None
        self._redis = client if client is not None else bounded_client(url, timeout=2.0)
        self._prefix = namespace(database_url)
        self._reserve = self._redis.register_script(_RESERVE)
        self._release = self._redis.register_script(_RELEASE)
        self._restore = self._redis.register_script(_RESTORE)
        self._renew = self._redis.register_script(_RENEW)
        self._credit = self._redis.register_script(_CREDIT)
        self._forget_owner = self._redis.register_script(_FORGET_OWNER)
        self._committed = committed
        self._pipe = pipe
        self._lease_ms = max(1000, int(lease_seconds * 1000))
        self._renew_every = min(1.0, lease_seconds / 4)
        self._reap_every = lease_seconds / 2
        self.owner = owner_name()
        self._holds = self._prefix + "holds:" + self.owner
        self._epoch: bytes | None = None
        self._live: dict[str, _Live] = {}  # this owner's holds, to record again if Redis loses them
        self._unreleased: dict[str, tuple[_Live, int]] = {}  # releases that failed (Redis away): retried
        self._held: defaultdict[str, int] = defaultdict(int)  # this worker's share, for operators
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def org_held(self, org_id: str) -> int:
        return self._held.get(org_id, 0)

    def _org(self, org_id: str) -> str:
        return f"{self._prefix}org:{org_id}"

    def _key(self, key_id: str, period: int | None = None) -> str:
        return f"{self._prefix}key:{key_id}" if period is None else f"{self._prefix}key:{key_id}:{period}"

    def _org_budget(self, org_id: str, period: int | None = None) -> str:
        return f"{self._prefix}orgbudget:{org_id}" + ("" if period is None else f":{period}")

    def _name(self, part: str) -> str:
        return self._prefix + part

    async def reserve(self, principal: Principal, amount_nanos: int, key_period: int | None = None,
                      org_period: int | None = None, ttl_ms: int = 0, request_id: str = "") -> Hold:
        """`ttl_ms`: how long a new period's counters live (past the period's end); `request_id`:
        whose bill settles the hold, should its owner die first."""
        call, finish = self.reserve_call(principal, amount_nanos, key_period, org_period, ttl_ms, request_id)
        if call is None:
            return finish(None)
        if self._pipe is not None:
            return finish(await self._pipe.evalsha(self._reserve.sha, _RESERVE, list(call.keys), list(call.args)))
        return finish(await self._reserve(keys=call.keys, args=call.args))

    def reserve_call(self, principal: Principal, amount_nanos: int, key_period: int | None = None,
                     org_period: int | None = None, ttl_ms: int = 0, request_id: str = "",
                     ) -> tuple[ScriptCall | None, Callable[[Any], Hold]]:
        """`reserve` as a script call (None: nothing to count in Redis) and what turns its reply into
        the hold or the refusal; for chaining with the rate limits' call (script_chain)."""
        org, key = principal.org, principal.key
        counters: list[str] = []
        starts: list[int] = []
        ttls: list[int] = []
        if org.prepaid:
            counters.append(self._org(org.id))
            starts.append(org.balance_nanos + org.overdraft_nanos)
            ttls.append(0)
        if org.budget_nanos is not None:
            counters.append(self._org_budget(org.id, org_period))
            starts.append(org.budget_nanos - org.spent_in(org_period))
            ttls.append(ttl_ms if org_period is not None else 0)
        if key.budget_nanos is not None:
            counters.append(self._key(key.id, key_period))
            starts.append(key.budget_nanos + key.overdraft_nanos - key.spent_in(key_period))
            ttls.append(ttl_ms if key_period is not None else 0)
        hold = Hold(org.id, key.id, amount_nanos, counted_org=org.prepaid, counted_key=key.budget_nanos is not None,
                    key_period=key_period, org_period=org_period, counted_org_budget=org.budget_nanos is not None,
                    id=secrets.token_hex(8), request_id=request_id)
        if not counters:
            return None, lambda _: self._taken(hold)
        live = _Live(hold, _hold_keys(counters), " ".join([str(amount_nanos), request_id or "-", *counters]))
        keys = [self._name("epoch"), self._name("recovering"), self._holds, *live.keys]
        args = [amount_nanos, hold.id, live.record, _token(), GRACE_MS, *starts, *ttls]

        def finish(reply: Any) -> Hold:
            refused, left = reply
            if refused == -1:
                raise recovering(int(left))
            if refused:
                name = counters[refused - 1]
                if name.startswith(self._org("")):
                    raise insufficient_quota(
                        f"You exceeded your current quota: this request may cost up to ${usd(amount_nanos)} and "
                        f"your organization has ${usd(max(int(left), 0))} available.")
                if name.startswith(self._org_budget("")):
                    raise budget_refusal("your organization's", org.budget_period, amount_nanos, int(left))
                raise budget_refusal("this API key's", key.budget_period, amount_nanos, int(left))
            self._live[hold.id] = live
            return self._taken(hold)

        return ScriptCall(_RESERVE, keys, args, goes_on=0), finish

    def _taken(self, hold: Hold) -> Hold:
        self._held[hold.org_id] += hold.amount_nanos
        return hold

    async def release(self, hold: Hold, settled_nanos: int = 0, batch: ScriptBatch | None = None) -> None:
        """Give back the hold minus what was settled; with `batch`, queued to go with the
        request's other settlement calls (one round trip)."""
        if hold.released:
            return
        hold.released = True
        self._held[hold.org_id] -= hold.amount_nanos
        if not self._held[hold.org_id]:
            del self._held[hold.org_id]
        live = self._live.pop(hold.id, None)
        if live is None:
            return
        back = hold.amount_nanos - settled_nanos

        def retry_later() -> None:
            # Retried by the lease keeper once Redis answers: until then the hold stays counted.
            self._unreleased[hold.id] = (live, back)

        if batch is not None:
            batch.add(self._release.sha, _RELEASE, [self._holds, self._holds, *live.keys],
                      [hold.id, back, hold.amount_nanos], on_error=retry_later)
            return
        try:
            await self._give_back(live, back)
        except RedisError:
            retry_later()
            raise

    async def _give_back(self, live: _Live, back: int, guard: str | None = None) -> int:
        keys = [guard or self._holds, self._holds, *live.keys]
        args = [live.hold.id, back, live.hold.amount_nanos]
        if self._pipe is not None:
            return int(await self._pipe.evalsha(self._release.sha, _RELEASE, keys, args))
        return int(await self._release(keys=keys, args=args))

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
        budget added, removed or given another period); `period`: the current one's too. Their
        held sums stay: the holds in flight still count against the rebuilt counters."""
        names = [self._org(org_id), self._org_budget(org_id)] if org_id else []
        names += [self._key(key_id)] if key_id else []
        if period is not None:
            names += ([self._org_budget(org_id, period)] if org_id else []) + ([self._key(key_id, period)] if key_id else [])
        if names:
            await self._redis.delete(*names)

    # The lease: renewed every second (or a quarter of it); dead owners' holds reaped twice a lease.

    async def start(self) -> None:
        """Take the lease (before any hold is recorded under it), then keep it. Redis away: the
        keeper takes it once Redis answers (until then no hold can be taken anyway)."""
        try:
            await self.renew()
        except (RedisError, OSError) as exc:
            log.warning("money holds: Redis unavailable at start (%s)", exc)
        self._task = asyncio.get_running_loop().create_task(self._keep())

    async def _keep(self) -> None:
        next_reap = time.monotonic() + self._reap_every * (0.5 + secrets.randbelow(1000) / 1000)
        # Stopped by `_closing` as well as by cancellation: a cancel that lands inside a redis-py
        # call can come out of it as a RedisError, caught below, and would leave close() waiting.
        while not self._closing:
            try:
                await self.renew()
                if self._unreleased:
                    await self._retry_releases()
                if time.monotonic() >= next_reap:
                    next_reap = time.monotonic() + self._reap_every
                    await self.reap()
            except (RedisError, OSError) as exc:
                log.warning("money holds: Redis unavailable (%s); retrying", exc)
            except Exception:
                log.exception("money holds: lease keeping failed")
            if not self._closing:
                await asyncio.sleep(self._renew_every)

    async def renew(self) -> None:
        """Renew this owner's lease; if Redis lost its data or the lease had lapsed (so the holds
        may have been reaped), record every live hold again."""
        epoch, lapsed = await self._renew(
            keys=[self._name("lease:" + self.owner), self._name("owners"), self._name("epoch"), self._name("recovering")],
            args=[self.owner, self._lease_ms, _token(), GRACE_MS])
        first = self._epoch is None
        changed = not first and epoch != self._epoch
        self._epoch = epoch
        if (changed or (lapsed and not first)) and self._live:
            restored = 0
            for live in list(self._live.values()):
                restored += int(await self._restore(keys=[self._holds, *live.keys],
                                                    args=[live.hold.id, live.record, live.hold.amount_nanos]))
            log.warning("money holds: recorded %d live holds again (%s)", restored,
                        "Redis lost its data" if changed else "this worker's lease had lapsed")

    async def _retry_releases(self) -> None:
        for hold_id, (live, back) in list(self._unreleased.items()):
            await self._give_back(live, back)
            del self._unreleased[hold_id]

    async def reap(self) -> int:
        """Settle the holds of every owner whose lease lapsed: the cost its request's committed bill
        says stays spent, the rest goes back. Returns the holds reaped."""
        owners = [o.decode() if isinstance(o, bytes) else o for o in await self._redis.smembers(self._name("owners"))]
        others = [o for o in owners if o != self.owner]
        if not others:
            return 0
        reaped = 0
        for owner in others:
            lease = self._name("lease:" + owner)
            if await self._redis.exists(lease):
                continue
            holds_key = self._name("holds:" + owner)
            records = await self._redis.hgetall(holds_key)
            parsed = [_parse(hold_id, record) for hold_id, record in records.items()]
            costs = await self._committed([p.hold.request_id for p in parsed if p.hold.request_id]) \
                if parsed and self._committed is not None else {}
            for live in parsed:
                cost = min(costs.get(live.hold.request_id, 0), live.hold.amount_nanos)
                done = int(await self._release(keys=[lease, holds_key, *live.keys],
                                               args=[live.hold.id, live.hold.amount_nanos - cost, live.hold.amount_nanos]))
                if done == -1:
                    break  # it came back
                reaped += done
            await self._forget_owner(keys=[lease, holds_key, self._name("owners")], args=[owner])
        if reaped:
            log.warning("money holds: reaped %d holds of workers that stopped renewing their lease", reaped)
        return reaped

    async def reset_if_idle(self) -> bool:
        """At `serve` start: if no worker anywhere holds a live lease (the whole fleet was down),
        clear every counter so they are rebuilt from the database; else leave them to the living."""
        owners = await self._redis.smembers(self._name("owners"))
        for owner in owners:
            name = owner.decode() if isinstance(owner, bytes) else owner
            if await self._redis.exists(self._name("lease:" + name)):
                return False
        await self.reset()
        await self._redis.set(self._name("epoch"), _token())
        return True

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
        self._closing = True
        if self._task is not None:
            await stop([self._task])
            # A worker that stops cleanly has released every hold: its lease goes with it.
            try:
                if not self._live and not self._unreleased:
                    await self._redis.delete(self._name("lease:" + self.owner))
                    await self._redis.srem(self._name("owners"), self.owner)
            except RedisError:
                pass
        if self._owned:
            await self._redis.aclose()


def _parse(hold_id: Any, record: Any) -> _Live:
    """A hold as its owner recorded it: `amount request-id counter...`."""
    hold_id = hold_id.decode() if isinstance(hold_id, bytes) else hold_id
    text = record.decode() if isinstance(record, bytes) else record
    amount, request_id, *counters = text.split(" ")
    hold = Hold("", "", int(amount), id=hold_id, request_id="" if request_id == "-" else request_id)
    return _Live(hold, _hold_keys(counters), text)


def _hold_keys(counters: list[str]) -> list[str]:
    return counters + [c + ":held" for c in counters] + [c + ":recent" for c in counters]


def _token() -> str:
    return f"{time.time_ns()}-{secrets.token_hex(4)}"


def recovering(wait_ms: int) -> GatewayError:
    return GatewayError(503, "Budgets are being rebuilt after the shared store restarted; retry shortly.",
                        type="server_error", code="service_unavailable",
                        headers={"retry-after": str(max(1, -(-wait_ms // 1000)))})
