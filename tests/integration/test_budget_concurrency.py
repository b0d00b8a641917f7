"""Budgets hold under load: hundreds of simultaneous requests against a key that affords a few."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from tests.conftest import Admin, StandInUpstream, start_gateway, upstream_config

# The stand-in bills 12 prompt + 5 completion tokens on gpt-5.2 ($1.75 / $14 per 1M).
COST_NANOS = int((Decimal(12) * Decimal("1.75") + Decimal(5) * Decimal(14)) / Decimal(10**6) * 10**9)


async def _fire(base_url: str, key: str, n: int) -> list[tuple[int, bool, str]]:
    """n requests at once, every other one streaming; returns (status, streamed, request id) per answer."""
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits,
                                 headers={"Authorization": f"Bearer {key}"}) as http:
        async def one(i: int) -> tuple[int, bool, str]:
            stream = i % 2 == 1
            body = {"model": "gpt-5.2", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 20,
                    "stream": stream}
            async with http.stream("POST", "/chat/completions", json=body) as resp:
                text = (await resp.aread()).decode()
                complete = resp.status_code == 200 and (not stream or text.rstrip().endswith("data: [DONE]"))
                return (resp.status_code if complete or resp.status_code != 200 else 599), stream, resp.headers["x-request-id"]

        return await asyncio.gather(*(one(i) for i in range(n)))


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_concurrent_requests_never_overspend(tmp_path: Path, upstream: StandInUpstream, backend: str, request: pytest.FixtureRequest) -> None:
    env = {"STANDIN_KEY": "x"}
    if backend == "postgres":
        env["SWITCHYARD_DATABASE_URL"] = request.getfixturevalue("pg_url")
    gw = start_gateway(tmp_path, config=upstream_config(upstream), env=env)
    try:
        admin = Admin(gw)
        org = admin.org("acme", tier="unlimited")
        admin.topup(org["id"], "100")
        budget_usd = "0.01"
        overdraft_usd = "0.0005"
        key = admin.key(org["id"], name="tight", budget_usd=budget_usd, overdraft_usd=overdraft_usd)
        results = asyncio.run(_fire(gw.base_url, key, 300))
        statuses = [s for s, _, _ in results]
        ok = statuses.count(200)
        refused = statuses.count(429)
        assert ok + refused == len(results), f"unexpected statuses: {set(statuses)}"
        assert ok > 0 and refused > 0

        keys = admin.call("GET", "/keys", params={"org": org["id"]})["data"]
        spent = keys[0]["spent_nanos"]
        budget = int(Decimal(budget_usd) * 10**9) + int(Decimal(overdraft_usd) * 10**9)
        assert spent <= budget
        # Every completed request billed exactly once, at the exact price; refused ones not at all.
        assert spent == ok * COST_NANOS
        usage = admin.call("GET", "/usage", params={"org": org["id"], "group_by": "key"})["data"]
        assert usage[0]["requests"] == ok and usage[0]["cost_nanos"] == spent
        balance = admin.balance(org["id"])
        assert balance["consistent"]
        assert balance["balance_nanos"] == 100 * 10**9 - spent
    finally:
        gw.stop()


def test_clients_leaving_mid_stream_are_billed_and_release_their_holds(tmp_path: Path, upstream: StandInUpstream) -> None:
    gw = start_gateway(tmp_path, config=upstream_config(upstream), env={"STANDIN_KEY": "x"})
    try:
        admin = Admin(gw)
        org = admin.org("leavers", tier="unlimited")
        admin.topup(org["id"], "10")
        key = admin.key(org["id"], name="k")
        body = {"model": "sim-slow-stream", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 20, "stream": True}
        ids = []
        with httpx.Client(timeout=30, headers={"Authorization": f"Bearer {key}"}) as http:
            for _ in range(5):
                with http.stream("POST", gw.base_url + "/chat/completions", json=body) as resp:
                    lines = resp.iter_lines()
                    assert next(lines).startswith("data: ")  # the first chunk, then the client leaves
                    ids.append(resp.headers["x-request-id"])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and admin.balance(org["id"])["held_nanos"]:
            time.sleep(0.1)
        balance = admin.balance(org["id"])
        assert balance["held_nanos"] == 0, "every hold was released"
        assert balance["consistent"]
        ledger = admin.call("GET", f"/organizations/{org['id']}/ledger", params={"limit": 100})["data"]
        settled = {e["request_id"] for e in ledger if e["kind"] == "settle"}
        assert set(ids) <= settled, "each cancelled stream was billed for what it used"
        usage = admin.call("GET", "/usage", params={"org": org["id"], "group_by": "model"})["data"]
        assert usage[0]["requests"] == 5
    finally:
        gw.stop()
