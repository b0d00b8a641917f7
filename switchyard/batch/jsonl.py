"""Batch files: the input JSONL checked line by line, and the output/error lines we write.

Validation reports every bad line (1-based, as an editor numbers them) instead of stopping at
the first, so a user fixes a file in one round trip.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from switchyard.wire.chat import parse_chat_request
from switchyard.wire.completions import parse_completion_request
from switchyard.wire.embeddings import parse_embeddings_request
from switchyard.wire.json_body import parse_json
from switchyard.wire.errors import GatewayError
from switchyard.wire.responses import parse_responses_request

CHAT = "/v1/chat/completions"
RESPONSES = "/v1/responses"
EMBEDDINGS = "/v1/embeddings"
COMPLETIONS = "/v1/completions"
# Each endpoint a batch may target, with the check its live route makes of a body.
PARSERS: dict[str, Callable[[Any], Any]] = {
    CHAT: parse_chat_request, RESPONSES: parse_responses_request, EMBEDDINGS: parse_embeddings_request,
    COMPLETIONS: parse_completion_request,
}
ENDPOINTS = tuple(PARSERS)
MAX_LINES = 50_000
# errors.data is returned on every read of the batch: beyond this the error file has the rest.
MAX_REPORTED_ERRORS = 1000


@dataclass(frozen=True, slots=True)
class BatchLine:
    line: int  # 1-based line number in the input file
    custom_id: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class LineError:
    code: str
    message: str  # without the "line N: " prefix
    line: int | None = None
    param: str | None = None
    custom_id: str | None = None

    def as_batch_error(self) -> dict[str, Any]:
        """One entry of the batch object's `errors.data`."""
        return {"code": self.code, "message": self.message, "param": self.param, "line": self.line}


@dataclass(slots=True)
class ParsedInput:
    lines: list[BatchLine] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)
    model: str | None = None


def parse_input(data: bytes, endpoint: str, known_model: Callable[[str], bool] | None = None) -> ParsedInput:
    """Check a whole input file for `endpoint`. CPU-bound on big files: run it in a thread."""
    out = ParsedInput()
    raw_lines = data.split(b"\n")
    numbered = [(i + 1, raw) for i, raw in enumerate(raw_lines) if raw.strip()]
    if not numbered:
        out.errors.append(LineError("empty_file", "The input file is empty: it has no request lines."))
        return out
    if len(numbered) > MAX_LINES:
        out.errors.append(LineError(
            "too_many_requests", f"The input file has {len(numbered)} requests; a batch may have at most {MAX_LINES}."))
        return out
    # The same checks as the endpoint itself, so a line that passes here is not refused later.
    parse_body = PARSERS[endpoint]
    seen: set[str] = set()
    model_line: int | None = None
    for number, raw in numbered:
        error = _check_line(number, raw, endpoint, parse_body, seen, out)
        if error is not None:
            out.errors.append(error)
            continue
        line = out.lines[-1]
        model = line.body["model"]
        if out.model is None:
            out.model, model_line = model, number
        elif model != out.model:
            out.lines.pop()
            out.errors.append(LineError(
                "mismatched_model",
                f"The model '{model}' differs from '{out.model}' (line {model_line}); a batch file must use one model.",
                number, "body.model", line.custom_id))
    if out.model is not None and known_model is not None and not known_model(out.model):
        out.errors.append(LineError(
            "model_not_found", f"The model `{out.model}` does not exist or you do not have access to it.",
            model_line, "body.model", next((l.custom_id for l in out.lines if l.line == model_line), None)))
    out.errors.sort(key=lambda e: e.line or 0)
    return out


def _check_line(
    number: int, raw: bytes, endpoint: str, parse_body: Callable[[Any], Any], seen: set[str], out: ParsedInput,
) -> LineError | None:
    """None and the line appended to `out.lines` if it is good, else its error."""
    try:
        obj = parse_json(raw)  # the same bounds on nesting and size as a live request's body
    except GatewayError as exc:
        return LineError("invalid_json_line", f"This line is not valid JSON for a request: {exc.message}", number,
                         exc.param)
    if not isinstance(obj, dict):
        return LineError("invalid_json_line", "Each line must be a JSON object.", number)
    custom_id = obj.get("custom_id")
    cid = custom_id if isinstance(custom_id, str) else None
    if not isinstance(custom_id, str) or not custom_id:
        return LineError("missing_custom_id", "'custom_id' must be a non-empty string.", number, "custom_id")
    if len(custom_id) > 512:
        return LineError("invalid_custom_id", "'custom_id' must be at most 512 characters.", number, "custom_id", cid)
    if custom_id in seen:
        return LineError("duplicate_custom_id", f"The custom_id '{custom_id}' is used by an earlier line; "
                         "custom_id must be unique within the file.", number, "custom_id", cid)
    seen.add(custom_id)
    if obj.get("method") != "POST":
        return LineError("invalid_method", "'method' must be \"POST\".", number, "method", cid)
    if obj.get("url") != endpoint:
        return LineError("invalid_url", f"'url' must be '{endpoint}', the endpoint of this batch "
                         f"(got {orjson.dumps(obj.get('url')).decode()}).", number, "url", cid)
    body = obj.get("body")
    if not isinstance(body, dict):
        return LineError("invalid_body", "'body' must be a JSON object holding the request.", number, "body", cid)
    if not isinstance(body.get("model"), str) or not body["model"]:
        return LineError("missing_model", "'body.model' must name the model.", number, "body.model", cid)
    if body.get("stream"):
        return LineError("invalid_stream", "Batch requests cannot stream: remove 'stream' or set it to false.",
                         number, "body.stream", cid)
    try:
        parse_body(body)
    except GatewayError as exc:
        param = f"body.{exc.param}" if exc.param else "body"
        return LineError("invalid_request", exc.message, number, param, cid)
    out.lines.append(BatchLine(number, custom_id, body))
    return None


def new_line_id() -> str:
    return f"batch_req_{os.urandom(12).hex()}"


def _dump(obj: dict[str, Any]) -> str:
    return orjson.dumps(obj).decode()


def answered_line(custom_id: str, request_id: str, status: int, body: dict[str, Any]) -> str:
    """An output/error file line for a request that ran: its HTTP status and body, as OpenAI writes it."""
    return _dump({"id": new_line_id(), "custom_id": custom_id,
                  "response": {"status_code": status, "request_id": request_id, "body": body}, "error": None})


def unanswered_line(custom_id: str | None, code: str, message: str) -> str:
    """An error file line for a request that never ran (invalid, expired, key revoked)."""
    return _dump({"id": new_line_id(), "custom_id": custom_id, "response": None,
                  "error": {"code": code, "message": message}})


def validation_error_lines(errors: list[LineError]) -> list[str]:
    return [unanswered_line(e.custom_id, "invalid_request", f"line {e.line}: {e.message}" if e.line else e.message)
            for e in errors]


def reported_errors(errors: list[LineError]) -> list[dict[str, Any]]:
    """`errors.data` for the batch object, capped (the error file lists every line)."""
    data = [e.as_batch_error() for e in errors[:MAX_REPORTED_ERRORS]]
    if len(errors) > MAX_REPORTED_ERRORS:
        data.append({"code": "too_many_errors", "param": None, "line": None,
                     "message": f"{len(errors) - MAX_REPORTED_ERRORS} more lines are invalid; see the error file."})
    return data
