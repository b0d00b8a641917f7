"""The console's page machinery: who is asking (session cookie), in which organisation and
role, CSRF on every state-changing request, templates, and the JSON view of every page."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from switchyard.accounts.events import UsageEvents

from switchyard.console.people import CAN, Membership
from switchyard.console.sessions import COOKIE, Session
from switchyard.metering.cost import usd
from switchyard.server.responses import JSONResponse, UsageEventStream
from switchyard.wire.errors import GatewayError

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
MAX_FORM_BYTES = 64 * 1024  # every console form is a few fields: a bigger body is refused unread
# Pages load scripts and styles only from /console/static: no inline script, no CDN.
HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
                               "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "x-frame-options": "DENY", "x-content-type-options": "nosniff", "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


def money(nanos: int | None) -> str:
    """USD for people: cents for sums of a dollar or more, more digits below (a request can
    cost a millionth of a dollar), never rounded to a misleading zero."""
    if nanos is None:
        return "—"
    value = nanos / 1e9
    if nanos == 0:
        return "$0.00"
    if abs(value) >= 1:
        return f"-${-value:,.2f}" if value < 0 else f"${value:,.2f}"
    return ("-" if value < 0 else "") + "$" + usd(abs(nanos))


def when(seconds: int | None) -> str:
    if seconds is None:
        return "—"
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def number(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(("html",)), enable_async=False)
env.filters.update(money=money, when=when, number=number)


@dataclass(slots=True)
class Visit:
    """One console request: the signed-in user, their organisations, the one this page is in."""

    request: Request
    session: Session
    memberships: list[Membership]
    org: dict[str, Any] | None = None
    role: str | None = None
    form: FormData | None = None
    flash: list[str] = field(default_factory=list)

    @property
    def user(self) -> dict[str, Any]:
        return self.session.user

    @property
    def operator(self) -> bool:
        return bool(self.user["is_operator"])

    def can(self, what: str) -> bool:
        return self.operator or (self.role is not None and what in CAN[self.role])

    def url(self, path: str = "") -> str:
        assert self.org is not None
        return f"/console/o/{self.org['id']}{path}"


def render(visit: Visit | None, template: str, data: dict[str, Any], *, status: int = 200,
           request: Request | None = None, **extra: Any) -> Response:
    """The page, or with `?format=json` (or an Accept of JSON) its data: every page is an API."""
    request = request or (visit.request if visit else None)
    assert request is not None
    if request.query_params.get("format") == "json" or request.headers.get("accept", "").startswith("application/json"):
        return JSONResponse(data, status_code=status, headers=HEADERS)
    html = env.get_template(template).render(v=visit, data=data, path=request.url.path, **extra)
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def not_found_page(request: Request, visit: Visit | None = None) -> Response:
    return render(visit, "not_found.html", {"error": {"message": "Not found.", "code": "not_found"}},
                  status=404, request=request)


def to_login(request: Request) -> Response:
    return RedirectResponse(f"/console/login?next={quote(request.url.path)}", status_code=303)


Handler = Callable[[Visit], Awaitable[Response]]


def page(handler: Handler, need: str | None = None, org: bool = True, operator: bool = False) -> Callable[[Request], Awaitable[Response]]:
    """A console page: signed in (else to the login page); inside an organisation the user
    belongs to (else 404, as if it did not exist); with the role's right `need` (else 404);
    a state-changing request must carry the session's CSRF token (else 403)."""

    async def endpoint(request: Request) -> Response:
        console = request.app.state.sy.console
        session = await console.sessions.lookup(request.cookies.get(COOKIE))
        if session is None:
            if request.method in SAFE_METHODS:
                return to_login(request)
            return _forbidden(request, "Your session has ended: sign in again.")
        visit = Visit(request, session, await console.people.memberships(session.user["id"]))
        if request.method not in SAFE_METHODS:
            visit.form = await read_form(request)
            sent = request.headers.get("x-csrf-token") or str(visit.form.get("csrf") or "")
            if not hmac.compare_digest(sent.encode(), session.csrf_token.encode()):
                return _forbidden(request, "This form has expired or did not come from this console (CSRF check).")
        if operator and not visit.operator:
            return not_found_page(request, visit)
        if org:
            org_id = request.path_params["org"]
            member = next((m for m in visit.memberships if m.org_id == org_id), None)
            if member is None and not visit.operator:
                return not_found_page(request, visit)
            try:
                visit.org = await request.app.state.sy.admin.get_org(org_id)
            except GatewayError:
                return not_found_page(request, visit)
            if visit.org["id"] != org_id:  # get_org also matches names: pages go by id only
                return not_found_page(request, visit)
            visit.role = member.role if member else "owner"
            if need is not None and not visit.can(need):
                return not_found_page(request, visit)
        try:
            return await handler(visit)
        except GatewayError as err:
            if request.method in SAFE_METHODS:
                raise
            visit.flash.append(err.message)
            return render(visit, "error.html", err.to_dict(), status=err.status)

    return endpoint


async def read_form(request: Request, max_fields: int = 50) -> FormData:
    """A small form, read whole into memory only up to MAX_FORM_BYTES (a 413 past that)."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_FORM_BYTES):
        raise GatewayError(413, "This form is too large.", code="payload_too_large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise GatewayError(413, "This form is too large.", code="payload_too_large")
    request._body = bytes(body)  # Starlette parses the form from the body read here
    return await request.form(max_files=0, max_fields=max_fields)


def _forbidden(request: Request, message: str) -> Response:
    return render(None, "error.html", {"error": {"message": message, "code": "forbidden"}}, status=403, request=request)



def event_stream(events: UsageEvents, keep: Callable[[dict[str, Any]], bool]) -> Response:
    """The console's live usage: each billed request `keep` accepts, from any worker."""
    return UsageEventStream(events, keep, headers=HEADERS)
