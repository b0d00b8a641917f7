"""`switchyard batch submit | status | results | cancel | list`: OpenAI's Batch API, from a shell.

A plain HTTP client of a running gateway (or of any OpenAI-compatible server), speaking OpenAI's
Files and Batch wire shapes. It uses only the standard library's urllib: the official SDK and
httpx are test-only dependencies, and a CLI making one request at a time needs no event loop.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Annotated, Any, NoReturn, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from switchyard.cli.admin import add_row, emit, show, vertical, when

batch = typer.Typer(no_args_is_help=True, add_completion=False, help="Batches: submit a JSONL file, follow it, fetch results.")

DEFAULT_BASE_URL = "http://127.0.0.1:8080/v1"
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
ENDPOINTS = ("/v1/chat/completions", "/v1/responses")
# Polling survives this many transient failures in a row (connection refused, 429, 5xx): a
# gateway restart should not end a watch over a batch that keeps running server-side.
MAX_POLL_FAILURES = 30

BaseUrl = Annotated[str, typer.Option("--base-url", envvar="SWITCHYARD_BASE_URL", help="The server's /v1 URL.")]
ApiKey = Annotated[Optional[str], typer.Option("--api-key", envvar=["SWITCHYARD_API_KEY", "OPENAI_API_KEY"],
                                               help="API key.", show_default=False)]
Interval = Annotated[float, typer.Option("--interval", min=0.05, help="Seconds between polls.", hidden=True)]
Json = Annotated[bool, typer.Option("--json", help="Print the raw object instead of a table.")]


# ---- HTTP ------------------------------------------------------------------------------------


class ApiError(Exception):
    """An HTTP error answer (status set) or no answer at all (status None)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    @property
    def transient(self) -> bool:
        return self.status is None or self.status == 429 or self.status >= 500


class Client:
    """The few OpenAI endpoints a batch needs, over urllib."""

    def __init__(self, base_url: str, api_key: str | None, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def get(self, path: str, query: Mapping[str, Any] | None = None) -> Any:
        return self._json("GET", path, query=query)

    def post(self, path: str, body: Mapping[str, Any] | None = None) -> Any:
        return self._json("POST", path, data=json.dumps(body or {}).encode(), content_type="application/json")

    def upload(self, path: Path, purpose: str) -> Any:
        """POST /files as multipart/form-data: `purpose` then `file`, like the SDK."""
        boundary = f"switchyard-{uuid.uuid4().hex}"
        filename = path.name.replace('"', "_").replace("\r", "_").replace("\n", "_")
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n{purpose}\r\n'
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                f"Content-Type: application/jsonl\r\n\r\n").encode()
        data = head + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        return self._json("POST", "/files", data=data, content_type=f"multipart/form-data; boundary={boundary}")

    def download(self, path: str, out: IO[bytes]) -> int:
        """Stream a file's raw content into `out`; returns the byte count."""
        total = 0
        with self._open("GET", path) as resp:
            while chunk := resp.read(1 << 16):
                out.write(chunk)
                total += len(chunk)
        return total

    def _json(self, method: str, path: str, *, query: Mapping[str, Any] | None = None,
              data: bytes | None = None, content_type: str | None = None) -> Any:
        with self._open(method, path, query=query, data=data, content_type=content_type) as resp:
            raw = resp.read()
        try:
            return json.loads(raw)
        except ValueError:
            raise ApiError(f"{method} {path}: the server answered with something that is not JSON") from None

    def _open(self, method: str, path: str, *, query: Mapping[str, Any] | None = None,
              data: bytes | None = None, content_type: str | None = None) -> Any:
        url = self.base_url + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        headers = {"Accept": "application/json", "User-Agent": "switchyard-cli"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        if content_type:
            headers["Content-Type"] = content_type
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            with exc:
                raise ApiError(_error_message(exc.code, exc.read()), exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiError(f"cannot reach {self.base_url}: {reason}") from None


def _error_message(status: int, raw: bytes) -> str:
    """OpenAI's `{"error": {"message": ...}}` when there is one, else what came back."""
    try:
        err = json.loads(raw).get("error")
    except (ValueError, AttributeError):
        err = None
    if isinstance(err, dict) and err.get("message"):
        code = f" ({err['code']})" if err.get("code") else ""
        return f"{err['message']}{code} [HTTP {status}]"
    if isinstance(err, str) and err:
        return f"{err} [HTTP {status}]"
    text = raw.decode("utf-8", "replace").strip()
    return f"HTTP {status}" + (f": {text[:200]}" if text else "")


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"switchyard: {message}", err=True)
    raise typer.Exit(code)


def call(action: Any, *args: Any, **kwargs: Any) -> Any:
    """Run one client call; a server or connection error is one line on stderr and exit 1."""
    try:
        return action(*args, **kwargs)
    except ApiError as exc:
        fail(exc.message)


# ---- rendering -------------------------------------------------------------------------------


def counts(b: Mapping[str, Any]) -> tuple[int, int, int]:
    rc = b.get("request_counts") or {}
    return int(rc.get("total") or 0), int(rc.get("completed") or 0), int(rc.get("failed") or 0)


def summary(b: Mapping[str, Any]) -> str:
    total, completed, failed = counts(b)
    return f"{b['id']}  {b.get('status')}  {completed}/{total} completed, {failed} failed"


def batch_rows(b: Mapping[str, Any]) -> list[tuple[str, str]]:
    total, completed, failed = counts(b)
    rows = [("id", b["id"]), ("status", str(b.get("status"))), ("endpoint", str(b.get("endpoint"))),
            ("requests", f"{completed}/{total} completed, {failed} failed")]
    if b.get("model"):
        rows.append(("model", str(b["model"])))
    rows += [("input file", str(b.get("input_file_id"))), ("output file", b.get("output_file_id") or "-"),
             ("error file", b.get("error_file_id") or "-"), ("created", when(b.get("created_at")))]
    for field in ("in_progress_at", "finalizing_at", "completed_at", "failed_at", "expired_at", "cancelled_at", "expires_at"):
        if b.get(field):
            rows.append((field.removesuffix("_at").replace("_", " "), when(b[field])))
    usage = b.get("usage") or {}
    if usage:
        rows.append(("tokens", f"{usage.get('input_tokens', 0):,} in, {usage.get('output_tokens', 0):,} out"))
    rows += [(f"metadata {k}", str(v)) for k, v in (b.get("metadata") or {}).items()]
    rows += [("error", batch_error(e)) for e in ((b.get("errors") or {}).get("data") or [])]
    return rows


def batch_error(e: Mapping[str, Any]) -> str:
    where = f" (line {e['line']})" if e.get("line") else ""
    return f"{e.get('code') or 'error'}: {e.get('message') or ''}{where}"


def render_batch(b: Mapping[str, Any]) -> None:
    show(vertical(f"batch {b['id']}", batch_rows(b)))


def render_batches(listing: Mapping[str, Any]) -> None:
    table = Table("id", "status", "endpoint", "completed", "failed", "total", "created")
    table.columns[0].overflow = "fold"
    for b in listing.get("data") or []:
        total, completed, failed = counts(b)
        add_row(table, b["id"], str(b.get("status")), str(b.get("endpoint")), str(completed), str(failed), str(total),
                when(b.get("created_at")))
    show(table)
    if listing.get("has_more"):
        typer.echo(f"more: --after {listing.get('last_id') or (listing['data'][-1]['id'] if listing.get('data') else '')}", err=True)


# ---- following a batch -----------------------------------------------------------------------


def follow(client: Client, batch_id: str, interval: float = 1.0) -> int:
    """Poll until a terminal status with a progress bar on stderr; 0 if completed, else 1."""
    console = Console(stderr=True)
    progress = Progress(
        SpinnerColumn(), TextColumn("[bold]{task.fields[status]:<11}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("failed {task.fields[failed]}"), TimeElapsedColumn(), TextColumn("{task.fields[rate]}"),
        console=console, transient=False,
    )
    started = time.monotonic()
    first_done: tuple[float, int] | None = None  # (when, done) at the first poll that saw work done
    last_status = None
    failures = 0
    try:
        with progress:
            task = progress.add_task(batch_id, total=None, status="…", failed=0, rate="")
            while True:
                try:
                    b = client.get(f"/batches/{batch_id}")
                    failures = 0
                except ApiError as exc:
                    failures += 1
                    if not exc.transient or failures >= MAX_POLL_FAILURES:
                        raise
                    progress.console.print(f"[yellow]poll failed ({exc.message}); retrying")
                    time.sleep(interval)
                    continue
                status = str(b.get("status"))
                total, completed, failed = counts(b)
                done = completed + failed
                now = time.monotonic()
                if first_done is None and status != "validating":
                    first_done = (now, done)
                rate = ""
                if first_done is not None and now - first_done[0] > 0.5 and done > first_done[1]:
                    rate = f"{(done - first_done[1]) / (now - first_done[0]):.1f} req/s"
                if status != last_status:
                    progress.console.print(Text(f"{time.monotonic() - started:6.1f}s  {status}"))
                    last_status = status
                progress.update(task, total=total or None, completed=done, status=status, failed=failed, rate=rate)
                if status in TERMINAL:
                    break
                time.sleep(interval)
    except KeyboardInterrupt:
        console.print(f"stopped watching; the batch goes on: switchyard batch status {batch_id} --watch")
        raise typer.Exit(130) from None
    except ApiError as exc:
        fail(exc.message)
    console.print(Text(summary(b)))
    for e in (b.get("errors") or {}).get("data") or []:
        console.print(Text(f"  {batch_error(e)}"))
    if b.get("output_file_id") or b.get("error_file_id"):
        console.print(Text(f"results: switchyard batch results {batch_id} -o out.jsonl"
                           + (" --errors errors.jsonl" if b.get("error_file_id") else "")))
    return 0 if status == "completed" else 1


# ---- commands --------------------------------------------------------------------------------


def _endpoint_of(path: Path) -> str | None:
    """The `url` of the file's first request, so --endpoint can usually be left out."""
    try:
        with path.open("rb") as f:
            for line in f:
                if line.strip():
                    url = json.loads(line).get("url")
                    return url if isinstance(url, str) else None
    except (OSError, ValueError, AttributeError):
        return None
    return None


def _metadata(pairs: list[str] | None) -> dict[str, str] | None:
    if not pairs:
        return None
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--metadata")
        out[key] = value
    return out


@batch.command("submit")
def submit(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="JSONL: one request per line.")],
    endpoint: Annotated[Optional[str], typer.Option(
        help=f"{' or '.join(ENDPOINTS)} (default: the `url` of the file's first line).", show_default=False)] = None,
    window: Annotated[str, typer.Option(help="Completion window.")] = "24h",
    metadata: Annotated[Optional[list[str]], typer.Option(help="KEY=VALUE, repeatable.")] = None,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Print the batch id and return.")] = False,
    base_url: BaseUrl = DEFAULT_BASE_URL,
    api_key: ApiKey = None,
    interval: Interval = 1.0,
) -> None:
    """Upload FILE, create a batch from it, print its id, and follow it (unless --no-wait)."""
    meta = _metadata(metadata)
    endpoint = endpoint or _endpoint_of(file) or ENDPOINTS[0]
    client = Client(base_url, api_key)
    uploaded = call(client.upload, file, "batch")
    typer.echo(f"uploaded {file.name} as {uploaded['id']} ({uploaded.get('bytes', '?')} bytes)", err=True)
    body: dict[str, Any] = {"input_file_id": uploaded["id"], "endpoint": endpoint, "completion_window": window}
    if meta is not None:
        body["metadata"] = meta
    created = call(client.post, "/batches", body)
    typer.echo(created["id"])  # alone on stdout: `id=$(switchyard batch submit f.jsonl --no-wait)`
    if not no_wait:
        raise typer.Exit(follow(client, created["id"], interval))


@batch.command("status")
def status(
    batch_id: Annotated[str, typer.Argument(help="The batch id (batch_...).")],
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Follow with a progress bar until the batch ends; exit 0 only if it completed.")] = False,
    as_json: Json = False,
    base_url: BaseUrl = DEFAULT_BASE_URL,
    api_key: ApiKey = None,
    interval: Interval = 1.0,
) -> None:
    """Show a batch's status and request counts."""
    client = Client(base_url, api_key)
    if watch:
        raise typer.Exit(follow(client, batch_id, interval))
    emit(call(client.get, f"/batches/{batch_id}"), as_json, render_batch)


@batch.command("results")
def results(
    batch_id: Annotated[str, typer.Argument(help="The batch id (batch_...).")],
    out: Annotated[Optional[Path], typer.Option("--output", "-o", dir_okay=False, help="Write the output JSONL here (default: stdout).")] = None,
    errors: Annotated[Optional[Path], typer.Option("--errors", dir_okay=False, help="Write the error JSONL here.")] = None,
    base_url: BaseUrl = DEFAULT_BASE_URL,
    api_key: ApiKey = None,
) -> None:
    """Download a batch's output file (and its error file) once it has them."""
    client = Client(base_url, api_key)
    b = call(client.get, f"/batches/{batch_id}")
    output_id, error_id = b.get("output_file_id"), b.get("error_file_id")
    if not output_id and not error_id:
        fail(f"batch {batch_id} is {b.get('status')}: no results yet" if b.get("status") not in TERMINAL
             else f"batch {batch_id} is {b.get('status')} and has no result files")
    if output_id:
        _save(client, output_id, out)
    else:
        typer.echo(f"batch {batch_id} has no output file (every request failed?)", err=True)
    if error_id and errors is not None:
        _save(client, error_id, errors)
    elif error_id:
        _, _, failed = counts(b)
        typer.echo(f"{failed} request(s) failed: see file {error_id} (--errors FILE to save it)", err=True)
    elif errors is not None:
        typer.echo(f"batch {batch_id} has no error file", err=True)
    raise typer.Exit(0 if output_id else 1)


def _save(client: Client, file_id: str, dest: Path | None) -> None:
    if dest is None:
        stream = typer.get_binary_stream("stdout")
        call(client.download, f"/files/{file_id}/content", stream)
        stream.flush()
        return
    # Into a side file first: a failed download never leaves a truncated results file behind.
    tmp = dest.with_name(dest.name + ".part")
    try:
        with tmp.open("wb") as f:
            size = call(client.download, f"/files/{file_id}/content", f)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    typer.echo(f"wrote {dest} ({size} bytes)", err=True)


@batch.command("cancel")
def cancel(
    batch_id: Annotated[str, typer.Argument(help="The batch id (batch_...).")],
    base_url: BaseUrl = DEFAULT_BASE_URL,
    api_key: ApiKey = None,
) -> None:
    """Cancel a batch: requests not yet run are dropped; finished ones stay in its results."""
    b = call(Client(base_url, api_key).post, f"/batches/{batch_id}/cancel")
    typer.echo(summary(b))


@batch.command("list")
def list_batches(
    limit: Annotated[int, typer.Option(min=1, max=100, help="How many, newest first.")] = 20,
    after: Annotated[Optional[str], typer.Option(help="Continue after this batch id.")] = None,
    as_json: Json = False,
    base_url: BaseUrl = DEFAULT_BASE_URL,
    api_key: ApiKey = None,
) -> None:
    """List batches, newest first."""
    emit(call(Client(base_url, api_key).get, "/batches", {"limit": limit, "after": after}), as_json, render_batches)
