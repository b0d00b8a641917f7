"""The console's live events come from every worker: two workers share them through Redis,
and a request either one serves reaches a console connected to the other within 2 s."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator

import httpx
import orjson
import pytest
import redis

from tests.conftest import Gateway, start_gateway, upstream_config
from tests.console_helpers import create_org, invite_link, join, operator
from tests.standins.openai_upstream import StandInUpstream

UPSTREAM_KEY = "sk-upstream-live"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstream: StandInUpstream) -> Iterator[Gateway]:
    gateway = start_gateway(tmp_path_factory.mktemp("console-live"), config=upstream_config(upstream),
                            env={"STANDIN_KEY": UPSTREAM_KEY, "SWITCHYARD_REDIS_URL": "redis://127.0.0.1:6379/0"},
                            args=["--workers", "2"])
    yield gateway
    gateway.stop()


def test_requests_on_any_worker_reach_the_live_console(gw: Gateway) -> None:
    op = operator(gw)
    org = create_org(op, "Live Co")
    owner = join(gw, invite_link(op, org, "owner"), "owner@live.example")
    secret = re.search(r'id="new-key">([^<]+)<', owner.post(f"/console/o/{org}/keys", {"name": "live"}).text).group(1)

    seen: dict[str, float] = {}
    connected = threading.Event()
    console = httpx.Client(base_url=gw.root, cookies=owner.http.cookies, timeout=None)

    def listen() -> None:
        with console.stream("GET", f"/console/o/{org}/events") as events:
            assert events.status_code == 200
            try:
                for line in events.iter_lines():
                    if line.startswith(": connected"):
                        connected.set()
                    if line.startswith("data: "):
                        event = orjson.loads(line[6:])
                        assert event["org_id"] == org
                        seen[event["request_id"]] = time.monotonic()
            except Exception:  # noqa: BLE001  (closed by the test when it is done)
                pass

    threading.Thread(target=listen, daemon=True).start()
    assert connected.wait(30)
    # The other worker publishes once it has read the listening flag (every 0.25 s): wait for the
    # flag to be in Redis, then for that worker's next reads.
    flag = redis.Redis(host="127.0.0.1", port=6379)
    deadline = time.monotonic() + 10
    while not flag.keys("switchyard:*:usage-listeners") and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    answered: dict[str, float] = {}
    for i in range(16):  # a new connection each time: both workers serve some of these
        with httpx.Client(timeout=30) as http:
            reply = http.post(f"{gw.base_url}/chat/completions", headers={"authorization": f"Bearer {secret}"},
                              json={"model": "gpt-5.2", "messages": [{"role": "user", "content": f"hi {i}"}]})
            assert reply.status_code == 200, reply.text
            answered[reply.headers["x-request-id"]] = time.monotonic()
    deadline = time.monotonic() + 10
    while set(answered) - set(seen) and time.monotonic() < deadline:
        time.sleep(0.05)
    console.close()  # the console tab goes away: the server has no stream left to drain
    assert set(answered) <= set(seen), f"missing events: {set(answered) - set(seen)}"
    slowest = max(seen[r] - answered[r] for r in answered)
    assert slowest < 2, f"an event arrived {slowest:.2f} s after its response"


def test_an_open_console_does_not_hold_up_a_restart(tmp_path_factory: pytest.TempPathFactory) -> None:
    """SIGTERM lets requests in flight finish (up to 10 s) but ends live event streams at once."""
    gw = start_gateway(tmp_path_factory.mktemp("console-restart"))
    op = operator(gw)
    connected, ended = threading.Event(), threading.Event()

    def listen() -> None:
        with httpx.Client(base_url=gw.root, cookies=op.http.cookies, timeout=None) as http:
            with http.stream("GET", "/console/operator/feed/events") as events:
                try:
                    for line in events.iter_lines():
                        if line.startswith(": connected"):
                            connected.set()
                except httpx.HTTPError:
                    pass
        ended.set()

    threading.Thread(target=listen, daemon=True).start()
    assert connected.wait(30)
    gw.proc.terminate()
    gw.proc.wait(8)  # well inside the 10 s grace period a stream left open would take
    assert ended.wait(5)
