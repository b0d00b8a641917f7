"""Shared fixtures: real gateway server processes on free ports, driven over HTTP."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from openai import OpenAI

from tests.openapi_spec import openapi  # noqa: F401  (the fixture validating objects against OpenAI's spec)
from tests.standins.openai_upstream import StandInUpstream

# pytest-xdist's workers set COLUMNS=80 and LINES=24; the commands the tests run would take that as
# a user's choice of width, where in a plain run their output goes to a pipe of no given width.
os.environ.pop("COLUMNS", None)
os.environ.pop("LINES", None)

MASTER_KEY = "sk-sy-test-master"


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> Iterator[None]:
    """Which tests share a process under `make test` (pytest-xdist, --dist loadgroup): each module's
    tests go together (its servers start once), and every test that runs the real model goes
    to one process. llama.cpp's threads spin while they wait for each other: two generations at
    once on two cores took several times as long as one after the other."""
    for item in items:
        if "local_gateway" in getattr(item, "fixturenames", ()) or item.get_closest_marker("local_model"):
            item.add_marker(pytest.mark.xdist_group("local-model"))
        elif not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
    yield
    # pytest-xdist groups by renaming each test (`name@group`); pytest 9.2 ignores the rename, and
    # the groups were silently lost (hence pytest<9.2 in pyproject.toml). Fail loudly instead.
    if getattr(config.option, "loadgroup", False) and items and "@" not in items[0].nodeid:
        raise pytest.UsageError("pytest-xdist --dist loadgroup has no effect with this pytest: tests/conftest.py")


USER_KEY = "sk-sy-test-user"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Gateway:
    base_url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    data_dir: Path

    @property
    def root(self) -> str:
        return self.base_url.removesuffix("/v1")

    def client(self, key: str = USER_KEY, **kwargs: Any) -> OpenAI:
        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("timeout", 120)
        return OpenAI(base_url=self.base_url, api_key=key, **kwargs)

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.root, timeout=60)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def logs_with(self, *parts: str, timeout: float = 30) -> str:
        """The log, once a line holds every one of `parts`: a worker writes its info lines from
        a thread of its own, up to 0.2 s after they are logged."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.logs()
            if any(all(part in line for part in parts) for line in text.splitlines()):
                return text
            assert time.monotonic() < deadline, f"no log line with {parts}:\n{text[-3000:]}"
            time.sleep(0.05)

    def usage_record(self, request_id: str) -> dict[str, Any]:
        """The request's usage record, read from the gateway's own SQLite file (as an operator
        would); waits for it, since a stream's record commits as its last frame leaves."""
        deadline = time.monotonic() + 30
        while True:
            with sqlite3.connect(self.data_dir / "switchyard.db") as db:
                db.row_factory = sqlite3.Row
                row = db.execute("SELECT * FROM usage_records WHERE request_id = ?", (request_id,)).fetchone()
            if row is not None:
                return dict(row)
            assert time.monotonic() < deadline, f"no usage record for {request_id}"
            time.sleep(0.05)

    def stop(self) -> None:
        stop_process(self.proc)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 15 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_gateway(
    workdir: Path,
    config: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    args: list[str] | None = None,
    master_key: str | None = MASTER_KEY,
    wait: bool = True,
) -> Gateway:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    data_dir = workdir / "data"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    full_env.update({"SWITCHYARD_DATA_DIR": str(data_dir), "SWITCHYARD_API_KEYS": USER_KEY, "PYTHONUNBUFFERED": "1"})
    if master_key:
        full_env["SWITCHYARD_MASTER_KEY"] = master_key
    if config is not None:
        path = workdir / "switchyard.yaml"
        path.write_text(yaml.safe_dump(config))
        full_env["SWITCHYARD_CONFIG"] = str(path)
    full_env.update(env or {})
    log_path = workdir / "server.log"
    cmd = [sys.executable, "-m", "switchyard", "serve", "--host", "127.0.0.1", "--port", str(port), *(args or [])]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=workdir)
    gw = Gateway(f"http://127.0.0.1:{port}/v1", proc, log_path, data_dir)
    if wait:
        wait_ready(gw)
    return gw


def wait_ready(gw: Gateway, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gw.proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {gw.proc.returncode}:\n{gw.logs()}")
        try:
            if httpx.get(gw.root + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    gw.stop()
    raise RuntimeError(f"gateway did not become ready:\n{gw.logs()}")


@pytest.fixture(scope="session")
def local_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The gateway with no config at all: the embedded local model, as `make serve` runs it."""
    gw = start_gateway(tmp_path_factory.mktemp("local-gateway"))
    yield gw
    gw.stop()


@pytest.fixture(scope="session")
def upstream() -> Iterator[StandInUpstream]:
    stand_in = StandInUpstream().start()
    yield stand_in
    stand_in.stop()


def upstream_config(upstream: StandInUpstream, read_timeout: float = 30) -> dict[str, Any]:
    """A config whose public models map to the stand-in's scripted behaviours."""
    def dep(behaviour: str) -> dict[str, Any]:
        return {"deployments": [{
            "provider": "openai", "base_url": upstream.base_url, "api_key_env": "STANDIN_KEY",
            "model": behaviour, "catalog": "gpt-5.2", "timeouts": {"connect": 2, "read": read_timeout},
        }]}

    behaviours = ["ok", "tools", "slow", "broken-stream", "error-event", "no-done", "garbage", "slow-stream",
                  "status-400", "status-401", "status-404", "status-429", "status-500", "status-503"]
    models = {"gpt-5.2": dep("ok")} | {f"sim-{b}": dep(b) for b in behaviours}
    models["small-window"] = {"deployments": [{
        "provider": "openai", "base_url": upstream.base_url, "model": "ok", "catalog": "small-window"}]}
    models["unreachable"] = {"deployments": [{
        "provider": "openai", "base_url": f"http://127.0.0.1:{free_port()}/v1", "model": "ok", "catalog": "gpt-5.2",
        "timeouts": {"connect": 2, "read": 5}}]}
    return {
        "models": models,
        "aliases": {"default": "gpt-5.2", "fast": "gpt-5.2"},
        # Test image servers listen on 127.0.0.2; every other internal address stays refused.
        "fetch": {"allow_networks": ["127.0.0.2/32"]},
        "catalog": {"small-window": {
            "provider": "openai", "owned_by": "test", "created": 1700000000, "context_window": 1000,
            "max_output_tokens": 200, "prices": {"input": "1", "cached_input": None, "output": "2"},
            "capabilities": ["streaming"], "endpoints": ["chat.completions"],
        }},
    }


@pytest.fixture(scope="session")
def upstream_gateway(tmp_path_factory: pytest.TempPathFactory, upstream: StandInUpstream) -> Iterator[Gateway]:
    gw = start_gateway(
        tmp_path_factory.mktemp("upstream-gateway"),
        config=upstream_config(upstream, read_timeout=1.5),
        env={"STANDIN_KEY": "sk-upstream-secret"},
    )
    yield gw
    gw.stop()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database on the local server (trust auth), dropped afterwards."""
    import asyncio
    import uuid

    import asyncpg

    name = "sy_" + uuid.uuid4().hex[:12]

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(host="127.0.0.1", port=5432, user="postgres", database="test")
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def known_everywhere(gw: Gateway, key: str, in_a_row: int = 20) -> None:
    """Until a new key is accepted `in_a_row` times in a row on fresh connections: with several
    workers, each learns it from the change feed, and a fresh connection may reach either."""
    accepted = 0
    deadline = time.monotonic() + 30
    while accepted < in_a_row:
        ok = httpx.get(f"{gw.base_url}/models", headers={"authorization": f"Bearer {key}"}).status_code == 200
        accepted = accepted + 1 if ok else 0
        assert time.monotonic() < deadline, "the key never reached every worker"


class Admin:
    """The admin API, as an operator's script would call it."""

    def __init__(self, gw: Gateway, key: str = MASTER_KEY) -> None:
        self.http = httpx.Client(base_url=gw.root + "/admin/v1", headers={"Authorization": f"Bearer {key}"}, timeout=30)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self.http.request(method, path, **kwargs)
        assert resp.status_code < 400, resp.text
        return resp.json()

    def org(self, name: str, **fields: Any) -> dict[str, Any]:
        return self.call("POST", "/organizations", json={"name": name, **fields})

    def topup(self, org: str, amount_usd: str) -> dict[str, Any]:
        return self.call("POST", f"/organizations/{org}/topup", json={"amount_usd": amount_usd})

    def key(self, org: str, **fields: Any) -> str:
        return self.call("POST", "/keys", json={"org_id": org, **fields})["key"]

    def balance(self, org: str) -> dict[str, Any]:
        return self.call("GET", f"/organizations/{org}/balance")
