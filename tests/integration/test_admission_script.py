"""Rate limits and the money hold in one Redis script (script_chain), against the real Redis: the
hold is taken only when the limits let the request through, and a refused hold gives the
request's tokens back, in one round trip."""

from __future__ import annotations

import asyncio
import secrets
import uuid

import pytest
import redis.asyncio as aioredis

from switchyard.accounts.shared_funds import SharedFunds
from switchyard.limits import Limits, RedisRateLimiter, Scope
from switchyard.store.redis_pipe import RedisPipe
from switchyard.store.script_chain import run_chained
from switchyard.wire.errors import GatewayError
from tests.integration.test_redis_limiter import REDIS_URL
from tests.integration.test_shared_holds import _available, _principal


@pytest.mark.alone  # counts the Redis server's calls: another test's traffic would show in them
def test_limits_and_hold_in_one_round_trip() -> None:
    async def scenario() -> None:
        r = aioredis.from_url(REDIS_URL)
        pipe = RedisPipe(REDIS_URL)
        prefix = f"sy:rl:test:{secrets.token_hex(6)}:"
        limiter = RedisRateLimiter(REDIS_URL, prefix=prefix, pipe=pipe)
        funds = SharedFunds(REDIS_URL, f"sqlite:///chain-{uuid.uuid4().hex}", pipe=pipe)
        scope = [Scope("org:org_1", Limits(rpm=2, tpm=1000))]
        who = _principal(1000)
        calls_before = await r.info("commandstats")

        async def admit(tokens: int, nanos: int) -> tuple[bool, int | None]:
            call, undo, limited = limiter.admit_call(scope, tokens)  # type: ignore[misc]
            hold_call, held = funds.reserve_call(who, nanos, request_id=f"req_{secrets.token_hex(4)}")
            assert hold_call is not None
            limits, hold = await run_chained(pipe, call, undo, hold_call)
            admission = limiter.admission(limited, tokens, limits)
            if not admission.allowed:
                assert hold is None  # the hold's script never ran
                return False, None
            try:
                return True, held(hold).amount_nanos
            except GatewayError as exc:
                return True, -exc.status

        try:
            assert await funds.reset_if_idle()
            await funds.start()
            # Through: 100 tokens taken from the bucket, 300 nanos held.
            assert await admit(100, 300) == (True, 300)
            assert await _available(r, funds, "org") == 700
            level = await r.hget(prefix + "org:org_1", "k")
            assert int(level) == (1000 - 100) * 60_000
            # The hold is refused (800 > 700 left): the request counts, its 200 tokens come back.
            assert await admit(200, 800) == (True, -429)
            assert await _available(r, funds, "org") == 700
            assert int(await r.hget(prefix + "org:org_1", "k")) >= (1000 - 100) * 60_000
            # rpm 2 spent: the limits refuse, and nothing is held.
            assert await admit(10, 100) == (False, None)
            assert await _available(r, funds, "org") == 700
            # Each admission was one EVALSHA (plus the lease's own calls).
            calls_after = await r.info("commandstats")
            evals = sum(calls_after.get(c, {}).get("calls", 0) - calls_before.get(c, {}).get("calls", 0)
                        for c in ("cmdstat_evalsha", "cmdstat_eval"))
            assert 3 <= evals <= 3 + 4  # the lease keeper may have renewed meanwhile
        finally:
            await funds.reset()
            await funds.close()
            await limiter.close()
            await pipe.close()
            keys = [k async for k in r.scan_iter(match=prefix + "*")]
            if keys:
                await r.delete(*keys)
            await r.aclose()

    asyncio.run(scenario())
