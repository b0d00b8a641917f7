"""A fleet of switchyard replicas behind HAProxy, sharing PostgreSQL and a Redis of its own, with
the faults an operator lives through: a replica killed with SIGKILL, Redis restarted, PostgreSQL
restarted. Used by tests/integration/test_fleet.py (bounded) and bench/fleet.py (longer, timed).

Each replica is `switchyard serve --workers N` in its own session, so a SIGKILL to the group takes
its workers with it, as a machine failure would. The load is recorded per request (what the
client saw, when) so the checks can compare it with what was billed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

from tests.conftest import MASTER_KEY, free_port

REPO = Path(__file__).resolve().parent.parent
ERRORS = REPO / "deploy" / "haproxy" / "errors"


def haproxy_config(port: int, backends: list[int], errors: Path = ERRORS) -> str:
    """The load balancer as deploy/haproxy/haproxy.cfg configures it, on local ports: readiness
    checks on /readyz, a refused connection retried on another replica, OpenAI-shaped errors of its own."""
    servers = "\n".join(f"  server r{i} 127.0.0.1:{p} check" for i, p in enumerate(backends, 1))
    return f"""global
  maxconn 4096
defaults
  mode http
  timeout connect 2s
  timeout client 120s
  timeout server 120s
  timeout http-request 10s
  retries 2
  retry-on conn-failure
  option redispatch
  errorfile 502 {errors}/502.http
  errorfile 503 {errors}/503.http
  errorfile 504 {errors}/504.http
frontend api
  bind 127.0.0.1:{port}
  default_backend switchyard
backend switchyard
  balance leastconn
  option httpchk GET /readyz
  http-check expect status 200
  default-server inter 500ms fall 2 rise 1
{servers}
"""


@dataclass
class Replica:
    port: int
    workdir: Path
    env: dict[str, str]
    workers: int
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = [sys.executable, "-m", "switchyard", "serve", "--host", "127.0.0.1", "--port", str(self.port),
               "--workers", str(self.workers)]
        log = open(self.workdir / "server.log", "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.workdir,
                                     start_new_session=True)
        log.close()

    def ready(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"replica on {self.port} exited:\n{self.logs()[-4000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"replica on {self.port} never became ready:\n{self.logs()[-4000:]}")
            time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL the replica and every worker of it, as a lost machine."""
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def logs(self) -> str:
        return (self.workdir / "server.log").read_text(errors="replace")


class OwnRedis:
    """A redis-server of the fleet's own, so restarting it disturbs nothing else."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True).stdout.strip() != b"PONG":
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # as a crash: whatever it held is gone
            self.proc.wait()

    def cli(self, *args: str) -> str:
        return subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True).stdout.strip()

    @contextlib.contextmanager
    def silent(self) -> Iterator[None]:
        """Alive but answering nothing (SIGSTOP) while the block runs."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.proc.pid, signal.SIGCONT)


def restart_postgres() -> None:
    """Restart the machine's PostgreSQL cluster (fast mode: sessions are cut, as in a failover)."""
    postgres_cluster("restart")


class Fleet:
    def __init__(self, workdir: Path, database_url: str, upstream_url: str, replicas: int = 3, workers: int = 2,
                 hold_lease_seconds: float = 3.0) -> None:
        self.workdir = workdir
        self.database_url = database_url
        self.redis = OwnRedis(workdir)
        self.port = free_port()
        config = {
            "store": {"url": database_url},
            "redis": {"url": self.redis.url, "hold_lease_seconds": hold_lease_seconds},
            "models": {name: {"deployments": [{
                "provider": "openai", "base_url": upstream_url, "api_key_env": "STANDIN_KEY", "model": behaviour,
                "catalog": "gpt-5.2", "timeouts": {"connect": 2, "read": 30}}]}
                for name, behaviour in (("gpt-5.2", "ok"), ("sim-slow-stream", "slow-stream"))},
        }
        (workdir / "switchyard.yaml").write_text(yaml.safe_dump(config))
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
        base_env.update({"SWITCHYARD_MASTER_KEY": MASTER_KEY, "SWITCHYARD_CONFIG": str(workdir / "switchyard.yaml"),
                         "STANDIN_KEY": "x", "PYTHONUNBUFFERED": "1"})
        self.replicas: list[Replica] = []
        for i in range(replicas):
            rdir = workdir / f"replica-{i + 1}"
            rdir.mkdir(parents=True, exist_ok=True)
            self.replicas.append(Replica(free_port(), rdir, {**base_env, "SWITCHYARD_DATA_DIR": str(rdir / "data")}, workers))
        self.haproxy: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, replicas: int | None = None) -> None:
        self.redis.start()
        serving = self.replicas[: replicas or len(self.replicas)]
        for r in serving:
            r.start()
        for r in serving:
            r.wait_ready()
        cfg = self.workdir / "haproxy.cfg"
        cfg.write_text(haproxy_config(self.port, [r.port for r in serving]))
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        self.haproxy = subprocess.Popen([haproxy, "-f", str(cfg), "-db"], stdout=open(self.workdir / "haproxy.log", "wb"),
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert self.haproxy.poll() is None, (self.workdir / "haproxy.log").read_text()
            assert time.monotonic() < deadline, "haproxy never routed to a ready replica"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.haproxy is not None and self.haproxy.poll() is None:
            self.haproxy.terminate()
            self.haproxy.wait(10)
        for r in self.replicas:
            r.stop()
        self.redis.stop()

    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        for _ in range(50):  # through the balancer: a replica may be briefly away
            r = httpx.request(method, f"http://127.0.0.1:{self.port}/admin/v1{path}", headers={"Authorization": f"Bearer {MASTER_KEY}"},
                              timeout=30, **kwargs)
            if r.status_code not in (502, 503):
                assert r.status_code < 300, r.text
                return r.json()
            time.sleep(0.2)
        raise AssertionError(f"admin {method} {path}: {r.status_code} {r.text}")

    def funds_key(self, kind: str, ident: str) -> str:
        return "sy:" + hashlib.sha256(self.database_url.encode()).hexdigest()[:12] + f":funds:{kind}:{ident}"

    def owners(self) -> list[str]:
        prefix = "sy:" + hashlib.sha256(self.database_url.encode()).hexdigest()[:12] + ":funds:"
        return [o for o in self.redis.cli("SMEMBERS", prefix + "owners").splitlines() if o]

    def live_owners(self) -> list[str]:
        prefix = "sy:" + hashlib.sha256(self.database_url.encode()).hexdigest()[:12] + ":funds:"
        return [o for o in self.owners() if self.redis.cli("EXISTS", prefix + "lease:" + o) == "1"]


@dataclass
class Outcome:
    started: float
    ended: float
    key: str
    stream: bool
    status: int
    request_id: str | None
    complete: bool  # the client received the whole answer (a stream: its usage and [DONE])
    cost: Decimal | None  # what the answer said it cost
    error: dict[str, Any] | None = None  # the OpenAI error object, when one came
    retry_after: str | None = None
    failure: str | None = None  # a transport failure (connection reset, timeout)


@dataclass
class Load:
    """Clients that keep sending until told to stop; `paused` holds them between requests."""
    base_url: str
    keys: list[str]
    clients: int = 12
    outcomes: list[Outcome] = field(default_factory=list)
    running: bool = True
    paused: bool = False
    busy: int = 0

    async def run(self) -> None:
        limits = httpx.Limits(max_connections=self.clients * 2, max_keepalive_connections=self.clients)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=httpx.Timeout(60, connect=5), limits=limits) as http:
            await asyncio.gather(*(self._client(http, i) for i in range(self.clients)))

    async def _client(self, http: httpx.AsyncClient, n: int) -> None:
        i = 0
        while self.running:
            if self.paused:
                await asyncio.sleep(0.05)
                continue
            key = self.keys[(n + i) % len(self.keys)]
            kind = (n + i) % 4  # plain, stream, plain, slow stream
            i += 1
            self.busy += 1
            try:
                outcome = await self._one(http, key, stream=kind % 2 == 1, slow=kind == 3)
                self.outcomes.append(outcome)
            finally:
                self.busy -= 1
            if outcome.status != 200:
                await asyncio.sleep(0.2)  # as a client backs off before its next try

    async def _one(self, http: httpx.AsyncClient, key: str, stream: bool, slow: bool) -> Outcome:
        body: dict[str, Any] = {"model": "sim-slow-stream" if slow else "gpt-5.2",
                                "messages": [{"role": "user", "content": "Hello fleet"}], "max_tokens": 8}
        if stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        started = time.monotonic()
        headers = {"Authorization": f"Bearer {key}"}
        try:
            async with http.stream("POST", "/chat/completions", json=body, headers=headers) as r:
                rid = r.headers.get("x-request-id")
                if r.status_code != 200 or not stream:
                    raw = await r.aread()
                    return _answered(started, key, stream, r, rid, raw)
                cost, done = None, False
                async for line in r.aiter_lines():
                    if line == "data: [DONE]":
                        done = True
                    elif line.startswith("data: "):
                        chunk = orjson.loads(line[6:])
                        if chunk.get("usage"):
                            cost = Decimal(str(chunk["usage"]["cost"]))
                return Outcome(started, time.monotonic(), key, True, 200, rid, done and cost is not None, cost)
        except (httpx.HTTPError, orjson.JSONDecodeError) as exc:
            return Outcome(started, time.monotonic(), key, stream, 0, None, False, None, failure=type(exc).__name__)

    async def pause(self) -> None:
        self.paused = True
        while self.busy:
            await asyncio.sleep(0.05)


def _answered(started: float, key: str, stream: bool, r: httpx.Response, rid: str | None, raw: bytes) -> Outcome:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        doc = None
    ended = time.monotonic()
    if r.status_code == 200 and isinstance(doc, dict) and doc.get("usage"):
        return Outcome(started, ended, key, stream, 200, rid, True, Decimal(str(doc["usage"]["cost"])))
    error = doc.get("error") if isinstance(doc, dict) and isinstance(doc.get("error"), dict) else None
    return Outcome(started, ended, key, stream, r.status_code, rid, False, None, error=error,
                   retry_after=r.headers.get("retry-after"))


def postgres_cluster(action: str) -> None:
    """stop, start or restart the machine's PostgreSQL cluster (fast: sessions are cut)."""
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    args = ["-m", "fast"] if action in ("stop", "restart") else []
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action, *args],
                   check=True, capture_output=True)
