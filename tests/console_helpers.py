"""Shared by the console tests: a gateway whose local model has prices (so costs are not zero),
the set-up link it prints, and signing people in over plain HTTP."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import Gateway, start_gateway

PRICED_LOCAL = {"catalog": {"smollm2-135m-instruct": {"prices": {"input": "20", "cached_input": "10", "output": "60"}}}}
PASSWORD = "a long enough password"


def console_gateway(workdir: Path, console: dict[str, Any] | None = None) -> Gateway:
    return start_gateway(workdir, config={**PRICED_LOCAL, "console": console or {}})


def setup_link(gw: Gateway) -> str:
    """The one-time link `serve` printed beside the admin key."""
    deadline = time.monotonic() + 30
    while True:
        found = re.search(r"(http://\S+/console/setup/\S+)", gw.logs())
        if found:
            return found.group(1)
        assert time.monotonic() < deadline, gw.logs()
        time.sleep(0.1)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


class Browserless:
    """A person using the console with an HTTP client (cookies kept), for the security tests."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.http = httpx.Client(base_url=gw.root, follow_redirects=False, timeout=60)

    def csrf(self, path: str = "/console") -> str:
        return csrf_of(self.http.get(path, follow_redirects=True).text)

    def post(self, path: str, data: dict[str, Any], csrf: bool = True) -> httpx.Response:
        if csrf:
            data = {**data, "csrf": self.csrf()}
        return self.http.post(path, data=data)

    def login(self, email: str, password: str = PASSWORD) -> httpx.Response:
        return self.http.post("/console/login", data={"email": email, "password": password, "next": "/console"})


def operator(gw: Gateway, email: str = "op@example.com") -> Browserless:
    op = Browserless(gw)
    response = op.http.post(setup_link(gw), data={"email": email, "display_name": "Operator", "password": PASSWORD})
    assert response.status_code == 303, response.text
    return op


def create_org(op: Browserless, name: str, topup_usd: str | None = "5") -> str:
    response = op.post("/console/operator/orgs", {"name": name, "tier": "tier-1", "billing_mode": "prepaid",
                                                  "price_multiplier": "1", "overdraft_usd": "0"})
    assert response.status_code == 303, response.text
    org_id = response.headers["location"].rsplit("/", 1)[1]
    if topup_usd:
        assert op.post(f"/console/operator/orgs/{org_id}", {"action": "topup", "amount_usd": topup_usd}).status_code == 303
    return org_id


def invite_link(op: Browserless, org_id: str, role: str = "member", email: str = "") -> str:
    response = op.post(f"/console/operator/orgs/{org_id}", {"action": "invite", "role": role, "email": email})
    found = re.search(r'id="invite-link">([^<]+)<', response.text)
    assert found, response.text[:1000]
    return found.group(1)


def join(gw: Gateway, link: str, email: str) -> Browserless:
    person = Browserless(gw)
    response = person.http.post(link, data={"email": email, "display_name": email.split("@")[0], "password": PASSWORD})
    assert response.status_code == 303, response.text
    return person
