"""Rate limits end to end: tiers, per-key and per-organisation RPM/TPM, OpenAI's headers, 429s.

One gateway (one worker: the in-process limiter) in front of the stand-in upstream, whose
answers always use 12 prompt and 5 completion tokens. Every test uses its own organisation,
so buckets never carry over between tests.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import MASTER_KEY, Gateway, start_gateway, upstream_config
from tests.standins.openai_upstream import StandInUpstream

HELLO = [{"role": "user", "content": "Hello"}]
MAX_TOKENS = 10
ADMIN_HEADERS = {"Authorization": f"Bearer {MASTER_KEY}"}
HEADERS = [f"x-ratelimit-{what}-{dim}" for what in ("limit", "remaining", "reset") for dim in ("requests", "tokens")]
GO_DURATION = re.compile(r"^(\d+h)?(\d+m)?(\d+(\.\d+)?(ms|s))?$")

TIER1_RPM = 500
TIER1_TPM = 500_000
ACTUAL_TOKENS = 17  # what the stand-in reports for every answer (12 + 5)


def hello_estimate(max_tokens: int = MAX_TOKENS) -> int:
    """The tokens admission counts for HELLO: the prompt's byte bound / 4 (rounded up) plus max_tokens."""
    bound = len(b"Hello") + 3 * len(HELLO) + 3
    return math.ceil(bound / 4) + max_tokens


def price_nanos(input_tokens: int = 12, output_tokens: int = 5) -> int:
    usd = (input_tokens * Decimal("1.75") + output_tokens * Decimal("14")) / Decimal(1_000_000)
    return int((usd * 10**9).to_integral_value(rounding=ROUND_HALF_UP))


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstream: StandInUpstream) -> Iterator[Gateway]:
    g = start_gateway(tmp_path_factory.mktemp("rate-limits-gw"), config=upstream_config(upstream),
                      env={"STANDIN_KEY": "sk-upstream-secret"})
    yield g
    g.stop()


@pytest.fixture(scope="module")
def admin(gw: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gw.root + "/admin/v1", headers=ADMIN_HEADERS, timeout=30) as client:
        yield client


_n = iter(range(1_000_000))


def new_org(admin: httpx.Client, topup: str | None = "1", **fields: Any) -> dict[str, Any]:
    resp = admin.post("/organizations", json={"name": f"rl-org-{next(_n)}-{time.time_ns()}", **fields})
    assert resp.status_code == 200, resp.text
    org = resp.json()
    if topup is not None:
        assert admin.post(f"/organizations/{org['id']}/topup", json={"amount_usd": topup}).status_code == 200
    return org


def new_key(gw: Gateway, admin: httpx.Client, org_id: str, **fields: Any) -> str:
    resp = admin.post("/keys", json={"org_id": org_id, **fields})
    assert resp.status_code == 200, resp.text
    key = resp.json()
    # Usable once the change feed reaches the worker (a quarter of a second).
    deadline = time.monotonic() + 1.5
    while True:
        try:
            gw.client(key["key"]).models.list()
            break
        except openai.AuthenticationError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    return str(key["key"])


def raw_chat(gw: Gateway, key: str, **kwargs: Any) -> Any:
    kwargs.setdefault("max_tokens", MAX_TOKENS)
    return gw.client(key).chat.completions.with_raw_response.create(model="gpt-5.2", messages=HELLO, **kwargs)


def chat(gw: Gateway, key: str, **kwargs: Any) -> Any:
    return raw_chat(gw, key, **kwargs).parse()


def assert_limit_headers(headers: Any) -> dict[str, str]:
    got = {h: headers.get(h) for h in HEADERS}
    assert all(v is not None for v in got.values()), got
    for h in HEADERS:
        if "-reset-" in h:
            assert GO_DURATION.match(got[h]) and got[h], (h, got[h])
        else:
            assert got[h].isdigit(), (h, got[h])
    return got


def org_totals(admin: httpx.Client, org_id: str) -> tuple[int, int, int]:
    """(usage rows, cost in usage, balance) of an organisation, checking balance == ledger sum."""
    rows = admin.get("/usage", params={"org": org_id}).json()["data"]
    bal = admin.get(f"/organizations/{org_id}/balance").json()
    assert bal["consistent"] is True
    requests = rows[0]["requests"] if rows else 0
    cost = rows[0]["cost_nanos"] if rows else 0
    return requests, cost, bal["balance_nanos"]


# ---------------------------------------------------------------- headers


def test_every_response_carries_the_six_headers(gw: Gateway, admin: httpx.Client) -> None:
    org = new_org(admin, tier="tier-1")
    key = new_key(gw, admin, org["id"])

    started = time.monotonic()
    seen: list[dict[str, str]] = []
    for i in range(6):
        if i % 2:  # streams carry them too
            with gw.client(key).chat.completions.with_streaming_response.create(
                    model="gpt-5.2", messages=HELLO, max_tokens=MAX_TOKENS, stream=True) as resp:
                seen.append(assert_limit_headers(resp.headers))
                list(resp.parse())
        else:
            seen.append(assert_limit_headers(raw_chat(gw, key).headers))
    elapsed = time.monotonic() - started

    for h in seen:
        assert h["x-ratelimit-limit-requests"] == str(TIER1_RPM)
        assert h["x-ratelimit-limit-tokens"] == str(TIER1_TPM)
    # The first request met full buckets: exactly one request and its estimate were taken.
    first = seen[0]
    assert first["x-ratelimit-remaining-requests"] == str(TIER1_RPM - 1)
    assert first["x-ratelimit-remaining-tokens"] == str(TIER1_TPM - hello_estimate())
    assert first["x-ratelimit-reset-requests"] == "120ms"  # one request refills in 60s / 500
    # Each request takes one; the bucket refills at 500/min, so now and then a refill hides one.
    remaining = [int(h["x-ratelimit-remaining-requests"]) for h in seen]
    steps = [a - b for a, b in zip(remaining, remaining[1:])]
    assert all(step in (0, 1) for step in steps), remaining
    refilled = math.ceil(elapsed * TIER1_RPM / 60)
    assert remaining[0] - remaining[-1] >= len(seen) - 1 - refilled
    assert all(int(h["x-ratelimit-remaining-tokens"]) <= TIER1_TPM - hello_estimate() for h in seen)

    # The 429s carry them as well: money refused ...
    poor = new_org(admin, topup="0.000001", tier="tier-1")
    poor_key = new_key(gw, admin, poor["id"])
    with pytest.raises(openai.RateLimitError) as info:
        chat(gw, poor_key)
    assert info.value.code == "insufficient_quota"
    h = assert_limit_headers(info.value.response.headers)
    assert h["x-ratelimit-limit-requests"] == str(TIER1_RPM) and h["x-ratelimit-limit-tokens"] == str(TIER1_TPM)

    # ... and rate refused (a key limited to 1 RPM inside the tier-1 organisation).
    tight = new_key(gw, admin, org["id"], rpm_limit=1)
    chat(gw, tight)
    with pytest.raises(openai.RateLimitError) as info:
        chat(gw, tight)
    assert info.value.code == "rate_limit_exceeded"
    h = assert_limit_headers(info.value.response.headers)
    assert h["x-ratelimit-limit-requests"] == "1" and h["x-ratelimit-remaining-requests"] == "0"
    assert h["x-ratelimit-limit-tokens"] == str(TIER1_TPM)
    reset = h["x-ratelimit-reset-requests"]
    assert re.fullmatch(r"\d+(\.\d+)?s", reset) and 50 <= float(reset[:-1]) <= 60, reset


# ---------------------------------------------------------------- requests per minute


def test_key_rpm_limit(gw: Gateway, admin: httpx.Client) -> None:
    org = new_org(admin, tier="tier-1")
    key = new_key(gw, admin, org["id"], rpm_limit=3)
    for expected_remaining in (2, 1, 0):
        headers = raw_chat(gw, key).headers
        assert headers["x-ratelimit-limit-requests"] == "3"
        assert headers["x-ratelimit-remaining-requests"] == str(expected_remaining)
    with pytest.raises(openai.RateLimitError) as info:
        chat(gw, key)
    err = info.value
    assert err.status_code == 429 and err.code == "rate_limit_exceeded"
    retry_after = int(err.response.headers["retry-after"])
    assert 1 <= retry_after <= 20  # one request refills in 60 s / 3
    assert retry_after >= 15  # and the three went by in well under 5 s
    assert "Rate limit reached for requests" in err.message
    body = err.body
    assert isinstance(body, dict) and set(body) == {"message", "type", "param", "code"}
    # A key of the same organisation without its own limit is not held back.
    other = new_key(gw, admin, org["id"])
    assert chat(gw, other).usage.total_tokens == ACTUAL_TOKENS
    # Streams are refused before any byte, as a plain 429.
    with pytest.raises(openai.RateLimitError):
        list(gw.client(key).chat.completions.create(model="gpt-5.2", messages=HELLO, max_tokens=MAX_TOKENS,
                                                    stream=True))


def test_sdk_retries_honour_retry_after(gw: Gateway, admin: httpx.Client) -> None:
    rpm = 20  # one request back every 3 s
    org = new_org(admin, tier="tier-1")
    key = new_key(gw, admin, org["id"], rpm_limit=rpm)
    for _ in range(rpm):
        chat(gw, key)
    with pytest.raises(openai.RateLimitError) as info:
        chat(gw, key)
    assert 1 <= int(info.value.response.headers["retry-after"]) <= 3

    log: list[tuple[str | None, int, str | None, float]] = []  # (retry count sent, status, retry-after, time)

    def on_response(response: Any) -> None:
        log.append((response.request.headers.get("x-stainless-retry-count"), response.status_code,
                    response.headers.get("retry-after"), time.monotonic()))

    http_client = openai.DefaultHttpxClient(event_hooks={"response": [on_response]})
    client = gw.client(key, max_retries=2, http_client=http_client)
    started = time.monotonic()
    raw = client.chat.completions.with_raw_response.create(model="gpt-5.2", messages=HELLO, max_tokens=MAX_TOKENS)
    assert raw.parse().usage.total_tokens == ACTUAL_TOKENS
    assert raw.retries_taken >= 1
    assert [status for _, status, _, _ in log] == [429] * raw.retries_taken + [200]
    assert [count for count, _, _, _ in log] == [str(i) for i in range(raw.retries_taken + 1)]
    # Each retry waited at least what the 429 asked for, and the wait was enough.
    for (_, _, after, t0), (_, _, _, t1) in zip(log, log[1:]):
        assert after is not None and t1 - t0 >= int(after) - 0.05
    assert raw.retries_taken == 1
    assert time.monotonic() - started < 10


# ---------------------------------------------------------------- tokens per minute


def test_request_larger_than_tpm_is_refused_at_once(gw: Gateway, admin: httpx.Client) -> None:
    org = new_org(admin, tier="tier-1")
    key = new_key(gw, admin, org["id"], tpm_limit=hello_estimate() - 1)
    with pytest.raises(openai.RateLimitError) as info:
        chat(gw, key)
    err = info.value
    assert err.code == "rate_limit_exceeded"
    assert "Request too large" in err.message and "tokens" in err.message
    assert f"Requested {hello_estimate()}" in err.message
    # Waiting cannot help: no Retry-After to wait for.
    assert "retry-after" not in err.response.headers
    assert_limit_headers(err.response.headers)
    # A smaller request fits.
    assert chat(gw, key, max_tokens=MAX_TOKENS - 2).usage.total_tokens == ACTUAL_TOKENS


def test_tpm_enough_for_two_requests(gw: Gateway, admin: httpx.Client) -> None:
    est = hello_estimate()
    # Admission takes the estimate; settlement corrects to the real 17 tokens. Two fit in
    # ACTUAL + est; after two, TPM - 2 * ACTUAL is left, which must stay below est (with room
    # for a few seconds of refill).
    tpm = 2 * ACTUAL_TOKENS + est - 7
    assert tpm >= ACTUAL_TOKENS + est
    org = new_org(admin, tier="tier-1")
    key = new_key(gw, admin, org["id"], tpm_limit=tpm)
    first = raw_chat(gw, key)
    assert first.headers["x-ratelimit-limit-tokens"] == str(tpm)
    assert first.headers["x-ratelimit-remaining-tokens"] == str(tpm - est)
    second = raw_chat(gw, key)
    assert int(second.headers["x-ratelimit-remaining-tokens"]) in (tpm - ACTUAL_TOKENS - est, tpm - ACTUAL_TOKENS - est + 1)
    with pytest.raises(openai.RateLimitError) as info:
        chat(gw, key)
    err = info.value
    assert err.code == "rate_limit_exceeded"
    assert "Rate limit reached for tokens" in err.message
    assert int(err.response.headers["retry-after"]) >= 1
    assert int(err.response.headers["x-ratelimit-remaining-tokens"]) < est


# ---------------------------------------------------------------- organisation limits


def test_org_limits_cover_all_its_keys_together(gw: Gateway, admin: httpx.Client) -> None:
    org = new_org(admin, tier="tier-1", rpm_limit=4)
    k1 = new_key(gw, admin, org["id"])
    k2 = new_key(gw, admin, org["id"])
    bystander_org = new_org(admin, tier="tier-1")
    bystander = new_key(gw, admin, bystander_org["id"])
    remaining = []
    for key in (k1, k2, k1, k2):
        headers = raw_chat(gw, key).headers
        assert headers["x-ratelimit-limit-requests"] == "4"
        remaining.append(headers["x-ratelimit-remaining-requests"])
    assert remaining == ["3", "2", "1", "0"]
    for key in (k1, k2):
        with pytest.raises(openai.RateLimitError) as info:
            chat(gw, key)
        assert info.value.code == "rate_limit_exceeded"
        assert org["id"] in info.value.message
    # Another organisation is unaffected.
    for _ in range(5):
        headers = raw_chat(gw, bystander).headers
        assert headers["x-ratelimit-limit-requests"] == str(TIER1_RPM)

    # Org TPM works the same way across keys.
    tpm_org = new_org(admin, tier="tier-1", tpm_limit=ACTUAL_TOKENS + hello_estimate())
    t1 = new_key(gw, admin, tpm_org["id"])
    t2 = new_key(gw, admin, tpm_org["id"])
    chat(gw, t1)
    chat(gw, t2)
    with pytest.raises(openai.RateLimitError) as info:
        chat(gw, t1)
    assert info.value.code == "rate_limit_exceeded" and "tokens" in info.value.message


def test_tier_change_applies_within_a_second(gw: Gateway, admin: httpx.Client) -> None:
    org = new_org(admin, tier="tier-1")
    key = new_key(gw, admin, org["id"])
    assert raw_chat(gw, key).headers["x-ratelimit-limit-requests"] == str(TIER1_RPM)
    assert admin.patch(f"/organizations/{org['id']}", json={"tier": "tier-2"}).status_code == 200
    time.sleep(1.0)
    headers = raw_chat(gw, key).headers
    assert headers["x-ratelimit-limit-requests"] == "5000"
    assert headers["x-ratelimit-limit-tokens"] == "1000000"
    assert admin.patch(f"/organizations/{org['id']}", json={"rpm_limit": 2}).status_code == 200
    time.sleep(1.0)
    with pytest.raises(openai.RateLimitError):
        for _ in range(3):
            chat(gw, key)


# ---------------------------------------------------------------- money


def test_rate_limited_requests_are_not_billed(gw: Gateway, admin: httpx.Client) -> None:
    org = new_org(admin, topup="1", tier="tier-1")
    key = new_key(gw, admin, org["id"], rpm_limit=2)
    tpm_key = new_key(gw, admin, org["id"], tpm_limit=hello_estimate() - 1)
    chat(gw, key)
    chat(gw, key)
    for _ in range(3):
        with pytest.raises(openai.RateLimitError):
            chat(gw, key)
        with pytest.raises(openai.RateLimitError):
            list(gw.client(key).chat.completions.create(model="gpt-5.2", messages=HELLO, max_tokens=MAX_TOKENS,
                                                        stream=True))
        with pytest.raises(openai.RateLimitError):
            chat(gw, tpm_key)
    requests, cost, balance = org_totals(admin, org["id"])
    assert requests == 2
    assert cost == 2 * price_nanos()
    assert balance == 10**9 - 2 * price_nanos()
    ledger = admin.get(f"/organizations/{org['id']}/ledger").json()["data"]
    assert [e["kind"] for e in ledger].count("settle") == 2
    assert [e["kind"] for e in ledger].count("reserve") == 2
    assert sum(e["amount_nanos"] for e in ledger) == balance
