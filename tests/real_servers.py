"""Real upstream servers nobody here wrote, started for the tests: llama.cpp's OpenAI-compatible
server from `llama-cpp-python[server]` (the same wheel the local provider uses), serving the
packaged SmolLM2, so the stand-ins cannot flatter switchyard."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from switchyard.providers.local.engine import default_model_path
from tests.conftest import free_port, stop_process

ALIAS = "smollm2"


@dataclass
class LlamaServer:
    port: int
    n_ctx: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def ask(self, path: str, body: dict[str, Any]) -> Any:
        """The server's own answer, asked directly (what switchyard's bill is checked against)."""
        resp = httpx.post(f"http://127.0.0.1:{self.port}{path}", json=body, timeout=120)
        resp.raise_for_status()
        return resp.json()

    def prompt_tokens(self, body: dict[str, Any]) -> int:
        """How many tokens the server itself makes of a chat request's prompt."""
        return int(self.ask("/v1/chat/completions", {**body, "model": ALIAS, "max_tokens": 1, "stream": False})
                   ["usage"]["prompt_tokens"])

    def text_tokens(self, text: str) -> int:
        return int(self.ask("/extras/tokenize/count", {"input": text})["count"])

    def stop(self) -> None:
        stop_process(self.proc)


def start_llama_server(workdir: Path, n_ctx: int, chat_format: str | None = None) -> LlamaServer:
    """Start `python -m llama_cpp.server` on a free port and wait until it serves (or died).
    `chat_format`: None for the model's own template; `chatml-function-calling` is the server's way
    to honour `tools` and `tool_choice` with SmolLM2 (ChatML), but it drops `seed`."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = workdir / f"llama-server-{port}.log"
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(default_model_path()), "--model_alias", ALIAS,
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", "2"]
    if chat_format:
        cmd += ["--chat_format", chat_format]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    server = LlamaServer(port, n_ctx, proc, log_path)
    deadline = time.monotonic() + 180  # generous: the model loads in about a second on a quiet machine
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"llama.cpp server exited with {proc.returncode}:\n{log_path.read_text(errors='replace')}")
        try:
            if httpx.get(server.base_url + "/models", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"llama.cpp server did not start:\n{log_path.read_text(errors='replace')}")
        time.sleep(0.2)
