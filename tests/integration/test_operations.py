"""Running it like production: SIGTERM drains (streams in flight finish and are billed, new
connections are refused, the process exits 0); SIGHUP and `switchyard reload` change deployments,
aliases and tiers on every worker without dropping a request (a bad file changes nothing);
/readyz says which dependency is down while /healthz stays alive; and every admin command works
against a running server over its admin API, with no database at hand."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

from tests.conftest import MASTER_KEY, USER_KEY, Admin, StandInUpstream, known_everywhere, start_gateway, upstream_config
from tests.fleet import OwnRedis

STREAM = {"model": "sim-slow-stream", "messages": [{"role": "user", "content": "Hi"}], "stream": True,
          "stream_options": {"include_usage": True}}


class SlowStream(threading.Thread):
    """A slow stream (chunks 0.3 s apart) read to its end in a thread; `first` is set at its first chunk."""

    def __init__(self, base_url: str) -> None:
        super().__init__(daemon=True)
        self.base_url, self.first, self.lines, self.request_id = base_url, threading.Event(), [], None
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            with httpx.stream("POST", f"{self.base_url}/chat/completions", json=STREAM, timeout=60,
                              headers={"Authorization": f"Bearer {USER_KEY}"}) as r:
                self.request_id = r.headers.get("x-request-id")
                for line in r.iter_lines():
                    if line.startswith("data: {") and '"content"' in line:
                        self.first.set()
                    self.lines.append(line)
        except Exception as exc:  # the assertions below say what it means
            self.error = exc

    @property
    def complete(self) -> bool:
        return "data: [DONE]" in self.lines and any('"usage":{' in line.replace(" ", "") and '"cost"' in line
                                                    for line in self.lines)


def _billed(gw: Any, request_id: str) -> dict[str, Any] | None:
    with sqlite3.connect(gw.data_dir / "switchyard.db") as db:
        db.row_factory = sqlite3.Row
        row = db.execute("SELECT * FROM usage_records WHERE request_id = ?", (request_id,)).fetchone()
    return dict(row) if row else None


def test_sigterm_lets_streams_finish_and_settle_then_exits(tmp_path: Path, upstream: StandInUpstream) -> None:
    redis = OwnRedis(tmp_path)
    redis.start()
    config = upstream_config(upstream) | {"redis": {"url": redis.url}}
    gw = start_gateway(tmp_path, config=config, env={"STANDIN_KEY": "x"}, args=["--workers", "2"])
    try:
        streams = [SlowStream(gw.base_url) for _ in range(3)]
        for s in streams:
            s.start()
        for s in streams:
            assert s.first.wait(30), s.error
        gw.proc.send_signal(signal.SIGTERM)
        # Soon nothing new is accepted...
        deadline = time.monotonic() + 10
        while True:
            try:
                httpx.get(gw.root + "/healthz", timeout=1)
            except httpx.TransportError:
                break
            assert time.monotonic() < deadline, "still accepting connections after SIGTERM"
            time.sleep(0.05)
        # ...while the streams in flight run to their end, billed.
        for s in streams:
            s.join(30)
            assert s.error is None and s.complete, (s.error, s.lines[-3:])
        assert gw.proc.wait(30) == 0
        for s in streams:
            record = _billed(gw, s.request_id)
            assert record is not None and record["status"] == "completed" and record["cost_nanos"] > 0
        assert "Traceback" not in gw.logs()
    finally:
        gw.stop()
        redis.stop()


def _models(gw: Any) -> set[str]:
    r = httpx.get(gw.base_url + "/models", headers={"Authorization": f"Bearer {USER_KEY}"}, timeout=10)
    return {m["id"] for m in r.json()["data"]}


def _everywhere(gw: Any, check: Any, what: str, in_a_row: int = 16) -> None:
    """Until `check` holds on `in_a_row` fresh connections in a row (each may reach any worker)."""
    seen = 0
    deadline = time.monotonic() + 30
    while seen < in_a_row:
        seen = seen + 1 if check() else 0
        assert time.monotonic() < deadline, what


def test_sighup_and_reload_change_the_config_on_every_worker_without_dropping_requests(
        tmp_path: Path, upstream: StandInUpstream) -> None:
    redis = OwnRedis(tmp_path)
    redis.start()
    config = upstream_config(upstream) | {"redis": {"url": redis.url}}
    gw = start_gateway(tmp_path, config=config, env={"STANDIN_KEY": "x"}, args=["--workers", "2"])
    path = tmp_path / "switchyard.yaml"
    try:
        assert "fresh" not in _models(gw)
        in_flight = [SlowStream(gw.base_url) for _ in range(2)]
        for s in in_flight:
            s.start()
        for s in in_flight:
            assert s.first.wait(30)
        # A new alias, a new deployment and a new tier; then SIGHUP to `serve`.
        changed = yaml.safe_load(path.read_text())
        changed["aliases"]["fresh"] = "gpt-5.2"
        changed["models"]["sim-added"] = {"deployments": [{
            "provider": "openai", "base_url": upstream.base_url, "api_key_env": "STANDIN_KEY", "model": "ok",
            "catalog": "gpt-5.2"}]}
        changed["tiers"] = {"gold": {"rpm": 5000, "tpm": 5000000}}
        path.write_text(yaml.safe_dump(changed))
        gw.proc.send_signal(signal.SIGHUP)
        _everywhere(gw, lambda: {"fresh", "sim-added"} <= _models(gw), "the new models never reached every worker")
        for s in in_flight:
            s.join(30)
            assert s.error is None and s.complete, s.lines[-3:]
        client = gw.client(USER_KEY)
        assert client.chat.completions.create(model="fresh", messages=[{"role": "user", "content": "Hi"}]).choices
        assert client.chat.completions.create(model="sim-added", messages=[{"role": "user", "content": "Hi"}]).choices
        admin = Admin(gw)
        _everywhere(gw, lambda: httpx.post(gw.root + "/admin/v1/organizations", json={"name": f"g{time.monotonic_ns()}",
                                                                                       "tier": "gold"},
                                           headers={"Authorization": f"Bearer {MASTER_KEY}"}).status_code == 200,
                    "the new tier never reached every worker", in_a_row=6)

        # A broken file: `switchyard reload` says why, and nothing changes anywhere.
        path.write_text("models: [this is not: a mapping")
        bad = _cli(tmp_path, "--base-url", gw.base_url, "--admin-key", MASTER_KEY, "reload")
        assert bad.returncode == 1 and "not reloaded" in bad.stderr, bad
        assert "fresh" in _models(gw)
        # The alias removed again, through the admin API: every worker follows the change feed.
        changed["aliases"].pop("fresh")
        path.write_text(yaml.safe_dump(changed))
        done = _cli(tmp_path, "--base-url", gw.base_url, "--admin-key", MASTER_KEY, "reload")
        assert done.returncode == 0, done.stderr
        assert orjson.loads(done.stdout)["object"] == "config.reload"
        _everywhere(gw, lambda: "fresh" not in _models(gw), "a worker kept the removed alias")
        assert admin.call("GET", "/organizations")  # still serving
        assert "Traceback" not in gw.logs()
    finally:
        gw.stop()
        redis.stop()


def test_readyz_names_the_dependency_that_is_down(tmp_path: Path, upstream: StandInUpstream) -> None:
    redis = OwnRedis(tmp_path)
    redis.start()
    gw = start_gateway(tmp_path, config=upstream_config(upstream) | {"redis": {"url": redis.url}},
                       env={"STANDIN_KEY": "x"})
    try:
        admin = Admin(gw)
        org = admin.org("readiness", tier="unlimited")
        admin.topup(org["id"], "10")
        budgeted = admin.key(org["id"], budget_usd="1")
        known_everywhere(gw, budgeted)
        ready = httpx.get(gw.root + "/readyz", timeout=10)
        assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "migrations": "ok", "redis": "ok"}
        redis.stop()
        down = httpx.get(gw.root + "/readyz", timeout=10)
        assert down.status_code == 503 and down.json()["checks"]["redis"].startswith("unreachable")
        assert down.json()["checks"]["database"] == "ok"
        assert httpx.get(gw.root + "/healthz", timeout=10).status_code == 200  # alive: not to be restarted
        # A key with a budget holds money in Redis for each request: it cannot be admitted now.
        refused = httpx.post(gw.base_url + "/chat/completions", headers={"Authorization": f"Bearer {budgeted}"},
                             json={"model": "gpt-5.2", "messages": [{"role": "user", "content": "Hi"}]}, timeout=30)
        assert refused.status_code == 503 and refused.headers["retry-after"]
        assert refused.json()["error"]["type"] == "server_error"
        redis.start()
        deadline = time.monotonic() + 20
        while httpx.get(gw.root + "/readyz", timeout=10).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        gw.stop()
        redis.stop()


def _cli(where: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI with a data directory of its own (empty): only the admin API can answer it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    env["SWITCHYARD_DATA_DIR"] = str(where / "cli-data-never-used")
    if (where / "switchyard.yaml").exists():
        env["SWITCHYARD_CONFIG"] = str(where / "switchyard.yaml")
    return subprocess.run([sys.executable, "-m", "switchyard", *args], env=env, capture_output=True, text=True,
                          timeout=120, input=stdin)


def test_every_admin_command_works_over_the_admin_api(tmp_path: Path, upstream: StandInUpstream) -> None:
    gw = start_gateway(tmp_path / "server", config=upstream_config(upstream), env={"STANDIN_KEY": "x"})
    remote = ("--base-url", gw.base_url, "--admin-key", MASTER_KEY)
    here = tmp_path / "operator"
    here.mkdir()

    def ok(*args: str, stdin: str | None = None) -> str:
        proc = _cli(here, *remote, *args, stdin=stdin)
        assert proc.returncode == 0, f"switchyard {' '.join(args)}: {proc.stderr}"
        return proc.stdout

    try:
        org = orjson.loads(ok("orgs", "create", "acme", "--tier", "unlimited", "--json"))
        assert org["name"] == "acme"
        assert "acme" in ok("orgs", "list")
        assert orjson.loads(ok("orgs", "update", "acme", "--rpm", "600", "--json"))["rpm_limit"] == 600
        ok("topup", "acme", "25.50")
        balance = orjson.loads(ok("balance", "acme", "--json"))
        assert balance["balance_nanos"] == 25_500_000_000 and balance["consistent"]
        made = orjson.loads(ok("keys", "create", "--org", "acme", "--name", "ci", "--budget-usd", "5", "--json"))
        key = made["key"]
        assert gw.client(key).chat.completions.create(model="gpt-5.2", messages=[{"role": "user", "content": "Hi"}])
        listed = orjson.loads(ok("keys", "list", "--org", "acme", "--json"))["data"]
        assert [k["id"] for k in listed] == [made["id"]]
        usage = orjson.loads(ok("usage", "--org", "acme", "--group-by", "model", "--json"))
        assert usage["data"][0]["requests"] == 1
        created = ok("users", "create", "ops@example.com", "--org", "acme", "--role", "billing", "--json",
                     stdin="correct horse battery\ncorrect horse battery\n")
        user = orjson.loads(created[created.index("{"):])  # after the password prompts
        assert user["email"] == "ops@example.com"
        assert "ops@example.com" in ok("users", "list")
        assert "/invite/" in ok("users", "invite", "acme", "--role", "member")
        ok("users", "remove", "ops@example.com", "acme")
        codes_csv = ok("codes", "create", "--name", "promo", "--value-usd", "2", "--count", "3")
        assert len([line for line in codes_csv.splitlines() if line.startswith("SY-") or ",SY-" in line]) == 3
        batches = orjson.loads(ok("codes", "list", "--json"))
        assert batches[0]["name"] == "promo" and batches[0]["count"] == 3
        ok("codes", "revoke", batches[0]["id"])
        rules = orjson.loads(ok("alerts", "set", "acme", "--balance-below-usd", "10", "--json"))
        assert rules["balance_below_usd"] == "10"
        assert orjson.loads(ok("alerts", "show", "acme", "--json"))["balance_below_usd"] == "10"
        month = time.strftime("%Y-%m", time.gmtime())
        statement = orjson.loads(ok("statement", "acme", month, "--json"))
        assert statement["adds_up"] is True
        assert orjson.loads(ok("keys", "revoke", made["id"], "--json"))["revoked_at"]
        # Everything went through the server: the CLI's own data directory has no database.
        assert not (here / "cli-data-never-used" / "switchyard.db").exists()
        # A wrong key: one line, exit 1.
        wrong = _cli(here, "--base-url", gw.base_url, "--admin-key", "sk-sy-nope", "orgs", "list")
        assert wrong.returncode == 1 and wrong.stderr.startswith("switchyard: ") and len(wrong.stderr.splitlines()) == 1
        missing = _cli(here, "--base-url", gw.base_url, "orgs", "list")
        assert missing.returncode == 1 and "--admin-key" in missing.stderr
    finally:
        gw.stop()
