"""Who is calling: the API key of a request, checked against memory (never the database)."""

from __future__ import annotations

from starlette.requests import Request

from switchyard.accounts.records import Principal


def caller(request: Request) -> Principal:
    """The authenticated caller (401 otherwise); its key id goes into the request's log line.
    The key comes as `Authorization: Bearer` or, as Anthropic's clients send it, `x-api-key`."""
    header = request.headers.get("authorization")
    if header is None and "x-api-key" in request.headers:
        header = "Bearer " + request.headers["x-api-key"]
    principal = request.app.state.sy.directory.authenticate(header)
    request.scope["state"]["key_id"] = principal.key_id
    return principal
