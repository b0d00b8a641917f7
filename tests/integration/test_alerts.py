"""Alerts: a balance below its threshold, a key's budget at 80%, a key's spend spike and a
deployment's breaker opening, each delivered once per crossing by a signed webhook (retried when
the receiver fails) and by email over SMTP, every attempt in the delivery log."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiosmtpd.controller import Controller

from tests.conftest import Admin, Gateway, free_port, start_gateway, upstream_config
from tests.standins.openai_upstream import StandInUpstream
from tests.standins.server import ThreadedStandIn


@dataclass
class Receiver(ThreadedStandIn):
    """A webhook endpoint on 127.0.0.2 (an address the gateway is allowed to reach): it fails the
    first `fail_first` deliveries with a 500, then records each one with its signature check."""

    fail_first: int = 1
    secrets: dict[str, str] = field(default_factory=dict)  # path -> webhook secret
    attempts: int = 0

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/{path}", self._hook)

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.attempts += 1
        if self.attempts <= self.fail_first:
            return web.Response(status=500, text="down for a moment")
        header = request.headers.get("X-Switchyard-Signature", "")
        parts = dict(p.split("=", 1) for p in header.split(","))
        secret = self.secrets.get(request.match_info["path"], "")
        expected = hmac.new(secret.encode(), parts["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
        self.received.append({"path": request.match_info["path"], "event": request.headers.get("X-Switchyard-Event"),
                              "valid": hmac.compare_digest(expected, parts.get("v1", "")),
                              "fresh": abs(time.time() - int(parts["t"])) < 60, "body": json.loads(body)})
        return web.json_response({"ok": True})

    def _serve(self) -> None:  # on 127.0.0.2, not the loopback address every other stand-in uses
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        self.add_routes(app)
        runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.2", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._started.set()
        self._loop.run_forever()


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's name)
        self.messages.append(envelope)
        return "250 OK"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    box.port = controller.port  # type: ignore[attr-defined]
    yield box
    controller.stop()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstream: StandInUpstream, receiver: Receiver,
       mailbox: Mailbox) -> Iterator[Gateway]:
    config = upstream_config(upstream)
    config["alerts"] = {"retry_seconds": 0.2, "smtp_host": "127.0.0.1", "smtp_port": mailbox.port,  # type: ignore[attr-defined]
                        "smtp_from": "alerts@switchyard.test",
                        "operator_webhook": f"http://127.0.0.2:{receiver.port}/operator"}
    gateway = start_gateway(tmp_path_factory.mktemp("alerts-gw"), config=config, env={"STANDIN_KEY": "x"})
    yield gateway
    gateway.stop()


def chat(gw: Gateway, key: str, model: str = "gpt-5.2") -> httpx.Response:
    return httpx.post(f"{gw.base_url}/chat/completions", headers={"authorization": f"Bearer {key}"}, timeout=30,
                      json={"model": model, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 20})


def wait_for(check: Any, what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.1)


def test_each_crossing_is_delivered_once_signed_retried_and_mailed(gw: Gateway, receiver: Receiver,
                                                                   mailbox: Mailbox) -> None:
    admin = Admin(gw)
    org = admin.org("watched", tier="unlimited")
    admin.topup(org["id"], "0.003")
    # 91,000 nano-dollars a request: 80% of the key's budget after 18 of them, the balance below
    # $0.002 after 11.
    key_obj = admin.call("POST", "/keys", json={"org_id": org["id"], "name": "watched-key", "budget_usd": "0.002"})
    key = key_obj["key"]
    settings = httpx.put(f"{gw.base_url}/alerts", headers={"authorization": f"Bearer {key}"}, json={
        "webhook_url": f"http://127.0.0.2:{receiver.port}/watched", "email": "ops@watched.example",
        "balance_below_usd": "0.002", "budget_percents": [80]}).json()
    assert settings["webhook_secret"].startswith("whsec_") and settings["budget_percents"] == [80]
    receiver.secrets["watched"] = settings["webhook_secret"]
    again = httpx.get(f"{gw.base_url}/alerts", headers={"authorization": f"Bearer {key}"}).json()
    assert "webhook_secret" not in again and again["webhook_secret_hint"] == "…" + settings["webhook_secret"][-4:]

    for _ in range(19):  # crosses both thresholds, then keeps spending: no alert is sent twice
        assert chat(gw, key).status_code == 200
    hooks = wait_for(lambda: [r for r in receiver.received if r["path"] == "watched"] if len(
        [r for r in receiver.received if r["path"] == "watched"]) >= 2 else None, "two webhook deliveries")
    for _ in range(2):
        chat(gw, key)
    time.sleep(2.5)  # a sweep's worth: nothing more may arrive
    hooks = [r for r in receiver.received if r["path"] == "watched"]
    assert sorted(h["event"] for h in hooks) == ["balance_below", "key_budget"]
    assert all(h["valid"] and h["fresh"] for h in hooks)
    below = next(h["body"] for h in hooks if h["event"] == "balance_below")
    assert below["org_id"] == org["id"] and below["data"]["threshold_usd"] == "0.002"
    log = httpx.get(f"{gw.base_url}/alerts/deliveries", headers={"authorization": f"Bearer {key}"}).json()["data"]
    webhooks = [d for d in log if d["channel"] == "webhook"]
    assert sorted(d["status"] for d in webhooks) == ["delivered", "delivered"]
    assert max(d["attempts"] for d in webhooks) == 2 and any(d["last_error"] is None for d in webhooks)
    mails = wait_for(lambda: mailbox.messages if len(mailbox.messages) >= 2 else None, "two emails")
    assert {m.rcpt_tos[0] for m in mails} == {"ops@watched.example"}
    assert any(b"Subject: [switchyard] Balance below $0.002" in m.content for m in mails)
    assert all(d["status"] == "delivered" for d in log if d["channel"] == "email")


def test_a_key_spend_spike_and_an_open_breaker_are_told(gw: Gateway, receiver: Receiver) -> None:
    admin = Admin(gw)
    org = admin.org("spiky", tier="unlimited")
    admin.topup(org["id"], "5")
    key = admin.key(org["id"], name="spiky-key")
    secret = admin.call("PUT", f"/organizations/{org['id']}/alerts", json={
        "webhook_url": f"http://127.0.0.2:{receiver.port}/spiky", "key_hourly_usd": "0.0002"})["webhook_secret"]
    receiver.secrets["spiky"] = secret
    for _ in range(4):
        assert chat(gw, key).status_code == 200
    spike = wait_for(lambda: [r for r in receiver.received if r["path"] == "spiky"], "a spike alert")
    assert spike[0]["event"] == "key_spend_spike" and spike[0]["valid"]
    # The operators hear of a deployment whose breaker opens (five failures in a row).
    for _ in range(6):
        chat(gw, key, "sim-status-500")
    opened = wait_for(lambda: [r for r in receiver.received if r["path"] == "operator"], "a breaker alert")
    assert opened[0]["event"] == "breaker_open" and opened[0]["body"]["data"]["deployment"] == "sim-status-500#0"


@pytest.mark.parametrize(("body", "param"), [
    ({"webhook_url": "ftp://x"}, "webhook_url"), ({"email": "not-an-address"}, "email"),
    ({"budget_percents": [0]}, "budget_percents"), ({"balance_below_usd": "-1"}, "balance_below_usd"),
])
def test_bad_alert_settings_are_refused_and_change_nothing(gw: Gateway, body: dict[str, Any], param: str) -> None:
    admin = Admin(gw)
    org = admin.org(f"bad-alerts-{param}")
    before = admin.call("GET", f"/organizations/{org['id']}/alerts")
    answer = admin.http.put(f"/organizations/{org['id']}/alerts", json=body)
    assert (answer.status_code, answer.json()["error"]["param"]) == (400, param)
    assert admin.call("GET", f"/organizations/{org['id']}/alerts") == before


def test_a_webhook_to_an_internal_address_is_never_called(gw: Gateway) -> None:
    admin = Admin(gw)
    org = admin.org("sneaky", tier="unlimited")
    admin.topup(org["id"], "0.0002")
    key = admin.key(org["id"], name="sneaky")
    admin.call("PUT", f"/organizations/{org['id']}/alerts", json={
        "webhook_url": f"{gw.root}/admin/v1/organizations", "balance_below_usd": "1"})  # the gateway itself
    chat(gw, key)
    log = wait_for(lambda: [d for d in admin.call("GET", f"/organizations/{org['id']}/alerts/deliveries")["data"]
                            if d["attempts"] >= 1], "an attempt")
    assert log[0]["status"] in ("retry", "failed") and "not sent" in log[0]["last_error"]
