"""Signing in and out, the first operator's set-up link, invitations, open sign-up."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from switchyard.accounts.admin import to_nanos, valid_org_name
from switchyard.console import Console
from switchyard.console.people import LoginRefused
from switchyard.console.sessions import COOKIE
from switchyard.console.web import SAFE_METHODS, Visit, page, read_form, render
from switchyard.wire.errors import GatewayError


def _console(request: Request) -> Console:
    return request.app.state.sy.console


def _secure(request: Request) -> bool:
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"


def _same_origin(request: Request) -> bool:
    """Forms that need no session (sign-in, set-up, sign-up) must come from our own pages."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host")


def _next(value: Any) -> str:
    text = str(value or "")
    return text if text.startswith("/console") and not text.startswith("//") and "\\" not in text else "/console"


async def _signed_in(request: Request, user_id: str, to: str) -> Response:
    cookie, seconds = await _console(request).sessions.create(user_id, request.headers.get("user-agent"))
    response = RedirectResponse(to, status_code=303)
    response.set_cookie(COOKIE, cookie, max_age=seconds, path="/console", httponly=True, samesite="lax",
                        secure=_secure(request))
    return response


def _client(request: Request) -> str:
    return request.client.host if request.client else "-"


async def login(request: Request) -> Response:
    console = _console(request)
    data: dict[str, Any] = {"next": _next(request.query_params.get("next")), "signup": console.settings.signup}
    if request.method in SAFE_METHODS:
        return render(None, "login.html", data, request=request)
    form = await read_form(request, max_fields=10)
    data.update(next=_next(form.get("next")), email=str(form.get("email") or "")[:320])
    if not _same_origin(request):
        return render(None, "login.html", {**data, "error": "This sign-in form did not come from this console."},
                      status=403, request=request)
    if not console.logins.allow(_client(request)):
        return render(None, "login.html", {**data, "error": "Too many sign-in attempts from here. Wait a few minutes."},
                      status=429, request=request)
    try:
        user = await console.people.login(str(form.get("email") or ""), str(form.get("password") or ""),
                                          console.settings.login_max_failures,
                                          int(console.settings.lockout_minutes * 60_000))
    except LoginRefused as refused:
        if refused.reason == "locked":
            minutes = max(1, (refused.retry_after + 59) // 60)
            message = f"Too many wrong passwords: this account is locked for {minutes} more minute(s)."
            return render(None, "login.html", {**data, "error": message, "locked": True}, status=429, request=request)
        return render(None, "login.html", {**data, "error": "Wrong email or password."}, status=401, request=request)
    return await _signed_in(request, user["id"], data["next"])


async def logout(visit: Visit) -> Response:
    await _console(visit.request).sessions.revoke(visit.session.id)
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path="/console")
    return response


async def home(visit: Visit) -> Response:
    if visit.operator:
        return RedirectResponse("/console/operator", status_code=303)
    if visit.memberships:
        return RedirectResponse(f"/console/o/{visit.memberships[0].org_id}", status_code=303)
    return render(visit, "no_org.html", {"user": visit.user, "organizations": []})


async def _account_form(request: Request, template: str, data: dict[str, Any]) -> tuple[dict[str, str], Response | None]:
    form = await read_form(request, max_fields=10)
    fields = {k: str(form.get(k) or "") for k in ("email", "display_name", "password", "org_name", "ref")}
    data.update(email=fields["email"][:320], display_name=fields["display_name"][:200], org_name=fields["org_name"][:200])
    if not _same_origin(request):
        return fields, render(None, template, {**data, "error": "This form did not come from this console."},
                              status=403, request=request)
    return fields, None


async def setup(request: Request) -> Response:
    """The first operator's account, from the one-time link `serve` printed."""
    console = _console(request)
    token = request.path_params["token"]
    invitation = await console.people.invitation(token)
    if invitation is None or invitation["org_id"] is not None:
        return render(None, "link_used.html", {"error": {"message": "This set-up link was used or has expired."}},
                      status=404, request=request)
    data: dict[str, Any] = {"action": request.url.path}
    if request.method in SAFE_METHODS:
        return render(None, "setup.html", data, request=request)
    fields, refused = await _account_form(request, "setup.html", data)
    if refused:
        return refused
    try:
        user = await console.people.create_user(fields["email"], fields["display_name"], fields["password"],
                                                is_operator=True)
    except GatewayError as err:
        return render(None, "setup.html", {**data, "error": err.message}, status=err.status, request=request)
    if not await console.people.use_invitation(invitation["id"], user["id"]):
        return render(None, "link_used.html", {"error": {"message": "This set-up link was used meanwhile."}},
                      status=409, request=request)
    return await _signed_in(request, user["id"], "/console/operator")


async def invite(request: Request) -> Response:
    """Accept an invitation: a new account, or (signed in) the account already there."""
    console = _console(request)
    invitation = await console.people.invitation(request.path_params["token"])
    if invitation is None or invitation["org_id"] is None:
        return render(None, "link_used.html", {"error": {"message": "This invitation was used or has expired."}},
                      status=404, request=request)
    org = await request.app.state.sy.admin.get_org(invitation["org_id"])
    session = await console.sessions.lookup(request.cookies.get(COOKIE))
    data: dict[str, Any] = {"action": request.url.path, "org": org, "invitation": invitation,
                            "email": invitation["email"] or "", "signed_in": session.user if session else None}
    if request.method in SAFE_METHODS:
        return render(None, "invite.html", data, request=request)
    fields, refused = await _account_form(request, "invite.html", data)
    if refused:
        return refused
    wrong_address = render(None, "invite.html", {**data, "error": f"This invitation is for {invitation['email']}."},
                           status=403, request=request)
    if session is not None:
        user = session.user
    elif invitation["email"] and fields["email"].strip().lower() != invitation["email"]:
        return wrong_address
    else:
        try:
            user = await console.people.create_user(fields["email"], fields["display_name"], fields["password"])
        except GatewayError as err:
            return render(None, "invite.html", {**data, "error": err.message}, status=err.status, request=request)
    if invitation["email"] and user["email"] != invitation["email"]:
        return wrong_address
    if not await console.people.use_invitation(invitation["id"], user["id"]):
        return render(None, "link_used.html", {"error": {"message": "This invitation was used meanwhile."}},
                      status=409, request=request)
    await console.people.add_membership(user["id"], org["id"], invitation["role"])
    if session is not None:
        return RedirectResponse(f"/console/o/{org['id']}", status_code=303)
    return await _signed_in(request, user["id"], f"/console/o/{org['id']}")


async def signup(request: Request) -> Response:
    """Open sign-up: an account and a new organisation it owns, with the configured credit."""
    console = _console(request)
    if console.settings.signup != "open":
        return render(None, "link_used.html", {"error": {"message": "Sign-up is by invitation on this platform."}},
                      status=404, request=request)
    data: dict[str, Any] = {"action": request.url.path, "ref": str(request.query_params.get("ref") or "")[:32]}
    if request.method in SAFE_METHODS:
        return render(None, "signup.html", data, request=request)
    fields, refused = await _account_form(request, "signup.html", data)
    if refused:
        return refused
    data["ref"] = fields["ref"][:32]
    state = request.app.state.sy
    if not console.logins.allow(_client(request)):
        return render(None, "signup.html", {**data, "error": "Too many attempts from here. Wait a few minutes."},
                      status=429, request=request)
    try:
        name = valid_org_name(fields["org_name"].strip() or f"{fields['email'].split('@')[0]}'s organisation")
    except GatewayError as err:
        return render(None, "signup.html", {**data, "error": err.message}, status=err.status, request=request)
    if any(o["name"] == name for o in await state.admin.list_orgs()):
        return render(None, "signup.html", {**data, "error": f"An organisation named '{name}' already exists."},
                      status=409, request=request)
    try:
        user = await console.people.create_user(fields["email"], fields["display_name"], fields["password"])
        org = await state.admin.create_org({"name": name})
    except GatewayError as err:
        return render(None, "signup.html", {**data, "error": err.message}, status=err.status, request=request)
    await console.people.add_membership(user["id"], org["id"], "owner")
    credit = to_nanos(console.settings.signup_credit_usd, "signup_credit_usd")
    if credit:  # before the referral link: free credit earns a referrer nothing
        await state.admin.move_money(org["id"], credit, "topup", "sign-up credit")
    if data["ref"]:
        # Someone already signed in here who opens their own organisation's link refers themselves.
        session = await console.sessions.lookup(request.cookies.get(COOKIE))
        own = {m.org_id for m in await console.people.memberships(session.user["id"])} if session else set()
        await state.admin.referrals.link(state.admin.engine, org["id"], data["ref"], own)
    await state.directory.refresh()
    return await _signed_in(request, user["id"], f"/console/o/{org['id']}")


async def account(visit: Visit) -> Response:
    """Your own account: change the password, see and end your sessions."""
    console = _console(visit.request)
    message = None
    if visit.request.method == "POST":
        form = visit.form
        assert form is not None
        action = form.get("action")
        if action == "password":
            try:
                await console.people.login(visit.user["email"], str(form.get("current") or ""),
                                           console.settings.login_max_failures,
                                           int(console.settings.lockout_minutes * 60_000))
            except LoginRefused:
                return render(visit, "account.html", await _account_data(visit, "The current password is wrong."),
                              status=400)
            await console.people.set_password(visit.user["id"], form.get("new"))
            ended = await console.sessions.revoke_all(visit.user["id"], keep=visit.session.id)
            message = f"Password changed; {ended} other session(s) signed out."
        elif action == "sign_out_others":
            ended = await console.sessions.revoke_all(visit.user["id"], keep=visit.session.id)
            message = f"{ended} other session(s) signed out."
    return render(visit, "account.html", await _account_data(visit, None, message))


async def _account_data(visit: Visit, error: str | None, message: str | None = None) -> dict[str, Any]:
    sessions = await _console(visit.request).sessions.active(visit.user["id"])
    for s in sessions:
        s["current"] = visit.session.id.startswith(s["id"])
    return {"user": visit.user, "sessions": sessions, "error": error, "message": message,
            "memberships": [{"org_id": m.org_id, "org_name": m.org_name, "role": m.role} for m in visit.memberships]}


logout_page = page(logout, org=False)
account_page = page(account, org=False)
home_page = page(home, org=False)
