"""The admin CLI acts straight on the database: with no server, and beside a running one."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson

from tests.conftest import Admin, start_gateway, upstream_config
from tests.standins.openai_upstream import StandInUpstream

HELLO = [{"role": "user", "content": "Hello"}]
# The stand-in reports 12 prompt and 5 completion tokens; gpt-5.2 is $1.75/M in, $14/M out,
# and the org below pays 0.7 of that: (12 * 1750 + 5 * 14000) * 0.7 nano-dollars.
COST_PER_REQUEST_NANOS = 63_700


def cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    env["SWITCHYARD_DATA_DIR"] = str(data_dir)
    return subprocess.run([sys.executable, "-m", "switchyard", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def ok(data_dir: Path, *args: str) -> str:
    proc = cli(data_dir, *args)
    assert proc.returncode == 0, f"switchyard {' '.join(args)} failed:\n{proc.stderr}"
    return proc.stdout


def ok_json(data_dir: Path, *args: str) -> Any:
    return orjson.loads(ok(data_dir, *args, "--json"))


def test_operator_flow_offline_then_beside_a_running_server(tmp_path: Path, upstream: StandInUpstream) -> None:
    workdir = tmp_path / "gw"
    data_dir = workdir / "data"  # where start_gateway puts the server's database

    # No server yet: everything goes straight to the database.
    org = ok_json(data_dir, "orgs", "create", "acme", "--price-multiplier", "0.7")
    assert org["name"] == "acme" and org["prepaid"] is True and org["balance_usd"] == "0"
    assert ok_json(data_dir, "topup", "acme", "12.50", "--note", "first")["balance_usd"] == "12.5"
    out = ok(data_dir, "keys", "create", "--org", "acme", "--name", "ci")
    match = re.search(r"^\s*(sk-sy-live-\S+)\s*$", out, re.M)
    assert match, out
    key = match.group(1)
    assert "only time" in out and "hash" in out
    key_id = re.search(r"\b(key_[0-9a-f]+)\b", out).group(1)  # type: ignore[union-attr]

    listed = ok(data_dir, "keys", "list", "--org", "acme")
    assert key not in listed and key[:11] in listed and key_id in listed
    assert all("key" not in k for k in ok_json(data_dir, "keys", "list")["data"])

    bal = ok_json(data_dir, "balance", "acme")
    assert bal["consistent"] is True and Decimal(bal["balance_usd"]) == Decimal("12.5")
    assert bal["ledger_sum_nanos"] == 12_500_000_000
    assert "yes" in ok(data_dir, "balance", org["id"])

    # A server on the same data directory accepts the key.
    gw = start_gateway(workdir, config=upstream_config(upstream), env={"STANDIN_KEY": "sk-upstream-secret"})
    try:
        client = gw.client(key)
        reply = client.chat.completions.create(model="gpt-5.2", messages=HELLO)
        assert reply.usage is not None and reply.usage.total_tokens == 17
        served = 1

        # Revoked by the CLI while the server runs: refused within a second or so.
        ok(data_dir, "keys", "revoke", key_id)
        revoked_at = time.monotonic()
        while True:
            try:
                client.chat.completions.create(model="gpt-5.2", messages=HELLO)
                served += 1
            except openai.AuthenticationError:
                break
            assert time.monotonic() - revoked_at < 1.5, "the revoked key still works"
            time.sleep(0.05)
    finally:
        gw.stop()

    # Usage and money agree with what the server billed.
    usage = ok_json(data_dir, "usage", "--key", key_id, "--group-by", "key,model", "--since", "1h")
    [row] = usage["data"]
    assert row["key_id"] == key_id and row["model"] == "gpt-5.2" and row["requests"] == served
    assert row["input_tokens"] == 12 * served and row["output_tokens"] == 5 * served
    assert row["cost_nanos"] == COST_PER_REQUEST_NANOS * served
    assert Decimal(row["cost_usd"]) == Decimal(COST_PER_REQUEST_NANOS * served) / 10**9
    by_org = ok_json(data_dir, "usage", "--org", "acme", "--bucket", "minute")
    assert sum(r["cost_nanos"] for r in by_org["data"]) == COST_PER_REQUEST_NANOS * served
    bal = ok_json(data_dir, "balance", "acme")
    assert bal["consistent"] is True
    assert bal["balance_nanos"] == 12_500_000_000 - COST_PER_REQUEST_NANOS * served
    assert ok_json(data_dir, "keys", "list")["data"][0]["revoked_at"] is not None


def test_orgs_list_show_update(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    created = ok_json(data_dir, "orgs", "create", "beta", "--tier", "tier-2", "--postpaid", "--overdraft-usd", "1.5")
    assert created["tier"] == "tier-2" and created["prepaid"] is False and created["overdraft_usd"] == "1.5"
    updated = ok_json(data_dir, "orgs", "update", "beta", "--rpm", "60", "--tpm", "1000", "--price-multiplier", "0.9")
    assert (updated["rpm_limit"], updated["tpm_limit"], updated["price_multiplier"]) == (60, 1000, "0.9")
    assert ok_json(data_dir, "orgs", "update", "beta", "--rpm", "none")["rpm_limit"] is None
    assert ok_json(data_dir, "orgs", "show", created["id"])["name"] == "beta"
    names = [o["name"] for o in ok_json(data_dir, "orgs", "list")["data"]]
    assert "beta" in names and "operator" in names
    assert "beta" in ok(data_dir, "orgs", "list")


ERRORS = [
    (("balance", "nope"), "No organization 'nope'"),
    (("topup", "nope", "5"), "No organization 'nope'"),
    (("keys", "create", "--org", "nope"), "No organization 'nope'"),
    (("usage", "--org", "nope"), "No organization 'nope'"),
    (("keys", "revoke", "key_missing"), "No API key 'key_missing'"),
    (("topup", "acme", "1.0000000001"), "more than 9 decimal places"),
    (("topup", "acme", "0"), "must be positive"),
    (("orgs", "update", "acme", "--tier", "gold"), "Unknown tier 'gold'"),
    (("orgs", "create", "acme"), "already exists"),
]


def test_errors_are_one_line_and_exit_1(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    ok(data_dir, "orgs", "create", "acme")
    for args, message in ERRORS:
        proc = cli(data_dir, *args)
        assert proc.returncode == 1, (args, proc.stdout, proc.stderr)
        assert proc.stdout == "", args
        assert proc.stderr.count("\n") == 1 and message in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr


def test_codes_made_on_the_command_line_are_redeemed_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    org = ok_json(data, "orgs", "create", "shop-buyer", "--json")
    printed = ok(data, "codes", "create", "--name", "launch", "--value-usd", "4.5", "--count", "3", "--org", org["id"])
    lines = printed.strip().splitlines()
    assert lines[0] == "code,value_usd,batch,expires_at" and len(lines) == 4
    code = lines[1].split(",")[0]
    batches = ok_json(data, "codes", "list", "--json")
    assert [(b["name"], b["count"], b["redeemed"], b["org_id"]) for b in batches] == [("launch", 3, 0, org["id"])]
    refused = cli(data, "codes", "create", "--name", "bad", "--value-usd", "-1", "--count", "1")
    assert refused.returncode == 1 and "value_usd" in refused.stderr
    gw = start_gateway(tmp_path / "gw", env={"SWITCHYARD_DATA_DIR": str(data)})
    try:
        key = Admin(gw).key(org["id"], name="k")
        first = httpx.post(f"{gw.base_url}/credits/redeem", headers={"authorization": f"Bearer {key}"}, json={"code": code})
        assert first.status_code == 200 and first.json()["amount_usd"] == "4.5"
    finally:
        gw.stop()
    assert ok_json(data, "codes", "list", "--json")[0]["redeemed"] == 1
    assert ok_json(data, "balance", org["id"], "--json")["balance_nanos"] == 4_500_000_000
    month = time.strftime("%Y-%m", time.gmtime())
    statement = ok_json(data, "statement", org["id"], month, "--json")
    assert statement["adds_up"] is True and [m["kind"] for m in statement["movements"]] == ["redemption"]
    assert "closing balance" in ok(data, "statement", org["id"], month, "--csv")
    updated = ok_json(data, "orgs", "update", org["id"], "--budget-usd", "3", "--budget-period", "weekly", "--json")
    assert (updated["budget_usd"], updated["budget_period"]) == ("3", "weekly")
    bad = cli(data, "orgs", "update", org["id"], "--budget-period", "hourly")
    assert bad.returncode == 1 and "budget_period" in bad.stderr
