"""Logging: plain lines by default, JSON lines with SWITCHYARD_LOG_FORMAT=json (one object per
line: ts, level, logger, message, and a record's own fields). In JSON mode each HTTP request
leaves exactly one `switchyard.requests` line when it ends (request id, route, status, duration,
and, once billed, model, deployment, tokens and cost); never a key, a prompt or an answer."""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
import time
from typing import Any, TextIO

import orjson

PLAIN = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_json = False
_requests = logging.getLogger("switchyard.requests")
# The request's fields (the ASGI scope's state): filled in as it goes, written when it ends. A
# dict, so tasks a request starts (a shielded settlement) fill in the same one.
request_fields: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "switchyard_request_fields", default=None)
# What of the scope's state goes in the line (never the model name a client made up unchecked:
# it is cut to 100 characters).
_FIELDS = ("key_id", "org_id", "deployment", "stream", "billing", "input_tokens", "cached_tokens", "output_tokens",
           "reasoning_tokens", "cost_usd", "error_code")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            doc.update(fields)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


class LineWriter(logging.Handler):
    """Formats each record where it is logged; info lines are written to stderr by a thread of
    its own, at most `interval` seconds later and many in one write, while a warning or worse is
    written at once, after whatever is queued. Written on the event loop, every request's line
    cost a write to stderr (a syscall each, and a stalled pipe would have stopped the loop). If
    stderr stays stuck, info lines past `max_pending` bytes are dropped, and counted in the next
    write."""

    def __init__(self, stream: TextIO | None = None, interval: float = 0.2, max_pending: int = 4 << 20) -> None:
        super().__init__()
        self.stream = stream if stream is not None else sys.stderr
        self.interval, self.max_pending = interval, max_pending
        self._lines: list[str] = []
        self._pending = self._dropped = 0
        self._wake = threading.Event()  # set to end the thread
        self._closed = False
        self.at_once = False  # set as the process ends
        self._writing = threading.Lock()  # batches go out whole and in order, whoever flushes
        self._queue = threading.Lock()  # not the handler's lock: logging.shutdown holds that as it flushes
        threading.Thread(target=self._run, name="switchyard-log-writer", daemon=True).start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
        except Exception:
            self.handleError(record)
            return
        with self._queue:
            if self._pending + len(line) > self.max_pending and record.levelno < logging.WARNING:
                self._dropped += 1
                return
            self._lines.append(line)
            self._pending += len(line)
        if self.at_once or record.levelno >= logging.WARNING:
            self.flush()

    def flush(self) -> None:
        with self._writing:
            with self._queue:
                lines, self._lines, self._pending = self._lines, [], 0
                dropped, self._dropped = self._dropped, 0
            if dropped:
                lines.insert(0, f"(switchyard: {dropped} log lines dropped: stderr was not keeping up)\n")
            if lines:
                try:
                    self.stream.write("".join(lines))
                    self.stream.flush()
                except (OSError, ValueError):  # stderr closed: nothing more can be said
                    pass

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self.flush()
        super().close()

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.interval)
            self.flush()


def configure(level: str, fmt: str) -> None:
    """Set up the root logger of a worker; `fmt`: plain or json."""
    global _json
    _json = fmt == "json"
    for old in logging.getLogger().handlers:
        if isinstance(old, LineWriter):
            old.close()  # configured again (an app built again in one process): what is queued goes first
    handler = LineWriter()
    handler.setFormatter(JsonFormatter() if _json else logging.Formatter(PLAIN))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # uvicorn left the access logger a handler only if `serve --access-log` asked for it; a
    # propagating logger would write a second line for every request whether asked or not.
    access = logging.getLogger("uvicorn.access")
    access.propagate = bool(access.handlers)
    access.handlers[:] = []


def write_at_once() -> None:
    """Lines from now on are written as they are logged (the process is about to end, perhaps
    by a signal that runs no exit handlers); what is queued goes first."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, LineWriter):
            handler.at_once = True
            handler.flush()


def json_lines() -> bool:
    return _json


def add(**fields: Any) -> None:
    """Fields for the current request's line (JSON mode; else nothing to do)."""
    current = request_fields.get()
    if current is not None:
        current.update(fields)


def request_line(method: str, path: str, status: int, state: dict[str, Any], started: float) -> None:
    """The one line of a request that ended (JSON mode)."""
    fields: dict[str, Any] = {"request_id": state.get("request_id"), "method": method, "path": path, "status": status,
                              "duration_ms": round((time.perf_counter() - started) * 1000, 2)}
    model = state.get("model")
    if isinstance(model, str) and model:
        fields["model"] = model[:100]
    fields.update({k: state[k] for k in _FIELDS if state.get(k) is not None})
    _requests.info("%s %s %s %d", fields["request_id"], method, path, status, extra={"fields": fields})


def uvicorn_config(level: str, fmt: str) -> dict[str, Any]:
    """uvicorn's own logging (the supervisor's lines) in the same format as the workers'."""
    formatter = {"()": "switchyard.observability.logs.JsonFormatter"} if fmt == "json" else {"format": PLAIN}
    return {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"}},
        "loggers": {name: {"handlers": ["default"], "level": level.upper(), "propagate": False}
                    for name in ("uvicorn", "uvicorn.error", "uvicorn.access")},
    }
