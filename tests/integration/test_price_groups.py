"""Price groups: per-model price factors for a group of organisations (resellers pay 0.6x on
gpt-5.2, list price on the rest), applied at admission from memory, in bills, quotes and the
console's pricing page."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest

from tests.conftest import Admin, Gateway, start_gateway, upstream_config
from tests.standins.openai_upstream import StandInUpstream

# The stand-in bills 12 prompt + 5 completion tokens; gpt-5.2 is $1.75 / $14 per 1M.
LIST_NANOS = 12 * 1_750 + 5 * 14_000


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstream: StandInUpstream) -> Iterator[Gateway]:
    config = upstream_config(upstream)
    config["price_groups"] = {"resellers": {"gpt-5.2": "0.6"}, "friends": {"*": "0.5"}}
    gateway = start_gateway(tmp_path_factory.mktemp("price-groups"), config=config, env={"STANDIN_KEY": "x"})
    yield gateway
    gateway.stop()


def chat_cost(gw: Gateway, key: str, model: str) -> int:
    answer = httpx.post(f"{gw.base_url}/chat/completions", headers={"authorization": f"Bearer {key}"},
                        json={"model": model, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 20})
    assert answer.status_code == 200, answer.text
    return int(Decimal(answer.headers["x-switchyard-cost-usd"]) * 10**9)


def test_a_group_pays_its_price_on_its_models_and_list_price_elsewhere(gw: Gateway) -> None:
    admin = Admin(gw)
    org = admin.org("reseller-inc", price_group="resellers", price_multiplier="0.9")
    admin.topup(org["id"], "10")
    key = admin.key(org["id"], name="r")
    assert chat_cost(gw, key, "gpt-5.2") == LIST_NANOS * 9 * 6 // 100  # its own 0.9, times the group's 0.6
    assert chat_cost(gw, key, "sim-tools") == LIST_NANOS * 9 // 10  # not in the group: list price (x its 0.9)
    quote = httpx.post(f"{gw.base_url}/cost/estimate", headers={"authorization": f"Bearer {key}"},
                       json={"model": "gpt-5.2", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 20})
    assert quote.status_code == 200 and Decimal(quote.json()["price_multiplier"]) == Decimal("0.54")
    # Moving the organisation to another group applies on its next request (the change feed, no restart).
    admin.call("PATCH", f"/organizations/{org['id']}", json={"price_group": "friends", "price_multiplier": "1"})
    deadline_tries = 0
    while chat_cost(gw, key, "sim-tools") != LIST_NANOS // 2:
        deadline_tries += 1
        assert deadline_tries < 100
    assert admin.balance(org["id"])["consistent"] is True


def test_unknown_groups_are_refused_and_change_nothing(gw: Gateway) -> None:
    admin = Admin(gw)
    org = admin.org("plain-co")
    refused = admin.http.patch(f"/organizations/{org['id']}", json={"price_group": "platinum"})
    assert (refused.status_code, refused.json()["error"]["param"]) == (400, "price_group")
    assert admin.call("GET", f"/organizations/{org['id']}")["price_group"] is None
    bad_create = admin.http.post("/organizations", json={"name": "bad-group", "price_group": 7})
    assert bad_create.status_code == 400
