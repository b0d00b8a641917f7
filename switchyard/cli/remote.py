"""The admin commands against a running server, over its admin API: `switchyard --base-url URL
--admin-key KEY orgs list` (or SWITCHYARD_BASE_URL and SWITCHYARD_ADMIN_KEY), so the operator of
a fleet never needs the database. Without a base URL the commands work on the database directly.

`Remote` has the methods of `AccountsAdmin` the commands use, and the operations on people,
codes, alerts and statements (`Operations` gives the same on the database), so a command is
written once for both."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from switchyard.accounts.admin import AccountsAdmin
from switchyard.metering.cost import usd
from switchyard.wire.errors import GatewayError


@dataclass
class Target:
    base_url: str
    admin_key: str


_target: Target | None = None


def configure(base_url: str | None, admin_key: str | None) -> None:
    """From the root options (or their environment variables, which `batch` shares)."""
    global _target
    _target = Target(base_url.rstrip("/").removesuffix("/v1"), admin_key or "") if base_url else None


def target() -> Target | None:
    return _target


def _p(value: str) -> str:
    return quote(value, safe="")


class Remote:
    def __init__(self, where: Target) -> None:
        if not where.admin_key:
            raise GatewayError(401, "--base-url needs --admin-key (or SWITCHYARD_ADMIN_KEY): the admin API takes the master key.")
        self.where = where
        self._http = httpx.AsyncClient(base_url=where.base_url + "/admin/v1", timeout=120,
                                       headers={"Authorization": f"Bearer {where.admin_key}"})

    async def close(self) -> None:
        await self._http.aclose()

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            r = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise GatewayError(503, f"cannot reach {self.where.base_url}: {exc or type(exc).__name__}") from None
        if r.status_code >= 400:
            try:
                error = r.json()["error"]
                message = error.get("message") or r.text
            except (ValueError, KeyError, TypeError):
                message = r.text[:300] or r.reason_phrase
            raise GatewayError(r.status_code, f"{message} (HTTP {r.status_code} from {self.where.base_url})")
        return r.json()

    # What AccountsAdmin offers the commands.
    async def create_org(self, body: dict[str, Any]) -> Any:
        return await self.call("POST", "/organizations", json=body)

    async def list_orgs(self) -> Any:
        return (await self.call("GET", "/organizations"))["data"]

    async def get_org(self, ref: str) -> Any:
        return await self.call("GET", f"/organizations/{_p(ref)}")

    async def update_org(self, ref: str, body: dict[str, Any]) -> Any:
        return await self.call("PATCH", f"/organizations/{_p(ref)}", json=body)

    async def move_money(self, ref: str, nanos: int, kind: str, note: str | None) -> Any:
        body = {"amount_usd": usd(nanos), "note": note}
        if kind == "topup":
            return await self.call("POST", f"/organizations/{_p(ref)}/topup", json=body)
        return await self.call("POST", f"/organizations/{_p(ref)}/adjustments", json=body | {"kind": kind})

    async def balance(self, ref: str) -> Any:
        return await self.call("GET", f"/organizations/{_p(ref)}/balance")

    async def create_key(self, body: dict[str, Any]) -> Any:
        return await self.call("POST", "/keys", json=body)

    async def list_keys(self, org: str | None) -> Any:
        return (await self.call("GET", "/keys", params={"org": org} if org else None))["data"]

    async def revoke_key(self, key_id: str) -> Any:
        return await self.call("DELETE", f"/keys/{_p(key_id)}")

    async def usage(self, org_id: str | None, key_id: str | None, group_by: list[str], bucket: str | None,
                    start: int | None) -> Any:
        params = {k: v for k, v in (("org", org_id), ("key", key_id), ("group_by", ",".join(group_by)),
                                    ("bucket", bucket), ("start", start)) if v}
        return await self.call("GET", "/usage", params=params)

    # People, codes, alerts, statements, config.
    async def list_users(self) -> Any:
        return (await self.call("GET", "/users"))["data"]

    async def create_user(self, email: str, name: str | None, password: str, is_operator: bool) -> Any:
        return await self.call("POST", "/users", json={"email": email, "display_name": name, "password": password,
                                                       "is_operator": is_operator})

    async def add_membership(self, user: str, org: str, role: str) -> Any:
        return await self.call("POST", f"/users/{_p(user)}/memberships", json={"org": org, "role": role})

    async def remove_membership(self, user: str, org: str) -> Any:
        return await self.call("DELETE", f"/users/{_p(user)}/memberships/{_p(org)}")

    async def invite(self, org: str, role: str, email: str | None) -> str:
        return (await self.call("POST", "/invitations", json={"org": org, "role": role, "email": email}))["url"]

    async def create_batch(self, name: str, nanos: int, count: int, expires_ms: int | None, org: str | None,
                           tier: str | None) -> tuple[dict[str, Any], list[str]]:
        made = await self.call("POST", "/code-batches", json={
            "name": name, "value_usd": usd(nanos), "count": count, "org_id": org, "tier": tier,
            "expires_at": expires_ms // 1000 if expires_ms else None})
        codes = made.pop("codes")
        return made, codes

    async def list_batches(self) -> Any:
        return (await self.call("GET", "/code-batches"))["data"]

    async def revoke_batch(self, batch_id: str) -> Any:
        return await self.call("POST", f"/code-batches/{_p(batch_id)}/revoke")

    async def get_rules(self, org: str) -> Any:
        return await self.call("GET", f"/organizations/{_p(org)}/alerts")

    async def set_rules(self, org: str, body: dict[str, Any]) -> Any:
        return await self.call("PUT", f"/organizations/{_p(org)}/alerts", json=body)

    async def statement(self, org: str, month: str) -> Any:
        return await self.call("GET", f"/organizations/{_p(org)}/statements/{_p(month)}")

    async def reload(self) -> Any:
        return await self.call("POST", "/reload")


class Operations:
    """People, codes, alerts and statements on the database, as `Remote` offers them over HTTP."""

    def __init__(self, admin: AccountsAdmin) -> None:
        from switchyard.console import People
        from switchyard.credits.codes import CodeBook

        self.admin = admin
        self.people = People(admin.engine)
        self.book = CodeBook(admin.engine, admin.referrals, admin.funds)

    async def list_users(self) -> Any:
        return await self.people.list_users()

    async def create_user(self, email: str, name: str | None, password: str, is_operator: bool) -> Any:
        return await self.people.create_user(email, name, password, is_operator=is_operator)

    async def add_membership(self, user: str, org: str, role: str) -> Any:
        found, o = await self.people.get_user(user), await self.admin.get_org(org)
        await self.people.add_membership(found["id"], o["id"], role)

    async def remove_membership(self, user: str, org: str) -> Any:
        found, o = await self.people.get_user(user), await self.admin.get_org(org)
        await self.people.remove_membership(found["id"], o["id"])

    async def invite(self, org: str, role: str, email: str | None) -> str:
        from switchyard.config import load_settings
        from switchyard.console.first_run import console_url

        settings = load_settings()
        o = await self.admin.get_org(org)
        token, _ = await self.people.invite(o["id"], role, email, None, settings.console.setup_link_hours * 7)
        return f"{console_url(settings)}/invite/{token}"

    async def create_batch(self, name: str, nanos: int, count: int, expires_ms: int | None, org: str | None,
                           tier: str | None) -> tuple[dict[str, Any], list[str]]:
        return await self.book.create_batch(name, nanos, count, expires_ms, org, tier)

    async def list_batches(self) -> Any:
        return await self.book.list_batches()

    async def revoke_batch(self, batch_id: str) -> Any:
        return await self.book.revoke_batch(batch_id)

    async def get_rules(self, org: str) -> Any:
        from switchyard.alerts.rules import get_rules

        return await get_rules(self.admin.engine, (await self.admin.get_org(org))["id"])

    async def set_rules(self, org: str, body: dict[str, Any]) -> Any:
        from switchyard.alerts.rules import set_rules

        return await set_rules(self.admin.engine, (await self.admin.get_org(org))["id"], body)

    async def statement(self, org: str, month: str) -> Any:
        from switchyard.accounts.statements import monthly_statement

        return await monthly_statement(self.admin.engine, await self.admin.get_org(org), month)


def operations(admin: Any) -> Any:
    """The people/codes/alerts/statement operations of whichever admin `run` gave a command."""
    return admin if isinstance(admin, Remote) else Operations(admin)
