#!/usr/bin/env python3
"""switchyard benchmark: the stand-in upstream alone ("direct"), switchyard, LiteLLM proxy and
Portkey gateway in front of the same upstream, in one run.

    python bench/run.py [--duration 15] [--rounds 3] [--only switchyard,litellm,portkey]
                        [--concurrency 50] [--rate 500]

Stdlib only (any python >= 3.11). On first use it installs what it needs, idempotently:
wrk (apt), a small venv with uvloop+aiohttp for the upstream and the open-loop generator,
LiteLLM 1.106.2 in its own venv and Portkey 1.15.2 via npm (all under bench/.peers/).
See bench/README.md for what every figure means.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PEERS = BENCH / ".peers"
RESULTS = BENCH / "results"
BENCH_VENV = PEERS / "bench-venv"
BENCH_VENV_PKGS = ["uvloop==0.23.0", "aiohttp==3.14.5"]
LITELLM_VENV = PEERS / "litellm-venv"
LITELLM_VERSION = "1.106.2"
PORTKEY_DIR = PEERS / "portkey"
PORTKEY_VERSION = "1.15.2"
HONO_NODE_SERVER_VERSION = "1.13.5"
PORTKEY_ENTRY = PORTKEY_DIR / "node_modules/@portkey-ai/gateway/build/start-server.js"
SWITCHYARD_BIN = REPO / ".venv/bin/switchyard"

MASTER_KEY = "sk-bench-master"
MODEL = "gpt-5.2"
CHAT_PATH = "/v1/chat/completions"
# switchyard as production runs it, beside the peers: (workers, Redis for limits and money holds).
SWITCHYARD_VARIANTS = {"switchyard": (1, False), "switchyard-redis": (1, True), "switchyard-2w": (2, True)}
GATEWAYS = [*SWITCHYARD_VARIANTS, "litellm", "portkey"]
PEERS_MEASURED = ["litellm", "portkey"]

sys.dont_write_bytecode = True  # keep bench/ free of __pycache__
sys.path.insert(0, str(BENCH))
import upstream as _upstream  # noqa: E402  (stdlib-only at import time)

MANY_MODEL = _upstream.MANY_MODEL
MANY_EVENTS = _upstream.MANY_CHUNKS + 4  # role, content chunks, finish, usage, [DONE]
NORMAL_EVENTS = len(_upstream.REPLY_PIECES) + 4

PROMPT_SIZES_KB = [1, 100, 1024]
EXPECTED_TEXT = _upstream.REPLY_TEXT
EXPECTED_USAGE = (_upstream.PROMPT_TOKENS, _upstream.COMPLETION_TOKENS)


class SetupError(RuntimeError):
    pass


# --------------------------------------------------------------------------- output helpers

T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f}s] {msg}", flush=True)


def run_streamed(cmd: list[str], prefix: str, cwd: Path | None = None, env: dict | None = None) -> None:
    """Run an install command, echoing its output as progress."""
    log(f"$ {' '.join(cmd)}")
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    assert p.stdout is not None
    for line in p.stdout:
        line = line.rstrip()
        if not line or "is ignored: it is neither a file nor a directory" in line:
            continue
        print(f"    [{prefix}] {line}", flush=True)
    rc = p.wait()
    if rc != 0:
        raise SetupError(f"{prefix}: command failed with exit code {rc}: {' '.join(cmd)}")


# --------------------------------------------------------------------------- setup (idempotent)


def ensure_apt(pkg: str, binary: str, required: bool = True) -> str | None:
    path = shutil.which(binary)
    if path:
        return path
    if os.geteuid() != 0:
        if required:
            raise SetupError(f"{binary} is missing and this is not root: run `apt-get install -y {pkg}`")
        return None
    if not required:
        # only install optional tools that the package lists know about
        if subprocess.run(["apt-cache", "show", pkg], capture_output=True).returncode != 0:
            return None
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log(f"installing {pkg} with apt-get ...")
    try:
        run_streamed(["apt-get", "install", "-y", "--no-install-recommends", pkg], pkg, env=env)
    except SetupError:
        run_streamed(["apt-get", "update"], "apt", env=env)
        run_streamed(["apt-get", "install", "-y", "--no-install-recommends", pkg], pkg, env=env)
    path = shutil.which(binary)
    if not path and required:
        raise SetupError(f"{binary} still missing after apt-get install {pkg}")
    return path


def ensure_venv(venv: Path, pkgs: list[str], check: str, label: str) -> Path:
    py = venv / "bin/python"
    if py.exists() and subprocess.run([str(py), "-c", check], capture_output=True).returncode == 0:
        return py
    log(f"setting up {label} in {venv.relative_to(REPO)} (first use; this can take a few minutes) ...")
    if not py.exists():
        run_streamed([sys.executable, "-m", "venv", str(venv)], label)
    run_streamed(
        [str(py), "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off", *pkgs],
        label,
    )
    if subprocess.run([str(py), "-c", check], capture_output=True).returncode != 0:
        raise SetupError(f"{label}: installed, but `{check}` still fails")
    return py


def ensure_bench_venv() -> Path:
    return ensure_venv(
        BENCH_VENV,
        BENCH_VENV_PKGS,
        "import uvloop, aiohttp",
        "bench-venv (uvloop+aiohttp)",
    )


def ensure_litellm() -> Path:
    check = (
        "import importlib.metadata as m, sys; "
        f"sys.exit(0 if m.version('litellm') == '{LITELLM_VERSION}' else 1)"
    )
    ensure_venv(LITELLM_VENV, [f"litellm[proxy]=={LITELLM_VERSION}"], check, f"litellm {LITELLM_VERSION}")
    exe = LITELLM_VENV / "bin/litellm"
    if not exe.exists():
        raise SetupError(f"{exe} missing after install")
    return exe


def _pkg_version(pkg_json: Path) -> str | None:
    try:
        return json.loads(pkg_json.read_text())["version"]
    except Exception:
        return None


def ensure_portkey() -> Path:
    gw_v = _pkg_version(PORTKEY_DIR / "node_modules/@portkey-ai/gateway/package.json")
    hono_v = _pkg_version(PORTKEY_DIR / "node_modules/@hono/node-server/package.json")
    if PORTKEY_ENTRY.exists() and gw_v == PORTKEY_VERSION and hono_v == HONO_NODE_SERVER_VERSION:
        return PORTKEY_ENTRY
    if not shutil.which("npm") or not shutil.which("node"):
        raise SetupError("node/npm not found (apt-get install -y nodejs npm)")
    log(f"setting up Portkey gateway {PORTKEY_VERSION} in {PORTKEY_DIR.relative_to(REPO)} (npm) ...")
    PORTKEY_DIR.mkdir(parents=True, exist_ok=True)
    # @hono/node-server 1.19.x (what npm resolves) breaks every streaming request with
    # "TypeError: immutable"; 1.13.5 works (see shared/reference/dependencies.md).
    (PORTKEY_DIR / "package.json").write_text(
        json.dumps(
            {
                "name": "switchyard-bench-portkey",
                "private": True,
                "dependencies": {"@portkey-ai/gateway": PORTKEY_VERSION},
                "overrides": {"@hono/node-server": HONO_NODE_SERVER_VERSION},
            },
            indent=2,
        )
        + "\n"
    )
    run_streamed(["npm", "install", "--no-audit", "--no-fund"], "npm", cwd=PORTKEY_DIR)
    hono_v = _pkg_version(PORTKEY_DIR / "node_modules/@hono/node-server/package.json")
    if not PORTKEY_ENTRY.exists() or hono_v != HONO_NODE_SERVER_VERSION:
        raise SetupError(f"portkey install incomplete (entry {PORTKEY_ENTRY.exists()}, @hono/node-server {hono_v})")
    return PORTKEY_ENTRY


# --------------------------------------------------------------------------- /proc helpers


def read_cpu_times() -> dict[str, list[int]]:
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if not line.startswith("cpu"):
                break
            parts = line.split()
            out[parts[0]] = [int(x) for x in parts[1:9]]  # user nice system idle iowait irq softirq steal
    return out


def cpu_delta(a: dict, b: dict) -> dict:
    res: dict = {}
    for name in a:
        if name not in b:
            continue
        d = [y - x for x, y in zip(a[name], b[name])]
        total = sum(d) or 1
        steal = d[7]
        idle = d[3] + d[4]
        res[name] = {
            "steal_pct": round(100.0 * steal / total, 2),
            "irq_softirq_pct": round(100.0 * (d[5] + d[6]) / total, 2),
            "busy_pct": round(100.0 * (total - idle - steal) / total, 1),
        }
    return {
        "steal_pct": res.get("cpu", {}).get("steal_pct"),
        "per_cpu": {k: v for k, v in res.items() if k != "cpu"},
        "busy_pct": res.get("cpu", {}).get("busy_pct"),
    }


CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except (OSError, IndexError, ValueError):
            pass
    return total / CLK_TCK


def our_cpu_seconds(roots: list[int]) -> float:
    """CPU seconds used so far by this script, its waited-for children (wrk, openloop.py) and
    the server trees it started: used to tell how much of the machine other people used."""
    t = os.times()
    pids: list[int] = []
    for r in roots:
        pids.extend(process_tree(r))
    return t.user + t.system + t.children_user + t.children_system + proc_cpu_seconds(pids)


def busy_seconds(times: dict) -> float:
    """user + nice + system: time charged to processes (irq/softirq, e.g. loopback networking,
    and steal are not charged to anyone and are left out)."""
    v = times["cpu"]
    return (v[0] + v[1] + v[2]) / CLK_TCK


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if not os.path.exists(f"/proc/{pid}"):
            continue
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def tree_mem_kb(root: int) -> dict:
    rss = hwm = 0
    pids = process_tree(root)
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
                    elif line.startswith("VmHWM:"):
                        hwm += int(line.split()[1])
        except OSError:
            pass
    return {"rss_kb": rss, "hwm_kb": hwm, "processes": len(pids)}


class RSSSampler(threading.Thread):
    """Samples the summed VmRSS of every registered process tree; keeps the maximum."""

    def __init__(self, interval: float = 0.2):
        super().__init__(daemon=True)
        self.interval = interval
        self.roots: dict[str, int] = {}
        self.peak_kb: dict[str, int] = {}
        self.lock = threading.Lock()
        self.stop_evt = threading.Event()

    def add(self, name: str, pid: int) -> None:
        with self.lock:
            self.roots[name] = pid

    def run(self) -> None:
        while not self.stop_evt.wait(self.interval):
            with self.lock:
                roots = dict(self.roots)
            for name, pid in roots.items():
                kb = tree_mem_kb(pid)["rss_kb"]
                if kb > self.peak_kb.get(name, 0):
                    self.peak_kb[name] = kb


# --------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pin(cpu: str | None) -> list[str]:
    return ["taskset", "-c", cpu] if cpu is not None and shutil.which("taskset") else []


class Server:
    def __init__(self, name: str, cmd: list[str], log_path: Path, cpu: str | None, env: dict | None = None, cwd: Path | None = None):
        self.name, self.cmd, self.log_path, self.cpu = name, cmd, log_path, cpu
        self.env, self.cwd = env, cwd
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.logf = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            pin(self.cpu) + self.cmd,
            stdout=self.logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 25) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join("      | " + l for l in lines[-n:])

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)
        self.logf.close()


def http_request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None, timeout: float = 30.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, dict((k.lower(), v) for k, v in resp.getheaders()), data
    finally:
        conn.close()


def wait_http(server: Server | None, port: int, path: str, timeout: float, want_200: bool = True) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server is not None and not server.alive():
            return False
        try:
            status, _, _ = http_request(port, "GET", path, timeout=2)
            if status == 200 or not want_200:
                return True
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.25)
    return False


# --------------------------------------------------------------------------- correctness checks


def chat_body(stream: bool) -> bytes:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
        "max_tokens": 64,
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body).encode()


def check_usage(usage, where: str, warnings: list[str]) -> None:
    if not isinstance(usage, dict):
        raise ValueError(f"{where}: usage missing or not an object: {usage!r}")
    for k in ("prompt_tokens", "completion_tokens", "total_tokens"):
        if not isinstance(usage.get(k), int):
            raise ValueError(f"{where}: usage.{k} missing or not an int: {usage!r}")
    if (usage["prompt_tokens"], usage["completion_tokens"]) != EXPECTED_USAGE:
        warnings.append(f"{where}: usage {usage['prompt_tokens']}/{usage['completion_tokens']} differs from the upstream's {EXPECTED_USAGE[0]}/{EXPECTED_USAGE[1]}")


def validate(port: int, headers: dict) -> dict:
    """One non-streaming and one streaming request; raise ValueError if either answer is wrong."""
    warnings: list[str] = []
    h = dict(headers, **{"Content-Type": "application/json"})
    # non-streaming
    status, rh, data = http_request(port, "POST", CHAT_PATH, chat_body(False), h)
    if status != 200:
        raise ValueError(f"non-stream: HTTP {status}: {data[:400]!r}")
    try:
        obj = json.loads(data)
    except ValueError:
        raise ValueError(f"non-stream: body is not JSON: {data[:400]!r}") from None
    if obj.get("object") != "chat.completion":
        raise ValueError(f"non-stream: object is {obj.get('object')!r}, not 'chat.completion': {data[:400]!r}")
    choices = obj.get("choices")
    if not isinstance(choices, list) or not choices:
        raise ValueError(f"non-stream: no choices: {data[:400]!r}")
    msg = choices[0].get("message") or {}
    if msg.get("role") != "assistant" or msg.get("content") != EXPECTED_TEXT:
        raise ValueError(f"non-stream: message is not the upstream's answer: {msg!r}")
    if choices[0].get("finish_reason") != "stop":
        raise ValueError(f"non-stream: finish_reason {choices[0].get('finish_reason')!r}")
    if not isinstance(obj.get("id"), str) or not obj.get("id"):
        raise ValueError("non-stream: id missing")
    check_usage(obj.get("usage"), "non-stream", warnings)
    if not str(obj.get("model", "")).startswith(MODEL):
        warnings.append(f"non-stream: model is {obj.get('model')!r}")
    # streaming
    data_ns = data
    status, rh, data = http_request(port, "POST", CHAT_PATH, chat_body(True), h)
    if status != 200:
        raise ValueError(f"stream: HTTP {status}: {data[:400]!r}")
    if "text/event-stream" not in rh.get("content-type", ""):
        warnings.append(f"stream: content-type is {rh.get('content-type')!r}")
    text = data.decode("utf-8", errors="replace").replace("\r\n", "\n")
    datas = [ln[5:].lstrip() for ln in text.split("\n") if ln.startswith("data:")]
    if not datas or datas[-1] != "[DONE]":
        raise ValueError(f"stream: does not end with data: [DONE]: ...{text[-300:]!r}")
    content, finish, usage_chunks, n_chunks = "", None, [], 0
    for d in datas[:-1]:
        try:
            c = json.loads(d)
        except ValueError:
            raise ValueError(f"stream: non-JSON data line: {d[:200]!r}") from None
        if c.get("error"):
            raise ValueError(f"stream: error event: {d[:300]!r}")
        if c.get("object") != "chat.completion.chunk":
            raise ValueError(f"stream: chunk object is {c.get('object')!r}: {d[:300]!r}")
        n_chunks += 1
        for ch in c.get("choices") or []:
            delta = ch.get("delta") or {}
            content += delta.get("content") or ""
            if ch.get("finish_reason"):
                finish = ch["finish_reason"]
        if c.get("usage"):
            usage_chunks.append(c)
    if content != EXPECTED_TEXT:
        raise ValueError(f"stream: reassembled content {content!r} is not the upstream's {EXPECTED_TEXT!r}")
    if finish != "stop":
        raise ValueError(f"stream: finish_reason {finish!r}")
    if not usage_chunks:
        raise ValueError("stream: no usage chunk although stream_options.include_usage was true")
    check_usage(usage_chunks[-1]["usage"], "stream", warnings)
    if usage_chunks[-1].get("choices"):
        warnings.append("stream: the usage chunk has non-empty choices (OpenAI sends choices: [])")
    return {
        "ok": True,
        "stream_chunks": n_chunks,
        "warnings": warnings,
        "nonstream_body": data_ns.decode("utf-8", errors="replace")[:2000],
        "stream_last_events": [d[:1000] for d in datas[-3:]],
    }


# --------------------------------------------------------------------------- load runs


def parse_prefixed(out: str, prefix: str) -> dict:
    for line in out.splitlines():
        if line.startswith(prefix + " "):
            return json.loads(line[len(prefix) + 1 :])
    raise RuntimeError(f"no {prefix} line in output:\n{out[-2000:]}")


def run_wrk(wrk: str, port: int, headers: dict, stream: bool, duration: float, conc: int, cpu: str | None,
            env: dict | None = None) -> dict:
    """`env`: BENCH_MODEL or BENCH_BODY_FILE for the scripts (see bench/wrk_chat*.lua)."""
    script = BENCH / ("wrk_chat_stream.lua" if stream else "wrk_chat.lua")
    cmd = pin(cpu) + [wrk, "-t1", f"-c{conc}", f"-d{max(1, int(round(duration)))}s", "--timeout", "30s", "-s", str(script)]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    cmd.append(f"http://127.0.0.1:{port}{CHAT_PATH}")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60,
                       env=dict(os.environ, **env) if env else None)
    r = parse_prefixed(p.stdout, "WRKJSON")
    for line in p.stdout.splitlines():
        if line.startswith("WRKFIRSTBAD "):
            r["first_bad"] = line[12:][:400]
    secs = r["duration_us"] / 1e6
    errors = r["err_connect"] + r["err_read"] + r["err_write"] + r["err_timeout"]
    return {
        "tool": "wrk",
        "concurrency": conc,
        "requests": r["requests"],
        "rps": round(r["requests"] / secs, 1) if secs else 0.0,
        "p50_ms": r["p50_us"] / 1000.0,
        "p90_ms": r["p90_us"] / 1000.0,
        "p99_ms": r["p99_us"] / 1000.0,
        "max_ms": r["max_us"] / 1000.0,
        "mean_ms": round(r["mean_us"] / 1000.0, 3),
        "non2xx": r["non2xx"],
        "bad_body": r["bad_body"],
        "socket_errors": errors,
        "timeouts": r["err_timeout"],
        "first_bad": r.get("first_bad"),
        "raw": r,
    }


def run_openloop(py: Path, port: int, headers: dict, stream: bool, rate: float, duration: float, cpu: str | None) -> dict:
    warmup = min(1.0, duration / 5.0)
    cmd = pin(cpu) + [
        str(py), str(BENCH / "openloop.py"),
        "--url", f"http://127.0.0.1:{port}{CHAT_PATH}",
        "--rate", str(rate), "--duration", str(duration), "--warmup", str(warmup),
        "--max-inflight", "256", "--timeout", "60",
    ]
    if stream:
        cmd.append("--stream")
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + warmup + 200)
    r = parse_prefixed(p.stdout, "OPENLOOP")
    r["tool"] = "openloop.py"
    r["socket_errors"] = r.pop("errors")
    r["rps"] = r["achieved_rps"]
    return r


# --------------------------------------------------------------------------- extra columns


def gateway_cpu(t: "Target") -> float:
    return proc_cpu_seconds(process_tree(t.server.pid)) if t.server else 0.0


def run_many_chunks(wrk: str, t: "Target", args, cpu: str | None) -> dict:
    """Streams of MANY_EVENTS small events, one every --many-delay-ms, at the closed-loop
    concurrency: what relaying costs per chunk, apart from the per-request work."""
    g0 = gateway_cpu(t)
    res = run_wrk(wrk, t.port, t.headers, True, args.duration, args.concurrency, cpu, env={"BENCH_MODEL": MANY_MODEL})
    used = gateway_cpu(t) - g0
    streams = res["requests"]
    res["gateway_cpu_s"] = round(used, 3)
    res["cpu_us_per_stream"] = round(used * 1e6 / streams, 1) if streams else None
    res["cpu_us_per_chunk"] = round(used * 1e6 / (streams * MANY_EVENTS), 2) if streams else None
    return res


def prompt_body(size: int) -> bytes:
    """A non-streaming request whose body is `size` bytes, most of it one user message of words."""
    words = ("the quick brown fox jumps over a lazy dog while seven wizards quietly judge "
             "boxing matches near the old harbour and count every token twice ").split()
    head = {"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": ""}]}
    room = size - len(json.dumps(head))
    text, n = [], 0
    i = 0
    while n < room:
        w = words[i % len(words)]
        text.append(w)
        n += len(w) + 1
        i += 1
    head["messages"][0]["content"] = " ".join(text)[:room]
    return json.dumps(head).encode()


class StallProbe(threading.Thread):
    """Polls a target's health path on one keep-alive connection, one request a millisecond: the
    slowest answer while big requests run is how long the server could not serve anyone else."""

    def __init__(self, port: int, path: str):
        super().__init__(daemon=True)
        self.port, self.path = port, path
        self.latencies: list[float] = []
        self.stop_evt = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while not self.stop_evt.wait(0.001):
            t0 = time.perf_counter()
            try:
                conn.request("GET", self.path)
                conn.getresponse().read()
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                continue
            self.latencies.append((time.perf_counter() - t0) * 1000)
        conn.close()


def run_prompt_sizes(wrk: str, t: "Target", args, cpu: str | None, workdir: Path) -> dict:
    """One client sending prompts of each size in turn: gateway CPU per request and per KB; then
    the same again beside a StallProbe for the longest time the server stopped answering."""
    out: dict = {}
    # The probe's own floor: the same polling of an idle server (a late answer here is the
    # machine's scheduling, not the server's work).
    probe = StallProbe(t.port, t.ready_path)
    probe.start()
    time.sleep(3.0)
    probe.stop_evt.set()
    probe.join()
    out["idle_probe_max_ms"] = round(max(probe.latencies), 2) if probe.latencies else None
    for kb in PROMPT_SIZES_KB:
        body = workdir / f"prompt-{kb}k.json"
        body.write_bytes(prompt_body(kb * 1024))
        g0 = gateway_cpu(t)
        res = run_wrk(wrk, t.port, t.headers, False, args.duration, 1, cpu, env={"BENCH_BODY_FILE": str(body)})
        used = gateway_cpu(t) - g0
        done = res["requests"]
        probe = StallProbe(t.port, t.ready_path)
        probe.start()
        stall_res = run_wrk(wrk, t.port, t.headers, False, max(3.0, args.duration / 3), 1, cpu, env={"BENCH_BODY_FILE": str(body)})
        probe.stop_evt.set()
        probe.join()
        lat = sorted(probe.latencies)
        out[f"{kb}k"] = {
            "kb": kb, "requests": done, "rps": res["rps"], "p50_ms": res["p50_ms"],
            "failed": res["non2xx"] + res["bad_body"] + res["socket_errors"]
            + stall_res["non2xx"] + stall_res["bad_body"] + stall_res["socket_errors"],
            "first_bad": res.get("first_bad") or stall_res.get("first_bad"),
            "cpu_us_per_req": round(used * 1e6 / done, 1) if done else None,
            "cpu_us_per_kb": round(used * 1e6 / done / kb, 2) if done else None,
            "probe_p50_ms": round(lat[len(lat) // 2], 2) if lat else None,
            "probe_max_ms": round(lat[-1], 2) if lat else None,
        }
        log(f"{t.name}: {kb} KB prompts: {res['rps']:.1f} rps, {out[f'{kb}k']['cpu_us_per_req']} us CPU/request, "
            f"{out[f'{kb}k']['cpu_us_per_kb']} us/KB; health answered in at most {out[f'{kb}k']['probe_max_ms']} ms meanwhile")
    return out


def run_soak(py: Path, t: "Target", args, cpu: str | None) -> dict:
    """--soak seconds at the fixed rate (non-streaming), RSS sampled every 30 s."""
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    t0 = time.monotonic()

    def sample() -> None:
        while True:
            samples.append((round(time.monotonic() - t0, 1), round(tree_mem_kb(t.server.pid)["rss_kb"] / 1024, 1)))
            if stop.wait(30):
                return

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    g0 = gateway_cpu(t)
    res = run_openloop(py, t.port, t.headers, False, args.rate, args.soak, cpu)
    used = gateway_cpu(t) - g0
    stop.set()
    th.join()
    samples.append((round(time.monotonic() - t0, 1), round(tree_mem_kb(t.server.pid)["rss_kb"] / 1024, 1)))
    return {
        "seconds": args.soak, "rate": args.rate, "achieved_rps": res["rps"], "p50_ms": res["p50_ms"],
        "p99_ms": res["p99_ms"], "saturated": res["saturated"],
        "failed": res["non2xx"] + res["bad_body"] + res["socket_errors"],
        "cpu_us_per_req": round(used * 1e6 / res["ok"], 1) if res.get("ok") else None,
        "rss_start_mb": samples[0][1], "rss_end_mb": samples[-1][1], "rss_max_mb": max(m for _, m in samples),
        "rss_samples": samples,
    }


# --------------------------------------------------------------------------- targets


class Target:
    def __init__(self, name: str):
        self.name = name
        self.server: Server | None = None
        self.port = 0
        self.headers: dict = {}
        self.version = ""
        self.skipped: str | None = None
        self.validation: dict | None = None
        self.idle: dict | None = None
        self.runs: list[dict] = []
        self.ready_s: float | None = None
        self.extras: dict = {}  # many-chunk streams, prompt sizes, soak


def git_head() -> str | None:
    try:
        head = (REPO / ".git/HEAD").read_text().strip()
        if head.startswith("ref: "):
            ref = head[5:]
            p = REPO / ".git" / ref
            if p.exists():
                return p.read_text().strip()
            packed = REPO / ".git/packed-refs"
            if packed.exists():
                for line in packed.read_text().splitlines():
                    if line.endswith(" " + ref):
                        return line.split()[0]
            return None
        return head
    except OSError:
        return None


def switchyard_version(bin_path: Path) -> str:
    py = bin_path.parent / "python"
    try:
        v = subprocess.run(
            [str(py), "-c", "import importlib.metadata as m; print(m.version('switchyard'))"],
            capture_output=True, text=True, timeout=30,
        ).stdout.strip()
    except Exception:
        v = ""
    head = git_head()
    return f"{v or '?'} (git {head[:10]})" if head else (v or "?")


def make_gateway(name: str, args, up_port: int, workdir: Path, logdir: Path, gw_cpu: str | None) -> Target:
    t = Target(name)
    t.port = free_port()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("SWITCHYARD_", "LITELLM_", "OPENAI_"))}
    if name in SWITCHYARD_VARIANTS:
        workers, with_redis = SWITCHYARD_VARIANTS[name]
        bin_path = Path(args.switchyard_bin)
        if not bin_path.exists():
            t.skipped = f"{bin_path} does not exist (switchyard is not installed in the repo venv yet)"
            return t
        cfg = workdir / f"{name}.yaml"
        deployment = (
            "      - provider: openai\n"
            f"        base_url: http://127.0.0.1:{up_port}/v1\n"
            "        api_key_env: BENCH_UPSTREAM_KEY\n"
            f"        model: {MODEL}\n"
        )
        if args.routing:
            # A group of two healthy deployments (weighted) behind one that always fails
            # (nothing listens on its port): retries, fallback and the circuit breaker all run.
            group = (
                "    strategy: weighted\n"
                "    deployments:\n"
                "      - provider: openai\n"
                f"        base_url: http://127.0.0.1:{free_port()}/v1\n"
                f"        model: {MODEL}\n"
                "        priority: 0\n"
                "        retries: 0\n"
                + deployment.replace("      - provider: openai\n", "      - provider: openai\n        priority: 1\n") * 2
            )
        else:
            group = "    deployments:\n" + deployment
        cfg.write_text(
            "models:\n"
            f"  {MODEL}:\n"
            + group +
            f"  {MANY_MODEL}:\n"
            "    deployments:\n" + deployment.replace(f"model: {MODEL}", f"model: {MANY_MODEL}\n        catalog: {MODEL}") +
            # Accounts, metering and limits on: a tier whose limits are checked on every request
            # but set high enough that the load generator never hits them.
            "tiers:\n"
            "  bench: {rpm: 100000000, tpm: 100000000000}\n"
        )
        data_dir = workdir / f"{name}-data"
        data_dir.mkdir(exist_ok=True)
        env = dict(
            base_env,
            SWITCHYARD_CONFIG=str(cfg),
            SWITCHYARD_DATA_DIR=str(data_dir),
            SWITCHYARD_MASTER_KEY=MASTER_KEY,
            BENCH_UPSTREAM_KEY="dummy",
        )
        if with_redis:
            env["SWITCHYARD_REDIS_URL"] = args.redis_url
        # A prepaid organisation with a balance and a key with a budget: every request is rate
        # limited, reserved, metered, priced and settled durably, as for a real customer.
        def cli(*argv: str) -> str:
            return subprocess.run([str(bin_path), *argv], env=env, cwd=workdir, check=True,
                                  capture_output=True, text=True).stdout
        cli("orgs", "create", "bench", "--tier", "bench")
        cli("topup", "bench", "1000000")
        key = json.loads(cli("keys", "create", "--org", "bench", "--name", "bench", "--budget-usd", "1000000", "--json"))["key"]
        cmd = [str(bin_path), "serve", "--host", "127.0.0.1", "--port", str(t.port), "--workers", str(workers)]
        if workers > 1 and gw_cpu is not None:  # every core, the load generator's too
            gw_cpu = f"{args.load_cpu},{gw_cpu}"
        t.server = Server(name, cmd, logdir / f"{name}.log", gw_cpu, env=env, cwd=workdir)
        t.headers = {"Authorization": f"Bearer {key}"}
        t.version = switchyard_version(bin_path)
        t.ready_path = "/healthz"
    elif name == "litellm":
        cfg = workdir / "litellm.yaml"
        cfg.write_text(
            "model_list:\n"
            f"  - model_name: {MODEL}\n"
            "    litellm_params:\n"
            f"      model: openai/{MODEL}\n"
            f"      api_base: http://127.0.0.1:{up_port}/v1\n"
            "      api_key: dummy\n"
            f"  - model_name: {MANY_MODEL}\n"
            "    litellm_params:\n"
            f"      model: openai/{MANY_MODEL}\n"
            f"      api_base: http://127.0.0.1:{up_port}/v1\n"
            "      api_key: dummy\n"
        )
        env = dict(
            base_env,
            LITELLM_MASTER_KEY=MASTER_KEY,
            LITELLM_LOCAL_MODEL_COST_MAP="True",
            LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS="True",
            LITELLM_LOCAL_BLOG_POSTS="True",
            LITELLM_LOCAL_AUTOROUTER_PRESETS="True",
            LITELLM_LOCAL_POLICY_TEMPLATES="True",
            LITELLM_LOG="ERROR",
        )
        env.pop("DATABASE_URL", None)
        cmd = [str(LITELLM_VENV / "bin/litellm"), "--config", str(cfg), "--host", "127.0.0.1", "--port", str(t.port), "--num_workers", "1"]
        t.server = Server(name, cmd, logdir / "litellm.log", gw_cpu, env=env, cwd=workdir)
        t.headers = {"Authorization": f"Bearer {MASTER_KEY}"}
        t.version = LITELLM_VERSION
        t.ready_path = "/health/liveliness"
    elif name == "portkey":
        cmd = ["node", str(PORTKEY_ENTRY), f"--port={t.port}", "--headless"]
        t.server = Server(name, cmd, logdir / "portkey.log", gw_cpu, env=dict(base_env, NODE_ENV="production"), cwd=PORTKEY_DIR)
        t.headers = {
            "Authorization": "Bearer dummy",
            "x-portkey-provider": "openai",
            "x-portkey-custom-host": f"http://127.0.0.1:{up_port}/v1",
        }
        t.version = _pkg_version(PORTKEY_DIR / "node_modules/@portkey-ai/gateway/package.json") or "?"
        t.ready_path = "/"
    return t


# --------------------------------------------------------------------------- summary


def cpu_per_request(run: dict) -> float | None:
    """The target's own CPU (its whole process tree) per request answered in that run, in µs."""
    res = run.get("result") or {}
    done = res.get("requests") if res.get("tool") == "wrk" else res.get("ok")
    return round(run["gateway_cpu_s"] * 1e6 / done, 1) if done and "gateway_cpu_s" in run else None


def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def fmt(v, digits=None, suffix="") -> str:
    if v is None:
        return "–"
    if digits is None:
        digits = 0 if abs(v) >= 100 else (1 if abs(v) >= 10 else 2)
    return f"{v:,.{digits}f}{suffix}"


MODES = [
    ("closed_nonstream", "wrk", False),
    ("closed_stream", "wrk", True),
    ("rate_nonstream", "open", False),
    ("rate_stream", "open", True),
]


def summarize(targets: list[Target], args) -> dict:
    by = {t.name: t for t in targets}
    direct = by.get("direct")
    summary: dict = {}
    for t in targets:
        if t.skipped:
            summary[t.name] = {"skipped": t.skipped}
            continue
        s: dict = {"version": t.version}
        for mode, _, _ in MODES:
            runs = [r for r in t.runs if r["mode"] == mode and "result" in r]
            if not runs:
                continue
            res = [r["result"] for r in runs]
            m = {
                "rounds": len(res),
                "rps": med([x["rps"] for x in res]),
                "p50_ms": med([x["p50_ms"] for x in res]),
                "p99_ms": med([x["p99_ms"] for x in res]),
                "non2xx": sum(x["non2xx"] for x in res),
                "bad_body": sum(x["bad_body"] for x in res),
                "socket_errors": sum(x["socket_errors"] for x in res),
                "timeouts": sum(x.get("timeouts", 0) for x in res),
                "steal_pct_median": med([r["cpu"]["steal_pct"] for r in runs]),
                "cpu_us_per_req": med([cpu_per_request(r) for r in runs]),
                "steal_pct_max": max((r["cpu"]["steal_pct"] or 0) for r in runs),
            }
            if mode.startswith("rate"):
                m["saturated_rounds"] = sum(1 for x in res if x["saturated"])
                m["ttfb_p50_ms"] = med([x.get("ttfb_p50_ms") for x in res])
                m["p50_sched_ms"] = med([x.get("p50_sched_ms") for x in res])
                if direct is not None and t is not direct:
                    diffs = []
                    for r in runs:
                        d = next((dr for dr in direct.runs if dr["mode"] == mode and dr["round"] == r["round"] and "result" in dr), None)
                        if d and r["result"]["p50_ms"] is not None and d["result"]["p50_ms"] is not None:
                            diffs.append(r["result"]["p50_ms"] - d["result"]["p50_ms"])
                    m["added_p50_ms"] = med(diffs)
            s[mode] = m
        s["idle_rss_mb"] = round(t.idle["rss_kb"] / 1024, 1) if t.idle else None
        s["peak_rss_mb"] = getattr(t, "peak_rss_mb", None)
        s["hwm_mb"] = getattr(t, "hwm_mb", None)
        s["processes"] = getattr(t, "processes", None)
        s["extras"] = t.extras
        summary[t.name] = s
    return summary


def print_tables(targets: list[Target], summary: dict, args) -> str:
    c = args.concurrency
    rate = args.rate
    lines = []
    lines.append(f"### Closed loop: wrk -t1 -c{c}, {args.duration:g} s per run, median of {args.rounds} round(s)")
    lines.append("")
    lines.append("| target | rps | p50 ms | p99 ms | CPU µs/req | stream rps | stream p50 ms | stream p99 ms | stream CPU µs/req | failed (non-2xx/bad/socket) |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for t in targets:
        s = summary[t.name]
        if "skipped" in s:
            lines.append(f"| {t.name} | skipped | | | | | | | | |")
            continue
        a, b = s.get("closed_nonstream", {}), s.get("closed_stream", {})
        bad = "/".join(str(a.get(k, 0) + b.get(k, 0)) for k in ("non2xx", "bad_body", "socket_errors"))
        lines.append(
            f"| {t.name} | {fmt(a.get('rps'))} | {fmt(a.get('p50_ms'))} | {fmt(a.get('p99_ms'))} | {fmt(a.get('cpu_us_per_req'))} | "
            f"{fmt(b.get('rps'))} | {fmt(b.get('p50_ms'))} | {fmt(b.get('p99_ms'))} | {fmt(b.get('cpu_us_per_req'))} | {bad} |"
        )
    lines += ratio_lines(summary)
    if rate > 0:
        lines.append("")
        lines.append(f"### Fixed rate (open loop): {rate:g} requests/s, {args.duration:g} s per run, median of {args.rounds} round(s); added = target p50 − direct p50 (same round)")
        lines.append("")
        lines.append("| target | p50 ms | p99 ms | added p50 ms | stream p50 ms | stream p99 ms | stream added p50 ms | stream TTFB p50 ms | kept up? | failed |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|")
        for t in targets:
            s = summary[t.name]
            if "skipped" in s:
                lines.append(f"| {t.name} | skipped | | | | | | | | |")
                continue
            a, b = s.get("rate_nonstream", {}), s.get("rate_stream", {})
            sat = (a.get("saturated_rounds", 0) or 0) + (b.get("saturated_rounds", 0) or 0)
            if sat:
                kept = f"NO: saturated in {sat} run(s), achieved {fmt(a.get('rps'))} / {fmt(b.get('rps'))} rps"
            else:
                kept = "yes"
            bad = "/".join(str(a.get(k, 0) + b.get(k, 0)) for k in ("non2xx", "bad_body", "socket_errors"))
            added_a = "(baseline)" if t.name == "direct" else fmt(a.get("added_p50_ms"), 2)
            added_b = "(baseline)" if t.name == "direct" else fmt(b.get("added_p50_ms"), 2)
            lines.append(
                f"| {t.name} | {fmt(a.get('p50_ms'), 2)} | {fmt(a.get('p99_ms'), 2)} | {added_a} | "
                f"{fmt(b.get('p50_ms'), 2)} | {fmt(b.get('p99_ms'), 2)} | {added_b} | {fmt(b.get('ttfb_p50_ms'), 2)} | {kept} | {bad} |"
            )
    lines += extra_lines(targets, summary, args)
    lines.append("")
    lines.append("### Memory (server process tree) and steal")
    lines.append("")
    lines.append("| target | version | RSS idle MB | RSS peak MB (sampled) | VmHWM MB | processes | steal % median (max) | other load % median (max) |")
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|")
    for t in targets:
        s = summary[t.name]
        if "skipped" in s:
            lines.append(f"| {t.name} | skipped: {s['skipped']} | | | | | | |")
            continue
        steals = [r["cpu"]["steal_pct"] for r in t.runs if r.get("cpu")]
        st = f"{fmt(med(steals), 1)} ({fmt(max(steals), 1)})" if steals else "–"
        others = [r["cpu"]["other_load_pct"] for r in t.runs if r.get("cpu")]
        ot = f"{fmt(med(others), 1)} ({fmt(max(others), 1)})" if others else "–"
        lines.append(
            f"| {t.name} | {t.version} | {fmt(s.get('idle_rss_mb'), 1)} | {fmt(s.get('peak_rss_mb'), 1)} | "
            f"{fmt(s.get('hwm_mb'), 1)} | {s.get('processes') or '–'} | {st} | {ot} |"
        )
    return "\n".join(lines)


def _ratio(a, b) -> str:
    return f"{a / b:.2f}×" if a is not None and b else "–"


def ratio_lines(summary: dict) -> list[str]:
    """The comparisons issue 15 sets targets for, from the closed-loop figures above."""
    def get(name: str, mode: str, key: str):
        return (summary.get(name) or {}).get(mode, {}).get(key)

    out = ["", "| comparison | non-stream | stream |", "|---|---:|---:|"]
    if "switchyard-redis" in summary:
        out.append("| CPU per request, Redis mode ÷ in-memory (one worker) | "
                   + " | ".join(_ratio(get("switchyard-redis", m, "cpu_us_per_req"), get("switchyard", m, "cpu_us_per_req"))
                                for m in ("closed_nonstream", "closed_stream")) + " |")
    if "switchyard-2w" in summary:
        out.append("| requests/s, two workers with Redis ÷ one worker in-memory | "
                   + " | ".join(_ratio(get("switchyard-2w", m, "rps"), get("switchyard", m, "rps"))
                                for m in ("closed_nonstream", "closed_stream")) + " |")
    for peer in PEERS_MEASURED:
        if peer in summary and "skipped" not in summary[peer]:
            for name in SWITCHYARD_VARIANTS:
                if name in summary and "skipped" not in summary[name]:
                    out.append(f"| requests/s, {name} ÷ {peer} | "
                               + " | ".join(_ratio(get(name, m, "rps"), get(peer, m, "rps"))
                                            for m in ("closed_nonstream", "closed_stream")) + " |")
    return out if len(out) > 3 else []


def extra_lines(targets: list[Target], summary: dict, args) -> list[str]:
    out: list[str] = []
    many = [(t.name, t.extras["many"]) for t in targets if "many" in t.extras]
    if many:
        out += ["", f"### Many-chunk streams: {MANY_EVENTS} SSE events per stream, one every {args.many_delay_ms:g} ms, "
                    f"wrk -c{args.concurrency}, {args.duration:g} s",
                "", "CPU per chunk = the gateway's CPU ÷ events relayed (direct: the stand-in upstream's own CPU per event "
                    "it writes, one timer and one write each: a floor for any relay); beyond a plain stream = (CPU per many-chunk stream − "
                    f"CPU per plain {NORMAL_EVENTS}-event stream from the closed loop) ÷ {MANY_EVENTS - NORMAL_EVENTS} more events.",
                "", "| target | streams/s | p50 ms | p99 ms | CPU µs/stream | CPU µs/chunk | µs per chunk beyond a plain stream | failed |",
                "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for name, r in many:
            plain = (summary.get(name) or {}).get("closed_stream", {}).get("cpu_us_per_req")
            beyond = (r["cpu_us_per_stream"] - plain) / (MANY_EVENTS - NORMAL_EVENTS) if plain and r["cpu_us_per_stream"] else None
            bad = r["non2xx"] + r["bad_body"] + r["socket_errors"]
            out.append(f"| {name} | {fmt(r['rps'])} | {fmt(r['p50_ms'])} | {fmt(r['p99_ms'])} | {fmt(r['cpu_us_per_stream'])} | "
                       f"{fmt(r['cpu_us_per_chunk'], 2)} | {fmt(beyond, 2)} | {bad} |")
    sizes = [(t.name, t.extras["sizes"]) for t in targets if "sizes" in t.extras]
    if sizes:
        out += ["", f"### Prompt size: one client (wrk -c1), {args.duration:g} s per size; CPU of the gateway per request and per KB of body; "
                    "longest /health answer while such requests ran (a probe polling every ms on its own connection)",
                "", "| target | " + " | ".join(f"{kb} KB: rps | CPU µs/req | µs/KB | longest health ms" for kb in PROMPT_SIZES_KB)
                + " | longest health ms, idle | failed |",
                "|---|" + "---:|---:|---:|---:|" * len(PROMPT_SIZES_KB) + "---:|---:|"]
        for name, r in sizes:
            cells = []
            for kb in PROMPT_SIZES_KB:
                x = r.get(f"{kb}k", {})
                cells.append(f"{fmt(x.get('rps'))} | {fmt(x.get('cpu_us_per_req'))} | {fmt(x.get('cpu_us_per_kb'), 2)} | {fmt(x.get('probe_max_ms'), 2)}")
            out.append(f"| {name} | " + " | ".join(cells) + f" | {fmt(r.get('idle_probe_max_ms'), 2)} | "
                       f"{sum(x.get('failed', 0) for x in r.values() if isinstance(x, dict))} |")
    soaks = [(t.name, t.extras["soak"]) for t in targets if "soak" in t.extras]
    if soaks:
        out += ["", f"### Soak: {args.rate:g} requests/s (non-streaming) for {args.soak:g} s; RSS of the server process tree",
                "", "| target | achieved rps | p50 ms | p99 ms | CPU µs/req | RSS start MB | RSS end MB | RSS max MB | failed |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for name, r in soaks:
            out.append(f"| {name} | {fmt(r['achieved_rps'])} | {fmt(r['p50_ms'], 2)} | {fmt(r['p99_ms'], 2)} | {fmt(r['cpu_us_per_req'])} | "
                       f"{fmt(r['rss_start_mb'], 1)} | {fmt(r['rss_end_mb'], 1)} | {fmt(r['rss_max_mb'], 1)} | {r['failed']} |")
    return out


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description="switchyard vs LiteLLM vs Portkey benchmark (prints figures; not a test)")
    ap.add_argument("--duration", type=float, default=15.0, help="seconds per measurement (default 15)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds, run back to back; medians are reported (default 3)")
    ap.add_argument("--only", default=",".join(GATEWAYS), help="comma list of gateways: switchyard,litellm,portkey (direct is always measured)")
    ap.add_argument("--concurrency", type=int, default=50, help="wrk connections for the closed-loop runs (default 50)")
    ap.add_argument("--rate", type=float, default=500.0, help="requests/s for the fixed-rate runs; 0 skips them (default 500)")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of untimed wrk load per target and mode before round 1 (default 2)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin processes to cores with taskset")
    ap.add_argument("--load-cpu", default="0", help="core for wrk, the open-loop generator and the upstream (default 0)")
    ap.add_argument("--gateway-cpu", default="1", help="core for the gateway under test (default 1)")
    ap.add_argument("--upstream-stream-delay-ms", type=float, default=0.0, help="pause between the upstream's SSE events (default 0: whole stream in one write)")
    ap.add_argument("--switchyard-bin", default=str(SWITCHYARD_BIN))
    ap.add_argument("--routing", action="store_true",
                    help="switchyard routes over a weighted group of two deployments behind a failing one")
    ap.add_argument("--startup-timeout", type=float, default=180.0, help="seconds to wait for each gateway to become ready")
    ap.add_argument("--wait-quiet", type=float, default=0.0, help="wait up to this many seconds for other processes to use < 15%% CPU before starting (default 0)")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="the Redis of switchyard-redis and switchyard-2w")
    ap.add_argument("--many-delay-ms", type=float, default=5.0, help=f"pause between the events of {MANY_MODEL} streams (default 5)")
    ap.add_argument("--extras", default="many,sizes,soak",
                    help="extra sections after the rounds: many (200-chunk streams), sizes (1 KB/100 KB/1 MB prompts), soak; '' for none")
    ap.add_argument("--sizes-targets", default="switchyard,switchyard-redis,litellm,portkey",
                    help="targets of the prompt-size runs (one process each: the stall probe must reach the busy one)")
    ap.add_argument("--soak", type=float, default=600.0, help="seconds of the soak at --rate (default 600)")
    ap.add_argument("--soak-targets", default="switchyard-redis", help="targets soaked (default switchyard-redis)")
    ap.add_argument("--setup-only", action="store_true", help="install what is missing, then exit")
    args = ap.parse_args()
    extras = {e.strip() for e in args.extras.split(",") if e.strip()}
    if extras - {"many", "sizes", "soak"}:
        ap.error(f"unknown --extras {', '.join(sorted(extras - {'many', 'sizes', 'soak'}))}")

    wanted = [g.strip() for g in args.only.split(",") if g.strip() and g.strip() != "direct"]
    for g in wanted:
        if g not in GATEWAYS:
            ap.error(f"unknown gateway {g!r} (choose from {', '.join(GATEWAYS)})")
    wanted = [g for g in GATEWAYS if g in wanted]  # fixed order

    ncpu = os.cpu_count() or 1
    pin_on = not args.no_pin and ncpu >= 2 and shutil.which("taskset") is not None
    load_cpu = args.load_cpu if pin_on else None
    gw_cpu = args.gateway_cpu if pin_on else None

    # ---- setup
    log("checking tools (installs what is missing; idempotent) ...")
    wrk = ensure_apt("wrk", "wrk")
    wrk2 = ensure_apt("wrk2", "wrk2", required=False)
    bench_py = ensure_bench_venv()
    setup_errors: dict[str, str] = {}
    if "litellm" in wanted:
        try:
            ensure_litellm()
        except SetupError as e:
            setup_errors["litellm"] = str(e)
    if "portkey" in wanted:
        try:
            ensure_portkey()
        except SetupError as e:
            setup_errors["portkey"] = str(e)
    for k, v in setup_errors.items():
        log(f"SETUP FAILED for {k}: {v}")
    log(f"tools ready: wrk={wrk}, wrk2={wrk2 or 'not available (fixed-rate runs use bench/openloop.py)'}")
    if args.setup_only:
        return 0

    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(parents=True, exist_ok=True)
    logdir = RESULTS / f"logs-{stamp}"
    logdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="switchyard-bench-"))
    if pin_on:
        os.sched_setaffinity(0, {int(args.load_cpu)})

    quiet_deadline = time.monotonic() + args.wait_quiet
    while True:
        c0 = read_cpu_times()
        time.sleep(2.0)
        c1 = read_cpu_times()
        busy_before = round(100.0 * (busy_seconds(c1) - busy_seconds(c0)) / (2.0 * ncpu), 1)
        if busy_before <= 15 or time.monotonic() >= quiet_deadline:
            break
        log(f"machine busy ({busy_before}% of {ncpu} cores); waiting for it to be quiet (--wait-quiet, {quiet_deadline - time.monotonic():.0f}s left) ...")
    log(f"machine CPU busy before starting: {busy_before}% of {ncpu} cores; load average {open('/proc/loadavg').read().split()[0]}")
    if busy_before > 15:
        log("WARNING: the machine is busy (someone compiling or testing?): figures will be lower and noisier")

    sampler = RSSSampler()
    sampler.start()
    started: list[Server] = []
    targets: list[Target] = []

    def stop_all():
        for s in reversed(started):
            try:
                s.stop()
            except Exception:
                pass

    def on_sigterm(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored (`cmd &`)
    try:
        # ---- upstream
        up_port = free_port()
        up_cmd = [str(bench_py), str(BENCH / "upstream.py"), "--port", str(up_port), "--many-delay-ms", str(args.many_delay_ms)]
        if args.upstream_stream_delay_ms > 0:
            up_cmd += ["--stream-delay-ms", str(args.upstream_stream_delay_ms)]
        up = Server("upstream", up_cmd, logdir / "upstream.log", load_cpu)
        up.start()
        started.append(up)
        if not wait_http(up, up_port, "/healthz", 30):
            raise SetupError("stand-in upstream did not start:\n" + up.log_tail())
        direct = Target("direct")
        direct.server, direct.port, direct.version = up, up_port, "bench/upstream.py"
        direct.headers = {"Authorization": "Bearer dummy"}
        targets.append(direct)
        log(f"upstream ready on :{up_port} (cpu {load_cpu if pin_on else 'any'})")

        # ---- gateways: start them all, then wait for each
        for name in wanted:
            if name in setup_errors:
                t = Target(name)
                t.skipped = "setup failed: " + setup_errors[name]
                targets.append(t)
                continue
            t = make_gateway(name, args, up_port, workdir, logdir, gw_cpu)
            targets.append(t)
            if t.skipped:
                continue
            assert t.server is not None
            t.t_start = time.monotonic()
            t.server.start()
            started.append(t.server)
            log(f"starting {name} on :{t.port} (cpu {gw_cpu if pin_on else 'any'}) ...")
        for t in targets:
            if t.name == "direct" or t.skipped:
                continue
            ok = wait_http(t.server, t.port, t.ready_path, args.startup_timeout, want_200=(t.name != "portkey"))
            if not ok:
                alive = t.server.alive()
                t.skipped = ("not ready after %ds" % args.startup_timeout) if alive else f"exited with code {t.server.proc.returncode}"
                log(f"SKIPPING {t.name}: {t.skipped}; log {t.server.log_path}:\n{t.server.log_tail()}")
                t.server.stop()
                continue
            t.ready_s = round(time.monotonic() - t.t_start, 1)
            log(f"{t.name} ready after {t.ready_s}s")

        # ---- correctness checks, then idle RSS
        for t in targets:
            if t.skipped:
                continue
            try:
                t.validation = validate(t.port, t.headers)
                extra = ("; warnings: " + "; ".join(t.validation["warnings"])) if t.validation["warnings"] else ""
                log(f"{t.name}: correct chat.completion and stream ([DONE] + usage chunk, {t.validation['stream_chunks']} chunks){extra}")
            except Exception as e:  # noqa: BLE001
                t.skipped = f"answers are wrong: {e}"
                t.validation = {"ok": False, "error": str(e)}
                log(f"SKIPPING {t.name}: {t.skipped}")
                if t.server and t is not direct:
                    log(f"log {t.server.log_path}:\n{t.server.log_tail()}")
        time.sleep(2.0)
        for t in targets:
            if not t.skipped and t.server:
                t.idle = tree_mem_kb(t.server.pid)
                sampler.add(t.name, t.server.pid)
                log(f"{t.name}: idle RSS {t.idle['rss_kb'] / 1024:.1f} MB in {t.idle['processes']} process(es)")
        if direct.skipped:
            raise SetupError("the stand-in upstream itself answers wrongly: " + direct.skipped)
        skipped_sw = next((t for t in targets if t.name == "switchyard" and t.skipped), None)
        if skipped_sw:
            log(f"NOTE: switchyard is skipped in this run: {skipped_sw.skipped}")

        live = [t for t in targets if not t.skipped]

        # ---- warm-up (untimed)
        if args.warmup > 0:
            for t in live:
                log(f"warm-up {t.name} ({args.warmup:g}s non-stream + {args.warmup:g}s stream, c={args.concurrency}) ...")
                for stream in (False, True):
                    try:
                        run_wrk(wrk, t.port, t.headers, stream, args.warmup, args.concurrency, load_cpu)
                    except Exception as e:  # noqa: BLE001
                        log(f"  warm-up failed: {e}")

        # ---- rounds, back to back
        modes = [m for m in MODES if args.rate > 0 or m[1] == "wrk"]
        for rnd in range(1, args.rounds + 1):
            for t in live:
                if t.skipped:
                    continue
                for mode, tool, stream in modes:
                    if t.server and not t.server.alive():
                        t.skipped = f"died during round {rnd} (exit {t.server.proc.returncode})"
                        log(f"{t.name}: {t.skipped}; log {t.server.log_path}:\n{t.server.log_tail()}")
                        break
                    time.sleep(0.5)
                    roots = [sv.pid for sv in started if sv.alive()]
                    tree = process_tree(t.server.pid) if t.server else []
                    g0 = proc_cpu_seconds(tree)
                    c0, ours0, w0 = read_cpu_times(), our_cpu_seconds(roots), time.monotonic()
                    entry: dict = {"round": rnd, "mode": mode}
                    try:
                        if tool == "wrk":
                            res = run_wrk(wrk, t.port, t.headers, stream, args.duration, args.concurrency, load_cpu)
                        else:
                            res = run_openloop(bench_py, t.port, t.headers, stream, args.rate, args.duration, load_cpu)
                        entry["result"] = res
                    except Exception as e:  # noqa: BLE001
                        entry["error"] = str(e)
                    c1, ours1, w1 = read_cpu_times(), our_cpu_seconds(roots), time.monotonic()
                    entry["gateway_cpu_s"] = round(proc_cpu_seconds(tree) - g0, 3)
                    entry["cpu"] = cpu_delta(c0, c1)
                    other = (busy_seconds(c1) - busy_seconds(c0)) - (ours1 - ours0)
                    entry["cpu"]["other_load_pct"] = round(max(0.0, 100.0 * other / ((w1 - w0) * ncpu)), 1)
                    t.runs.append(entry)
                    steal = entry["cpu"]["steal_pct"]
                    if "result" in entry:
                        r = entry["result"]
                        bad = r["non2xx"] + r["bad_body"] + r["socket_errors"]
                        extra = ""
                        if mode.startswith("rate"):
                            extra = f" achieved {r['rps']:.0f}/s" + (" SATURATED" if r["saturated"] else "")
                            if r.get("ttfb_p50_ms") is not None:
                                extra += f" ttfb p50 {r['ttfb_p50_ms']:.2f} ms"
                        log(
                            f"round {rnd} {t.name:10s} {mode:16s} rps {r['rps']:>9,.1f}  p50 {r['p50_ms'] if r['p50_ms'] is not None else float('nan'):8.2f} ms  "
                            f"p99 {r['p99_ms'] if r['p99_ms'] is not None else float('nan'):8.2f} ms{extra}  steal {steal}%  other load {entry['cpu']['other_load_pct']}%"
                            + (f"  FAILED {r['non2xx']} non-2xx / {r['bad_body']} bad / {r['socket_errors']} socket: {r.get('first_bad')}" if bad else "")
                        )
                    else:
                        log(f"round {rnd} {t.name} {mode}: ERROR {entry['error']}")

        # ---- extra sections, one run each
        gateways = [t for t in live if t is not direct and not t.skipped]
        if "many" in extras:
            for t in [direct, *gateways]:  # direct: what the upstream spends writing each event, a floor
                try:
                    t.extras["many"] = r = run_many_chunks(wrk, t, args, load_cpu)
                    log(f"{t.name}: {MANY_EVENTS}-event streams: {r['rps']:.1f} streams/s, p50 {r['p50_ms']:.0f} ms, "
                        f"{r['cpu_us_per_stream']} us CPU/stream, {r['cpu_us_per_chunk']} us/chunk")
                except Exception as e:  # noqa: BLE001
                    log(f"{t.name}: many-chunk run failed: {e}")
        if "sizes" in extras:
            for t in gateways:
                if t.name in args.sizes_targets.split(","):
                    try:
                        t.extras["sizes"] = run_prompt_sizes(wrk, t, args, load_cpu, workdir)
                    except Exception as e:  # noqa: BLE001
                        log(f"{t.name}: prompt-size runs failed: {e}")
        if "soak" in extras and args.rate > 0:
            for t in gateways:
                if t.name in args.soak_targets.split(","):
                    log(f"{t.name}: soak, {args.soak:g} s at {args.rate:g} requests/s ...")
                    try:
                        t.extras["soak"] = r = run_soak(bench_py, t, args, load_cpu)
                        log(f"{t.name}: soak: {r['achieved_rps']:.0f} rps, RSS {r['rss_start_mb']} -> {r['rss_end_mb']} MB "
                            f"(max {r['rss_max_mb']}), {r['failed']} failed")
                    except Exception as e:  # noqa: BLE001
                        log(f"{t.name}: soak failed: {e}")

        # ---- peak memory
        for t in targets:
            if t.server and t.name in sampler.roots and t.server.alive():
                mem = tree_mem_kb(t.server.pid)
                t.hwm_mb = round(mem["hwm_kb"] / 1024, 1)
                t.processes = mem["processes"]
                t.peak_rss_mb = round(max(sampler.peak_kb.get(t.name, 0), mem["rss_kb"]) / 1024, 1)
    except KeyboardInterrupt:
        log("interrupted; stopping servers")
        stop_all()
        return 130
    finally:
        sampler.stop_evt.set()
        stop_all()
        shutil.rmtree(workdir, ignore_errors=True)

    summary = summarize(targets, args)
    table = print_tables(targets, summary, args)
    out = {
        "meta": {
            "timestamp": stamp,
            "argv": sys.argv[1:],
            "args": vars(args),
            "host": platform.node(),
            "kernel": platform.release(),
            "cpus": ncpu,
            "cpu_model": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), None),
            "pinning": {"load_cpu": load_cpu, "gateway_cpu": gw_cpu} if pin_on else None,
            "loadavg_end": open("/proc/loadavg").read().split()[:3],
            "cpu_busy_before_pct": busy_before,
            "switchyard_git": git_head(),
            "fixed_rate_tool": "bench/openloop.py (uvloop+aiohttp)",
            "wrk2_available": bool(wrk2),
            "logs": str(logdir),
        },
        "targets": {
            t.name: {
                "version": t.version,
                "skipped": t.skipped,
                "ready_s": t.ready_s,
                "validation": t.validation,
                "idle": t.idle,
                "peak_rss_mb": getattr(t, "peak_rss_mb", None),
                "hwm_mb": getattr(t, "hwm_mb", None),
                "runs": t.runs,
                "extras": t.extras,
            }
            for t in targets
        },
        "summary": summary,
        "table_markdown": table,
    }
    path = RESULTS / f"{stamp}.json"
    path.write_text(json.dumps(out, indent=1))
    print()
    print(table)
    print()
    steals = [r["cpu"]["steal_pct"] for t in targets for r in t.runs if r.get("cpu") and r["cpu"]["steal_pct"] is not None]
    if steals:
        print(f"Hypervisor steal over the runs: median {statistics.median(steals):.1f}%, max {max(steals):.1f}% (per run in the JSON; high steal = noisy figures).")
    others = [r["cpu"]["other_load_pct"] for t in targets for r in t.runs if r.get("cpu")]
    if others:
        msg = f"CPU used by other processes on this machine during the runs: median {statistics.median(others):.1f}%, max {max(others):.1f}% of {ncpu} cores."
        if max(others) > 10:
            msg += " WARNING: the machine was not quiet; figures are lower/noisier than on an idle machine."
        print(msg)
    for t in targets:
        if t.skipped:
            print(f"NOTE: {t.name} skipped: {t.skipped}")
        for r in t.runs:
            res = r.get("result")
            if res and (res["non2xx"] or res["bad_body"] or res["socket_errors"]):
                print(f"WARNING: {t.name} round {r['round']} {r['mode']}: {res['non2xx']} non-2xx, {res['bad_body']} bad bodies, {res['socket_errors']} socket errors; first: {res.get('first_bad')}")
    print(f"Results: {path.relative_to(REPO)}   server logs: {logdir.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
