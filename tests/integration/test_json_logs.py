"""SWITCHYARD_LOG_FORMAT=json: the workers log JSON lines, one `switchyard.requests` line per
request with its request id (answered, streamed, refused, unknown model), and no secret, prompt or
answer anywhere in the log."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.conftest import MASTER_KEY, USER_KEY, StandInUpstream, start_gateway, upstream_config

PROMPT = "purple-elephant-marker says hello"


def test_json_logs_have_one_line_per_request_and_no_secrets(tmp_path: Path, upstream: StandInUpstream) -> None:
    gw = start_gateway(tmp_path, config=upstream_config(upstream),
                       env={"STANDIN_KEY": "sk-upstream-secret-7", "SWITCHYARD_LOG_FORMAT": "json"})
    try:
        ids: dict[str, str] = {}
        with httpx.Client(base_url=gw.base_url, timeout=60, headers={"Authorization": f"Bearer {USER_KEY}"}) as http:
            body = {"model": "gpt-5.2", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 5}
            r = http.post("/chat/completions", json=body)
            answer = r.json()["choices"][0]["message"]["content"]
            ids["answered"] = r.headers["x-request-id"]
            r = http.post("/chat/completions", json=body | {"stream": True})
            assert r.status_code == 200 and "[DONE]" in r.text
            ids["streamed"] = r.headers["x-request-id"]
            r = http.post("/chat/completions", json=body | {"model": "no-such-model"})
            assert r.status_code == 404
            ids["unknown"] = r.headers["x-request-id"]
            r = http.post("/chat/completions", json=body, headers={"Authorization": "Bearer sk-sy-wrong-key-123"})
            assert r.status_code == 401
            ids["refused"] = r.headers["x-request-id"]
            r = http.post("/chat/completions", json=body | {"model": "sim-status-500"})
            ids["upstream_failed"] = r.headers["x-request-id"]
        gw.stop()
        text = gw.logs()
        lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        assert lines and all({"ts", "level", "logger", "message"} <= set(line) for line in lines)
        # Everything uvicorn and the workers log is JSON (the CLI's own banner aside).
        plain = [line for line in text.splitlines() if line and not line.startswith("{")]
        assert all(line.startswith(("switchyard listening", "Console")) or line.startswith("  ") for line in plain), plain
        per_request = [line for line in lines if line["logger"] == "switchyard.requests"]
        for kind, rid in ids.items():
            mine = [line for line in per_request if line.get("request_id") == rid]
            assert len(mine) == 1, (kind, mine)
            assert mine[0]["path"] == "/v1/chat/completions" and mine[0]["method"] == "POST"
            assert isinstance(mine[0]["duration_ms"], (int, float))
        by = {kind: next(line for line in per_request if line.get("request_id") == rid) for kind, rid in ids.items()}
        assert by["answered"]["status"] == 200 and by["answered"]["model"] == "gpt-5.2"
        assert by["answered"]["output_tokens"] > 0 and by["answered"]["cost_usd"] > 0
        assert by["answered"]["deployment"] and by["answered"]["billing"] == "completed"
        assert by["streamed"]["stream"] is True and by["streamed"]["output_tokens"] > 0
        assert by["unknown"]["status"] == 404 and by["unknown"]["error_code"] == "model_not_found"
        assert by["refused"]["status"] == 401 and "key_id" not in by["refused"]
        assert by["upstream_failed"]["status"] >= 500
        for secret in (USER_KEY, MASTER_KEY, "sk-upstream-secret-7", "sk-sy-wrong-key-123", PROMPT, "purple-elephant",
                       answer):
            assert secret not in text, secret
    finally:
        gw.stop()


def _request_lines(gw_logs: str, request_id: str) -> list[str]:
    return [line for line in gw_logs.splitlines() if request_id in line or "POST /v1/chat/completions" in line]


def test_plain_logs_have_one_line_per_request_and_the_access_log_only_when_asked(
        tmp_path: Path, upstream: StandInUpstream) -> None:
    """Plain format at the default level: each answered request leaves its `switchyard.requests`
    line and nothing else; uvicorn's access line is there only with `serve --access-log` (with
    one worker and with two: workers set their logging up in their own processes)."""
    body = {"model": "gpt-5.2", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 5}
    for name, args, env in (("default", [], {}), ("access-log", ["--access-log"], {}),
                            ("two-workers", ["--access-log", "--workers", "2"], {"SWITCHYARD_REDIS_URL": "redis://127.0.0.1:6379/0"})):
        gw = start_gateway(tmp_path / name, config=upstream_config(upstream), args=args, env=env)
        try:
            with httpx.Client(base_url=gw.base_url, timeout=60, headers={"Authorization": f"Bearer {USER_KEY}"}) as http:
                r = http.post("/chat/completions", json=body)
                assert r.status_code == 200
                rid = r.headers["x-request-id"]
        finally:
            gw.stop()
        text = gw.logs()
        mine = _request_lines(text, rid)
        billed = [line for line in mine if " INFO switchyard.requests: " in line and rid in line]
        access = [line for line in mine if " INFO uvicorn.access: " in line and "POST /v1/chat/completions" in line]
        assert len(billed) == 1 and "status=completed" in billed[0], (name, mine)
        assert len(access) == (0 if name == "default" else 1), (name, mine)
        assert len(mine) == len(billed) + len(access), (name, mine)
