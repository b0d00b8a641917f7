"""`switchyard serve`: settings, the admin key shown once, several workers."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest
import yaml

from tests.conftest import StandInUpstream, start_gateway, upstream_config

KEY_LINE = re.compile(r"^\s+(sk-sy-admin-\S+)$", re.M)


def test_admin_key_is_generated_printed_once_and_kept_as_hash(tmp_path: Path, upstream: StandInUpstream) -> None:
    config = upstream_config(upstream)
    gw = start_gateway(tmp_path, config=config, master_key=None)
    try:
        keys = KEY_LINE.findall(gw.logs())
        assert len(keys) == 1
        key = keys[0]
        stored = (gw.data_dir / "master_key.sha256").read_text().strip()
        assert stored == hashlib.sha256(key.encode()).hexdigest()
        assert key not in stored
        assert gw.client(key=key).models.list().data
    finally:
        gw.stop()
    again = start_gateway(tmp_path, config=config, master_key=None)
    try:
        assert not KEY_LINE.findall(again.logs())
        assert again.client(key=key).chat.completions.create(model="gpt-5.2", messages=[{"role": "user", "content": "hi"}]).choices
    finally:
        again.stop()


def test_several_workers_serve(tmp_path: Path, upstream: StandInUpstream) -> None:
    gw = start_gateway(tmp_path, config=upstream_config(upstream), args=["--workers", "2"],
                       env={"SWITCHYARD_REDIS_URL": "redis://127.0.0.1:6379/0"})
    try:
        deadline = time.monotonic() + 60
        while gw.logs().count("Application startup complete") < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert gw.logs().count("Started server process") == 2
        client = gw.client()
        for _ in range(10):
            assert client.chat.completions.create(model="gpt-5.2", messages=[{"role": "user", "content": "hi"}]).choices
    finally:
        gw.stop()


def test_config_errors_stop_with_a_clear_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  x:\n    deployments:\n      - provider: openai\n        catalog: no-such-entry\n")
    proc = subprocess.run(
        [sys.executable, "-m", "switchyard", "serve", "--config", str(bad), "--port", "1"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert "no-such-entry" in proc.stdout + proc.stderr


def test_env_keys_and_flags(tmp_path: Path, upstream: StandInUpstream) -> None:
    gw = start_gateway(tmp_path, config=upstream_config(upstream), env={"SWITCHYARD_API_KEYS": "sk-a, sk-b"})
    try:
        for key in ("sk-a", "sk-b"):
            assert gw.client(key=key).models.list().data
        with pytest.raises(openai.AuthenticationError):
            gw.client(key="sk-c").models.list()
    finally:
        gw.stop()


def test_several_workers_need_redis(tmp_path: Path, upstream: StandInUpstream) -> None:
    """Without a shared store, each worker would hold money and count limits on its own."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(upstream_config(upstream)))
    proc = subprocess.run(
        [sys.executable, "-m", "switchyard", "serve", "--config", str(cfg), "--workers", "2", "--port", "1"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")},
    )
    assert proc.returncode == 2
    assert "SWITCHYARD_REDIS_URL" in proc.stderr
