"""Gateway CPU per request: the figure that noise on a shared VM disturbs least (a script, not a test).

Starts the benchmark's stand-in upstream and one switchyard worker with accounts on (a prepaid
organisation on a limited tier, a key with a budget: every request is limited, reserved,
priced and settled durably), drives it with wrk at concurrency 50, and divides the worker's
CPU time (user + system, from /proc) by the requests it answered.

    python bench/cpu_per_request.py --duration 10 --rounds 3
    python bench/cpu_per_request.py --switchyard-bin /other/checkout/.venv/bin/switchyard
    python bench/cpu_per_request.py --compare /other/checkout/.venv/bin/switchyard  # in turns, paired
    python bench/cpu_per_request.py --tracing        # spans exported to a local OTLP sink
    python bench/cpu_per_request.py --no-metrics     # metrics.enabled: false
    python bench/cpu_per_request.py --json-logs      # one JSON line per request (log level info)
    python bench/cpu_per_request.py --log-level info # serve's default: a plain line per billed request
    python bench/cpu_per_request.py --redis redis://127.0.0.1:6379/0
    python bench/cpu_per_request.py --redis redis://127.0.0.1:6379/0 --memory-beside  # Redis / in memory
    python bench/cpu_per_request.py --modes many,1mb,single  # 200-chunk streams; 1 MB prompts and small
                                                             # ones, one at a time
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def wait_http(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    sys.exit(f"{url} did not answer")


class _Sink(BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that takes every export and keeps nothing (what a collector costs
    the gateway is the export, not the collector)."""

    def do_POST(self) -> None:  # noqa: N802 (the http.server API)
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


# mode -> (wrk script, its environment, connections)
MODES = {
    "non-stream": ("wrk_chat.lua", {}, 50),
    "stream": ("wrk_chat_stream.lua", {}, 50),
    "many": ("wrk_chat_stream.lua", {"BENCH_MODEL": "gpt-5.2-many"}, 50),
    "1mb": ("wrk_chat.lua", {"BENCH_BODY_FILE": "1mb"}, 1),
    "single": ("wrk_chat.lua", {}, 1),  # one client at a time: no group commits, every wait a wake-up
}


def redis_stats(url: str) -> dict[str, int]:
    """Calls per command since Redis started (INFO commandstats), the bench's own INFO aside."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items() if name != "cmdstat_info"}


def start_gateway(binary: str, args: argparse.Namespace, up_port: int, sink_port: int | None,
                  redis: str | None) -> dict:
    """One switchyard worker with accounts on, in a directory of its own: its process, port, key."""
    work = Path(tempfile.mkdtemp(prefix="sy-cpu-"))
    gw_port = free_port()
    (work / "config.yaml").write_text(json.dumps({
        "models": {"gpt-5.2": {"deployments": [{
            "provider": "openai", "base_url": f"http://127.0.0.1:{up_port}/v1", "model": "gpt-5.2"}]},
                   "gpt-5.2-many": {"deployments": [{
            "provider": "openai", "base_url": f"http://127.0.0.1:{up_port}/v1", "model": "gpt-5.2-many",
            "catalog": "gpt-5.2"}]}},
        "tiers": {"bench": {"rpm": 100000000, "tpm": 100000000000}},
        **({"metrics": {"enabled": False}} if args.no_metrics else {}),
    }))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    env.update(SWITCHYARD_CONFIG=str(work / "config.yaml"), SWITCHYARD_DATA_DIR=str(work / "data"),
               SWITCHYARD_MASTER_KEY="sk-bench-master", SWITCHYARD_LOG_LEVEL="warning")
    if sink_port is not None:
        env["SWITCHYARD_OTLP_ENDPOINT"] = f"http://127.0.0.1:{sink_port}"
        if args.trace_ratio is not None:
            env["SWITCHYARD_TRACE_SAMPLE_RATIO"] = str(args.trace_ratio)
    if args.log_level:
        env["SWITCHYARD_LOG_LEVEL"] = args.log_level
    if args.json_logs:
        env.update(SWITCHYARD_LOG_FORMAT="json", SWITCHYARD_LOG_LEVEL="info")
    if redis:
        env["SWITCHYARD_REDIS_URL"] = redis

    def cli(*argv: str) -> str:
        return subprocess.run([binary, *argv], env=env, cwd=work, check=True, capture_output=True,
                              text=True).stdout

    cli("orgs", "create", "bench", "--tier", "bench")
    cli("topup", "bench", "1000000")
    key = json.loads(cli("keys", "create", "--org", "bench", "--budget-usd", "1000000", "--json"))["key"]
    process = subprocess.Popen([binary, "serve", "--port", str(gw_port)], env=env, cwd=work,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{gw_port}/healthz")
    sys.path.insert(0, str(ROOT / "bench"))
    from run import prompt_body

    (work / "1mb").write_bytes(prompt_body(1024 * 1024))
    return {"process": process, "port": gw_port, "key": key, "work": work, "redis": redis}


def measure(gateway: dict, mode: str, args: argparse.Namespace, profile: str | None) -> tuple[float, tuple | None]:
    """One wrk run: the worker's CPU per request (us), and Redis calls per request."""
    script, wrk_env, connections = MODES[mode]
    wrk_env = {k: str(gateway["work"] / v) if k == "BENCH_BODY_FILE" else v for k, v in wrk_env.items()}
    worker = gateway["process"].pid  # one worker: uvicorn serves in the process itself
    stats = redis_stats(gateway["redis"]) if gateway["redis"] else None
    before = cpu_seconds(worker)
    spy = None
    if profile:
        spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(worker),
                                "-d", str(args.duration), "-r", "250", "-f", "raw", "--nonblocking",
                                "-o", f"{profile}.{mode}.txt"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{args.duration}s", "-s", str(ROOT / "bench" / script),
         "-H", f"Authorization: Bearer {gateway['key']}", f"http://127.0.0.1:{gateway['port']}/v1/chat/completions"],
        capture_output=True, text=True, check=True, env=dict(os.environ, **wrk_env)).stdout
    used = cpu_seconds(worker) - before
    if spy is not None:
        spy.wait(30)
    line = next(x for x in out.splitlines() if x.startswith("WRKJSON "))
    counts = json.loads(line[len("WRKJSON "):])
    if counts["non2xx"] or counts["bad_body"]:
        sys.exit(f"{mode}: {counts['non2xx']} non-2xx and {counts['bad_body']} bad answers")
    requests = counts["requests"]
    calls = None
    if stats is not None:
        after = redis_stats(gateway["redis"])
        scripts = sum(after.get(c, 0) - stats.get(c, 0) for c in ("evalsha", "eval"))
        every = sum(after.values()) - sum(stats.values()) - scripts
        calls = (scripts / requests, every / requests)
    return used / requests * 1e6, calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--switchyard-bin", default=str(ROOT / ".venv" / "bin" / "switchyard"))
    ap.add_argument("--compare", metavar="BIN",
                    help="another switchyard to measure beside it, run for run in turns (paired ratios)")
    ap.add_argument("--memory-beside", action="store_true",
                    help="with --redis: compare with the same switchyard holding limits and holds in memory")
    ap.add_argument("--tracing", action="store_true", help="export spans to a local OTLP/HTTP sink")
    ap.add_argument("--trace-ratio", type=float, default=None,
                    help="with --tracing: tracing.sample_ratio (default: the config's default)")
    ap.add_argument("--no-metrics", action="store_true", help="metrics.enabled: false")
    ap.add_argument("--json-logs", action="store_true", help="SWITCHYARD_LOG_FORMAT=json at log level info")
    ap.add_argument("--log-level", help="SWITCHYARD_LOG_LEVEL (default warning; `serve`'s own default is info: a line a request)")
    ap.add_argument("--redis", help="SWITCHYARD_REDIS_URL: limits and holds in Redis")
    ap.add_argument("--profile", help="py-spy the worker during each run; collapsed stacks to PROFILE.<mode>.txt")
    ap.add_argument("--modes", default="non-stream,stream", help=f"comma list of {', '.join(MODES)}")
    args = ap.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if set(modes) - set(MODES):
        ap.error(f"unknown modes: {', '.join(sorted(set(modes) - set(MODES)))}")
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install -y wrk")

    up_port = free_port()
    upstream = subprocess.Popen([sys.executable, str(ROOT / "bench" / "upstream.py"), "--port", str(up_port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sink_port = None
    if args.tracing:
        sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
        threading.Thread(target=sink.serve_forever, daemon=True).start()
        sink_port = sink.server_address[1]
    if args.memory_beside:
        if not args.redis or args.compare:
            ap.error("--memory-beside needs --redis and no --compare")
        args.compare = args.switchyard_bin
    names = ["this"] + (["compare"] if args.compare else [])
    binaries = {"this": args.switchyard_bin, "compare": args.compare}
    redis_of = {"this": args.redis, "compare": None if args.memory_beside else args.redis}
    gateways: dict[str, dict] = {}
    try:
        for name in names:
            gateways[name] = start_gateway(binaries[name], args, up_port, sink_port, redis_of[name])
        results: dict[tuple[str, str], list[float]] = {(n, m): [] for n in names for m in modes}
        redis_calls: dict[str, tuple] = {}
        for round_no in range(args.rounds):
            for mode in modes:
                # In turns, the order flipped each round: drift of the machine falls on both alike.
                for name in (names if round_no % 2 == 0 else names[::-1]):
                    profile = f"{args.profile}.{name}" if args.profile and args.compare else args.profile
                    cpu, calls = measure(gateways[name], mode, args, profile)
                    results[(name, mode)].append(cpu)
                    if calls is not None and name == "this":
                        redis_calls[mode] = calls
        for mode in modes:
            for name in names:
                values = results[(name, mode)]
                label = f"{mode} ({name})" if args.compare else mode
                print(f"{label:11} CPU per request: median {statistics.median(values):7.0f} us "
                      f"(rounds: {', '.join(f'{v:.0f}' for v in values)})"
                      + (f"; {statistics.median(values) / 204:.1f} us per event" if mode == "many" else ""))
            if args.compare:
                ratios = [a / b for a, b in zip(results[("this", mode)], results[("compare", mode)])]
                print(f"{'':11} this / compare, run by run: median {statistics.median(ratios):.3f} "
                      f"({', '.join(f'{r:.2f}' for r in ratios)})")
            if mode in redis_calls:
                scripts, inner = redis_calls[mode]
                print(f"{'':11} Redis per request: {scripts:.2f} script calls (settlement's two share a round trip), "
                      f"{inner:.1f} commands inside them")
    finally:
        for gateway in gateways.values():
            gateway["process"].terminate()
            gateway["process"].wait(15)
        upstream.terminate()


if __name__ == "__main__":
    main()
