"""The console against an attacker: CSRF, other organisations' data, cookie flags, escaping,
password guessing, secrets shown once, one-time links, revocable sessions."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.conftest import MASTER_KEY, USER_KEY, Gateway
from tests.console_helpers import (
    PASSWORD, Browserless, console_gateway, create_org, csrf_of, invite_link, join, operator,
)

EVIL = "<script>alert('x')</script>"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = console_gateway(tmp_path_factory.mktemp("console-security"),
                              console={"signup": "open", "signup_credit_usd": "2.5", "public_pricing": True})
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def op(gw: Gateway) -> Browserless:
    return operator(gw)


@pytest.fixture(scope="module")
def two_orgs(gw: Gateway, op: Browserless) -> dict[str, object]:
    """Org A with its owner Alice, who made a key and a request; org B with Bob."""
    a = create_org(op, "Org A " + EVIL)
    b = create_org(op, "Org B")
    alice = join(gw, invite_link(op, a, "owner"), "alice@a.example")
    bob = join(gw, invite_link(op, b, "owner"), "bob@b.example")
    created = alice.post(f"/console/o/{a}/keys", {"name": "key " + EVIL})
    secret = re.search(r'id="new-key">([^<]+)<', created.text).group(1)
    reply = openai.OpenAI(base_url=gw.base_url, api_key=secret, max_retries=0).chat.completions.with_raw_response.create(
        model="smollm2-135m-instruct", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    return {"a": a, "b": b, "alice": alice, "bob": bob, "secret": secret, "request_id": reply.headers["x-request-id"]}


def test_a_state_change_without_the_csrf_token_is_refused(gw: Gateway, two_orgs: dict) -> None:
    alice: Browserless = two_orgs["alice"]
    a = two_orgs["a"]
    before = alice.http.get(f"/console/o/{a}/keys?format=json").json()["data"]
    for data in ({"name": "sneaky"}, {"name": "sneaky", "csrf": "wrong"}):
        response = alice.http.post(f"/console/o/{a}/keys", data=data)
        assert response.status_code == 403
        assert "CSRF" in response.text
    assert alice.http.get(f"/console/o/{a}/keys?format=json").json()["data"] == before  # nothing was created
    # A header works as well as the form field (the playground uses it).
    token = csrf_of(alice.http.get(f"/console/o/{a}/keys").text)
    assert alice.http.post(f"/console/o/{a}/playground/key", headers={"x-csrf-token": token}).status_code == 200


def test_another_organisations_pages_do_not_exist_for_you(gw: Gateway, two_orgs: dict) -> None:
    bob: Browserless = two_orgs["bob"]
    a, request_id = two_orgs["a"], two_orgs["request_id"]
    key_id = two_orgs["alice"].http.get(f"/console/o/{a}/keys?format=json").json()["data"][0]["id"]
    for path in ("", "/usage", "/usage?format=csv", "/requests", f"/requests/{request_id}", "/keys", "/billing",
                 "/billing/statement", "/models", "/playground", "/events", "?format=json"):
        response = bob.http.get(f"/console/o/{a}{path}")
        assert response.status_code == 404, path
        assert request_id not in response.text and "Org A" not in response.text
    token = bob.csrf(f"/console/o/{two_orgs['b']}/keys")
    for path in (f"/keys/{key_id}/revoke", "/keys", "/playground/key"):
        assert bob.http.post(f"/console/o/{a}{path}", data={"csrf": token, "name": "x"}).status_code == 404
    # Bob's own request log does not show Alice's request either, nor does his key's lookup.
    assert request_id not in bob.http.get(f"/console/o/{two_orgs['b']}/requests").text
    assert bob.http.get("/console/operator").status_code == 404  # not an operator
    # And Alice's key still works: Bob's revoke did nothing.
    assert openai.OpenAI(base_url=gw.base_url, api_key=two_orgs["secret"], max_retries=0).models.list().data


def test_a_huge_form_is_refused_unread(gw: Gateway, two_orgs: dict) -> None:
    padding = "x" * 200_000
    assert Browserless(gw).http.post("/console/login", data={"email": padding, "password": "p"}).status_code == 413
    alice: Browserless = two_orgs["alice"]
    response = alice.post(f"/console/o/{two_orgs['a']}/keys", {"name": padding})
    assert response.status_code == 413
    assert alice.http.get("/console").status_code == 303  # still signed in, nothing broken


def test_the_session_cookie_is_httponly_samesite_and_secure_over_https(gw: Gateway, op: Browserless) -> None:
    plain = Browserless(gw).login("op@example.com")
    cookie = plain.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie
    # Behind a TLS-terminating proxy (uvicorn trusts X-Forwarded-Proto from 127.0.0.1).
    secure = httpx.post(f"{gw.root}/console/login", headers={"x-forwarded-proto": "https"},
                        data={"email": "op@example.com", "password": PASSWORD})
    assert "Secure" in secure.headers["set-cookie"]
    page = op.http.get("/console/operator")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"


def test_names_holding_script_are_shown_escaped(gw: Gateway, op: Browserless, two_orgs: dict) -> None:
    alice: Browserless = two_orgs["alice"]
    pages = [alice.http.get(f"/console/o/{two_orgs['a']}{p}").text for p in ("", "/keys", "/requests")]
    pages.append(op.http.get("/console/operator/orgs").text)
    for html in pages:
        assert EVIL not in html
        assert "&lt;script&gt;" in html


def test_ten_wrong_passwords_lock_the_account(gw: Gateway, op: Browserless) -> None:
    victim = join(gw, invite_link(op, create_org(op, "Lockout Ltd", None)), "victim@lock.example")
    assert victim.http.get("/console").status_code == 303
    guesser = Browserless(gw)
    statuses = [guesser.login("victim@lock.example", f"guess number {i}").status_code for i in range(10)]
    assert statuses[:9] == [401] * 9 and statuses[9] == 429
    refused = guesser.login("victim@lock.example", PASSWORD)  # even the right password, for a while
    assert refused.status_code == 429 and "locked" in refused.text
    assert "set-cookie" not in refused.headers
    # An unknown address gets the same answer as a wrong password: no way to probe for accounts.
    unknown = guesser.login("nobody@nowhere.example", "whatever it is")
    assert unknown.status_code == 401 and "Wrong email or password" in unknown.text


def test_a_key_secret_is_never_shown_again(gw: Gateway, two_orgs: dict) -> None:
    alice: Browserless = two_orgs["alice"]
    secret = two_orgs["secret"]
    seen = [alice.http.get(f"/console/o/{two_orgs['a']}{p}").text for p in ("/keys", "/keys?format=json", "/requests")]
    seen.append(httpx.get(f"{gw.root}/admin/v1/keys", headers={"authorization": f"Bearer {MASTER_KEY}"}).text)
    seen.append(gw.logs())
    for text in seen:
        assert secret not in text
        assert secret[12:-4] not in text  # not even the middle of it


def test_links_work_once_and_sessions_end_on_sign_out(gw: Gateway, op: Browserless) -> None:
    org = create_org(op, "Once Inc", None)
    link = invite_link(op, org)
    carol = join(gw, link, "carol@once.example")
    again = Browserless(gw).http.post(link, data={"email": "mallory@evil.example", "password": PASSWORD})
    assert again.status_code == 404
    assert Browserless(gw).http.get(link).status_code == 404
    # The set-up link was used by the first operator: it cannot make a second one.
    setup = re.search(r"(http://\S+/console/setup/\S+)", gw.logs()).group(1)
    assert Browserless(gw).http.post(setup, data={"email": "x@y.example", "password": PASSWORD}).status_code == 404
    cookie = carol.http.cookies.get("sy_console")
    assert carol.post("/console/logout", {}).status_code == 303
    stale = httpx.get(f"{gw.root}/console/o/{org}", cookies={"sy_console": cookie}, follow_redirects=False)
    assert stale.status_code == 303 and "/console/login" in stale.headers["location"]
    forged = httpx.get(f"{gw.root}/console/o/{org}", cookies={"sy_console": cookie[:-4] + "0000"}, follow_redirects=False)
    assert forged.status_code == 303


def test_open_signup_gets_an_organisation_with_its_credit(gw: Gateway) -> None:
    person = Browserless(gw)
    form = person.http.get("/console/signup")
    assert form.status_code == 200
    created = person.http.post("/console/signup", data={"email": "dana@new.example", "display_name": "Dana",
                                                       "password": PASSWORD, "org_name": "Dana's Lab"})
    assert created.status_code == 303
    org_id = created.headers["location"].rsplit("/", 1)[1]
    billing = person.http.get(f"/console/o/{org_id}/billing?format=json").json()
    assert billing["balance_nanos"] == 2_500_000_000
    assert [e["kind"] for e in billing["ledger"]["data"]] == ["topup"]
    short = Browserless(gw).http.post("/console/signup", data={"email": "e@new.example", "password": "short"})
    assert short.status_code == 400 and "at least 10 characters" in short.text


def test_public_pricing_and_the_request_lookup_api(gw: Gateway, two_orgs: dict) -> None:
    prices = httpx.get(f"{gw.root}/console/pricing?format=json").json()
    local = next(m for m in prices["data"] if m["id"] == "smollm2-135m-instruct")
    assert (local["input_per_million_usd"], local["output_per_million_usd"]) == ("20", "60")
    headers = {"authorization": f"Bearer {two_orgs['secret']}"}
    one = httpx.get(f"{gw.base_url}/requests/{two_orgs['request_id']}", headers=headers).json()
    assert one["status"] == "completed" and one["attempts"] == 1 and one["ttfb_ms"] is not None
    assert int(one["cost_nanos"]) == one["usage"]["input_tokens"] * 20_000 + one["usage"]["output_tokens"] * 60_000
    listing = httpx.get(f"{gw.base_url}/requests", headers=headers, params={"limit": 1}).json()
    assert listing["data"][0]["id"] == two_orgs["request_id"]
    other = httpx.get(f"{gw.base_url}/requests/{two_orgs['request_id']}", headers={"authorization": f"Bearer {USER_KEY}"})
    assert other.status_code == 404 and other.json()["error"]["param"] == "request_id"
    bad = httpx.get(f"{gw.base_url}/requests", headers=headers, params={"limit": 0})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "limit"


def test_your_sessions_end_when_you_say_so_or_change_the_password(gw: Gateway, op: Browserless) -> None:
    org = create_org(op, "Sessions Co", None)
    first = join(gw, invite_link(op, org), "sam@sessions.example")
    second = Browserless(gw)
    assert second.login("sam@sessions.example").status_code == 303
    account = first.http.get("/console/account?format=json").json()
    assert len(account["sessions"]) == 2 and sum(s["current"] for s in account["sessions"]) == 1
    assert first.post("/console/account", {"action": "sign_out_others"}).status_code == 200
    assert second.http.get(f"/console/o/{org}").status_code == 303  # to the login page
    assert first.http.get(f"/console/o/{org}").status_code == 200

    third = Browserless(gw)
    assert third.login("sam@sessions.example").status_code == 303
    wrong = first.post("/console/account", {"action": "password", "current": "not it at all", "new": "x" * 12})
    assert wrong.status_code == 400
    changed = first.post("/console/account", {"action": "password", "current": PASSWORD, "new": "a brand new password"})
    assert changed.status_code == 200 and "1 other session(s) signed out" in changed.text
    assert third.http.get(f"/console/o/{org}").status_code == 303
    assert Browserless(gw).login("sam@sessions.example").status_code == 401
    assert Browserless(gw).login("sam@sessions.example", "a brand new password").status_code == 303


def test_an_operator_changes_roles_and_removes_people(gw: Gateway, op: Browserless) -> None:
    org = create_org(op, "Roles Co", None)
    pat = join(gw, invite_link(op, org, "member"), "pat@roles.example")
    assert pat.http.get(f"/console/o/{org}/billing").status_code == 404
    user_id = next(u["id"] for u in op.http.get("/console/operator/users?format=json").json()["data"]
                   if u["email"] == "pat@roles.example")
    assert op.post(f"/console/operator/orgs/{org}", {"action": "member_role", "user_id": user_id,
                                                      "role": "billing"}).status_code == 303
    assert pat.http.get(f"/console/o/{org}/billing").status_code == 200
    bad = op.post(f"/console/operator/orgs/{org}", {"action": "member_role", "user_id": user_id, "role": "god"})
    assert bad.status_code == 400 and "role" in bad.text
    assert op.post(f"/console/operator/orgs/{org}", {"action": "member_remove", "user_id": user_id}).status_code == 303
    assert pat.http.get(f"/console/o/{org}").status_code == 404


def test_an_organisation_cannot_be_named_like_another_ones_id(gw: Gateway, op: Browserless, two_orgs: dict) -> None:
    """Lookups take an id or a name; a name that reads as an id could divert money or pages."""
    admin = httpx.Client(base_url=gw.root + "/admin/v1", headers={"authorization": f"Bearer {MASTER_KEY}"})
    for name in (two_orgs["a"], "org_anything", "key_x"):
        refused = admin.post("/organizations", json={"name": name})
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "name"
        assert admin.patch(f"/organizations/{two_orgs['b']}", json={"name": name}).status_code == 400
    signup = Browserless(gw).http.post("/console/signup", data={"email": "sneaky@x.example", "password": PASSWORD,
                                                               "org_name": two_orgs["a"]})
    assert signup.status_code == 400
    assert two_orgs["alice"].http.get(f"/console/o/{two_orgs['a']}?format=json").json()["org"]["name"].startswith("Org A")
