"""Money holds in Redis have an owner and a lease: a worker that dies leaves holds another reaps
(keeping what its committed bills cost), a restart of one never clears another's holds, and a Redis
that lost its data rebuilds its counters net of the holds still in flight. Real Redis, real scripts."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import pytest
import redis.asyncio as aioredis

from switchyard.accounts.records import KeyRecord, OrgRecord, Principal
from switchyard.accounts.shared_funds import SharedFunds
from switchyard.wire.errors import GatewayError
from tests.integration.test_redis_limiter import REDIS_URL


def _principal(balance: int, budget: int | None = None) -> Principal:
    org = OrgRecord(id="org_1", name="o", tier="t", price_multiplier=Decimal(1), prepaid=True, balance_nanos=balance,
                    overdraft_nanos=0, rpm_limit=None, tpm_limit=None)
    key = KeyRecord(id="key_1", org_id="org_1", name="k", allowed_models=None, budget_nanos=budget, spent_nanos=0,
                    overdraft_nanos=0, rpm_limit=None, tpm_limit=None, expires_at=None, revoked_at=None)
    return Principal(key=key, org=org)


async def _available(r: aioredis.Redis, funds: SharedFunds, name: str) -> int:
    return int(await r.get(funds._org("org_1") if name == "org" else funds._key("key_1")))


def _run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_a_dead_owners_holds_are_reaped_keeping_what_its_bills_cost() -> None:
    database = f"sqlite:///holds-{uuid.uuid4().hex}"
    bills: dict[str, int] = {}

    async def committed(ids):  # type: ignore[no-untyped-def]
        return {i: bills[i] for i in ids if i in bills}

    async def scenario() -> None:
        r = aioredis.from_url(REDIS_URL)
        alive = SharedFunds(REDIS_URL, database, committed=committed, lease_seconds=1)
        doomed = SharedFunds(REDIS_URL, database, committed=committed, lease_seconds=1)
        try:
            assert await alive.reset_if_idle()  # as `serve` does first
            await alive.start()
            await doomed.start()
            alive._task.cancel()  # type: ignore[union-attr]  # renewed and reaped by hand below
            who = _principal(1000, budget=900)
            await doomed.reserve(who, 300, request_id="req_billed")
            await doomed.reserve(who, 200, request_id="req_unbilled")
            mine = await alive.reserve(who, 100, request_id="req_alive")
            assert await _available(r, alive, "org") == 400 and await _available(r, alive, "key") == 300
            with pytest.raises(GatewayError) as refused:
                await alive.reserve(who, 500, request_id="req_too_much")
            assert refused.value.status == 429
            # The doomed worker's bill for one of its requests committed (cost 120), then it died:
            # its lease keeper stops and nothing of it ever releases.
            bills["req_billed"] = 120
            doomed._task.cancel()  # type: ignore[union-attr]
            assert await alive.reap() == 0  # its lease still runs: not reaped early
            await asyncio.sleep(1.2)
            await alive.renew()
            assert await alive.reap() == 2
            # 300 - 120 and 200 come back; the 120 billed stays spent; the living hold stays held.
            assert await _available(r, alive, "org") == 1000 - 120 - 100
            assert await _available(r, alive, "key") == 900 - 120 - 100
            assert await alive.reap() == 0  # reaped once
            await alive.release(mine, 40)
            assert await _available(r, alive, "org") == 1000 - 120 - 40
            assert doomed.owner not in {o.decode() for o in await r.smembers(alive._name("owners"))}
        finally:
            await alive.reset()
            await alive.close()
            await doomed.close()
            await r.aclose()

    _run(scenario())


def test_a_restarting_replica_keeps_the_living_ones_holds() -> None:
    database = f"sqlite:///holds-{uuid.uuid4().hex}"

    async def scenario() -> None:
        r = aioredis.from_url(REDIS_URL)
        alive = SharedFunds(REDIS_URL, database, lease_seconds=5)
        try:
            assert await alive.reset_if_idle()
            await alive.start()
            who = _principal(1000)
            await alive.reserve(who, 700, request_id="req_1")
            starting = SharedFunds(REDIS_URL, database)  # what `serve` does as another replica starts
            assert await starting.reset_if_idle() is False
            await starting.close()
            with pytest.raises(GatewayError):
                await alive.reserve(who, 400, request_id="req_2")  # the 700 still held
        finally:
            await alive.reset()
            await alive.close()
            await r.aclose()
        # With every worker gone, a starting replica rebuilds everything from the database.
        cleared = SharedFunds(REDIS_URL, database)
        assert await cleared.reset_if_idle() is True
        await cleared.close()

    _run(scenario())


def test_after_redis_loses_its_data_counters_are_rebuilt_net_of_live_holds() -> None:
    database = f"sqlite:///holds-{uuid.uuid4().hex}"

    async def scenario() -> None:
        r = aioredis.from_url(REDIS_URL)
        funds = SharedFunds(REDIS_URL, database, lease_seconds=4)
        try:
            assert await funds.reset_if_idle()
            await funds.start()
            who = _principal(1000)
            in_flight = await funds.reserve(who, 600, request_id="req_1")
            await funds.reset()  # as a Redis restart without persistence: every key of ours gone
            with pytest.raises(GatewayError) as waiting:
                await funds.reserve(who, 100, request_id="req_2")
            assert waiting.value.status == 503 and waiting.value.headers["retry-after"] == "3"
            await funds.renew()  # the lease keeper's next tick records the live hold again
            await r.delete(funds._name("recovering"))  # the grace over
            with pytest.raises(GatewayError) as refused:
                await funds.reserve(who, 500, request_id="req_3")  # 1000 - 600 held: only 400
            assert refused.value.status == 429
            fits = await funds.reserve(who, 400, request_id="req_4")
            await funds.release(in_flight, 100)
            await funds.release(fits, 0)
            assert await _available(r, funds, "org") == 900
        finally:
            await funds.reset()
            await funds.close()
            await r.aclose()

    _run(scenario())


def test_a_bill_settled_while_its_counter_was_absent_is_left_out_of_the_rebuild() -> None:
    database = f"sqlite:///holds-{uuid.uuid4().hex}"

    async def scenario() -> None:
        r = aioredis.from_url(REDIS_URL)
        funds = SharedFunds(REDIS_URL, database)
        try:
            assert await funds.reset_if_idle()
            await funds.start()
            who = _principal(1000)
            hold = await funds.reserve(who, 300, request_id="req_1")
            await funds.forget(org_id="org_1")  # an operator's change: rebuilt on next use
            await funds.release(hold, 250)  # billed 250 while absent
            # This worker's view still says 1000 (its feed has not brought the bill yet).
            with pytest.raises(GatewayError):
                await funds.reserve(who, 800, request_id="req_2")
            await funds.reserve(who, 750, request_id="req_3")
        finally:
            await funds.reset()
            await funds.close()
            await r.aclose()

    _run(scenario())


def test_a_release_sent_while_redis_is_silent_is_retried_by_the_lease_keeper(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Settlement does not wait for Redis: its release goes out with the rate-limit correction
    (ScriptBatch.dispatch). One that fails (Redis silent past the timeout) leaves the hold
    counted, never lost: the lease keeper gives it back once Redis answers."""
    import time

    from switchyard.store.redis_client import ScriptBatch
    from switchyard.store.redis_pipe import RedisPipe
    from tests.fleet import OwnRedis

    own = OwnRedis(tmp_path)
    own.start()
    failures: list[BaseException] = []

    async def scenario() -> None:
        r = aioredis.from_url(own.url)
        pipe = RedisPipe(own.url, timeout=0.5)
        funds = SharedFunds(own.url, f"sqlite:///silent-{uuid.uuid4().hex}", lease_seconds=2, pipe=pipe)
        try:
            assert await funds.reset_if_idle()
            await funds.start()
            who = _principal(1000)
            hold = await funds.reserve(who, 300, request_id="req_silent")
            assert await _available(r, funds, "org") == 700
            with own.silent():
                batch = ScriptBatch(pipe)
                await funds.release(hold, 120, batch)
                batch.dispatch(failures.append)  # returns at once
                deadline = time.monotonic() + 10
                while not failures:
                    assert time.monotonic() < deadline, "the silent Redis was never noticed"
                    await asyncio.sleep(0.05)
            # Still counted (700) until the keeper retries; then 300 - 120 comes back.
            deadline = time.monotonic() + 15
            while await _available(r, funds, "org") != 1000 - 120:
                assert time.monotonic() < deadline, await _available(r, funds, "org")
                await asyncio.sleep(0.05)
            assert await r.get(funds._org("org_1") + ":held") in (None, b"0")
        finally:
            await funds.reset()
            await funds.close()
            await pipe.close()
            await r.aclose()

    try:
        _run(scenario())
    finally:
        own.stop()


def test_close_ends_the_lease_keeper_even_when_a_redis_call_swallows_its_cancellation() -> None:
    """Seen twice in the suite: close() cancelled the keeper while redis-py was mid-call, the
    cancellation came out as a RedisError, the keeper caught it and slept on, and close() waited
    for ever. The keeper now also stops on close's own flag."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    async def scenario() -> None:
        funds = SharedFunds(REDIS_URL, f"sqlite:///keeper-{uuid.uuid4().hex}", lease_seconds=1)
        calls = 0

        async def renew() -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                return  # start()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                if calls == 2:  # the first cancel only: a second one ends the keeper, fixed or not
                    raise RedisConnectionError("connection closed while reading") from None
                raise

        funds.renew = renew  # type: ignore[method-assign]
        await funds.start()
        while calls < 2:  # the keeper is inside its Redis call
            await asyncio.sleep(0.01)
        closing = asyncio.ensure_future(funds.close())
        done, _ = await asyncio.wait({closing}, timeout=10)
        if not done:  # as before the fix: only a second cancel ends the keeper
            funds._task.cancel()  # type: ignore[union-attr]
            await asyncio.wait({closing}, timeout=5)
        assert done, "close() was still waiting for the lease keeper"

    _run(scenario())
