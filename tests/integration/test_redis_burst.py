"""Shared holds survive bursts: with several workers and Redis, a burst of 600 concurrent requests
waits for Redis connections instead of failing with 503."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from tests.conftest import Admin, StandInUpstream, known_everywhere, start_gateway, upstream_config
from tests.integration.test_redis_limiter import REDIS_URL


def test_a_burst_of_600_requests_gets_no_503(tmp_path: Path, upstream: StandInUpstream) -> None:
    config = upstream_config(upstream)
    config["redis"] = {"url": REDIS_URL, "max_connections": 32}  # far fewer connections than requests in flight
    gw = start_gateway(tmp_path, config=config, env={"STANDIN_KEY": "x"}, args=["--workers", "2"])
    try:
        admin = Admin(gw)
        org = admin.org("burst", tier="unlimited")
        admin.topup(org["id"], "100")
        key = admin.key(org["id"], budget_usd="50")  # every request holds money in Redis (org and key)
        known_everywhere(gw, key)
        body = {"model": "gpt-5.2", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 5}

        async def burst() -> list[int]:
            limits = httpx.Limits(max_connections=600, max_keepalive_connections=0)
            async with httpx.AsyncClient(base_url=gw.base_url, timeout=120, limits=limits,
                                         headers={"Authorization": f"Bearer {key}"}) as http:
                answers = await asyncio.gather(*(http.post("/chat/completions", json=body) for _ in range(600)))
                return [(a.status_code, a.text) for a in answers]

        answers = asyncio.run(burst())
        statuses = [status for status, _ in answers]
        failed = next((text for status, text in answers if status != 200), None)
        assert statuses.count(200) == 600, ({s: statuses.count(s) for s in set(statuses)}, failed)
        spent = admin.call("GET", "/keys", params={"org": org["id"]})["data"][0]["spent_nanos"]
        balance = admin.balance(org["id"])
        assert balance["consistent"] and balance["balance_nanos"] == 100 * 10**9 - spent
    finally:
        gw.stop()
