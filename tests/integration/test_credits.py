"""Credit people buy and bring: redemption codes (made in batches, shown once, stored hashed,
redeemed at most once even by 50 clients at the same moment on two workers) and the referral
program (sign-up through a link, commission on top-ups and redemptions, reversed with them)."""

from __future__ import annotations

import asyncio
import csv
import io
import sqlite3
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Admin, Gateway, known_everywhere, start_gateway
from tests.console_helpers import PASSWORD, Browserless
from tests.integration.test_redis_limiter import REDIS_URL

NANOS = 10**9


def nanos(usd: str) -> int:
    return int(Decimal(usd) * NANOS)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = {"referral": {"percent": "10", "cap_usd": "3"},
              "credits": {"redeem_per_minute": 5, "redeem_per_minute_per_ip": 1000},
              "console": {"signup": "open"}}
    gateway = start_gateway(tmp_path_factory.mktemp("credits-gw"), config=config)
    yield gateway
    gateway.stop()


def customer(gw: Gateway, admin: Admin, name: str, topup: str | None = None) -> tuple[str, httpx.Client]:
    org = admin.org(name)
    if topup:
        admin.topup(org["id"], topup)
    key = admin.key(org["id"], name=f"{name}-key")
    return org["id"], httpx.Client(base_url=gw.base_url, headers={"authorization": f"Bearer {key}"}, timeout=30)


def make_codes(admin: Admin, **body: Any) -> dict[str, Any]:
    return admin.call("POST", "/code-batches", json={"name": "shop", "value_usd": "2.5", "count": 3, **body})


def ledger(admin: Admin, org_id: str) -> list[dict[str, Any]]:
    return admin.call("GET", f"/organizations/{org_id}/ledger")["data"]


def test_codes_are_shown_once_stored_hashed_and_redeemed_once(gw: Gateway) -> None:
    admin = Admin(gw)
    batch = make_codes(admin, name="Black Friday")
    codes = batch["codes"]
    assert len(set(codes)) == 3 and all(c.startswith("SY-") and len(c) == 26 for c in codes)
    assert (batch["value_nanos"], batch["redeemed"]) == (nanos("2.5"), 0)
    as_csv = admin.http.post("/code-batches", params={"format": "csv"}, json={"name": "csv", "value_usd": "1", "count": 2})
    assert as_csv.headers["content-type"].startswith("text/csv") and "attachment" in as_csv.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert [r["value_usd"] for r in rows] == ["1", "1"] and rows[0]["batch"] == "csv"
    # Only hashes are kept: no code appears anywhere in the database file.
    database = (gw.data_dir / "switchyard.db").read_bytes() + (gw.data_dir / "switchyard.db-wal").read_bytes() \
        if (gw.data_dir / "switchyard.db-wal").exists() else (gw.data_dir / "switchyard.db").read_bytes()
    assert not any(c.encode() in database or c.replace("-", "").encode() in database for c in codes + [r["code"] for r in rows])

    org_id, http = customer(gw, admin, "redeemer")
    done = http.post("/credits/redeem", json={"code": codes[0].lower().replace("-", " ")})  # as a person types it
    assert done.status_code == 200, done.text
    assert (done.json()["amount_usd"], done.json()["batch"], done.json()["balance_usd"]) == ("2.5", "Black Friday", "2.5")
    again = http.post("/credits/redeem", json={"code": codes[0]})
    assert (again.status_code, again.json()["error"]["code"]) == (409, "code_already_redeemed")
    unknown = http.post("/credits/redeem", json={"code": "SY-22222-22222-22222-22222"})
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "code_not_found")
    entry = ledger(admin, org_id)[-1]
    assert (entry["kind"], entry["amount_nanos"], entry["source"]) == ("redemption", nanos("2.5"), f"code_batch:{batch['id']}")
    assert "Black Friday" in entry["note"]
    assert admin.call("GET", f"/code-batches/{batch['id']}")["redeemed"] == 1
    assert admin.balance(org_id)["consistent"] is True and admin.balance(org_id)["balance_nanos"] == nanos("2.5")


def test_expired_withdrawn_and_restricted_codes_are_refused_distinctly(gw: Gateway) -> None:
    admin = Admin(gw)
    org_id, http = customer(gw, admin, "picky")
    other_id, _ = customer(gw, admin, "someone-else")
    soon = int(time.time()) + 2
    expiring = make_codes(admin, count=1, expires_at=soon)["codes"][0]
    withdrawn = make_codes(admin, count=1)
    for_other = make_codes(admin, count=1, org_id=other_id)["codes"][0]
    for_tier = make_codes(admin, count=1, tier="unlimited")["codes"][0]
    admin.call("POST", f"/code-batches/{withdrawn['id']}/revoke")
    while time.time() <= soon:  # the expiry itself is what is tested: wait until it has passed
        time.sleep(0.1)
    for code, status, reason in ((expiring, 410, "code_expired"), (withdrawn["codes"][0], 410, "code_revoked"),
                                 (for_other, 403, "code_not_for_this_organization"),
                                 (for_tier, 403, "code_not_for_this_organization")):
        answer = http.post("/credits/redeem", json={"code": code})
        assert (answer.status_code, answer.json()["error"]["code"], answer.json()["error"]["param"]) == (
            status, reason, "code")
    assert admin.balance(org_id)["balance_nanos"] == 0 and ledger(admin, org_id) == []


@pytest.mark.parametrize(("body", "param"), [
    ({"value_usd": "-1"}, "value_usd"), ({"value_usd": "0"}, "value_usd"), ({"value_usd": "abc"}, "value_usd"),
    ({"count": 0}, "count"), ({"count": "3"}, "count"), ({"count": 10_001}, "count"), ({"name": ""}, "name"),
    ({"expires_at": 1}, "expires_at"), ({"expires_at": "tomorrow"}, "expires_at"), ({"org_id": "org_nope"}, "org_id"),
    ({"tier": "gold-plated"}, "tier"),
])
def test_bad_batches_are_refused_and_change_nothing(gw: Gateway, body: dict[str, Any], param: str) -> None:
    admin = Admin(gw)
    before = admin.call("GET", "/code-batches")["data"]
    answer = admin.http.post("/code-batches", json={"name": "x", "value_usd": "1", "count": 1, **body})
    assert answer.status_code in (400, 404), answer.text
    assert answer.json()["error"]["param"] == param
    assert admin.call("GET", "/code-batches")["data"] == before


def test_redemption_attempts_are_limited_per_key(gw: Gateway) -> None:
    admin = Admin(gw)
    _, http = customer(gw, admin, "guesser")
    answers = [http.post("/credits/redeem", json={"code": f"SY-GUESS-{i:05d}-22222-22222"}) for i in range(6)]
    assert [a.status_code for a in answers] == [404] * 5 + [429]
    assert int(answers[-1].headers["retry-after"]) >= 1
    for bad in ({}, {"code": 7}, {"code": "short"}):
        assert http.post("/credits/redeem", json=bad).status_code in (400, 429)


def test_referrals_follow_top_ups_redemptions_and_reversals_to_the_nano_dollar(gw: Gateway) -> None:
    admin = Admin(gw)
    referrer_id, referrer = customer(gw, admin, "referrer")
    program = referrer.get("/referrals").json()
    assert program["percent"] == "10" and program["link"].endswith(f"/console/signup?ref={program['code']}")
    form = httpx.get(program["link"].replace("/v1", ""))
    assert form.status_code == 200 and f'name="ref" value="{program["code"]}"' in form.text
    person = Browserless(gw)
    signed = person.http.post("/console/signup", data={
        "email": "newcomer@example.com", "display_name": "Newcomer", "password": PASSWORD, "org_name": "newcomer-co",
        "ref": program["code"]})
    assert signed.status_code == 303, signed.text
    referee_id = signed.headers["location"].rsplit("/", 1)[1]
    # Its top-up earns the referrer 10%; its redemption too; the cap ($3) stops the rest.
    topup = admin.topup(referee_id, "10")
    assert topup["balance_nanos"] == nanos("10")
    code = make_codes(admin, count=1, value_usd="2.5")["codes"][0]
    referee_key = admin.key(referee_id, name="newcomer")
    redeemed = httpx.post(f"{gw.base_url}/credits/redeem", headers={"authorization": f"Bearer {referee_key}"},
                          json={"code": code})
    assert redeemed.status_code == 200, redeemed.text
    admin.topup(referee_id, "30")
    credits = [e for e in ledger(admin, referrer_id) if e["kind"] == "referral_credit"]
    assert [e["amount_nanos"] for e in credits] == [nanos("1"), nanos("0.25"), nanos("1.75")]  # 1.75 = cap - 1.25
    causes = {e["id"]: e for e in ledger(admin, referee_id)}
    assert [causes[e["cause_id"]]["kind"] for e in credits] == ["topup", "redemption", "topup"]
    assert all(e["source"] == f"referee:{referee_id}" for e in credits)
    # Reversing the first top-up reverses the credit it earned, on the referrer's account.
    first_topup = next(e for e in ledger(admin, referee_id) if e["kind"] == "topup")
    reversal = admin.call("POST", f"/organizations/{referee_id}/ledger/{first_topup['id']}/reverse", json={"note": "chargeback"})
    assert sorted(r["amount_nanos"] for r in reversal["reversed"]) == [-nanos("10"), -nanos("1")]
    twice = admin.http.post(f"/organizations/{referee_id}/ledger/{first_topup['id']}/reverse")
    assert (twice.status_code, twice.json()["error"]["code"]) == (409, "already_reversed")
    assert admin.balance(referrer_id)["balance_nanos"] == nanos("0.25") + nanos("1.75")
    assert admin.balance(referee_id)["balance_nanos"] == nanos("2.5") + nanos("30")
    assert admin.balance(referrer_id)["consistent"] and admin.balance(referee_id)["consistent"]
    summary = referrer.get("/referrals").json()
    assert summary["referees"] == [{"org_id": referee_id, "name": "newcomer-co", "referred_at": summary["referees"][0]["referred_at"],
                                    "earned_nanos": nanos("2")}]
    # Linked once, for good: the console shows the link and the earnings.
    page = person.http.get(f"/console/o/{referee_id}/credits")
    assert page.status_code == 200 and "Your link" in page.text


def test_no_credit_for_self_referral(gw: Gateway) -> None:
    admin = Admin(gw)
    person = Browserless(gw)
    first = person.http.post("/console/signup", data={"email": "selfish@example.com", "display_name": "S",
                                                       "password": PASSWORD, "org_name": "selfish-one"})
    own_org = first.headers["location"].rsplit("/", 1)[1]
    code = admin.call("GET", f"/organizations/{own_org}/referrals")["code"]
    # Signed in as a member of the referrer, the same person opens their own link for a second organisation.
    second = person.http.post("/console/signup", data={"email": "selfish2@example.com", "display_name": "S",
                                                        "password": PASSWORD, "org_name": "selfish-two", "ref": code})
    assert second.status_code == 303
    second_org = second.headers["location"].rsplit("/", 1)[1]
    admin.topup(second_org, "10")
    assert [e["kind"] for e in ledger(admin, own_org)] == []
    assert admin.call("GET", f"/organizations/{own_org}/referrals")["referees"] == []


def test_one_code_redeemed_by_fifty_clients_on_two_workers_credits_once(tmp_path: Path, pg_url: str) -> None:
    config = {"redis": {"url": REDIS_URL}, "credits": {"redeem_per_minute": 1000, "redeem_per_minute_per_ip": 1000}}
    gw = start_gateway(tmp_path, config=config, env={"SWITCHYARD_DATABASE_URL": pg_url}, args=["--workers", "2"])
    try:
        admin = Admin(gw)
        org = admin.org("race")
        keys = [admin.key(org["id"], name=f"k{i}") for i in range(5)]
        code = make_codes(admin, count=1, value_usd="7.25")["codes"][0]
        for key in keys:
            known_everywhere(gw, key)

        async def race() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=gw.base_url, timeout=60,
                                         limits=httpx.Limits(max_connections=50)) as http:
                return list(await asyncio.gather(*(
                    http.post("/credits/redeem", json={"code": code}, headers={"authorization": f"Bearer {keys[i % 5]}"})
                    for i in range(50))))

        answers = asyncio.run(race())
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [200] + [409] * 49, statuses
        balance = admin.balance(org["id"])
        assert balance["balance_nanos"] == nanos("7.25") and balance["consistent"] is True
        assert [e["kind"] for e in ledger(admin, org["id"])] == ["redemption"]
    finally:
        gw.stop()
