"""Three replicas of two workers behind HAProxy, under mixed load, while one replica is killed with
SIGKILL and started again, Redis is restarted (losing everything) and PostgreSQL is restarted.

Afterwards: every answer a client received in full is billed exactly once at the cost it showed;
no key spent past its budget plus overdraft; the rate-limited key stayed within its limit plus one
refill in every window Redis kept; the dead replica's money holds were reaped; and clients saw only
answers, 429s, and OpenAI-shaped 503s with Retry-After while a dependency was down (a 502 or a cut
stream only for requests in flight on the killed replica) — never a 500 or a hang."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import StandInUpstream
from tests.fleet import Fleet, Load, Outcome, restart_postgres

pytestmark = pytest.mark.alone  # they stop and restart the machine's PostgreSQL

NANO = Decimal(10) ** 9
RPM = 12  # the rate-limited key's limit: well below what its share of the load asks for


def _cost_of_one(fleet: Fleet, key: str) -> Decimal:
    load = Load(fleet.base_url, [key], clients=1)

    async def one() -> Outcome:
        import httpx

        async with httpx.AsyncClient(base_url=fleet.base_url, timeout=60) as http:
            return await load._one(http, key, stream=False, slow=False)

    outcome = asyncio.run(one())
    assert outcome.complete and outcome.cost, outcome
    return outcome.cost


def _wait_until(check, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_fleet_keeps_its_promises_through_failures(tmp_path: Path, pg_url: str, upstream: StandInUpstream) -> None:
    fleet = Fleet(tmp_path, pg_url, upstream.base_url, replicas=3, workers=2, hold_lease_seconds=3)
    fleet.start()
    try:
        a = fleet.admin("POST", "/organizations", json={"name": "acme", "tier": "unlimited"})["id"]
        fleet.admin("POST", f"/organizations/{a}/topup", json={"amount_usd": "10"})
        plain = [fleet.admin("POST", "/keys", json={"org_id": a})["key"] for _ in range(2)]
        _wait_until(lambda: all(_known(fleet, plain[0]) for _ in range(12)), 30, "a key never reached every worker")
        c = _cost_of_one(fleet, plain[0])  # every request of the load costs the same
        budget = fleet.admin("POST", "/keys", json={"org_id": a, "budget_usd": str(c * 25)})
        overdraft = fleet.admin("POST", "/keys", json={"org_id": a, "budget_usd": str(c * 15), "overdraft_usd": str(c * 5)})
        b = fleet.admin("POST", "/organizations", json={"name": "small", "tier": "unlimited"})["id"]
        fleet.admin("POST", f"/organizations/{b}/topup", json={"amount_usd": str(c * 60)})
        small = fleet.admin("POST", "/keys", json={"org_id": b})["key"]
        d = fleet.admin("POST", "/organizations", json={"name": "limited", "tier": "unlimited"})["id"]
        fleet.admin("POST", f"/organizations/{d}/topup", json={"amount_usd": "10"})
        limited = fleet.admin("POST", "/keys", json={"org_id": d, "rpm_limit": RPM})["key"]
        keys = [*plain, budget["key"], overdraft["key"], small, limited]
        allowed = {budget["id"]: int(c * 25 * NANO), overdraft["id"]: int(c * 20 * NANO)}
        for key in keys:  # every worker of every replica knows every key before the load
            _wait_until(lambda: all(_known(fleet, key) for _ in range(12)), 30, "a key never reached every worker")

        events: dict[str, float] = {}
        load = Load(fleet.base_url, keys, clients=12)
        victim = fleet.replicas[2]

        async def scenario() -> None:
            runner = asyncio.create_task(load.run())
            await asyncio.sleep(4)
            before = set(fleet.live_owners())
            events["kill"] = time.monotonic()
            victim.kill()
            await asyncio.sleep(1)
            victim.start()
            await asyncio.to_thread(victim.wait_ready)
            await asyncio.sleep(2)
            # Quiet: the dead workers' leases lapse and a living worker reaps their holds.
            await load.pause()
            await asyncio.to_thread(_wait_until, lambda: len(fleet.owners()) == len(fleet.live_owners()), 30,
                                    "the killed replica's holds were never reaped")
            assert len(before - set(fleet.owners())) == 2  # its two workers' leases lapsed, their holds reaped
            events["reaped"] = time.monotonic()
            _holds_match_the_database(fleet, [a, b], allowed, a, slack=0)
            load.paused = False
            await asyncio.sleep(3)
            events["redis_down"] = time.monotonic()
            fleet.redis.stop()
            await asyncio.sleep(1.5)
            fleet.redis.start()
            events["redis_up"] = time.monotonic()
            await asyncio.sleep(6)
            events["pg_down"] = time.monotonic()
            await asyncio.to_thread(restart_postgres)
            events["pg_up"] = time.monotonic()
            await asyncio.sleep(6)
            load.running = False
            await runner

        asyncio.run(scenario())
        outcomes = load.outcomes
        assert len(outcomes) > 200, len(outcomes)

        # What clients saw.
        seen: dict[str, int] = {}
        for o in outcomes:
            label = f"{o.status}" + (f" {o.error.get('code')}" if o.error else "") + (f" {o.failure}" if o.failure else "")
            seen[label] = seen.get(label, 0) + 1
            assert o.ended - o.started < 50, ("a request hung", o)
            assert o.status != 500, o
            if o.complete:
                continue
            if o.status in (0, 502) or (o.status == 200 and not o.complete):
                # Only requests in flight on the replica that was killed.
                assert o.started <= events["kill"] + 0.5 and o.ended >= events["kill"] - 0.1, o
                continue
            assert o.error is not None, ("not an OpenAI error", o)
            if o.status == 429:
                assert o.error["code"] in ("rate_limit_exceeded", "insufficient_quota"), o
                continue
            assert o.status == 503 and o.retry_after, o
            redis = events["redis_down"] - 0.5 <= o.started <= events["redis_up"] + 6
            postgres = events["pg_down"] - 0.5 <= o.started <= events["pg_up"] + 5
            assert redis or postgres, ("a 503 while every dependency was up", o, events)
        print("fleet outcomes:", seen, {k: round(v - events["kill"], 1) for k, v in events.items()})
        assert seen.get("200", 0) > 100, seen
        assert any(k.startswith("429 insufficient_quota") for k in seen), seen
        assert any(k.startswith("429 rate_limit_exceeded") for k in seen), seen

        # Billed exactly once, at the cost shown.
        complete = [o for o in outcomes if o.complete]
        rows = asyncio.run(_records(pg_url, [o.request_id for o in complete if o.request_id]))
        assert len({o.request_id for o in complete}) == len(complete)
        for o in complete:
            assert o.request_id in rows, ("an answer with no bill", o)
            cost, status = rows[o.request_id]
            assert status == "completed" and Decimal(cost) / NANO == o.cost, (o, cost, status)

        # Budgets held across replicas.
        spent = {k["id"]: k for k in fleet.admin("GET", "/keys", params={"org": a})["data"]}
        assert spent[budget["id"]]["spent_nanos"] <= int(c * 25 * NANO)
        assert spent[overdraft["id"]]["spent_nanos"] <= int(c * 20 * NANO)
        small_balance = fleet.admin("GET", f"/organizations/{b}/balance")
        assert small_balance["balance_nanos"] >= 0 and small_balance["consistent"], small_balance
        for org in (a, b, d):
            assert fleet.admin("GET", f"/organizations/{org}/balance")["consistent"]

        # The rate-limited key: RPM a minute, a bucket of RPM refilled RPM/60 a second, over every
        # 20-second window that does not span the Redis restart (which refilled every bucket).
        admitted = sorted(o.started for o in outcomes if o.key == limited and o.status != 429 and o.status != 503)
        for i, start in enumerate(admitted):
            if start <= events["redis_down"] <= start + 20:
                continue
            in_window = sum(1 for t in admitted[i:] if t < start + 20)
            assert in_window <= RPM + RPM * 20 / 60 + 2, (in_window, start)

        # Quiet again: no hold left anywhere, every counter back to what the database says.
        _wait_until(lambda: len(fleet.owners()) == len(fleet.live_owners()), 30, "dead owners left")
        _holds_match_the_database(fleet, [a, b], allowed, a, slack=int(c * 30 * NANO))
        for replica in fleet.replicas:
            assert "unhandled error" not in replica.logs(), replica.logs()[-3000:]
    finally:
        fleet.stop()


def _known(fleet: Fleet, key: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{fleet.base_url}/models", headers={"authorization": f"Bearer {key}"}, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _holds_match_the_database(fleet: Fleet, orgs: list[str], keys: dict[str, int], org_a: str, slack: int) -> None:
    """With nothing in flight, each shared counter holds what the database leaves free: exactly
    (`slack` 0), or at most that and no less than `slack` below it (bills settled while Redis was
    rebuilding are left out of its counters: they err low, never high). `keys`: id -> budget + overdraft."""
    for org in orgs:
        bal = fleet.admin("GET", f"/organizations/{org}/balance")
        raw = fleet.redis.cli("GET", fleet.funds_key("org", org))
        if raw:  # absent: rebuilt from the database on next use
            assert bal["balance_nanos"] - slack <= int(raw) <= bal["balance_nanos"], (org, raw, bal)
        assert fleet.redis.cli("GET", fleet.funds_key("org", org) + ":held") in ("", "0")
    listed = {k["id"]: k for k in fleet.admin("GET", "/keys", params={"org": org_a})["data"]}
    for key_id, allowed in keys.items():
        raw = fleet.redis.cli("GET", fleet.funds_key("key", key_id))
        if raw:
            room = allowed - listed[key_id]["spent_nanos"]
            assert room - slack <= int(raw) <= room, (key_id, raw, room)
        assert fleet.redis.cli("GET", fleet.funds_key("key", key_id) + ":held") in ("", "0")


async def _records(url: str, ids: list[str]) -> dict[str, tuple[int, str]]:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    try:
        rows = await conn.fetch("SELECT request_id, cost_nanos, status FROM usage_records WHERE request_id = ANY($1)", ids)
    finally:
        await conn.close()
    return {r["request_id"]: (r["cost_nanos"], r["status"]) for r in rows}


def test_answers_wait_for_their_bills_while_postgres_is_down(tmp_path: Path, pg_url: str, upstream: StandInUpstream) -> None:
    """Streams in flight and requests arriving while PostgreSQL is stopped get their answers once
    it is back (their bills retried, not lost, not doubled); nothing fails if the outage is short."""
    import httpx

    from tests.conftest import start_gateway, upstream_config
    from tests.fleet import postgres_cluster

    config = upstream_config(upstream) | {"store": {"url": pg_url}}
    gw = start_gateway(tmp_path, config=config, env={"STANDIN_KEY": "x"})
    stopped = False
    try:
        from tests.conftest import Admin, USER_KEY

        Admin(gw)  # the admin API answers: the database is up
        streams = [{"model": "sim-slow-stream", "messages": [{"role": "user", "content": "Hi"}], "stream": True,
                    "stream_options": {"include_usage": True}} for _ in range(3)]
        plain = {"model": "gpt-5.2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5}

        async def scenario() -> list[Outcome]:
            nonlocal stopped
            async with httpx.AsyncClient(base_url=gw.base_url, timeout=60,
                                         headers={"Authorization": f"Bearer {USER_KEY}"}) as http:
                load = Load(gw.base_url, [USER_KEY])
                first_chunks = asyncio.Event()
                started = 0

                async def stream(body: dict) -> Outcome:  # type: ignore[type-arg]
                    nonlocal started
                    t0 = time.monotonic()
                    async with http.stream("POST", "/chat/completions", json=body) as r:
                        rid, cost, done = r.headers.get("x-request-id"), None, False
                        async for line in r.aiter_lines():
                            if line.startswith("data: {") and '"content"' in line and not first_chunks.is_set():
                                started += 1
                                if started == len(streams):
                                    first_chunks.set()
                            if line == "data: [DONE]":
                                done = True
                            elif line.startswith("data: {") and '"usage":{' in line.replace(" ", ""):
                                import orjson

                                cost = Decimal(str(orjson.loads(line[6:])["usage"]["cost"]))
                        return Outcome(t0, time.monotonic(), USER_KEY, True, r.status_code, rid, done and cost is not None, cost)

                tasks = [asyncio.create_task(stream(b)) for b in streams]
                await asyncio.wait_for(first_chunks.wait(), 30)
                await asyncio.to_thread(postgres_cluster, "stop")
                stopped = True
                during = asyncio.create_task(load._one(http, USER_KEY, stream=False, slow=False))
                await asyncio.sleep(4)  # the streams have ended upstream; their bills wait
                assert not any(t.done() for t in tasks) and not during.done()
                await asyncio.to_thread(postgres_cluster, "start")
                stopped = False
                return [*(await asyncio.gather(*tasks)), await during]

        outcomes = asyncio.run(scenario())
        assert all(o.complete and o.status == 200 for o in outcomes), outcomes
        rows = asyncio.run(_records(pg_url, [o.request_id for o in outcomes]))
        assert {rid: Decimal(cost) / NANO for rid, (cost, _) in rows.items()} == {o.request_id: o.cost for o in outcomes}
        assert "the database is unreachable" in gw.logs()
    finally:
        if stopped:
            postgres_cluster("start")
        gw.stop()
