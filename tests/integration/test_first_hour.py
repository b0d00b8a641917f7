"""The first hour of a new user, from the README: the CLI explains itself, the example config is
valid, and a key limited to a model nobody serves says so."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    return subprocess.run([sys.executable, "-m", "switchyard", *args], capture_output=True, text=True, timeout=120,
                          env={**base, "COLUMNS": "200", **(env or {})}, cwd=cwd)


def test_help_shows_env_vars_and_defaults() -> None:
    short = cli("-h")
    assert short.returncode == 0 and "serve" in short.stdout and "--install-completion" in short.stdout
    serve = " ".join(cli("serve", "-h").stdout.split())  # as read, whatever the wrapping
    for env_name, default in (("SWITCHYARD_HOST", "127.0.0.1"), ("SWITCHYARD_PORT", "8080"),
                              ("SWITCHYARD_DATA_DIR", "./data"), ("SWITCHYARD_WORKERS", "1")):
        assert f"[env var: {env_name}]" in serve
        assert f"[default: {default}" in serve
    version = cli("--version")
    assert version.returncode == 0 and re.fullmatch(r"switchyard \d+\.\d+\.\d+\S*\n", version.stdout)


def test_the_example_config_is_complete_and_valid(tmp_path: Path) -> None:
    env = {"SWITCHYARD_CONFIG": str(ROOT / "switchyard.example.yaml"), "SWITCHYARD_DATA_DIR": str(tmp_path)}
    out = cli("routes", "explain", "--model", "default", "--message", "Hello", "--json", env=env)
    assert out.returncode == 0, out.stderr
    explained = json.loads(out.stdout)
    assert explained["public_name"] == "gpt-5.2" and len(explained["deployments"]) == 2


def test_a_key_for_a_model_that_is_not_served_warns(tmp_path: Path) -> None:
    env = {"SWITCHYARD_DATA_DIR": str(tmp_path / "data")}  # the default config: only the local model
    assert cli("orgs", "create", "acme", env=env).returncode == 0
    limited = cli("keys", "create", "--org", "acme", "--models", "gpt-5.2", env=env)
    assert limited.returncode == 0
    assert "Model 'gpt-5.2' is not served by this gateway" in limited.stderr and "default" in limited.stderr
    usable = cli("keys", "create", "--org", "acme", "--models", "default", env=env)
    assert usable.returncode == 0 and "warning" not in usable.stderr
    assert re.search(r"sk-sy-live-\S+", usable.stdout)
