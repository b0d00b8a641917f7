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

from tests.conftest import Admin, StandInUpstream, start_gateway, upstream_config

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


def test_redis_going_away_is_a_clear_503_not_a_crash(tmp_path: Path, upstream: StandInUpstream) -> None:
    from tests.conftest import free_port

    port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                             stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        gw = start_gateway(tmp_path, config=upstream_config(upstream), env={"SWITCHYARD_REDIS_URL": f"redis://127.0.0.1:{port}/0"})
        try:
            admin = Admin(gw)
            org = admin.org("limited")  # tier-1, prepaid: its limits and holds live in Redis
            admin.topup(org["id"], "5")
            client = gw.client(key=admin.key(org["id"]))
            hi = [{"role": "user", "content": "hi"}]
            assert client.chat.completions.create(model="gpt-5.2", messages=hi, max_tokens=10).choices
            redis.kill()
            redis.wait()
            with pytest.raises(openai.InternalServerError) as err:
                client.chat.completions.create(model="gpt-5.2", messages=hi, max_tokens=10)
            assert err.value.status_code == 503
            assert err.value.code == "service_unavailable"
            assert gw.client().models.list().data  # the worker still serves what needs no Redis
        finally:
            gw.stop()
    finally:
        redis.kill()


def test_unreachable_redis_stops_serve_with_one_line(tmp_path: Path, upstream: StandInUpstream) -> None:
    from tests.conftest import free_port

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(upstream_config(upstream)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    env["SWITCHYARD_REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    proc = subprocess.run([sys.executable, "-m", "switchyard", "serve", "--config", str(cfg), "--port", "1"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)
    assert proc.returncode == 2
    assert "cannot reach Redis" in proc.stderr and "Traceback" not in proc.stderr
