"""kill -9 under load: every response a client received in full is in the ledger exactly once."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import Admin, StandInUpstream, start_gateway, upstream_config


def _load(base_url: str, key: str, received: list[str], stop: threading.Event, stream: bool) -> None:
    body = {"model": "gpt-5.2", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 20, "stream": stream}
    with httpx.Client(base_url=base_url, timeout=10, headers={"Authorization": f"Bearer {key}"}) as http:
        while not stop.is_set():
            try:
                with http.stream("POST", "/chat/completions", json=body) as resp:
                    text = resp.read().decode()
                    whole = resp.status_code == 200 and (
                        text.rstrip().endswith("data: [DONE]") if stream else text.endswith("}"))
                    if whole:
                        received.append(resp.headers["x-request-id"])
            except httpx.HTTPError:
                if stop.is_set():
                    return
                time.sleep(0.01)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_kill_9_under_load_loses_no_bill(
    tmp_path: Path, upstream: StandInUpstream, backend: str, request: pytest.FixtureRequest
) -> None:
    config = upstream_config(upstream)
    env = {"STANDIN_KEY": "x"}
    if backend == "postgres":
        env["SWITCHYARD_DATABASE_URL"] = request.getfixturevalue("pg_url")
    gw = start_gateway(tmp_path, config=config, env=env)
    admin = Admin(gw)
    org = admin.org("acme", tier="unlimited")
    admin.topup(org["id"], "1000")
    key = admin.key(org["id"], name="load")
    received: list[str] = []
    stop = threading.Event()
    threads = [threading.Thread(target=_load, args=(gw.base_url, key, received, stop, i % 2 == 0)) for i in range(16)]
    for t in threads:
        t.start()
    time.sleep(3)
    in_flight_before = len(received)
    os.kill(gw.proc.pid, signal.SIGKILL)
    gw.proc.wait()
    stop.set()
    for t in threads:
        t.join()
    assert in_flight_before > 50, "the load reached the server"

    again = start_gateway(tmp_path, config=config, env=env)
    try:
        admin = Admin(again)
        usage = admin.call("GET", "/usage", params={"org": org["id"]})["data"][0]
        ledger_ids: set[str] = set()
        after = None
        while True:
            page = admin.call("GET", f"/organizations/{org['id']}/ledger", params={"limit": 1000, **({"after": after} if after else {})})
            settle_ids = [e["request_id"] for e in page["data"] if e["kind"] == "settle"]
            assert len(settle_ids) == len(set(settle_ids)), "a request settled twice"
            assert not ledger_ids & set(settle_ids), "a request settled twice"
            ledger_ids |= set(settle_ids)
            if not page["has_more"]:
                break
            after = page["data"][-1]["id"]
        missing = set(received) - ledger_ids
        assert not missing, f"{len(missing)} fully received responses are not in the ledger"
        assert usage["requests"] == len(ledger_ids)  # nothing billed without its ledger entry
        balance = admin.balance(org["id"])
        assert balance["consistent"]
        assert balance["balance_nanos"] == 1000 * 10**9 - usage["cost_nanos"]
    finally:
        again.stop()
