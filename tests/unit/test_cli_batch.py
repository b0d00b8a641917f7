"""`switchyard batch`: the CLI against a small fake of OpenAI's Files and Batch endpoints."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from typer.testing import CliRunner

from switchyard.cli import app
from tests.standins.server import ThreadedStandIn

KEY = "sk-good"
OUTPUT = b'{"id":"batch_req_1","custom_id":"r1","response":{"status_code":200,"request_id":"req_1","body":{}},"error":null}\n'
ERRORS = b'{"id":"batch_req_3","custom_id":"r3","response":null,"error":{"code":"model_not_found","message":"nope"}}\n'
LINES = [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/responses", "body": {"model": "m", "input": "hi"}} for i in (1, 2, 3)]


def error(status: int, message: str, code: str | None = None) -> web.Response:
    return web.json_response({"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}},
                             status=status)


@dataclass
class FakeBatchApi(ThreadedStandIn):
    """Walks each batch along `script` (status, completed, failed), one step per GET."""

    script: list[tuple[str, int, int]] = field(default_factory=lambda: [
        ("validating", 0, 0), ("in_progress", 0, 0), ("in_progress", 2, 0), ("finalizing", 2, 1), ("completed", 2, 1)])
    files: dict[str, bytes] = field(default_factory=dict)
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)
    polls: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def add_routes(self, app: web.Application) -> None:
        app.middlewares.append(self._auth)
        app.router.add_post("/v1/files", self._upload)
        app.router.add_get("/v1/files/{id}/content", self._content)
        app.router.add_post("/v1/batches", self._create)
        app.router.add_get("/v1/batches", self._list)
        app.router.add_get("/v1/batches/{id}", self._get)
        app.router.add_post("/v1/batches/{id}/cancel", self._cancel)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {KEY}":
            return error(401, "Incorrect API key provided: sk-bad.", "invalid_api_key")
        return await handler(request)

    async def _upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload = form["file"]
        assert isinstance(upload, web.FileField)
        data = upload.file.read()
        self.received.append(("upload", {"purpose": form["purpose"], "filename": upload.filename, "data": data}))
        file_id = f"file-{len(self.files) + 1}"
        self.files[file_id] = data
        return web.json_response({"id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                                  "filename": upload.filename, "purpose": form["purpose"], "status": "processed"})

    async def _content(self, request: web.Request) -> web.Response:
        data = self.files.get(request.match_info["id"])
        if data is None:
            return error(404, f"No such File object: {request.match_info['id']}")
        return web.Response(body=data, content_type="application/octet-stream")

    async def _create(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.received.append(("create", body))
        if body.get("input_file_id") not in self.files:
            return error(400, "Invalid 'input_file_id'.")
        batch_id = f"batch_{len(self.batches) + 1}"
        self.batches[batch_id] = {
            "id": batch_id, "object": "batch", "endpoint": body["endpoint"], "errors": None,
            "input_file_id": body["input_file_id"], "completion_window": body["completion_window"], "status": "validating",
            "output_file_id": None, "error_file_id": None, "created_at": int(time.time()), "in_progress_at": None,
            "expires_at": int(time.time()) + 86400, "completed_at": None, "failed_at": None, "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0}, "metadata": body.get("metadata"),
        }
        return web.json_response(self.batches[batch_id])

    async def _get(self, request: web.Request) -> web.Response:
        b = self.batches.get(request.match_info["id"])
        if b is None:
            return error(404, f"No batch found with id '{request.match_info['id']}'.")
        status, completed, failed = self.script[min(self.polls, len(self.script) - 1)]
        self.polls += 1
        b.update(status=status, request_counts={"total": 0 if status == "validating" else 3, "completed": completed, "failed": failed})
        if status == "completed":
            self.files.update({"file-out": OUTPUT, "file-err": ERRORS})
            b.update(output_file_id="file-out", error_file_id="file-err", completed_at=int(time.time()))
        if status == "failed":
            b["errors"] = {"object": "list", "data": [{"code": "invalid_json_line", "message": "line 2 is not JSON", "line": 2}]}
        return web.json_response(b)

    async def _cancel(self, request: web.Request) -> web.Response:
        b = self.batches[request.match_info["id"]]
        b["status"] = "cancelling"
        return web.json_response(b)

    async def _list(self, request: web.Request) -> web.Response:
        self.received.append(("list", dict(request.query)))
        data = list(self.batches.values())[::-1]
        return web.json_response({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                                  "last_id": data[-1]["id"] if data else None, "has_more": False})


@pytest.fixture
def api() -> Iterator[FakeBatchApi]:
    fake = FakeBatchApi().start()
    yield fake
    fake.stop()


@pytest.fixture
def jsonl(tmp_path: Path) -> Path:
    path = tmp_path / "requests.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in LINES))
    return path


def run(api: FakeBatchApi, *args: str, key: str = KEY) -> Any:
    env = {"SWITCHYARD_BASE_URL": api.base_url, "SWITCHYARD_API_KEY": key, "OPENAI_API_KEY": "", "COLUMNS": "120"}
    return CliRunner().invoke(app, ["batch", *args], env=env)


def test_submit_uploads_creates_and_follows_to_completion(api: FakeBatchApi, jsonl: Path) -> None:
    result = run(api, "submit", str(jsonl), "--metadata", "job=nightly", "--metadata", "team=a=b", "--interval", "0.05")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["batch_1"]  # only the id on stdout: scriptable
    (_, upload), (_, create) = api.received
    assert upload == {"purpose": "batch", "filename": "requests.jsonl", "data": jsonl.read_bytes()}
    # The endpoint comes from the file's first line when --endpoint is not given.
    assert create == {"input_file_id": "file-1", "endpoint": "/v1/responses", "completion_window": "24h",
                      "metadata": {"job": "nightly", "team": "a=b"}}
    err = result.stderr
    assert "uploaded requests.jsonl as file-1" in err
    statuses = [line.split()[-1] for line in err.splitlines() if line.strip().endswith(("validating", "in_progress", "finalizing", "completed"))
                and "s  " in line]
    assert statuses == ["validating", "in_progress", "finalizing", "completed"]
    assert "3/3" in err  # the progress bar's final frame: completed + failed of total
    assert "batch_1  completed  2/3 completed, 1 failed" in err
    assert "switchyard batch results batch_1" in err
    assert api.polls == 5


def test_submit_no_wait_and_explicit_endpoint(api: FakeBatchApi, jsonl: Path) -> None:
    result = run(api, "submit", str(jsonl), "--no-wait", "--endpoint", "/v1/chat/completions", "--window", "24h")
    assert result.exit_code == 0 and result.stdout == "batch_1\n"
    assert api.received[1][1]["endpoint"] == "/v1/chat/completions" and "metadata" not in api.received[1][1]
    assert api.polls == 0


def test_bad_metadata_is_a_usage_error(api: FakeBatchApi, jsonl: Path) -> None:
    result = run(api, "submit", str(jsonl), "--metadata", "novalue")
    assert result.exit_code == 2 and "KEY=VALUE" in result.output
    assert api.received == []


@pytest.mark.parametrize(("final", "code"), [("completed", 0), ("failed", 1), ("expired", 1), ("cancelled", 1)])
def test_status_watch_exit_code(api: FakeBatchApi, jsonl: Path, final: str, code: int) -> None:
    run(api, "submit", str(jsonl), "--no-wait")
    api.script = [("in_progress", 1, 0), (final, 1, 0)]
    result = run(api, "status", "batch_1", "--watch", "--interval", "0.05")
    assert result.exit_code == code, result.output
    assert f"batch_1  {final}" in result.stderr
    if final == "failed":
        assert "invalid_json_line: line 2 is not JSON (line 2)" in result.stderr


def test_status_once(api: FakeBatchApi, jsonl: Path) -> None:
    run(api, "submit", str(jsonl), "--no-wait")
    api.script = [("in_progress", 2, 1)]
    result = run(api, "status", "batch_1")
    assert result.exit_code == 0
    assert "in_progress" in result.stdout and "2/3 completed, 1 failed" in result.stdout
    raw = json.loads(run(api, "status", "batch_1", "--json").stdout)
    assert raw["id"] == "batch_1" and raw["request_counts"] == {"total": 3, "completed": 2, "failed": 1}


def test_results_to_files_and_stdout(api: FakeBatchApi, jsonl: Path, tmp_path: Path) -> None:
    run(api, "submit", str(jsonl), "--no-wait")
    api.script = [("completed", 2, 1)]
    out, errs = tmp_path / "out.jsonl", tmp_path / "errors.jsonl"
    result = run(api, "results", "batch_1", "-o", str(out), "--errors", str(errs))
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == OUTPUT and errs.read_bytes() == ERRORS
    assert not list(tmp_path.glob("*.part"))
    to_stdout = run(api, "results", "batch_1")
    assert to_stdout.exit_code == 0 and to_stdout.stdout.encode() == OUTPUT
    assert "1 request(s) failed: see file file-err" in to_stdout.stderr


def test_results_before_any_output(api: FakeBatchApi, jsonl: Path) -> None:
    run(api, "submit", str(jsonl), "--no-wait")
    api.script = [("in_progress", 1, 0)]
    result = run(api, "results", "batch_1")
    assert result.exit_code == 1 and "batch_1 is in_progress: no results yet" in result.stderr


def test_cancel_and_list(api: FakeBatchApi, jsonl: Path) -> None:
    run(api, "submit", str(jsonl), "--no-wait")
    result = run(api, "cancel", "batch_1")
    assert result.exit_code == 0 and "batch_1  cancelling" in result.stdout
    listing = run(api, "list", "--limit", "5")
    assert listing.exit_code == 0 and "batch_1" in listing.stdout and "cancelling" in listing.stdout
    assert api.received[-1] == ("list", {"limit": "5"})


def test_server_errors_print_the_message_and_exit_1(api: FakeBatchApi, jsonl: Path) -> None:
    result = run(api, "submit", str(jsonl), key="sk-bad")
    assert result.exit_code == 1
    assert "switchyard: Incorrect API key provided: sk-bad. (invalid_api_key) [HTTP 401]" in result.stderr
    assert api.received == []
    for args in (["status", "batch_1"], ["status", "batch_1", "--watch"], ["list"], ["cancel", "batch_1"], ["results", "batch_1"]):
        result = run(api, *args, key="sk-bad")
        assert result.exit_code == 1 and "Incorrect API key provided" in result.stderr, args
    missing = run(api, "status", "batch_nope", "--watch")
    assert missing.exit_code == 1 and "No batch found with id 'batch_nope'." in missing.stderr


def test_unreachable_server(api: FakeBatchApi) -> None:
    result = CliRunner().invoke(app, ["batch", "list", "--base-url", "http://127.0.0.1:9/v1", "--api-key", KEY])
    assert result.exit_code == 1 and "cannot reach http://127.0.0.1:9/v1" in result.stderr


def test_api_key_from_openai_env(api: FakeBatchApi) -> None:
    result = CliRunner().invoke(app, ["batch", "list"], env={"SWITCHYARD_BASE_URL": api.base_url, "SWITCHYARD_API_KEY": None,
                                                             "OPENAI_API_KEY": KEY})
    assert result.exit_code == 0, result.output
