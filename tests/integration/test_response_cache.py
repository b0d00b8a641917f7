"""The opt-in response cache, through the real server: hits are answered without an upstream call and billed at zero."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import Admin, Gateway, StandInUpstream, start_gateway, upstream_config

HELLO = [{"role": "user", "content": "Hello"}]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstream: StandInUpstream) -> Iterator[Gateway]:
    g = start_gateway(tmp_path_factory.mktemp("cache"), config=upstream_config(upstream))
    yield g
    g.stop()


def test_per_request_cache_hit_skips_the_upstream_and_costs_nothing(gw: Gateway, upstream: StandInUpstream) -> None:
    admin = Admin(gw)
    org = admin.org("cachers", tier="unlimited")
    admin.topup(org["id"], "1")
    client = gw.client(key=admin.key(org["id"]))
    body = {"model": "gpt-5.2", "messages": [{"role": "user", "content": "cache me"}], "max_tokens": 10}
    before = len(upstream.received)
    first = client.chat.completions.with_raw_response.create(**body, extra_body={"cache": {"ttl": 60}})
    assert first.headers["x-switchyard-cache"] == "miss"
    assert "cache" not in upstream.last().body, "cache controls are not forwarded"
    second = client.chat.completions.with_raw_response.create(**body, extra_body={"cache": {"ttl": 60}})
    assert second.headers["x-switchyard-cache"] == "hit"
    assert len(upstream.received) == before + 1, "the hit never reached the upstream"
    assert second.headers["x-switchyard-cost-usd"] == "0"
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    # Something different is a miss; no cache field is no caching at all.
    assert client.chat.completions.with_raw_response.create(
        **{**body, "max_tokens": 11}, extra_body={"cache": True}).headers["x-switchyard-cache"] == "miss"
    assert "x-switchyard-cache" not in client.chat.completions.with_raw_response.create(**body).headers
    usage = admin.call("GET", "/usage", params={"org": org["id"]})["data"][0]
    assert usage["requests"] == 4
    assert admin.balance(org["id"])["consistent"]


def test_cache_is_per_organisation(gw: Gateway, upstream: StandInUpstream) -> None:
    admin = Admin(gw)
    keys = []
    for name in ("cache-a", "cache-b"):
        org = admin.org(name, tier="unlimited")
        admin.topup(org["id"], "1")
        keys.append(admin.key(org["id"]))
    body = {"model": "gpt-5.2", "messages": [{"role": "user", "content": "shared question"}], "max_tokens": 10,
            "extra_body": {"cache": True}}
    assert gw.client(key=keys[0]).chat.completions.with_raw_response.create(**body).headers["x-switchyard-cache"] == "miss"
    assert gw.client(key=keys[1]).chat.completions.with_raw_response.create(**body).headers["x-switchyard-cache"] == "miss"
    assert gw.client(key=keys[1]).chat.completions.with_raw_response.create(**body).headers["x-switchyard-cache"] == "hit"


def test_per_key_default_and_bad_values(gw: Gateway) -> None:
    import openai

    admin = Admin(gw)
    org = admin.org("cache-key-default", tier="unlimited")
    admin.topup(org["id"], "1")
    client = gw.client(key=admin.key(org["id"], cache_ttl=120))
    body = {"model": "gpt-5.2", "messages": [{"role": "user", "content": "key default"}], "max_tokens": 10}
    assert client.chat.completions.with_raw_response.create(**body).headers["x-switchyard-cache"] == "miss"
    assert client.chat.completions.with_raw_response.create(**body).headers["x-switchyard-cache"] == "hit"
    assert "x-switchyard-cache" not in client.chat.completions.with_raw_response.create(
        **body, extra_body={"cache": False}).headers
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(**body, extra_body={"cache": {"ttl": -5}})
    assert err.value.param == "cache"
