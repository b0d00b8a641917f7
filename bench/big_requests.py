"""How long big requests hold a gateway worker's event loop (a script that prints figures, not a test).

Starts one switchyard worker in front of a tiny stand-in upstream and, for each kind of big
request, sends it while another client polls `/healthz` on the same worker as fast as it can.
The longest gap between two `/healthz` answers is how long the worker could not serve anyone.

    python bench/big_requests.py                  # switchyard from this checkout
    python bench/big_requests.py --repeat 3       # medians of 3
"""

from __future__ import annotations

import argparse
import json
import os
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
import orjson

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-bench-big"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Upstream(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def cases() -> list[tuple[str, str, bytes]]:
    word = "word " * 12_000_000
    image = "data:image/png;base64," + "iVBORw0KGgo" + "A" * 40_000_000
    return [
        ("60 MB message", "/v1/chat/completions",
         orjson.dumps({"model": "gpt-5.2", "messages": [{"role": "user", "content": word}]})),
        ("30 MB inline image", "/v1/chat/completions", orjson.dumps({"model": "gpt-5.2", "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Look."}, {"type": "image_url", "image_url": {"url": image}}]}]})),
        ("1,000,000 messages", "/v1/chat/completions",
         orjson.dumps({"model": "gpt-5.2", "messages": [{"role": "user", "content": "hi"}] * 1_000_000})),
        ("20,000 messages", "/v1/chat/completions",
         orjson.dumps({"model": "gpt-5.2", "max_tokens": 5, "messages": [{"role": "user", "content": "hi there"}] * 20_000})),
        ("200,000 Responses items", "/v1/responses",
         orjson.dumps({"model": "gpt-5.2", "input": [{"role": "user", "content": "hi"}] * 200_000})),
        ("deep JSON (230 levels)", "/v1/chat/completions",
         orjson.dumps({"model": "gpt-5.2", "messages": [{"role": "user", "content": "x"}], "x": "__D__"})
         .replace(b'"__D__"', b"[" * 230 + b"]" * 230)),
    ]


def measure(root: str, path: str, body: bytes) -> tuple[float, int, float]:
    """(longest /healthz gap in ms, the big request's status, its latency in s)."""
    result: dict[str, object] = {}
    done = threading.Event()

    def big() -> None:
        started = time.perf_counter()
        resp = httpx.post(root + path, content=body, timeout=300,
                          headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
        result["status"], result["latency"] = resp.status_code, time.perf_counter() - started
        done.set()

    gaps: list[float] = []
    with httpx.Client(timeout=60) as client:
        client.get(root + "/healthz")
        thread = threading.Thread(target=big)
        thread.start()
        last = time.perf_counter()
        while not done.is_set():
            client.get(root + "/healthz")
            now = time.perf_counter()
            gaps.append(now - last)
            last = now
        thread.join()
    return max(gaps) * 1000, int(result["status"]), float(result["latency"])  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--switchyard-bin", default=str(ROOT / ".venv" / "bin" / "switchyard"))
    args = parser.parse_args()

    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    work = Path(tempfile.mkdtemp(prefix="sy-big-"))
    config = {"models": {"gpt-5.2": {"deployments": [{
        "provider": "openai", "base_url": f"http://127.0.0.1:{upstream.server_address[1]}/v1", "model": "m",
        "catalog": "gpt-5.2"}]}}}
    (work / "config.yaml").write_text(json.dumps(config))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    env.update(SWITCHYARD_CONFIG=str(work / "config.yaml"), SWITCHYARD_DATA_DIR=str(work / "data"),
               SWITCHYARD_API_KEYS=KEY, SWITCHYARD_MASTER_KEY="sk-bench-master", SWITCHYARD_LOG_LEVEL="warning")
    proc = subprocess.Popen([args.switchyard_bin, "serve", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    root = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(root + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                sys.exit("switchyard did not start")
            time.sleep(0.1)
        print(f"{'request':28} {'body':>9} {'status':>6} {'latency':>9} {'longest /healthz gap':>21}")
        for name, path, body in cases():
            runs = [measure(root, path, body) for _ in range(args.repeat)]
            gap = statistics.median(r[0] for r in runs)
            latency = statistics.median(r[2] for r in runs)
            print(f"{name:28} {len(body) / 1e6:7.1f}MB {runs[0][1]:>6} {latency:8.2f}s {gap:18.0f} ms")
    finally:
        proc.terminate()
        proc.wait(15)
        upstream.shutdown()


if __name__ == "__main__":
    main()
