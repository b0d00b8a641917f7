"""Logging: plain lines by default, JSON lines with SWITCHYARD_LOG_FORMAT=json (one object per
line: ts, level, logger, message, and a record's own fields). In JSON mode each HTTP request
leaves exactly one `switchyard.requests` line when it ends (request id, route, status, duration,
and, once billed, model, deployment, tokens and cost); never a key, a prompt or an answer."""

from __future__ import annotations

import contextvars
import logging
import time
from typing import Any

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


def configure(level: str, fmt: str) -> None:
    """Set up the root logger of a worker; `fmt`: plain or json."""
    global _json
    _json = fmt == "json"
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if _json else logging.Formatter(PLAIN))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


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
