"""People: users (argon2id passwords), their memberships in organisations, one-time invitations.

The console's own records, read when someone uses the console; never on the API's request path.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import and_, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from switchyard.accounts.admin import now_ms
from switchyard.store.schema import invitations, memberships, organizations, users
from switchyard.wire.errors import GatewayError, invalid_request, not_found

ROLES = ("owner", "member", "billing")
# What each role may do inside its organisation; operators may do all of it everywhere.
CAN = {
    "owner": frozenset({"usage", "keys", "all_keys", "billing", "models", "playground", "people"}),
    "member": frozenset({"usage", "keys", "models", "playground"}),
    "billing": frozenset({"billing", "models"}),
}
MIN_PASSWORD = 10
_EMAIL = re.compile(r"^[^@\s<>\"']+@[^@\s<>\"']+\.[^@\s<>\"']+$")
_HASHER = PasswordHasher()  # argon2id with the library's (RFC 9106 low-memory) parameters


@functools.cache
def _dummy_hash() -> str:
    """Verifying against this when the email is unknown costs what a real check costs: the time a
    login takes says nothing about which addresses have accounts. Made on first use, not at
    import: hashing takes about 0.2 s, which every CLI command and worker start paid."""
    return _HASHER.hash(secrets.token_hex(16))


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def normal_email(value: Any) -> str:
    if not isinstance(value, str) or not _EMAIL.match(value.strip()) or len(value.strip()) > 320:
        raise invalid_request("Enter a valid email address.", param="email")
    return value.strip().lower()


def check_password(value: Any) -> str:
    if not isinstance(value, str) or len(value) < MIN_PASSWORD:
        raise invalid_request(f"A password needs at least {MIN_PASSWORD} characters.", param="password")
    if len(value) > 1024:
        raise invalid_request("A password may have at most 1024 characters.", param="password")
    return value


def user_object(row: Any) -> dict[str, Any]:
    return {"id": row.id, "object": "user", "email": row.email, "display_name": row.display_name,
            "is_operator": bool(row.is_operator), "created_at": row.created_at // 1000,
            "locked_until": row.locked_until // 1000 if row.locked_until else None,
            "disabled": row.disabled_at is not None}


@dataclass(frozen=True, slots=True)
class Membership:
    org_id: str
    org_name: str
    role: str

    @property
    def can(self) -> frozenset[str]:
        return CAN[self.role]


class LoginRefused(Exception):
    def __init__(self, reason: str, retry_after: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason  # invalid | locked
        self.retry_after = retry_after


class People:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    # ---- users ---------------------------------------------------------------------------

    async def create_user(self, email: Any, display_name: Any, password: Any, is_operator: bool = False) -> dict[str, Any]:
        email = normal_email(email)
        name = str(display_name or "").strip() or email.split("@")[0]
        if len(name) > 200:
            raise invalid_request("A display name may have at most 200 characters.", param="display_name")
        hashed = await asyncio.to_thread(_HASHER.hash, check_password(password))
        values = {"id": "user_" + secrets.token_hex(10), "email": email, "display_name": name, "password_hash": hashed,
                  "is_operator": is_operator, "failed_logins": 0, "locked_until": None, "created_at": now_ms(),
                  "disabled_at": None}
        try:
            async with self.engine.begin() as conn:
                await conn.execute(insert(users).values(**values))
        except IntegrityError:
            raise GatewayError(409, f"An account for {email} already exists.", param="email", code="conflict") from None
        return await self.get_user(values["id"])

    async def get_user(self, ref: str) -> dict[str, Any]:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(users).where((users.c.id == ref) | (users.c.email == ref.lower())))).first()
        if row is None:
            raise not_found(f"No user '{ref}'.", param="user")
        return user_object(row)

    async def list_users(self) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(users).order_by(users.c.created_at))).all()
            members = (await conn.execute(
                select(memberships.c.user_id, memberships.c.org_id, memberships.c.role, organizations.c.name)
                .join(organizations, organizations.c.id == memberships.c.org_id))).all()
        by_user: dict[str, list[dict[str, Any]]] = {}
        for m in members:
            by_user.setdefault(m.user_id, []).append({"org_id": m.org_id, "org_name": m.name, "role": m.role})
        return [{**user_object(r), "memberships": by_user.get(r.id, [])} for r in rows]

    async def operator_exists(self) -> bool:
        async with self.engine.connect() as conn:
            return (await conn.execute(select(users.c.id).where(users.c.is_operator.is_(True)).limit(1))).first() is not None

    async def login(self, email: str, password: str, max_failures: int, lockout_ms: int) -> dict[str, Any]:
        """The user, if the password is right and the account is not locked; a run of
        `max_failures` wrong passwords locks it for `lockout_ms`."""
        email = email.strip().lower()
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(users).where(users.c.email == email))).first()
        now = now_ms()
        if row is None or row.disabled_at is not None:
            await asyncio.to_thread(lambda: _verify(_dummy_hash(), password))
            raise LoginRefused("invalid")
        if row.locked_until and row.locked_until > now:
            raise LoginRefused("locked", retry_after=(row.locked_until - now) // 1000 + 1)
        if not await asyncio.to_thread(_verify, row.password_hash, password):
            failures = row.failed_logins + 1
            locked = now + lockout_ms if failures >= max_failures else None
            async with self.engine.begin() as conn:
                await conn.execute(update(users).where(users.c.id == row.id).values(
                    failed_logins=0 if locked else users.c.failed_logins + 1, locked_until=locked))
            if locked:
                raise LoginRefused("locked", retry_after=lockout_ms // 1000)
            raise LoginRefused("invalid")
        if row.failed_logins or row.locked_until:
            async with self.engine.begin() as conn:
                await conn.execute(update(users).where(users.c.id == row.id).values(failed_logins=0, locked_until=None))
        return user_object(row)

    async def set_password(self, user_id: str, password: Any) -> None:
        hashed = await asyncio.to_thread(_HASHER.hash, check_password(password))
        async with self.engine.begin() as conn:
            await conn.execute(update(users).where(users.c.id == user_id).values(password_hash=hashed))

    # ---- memberships ---------------------------------------------------------------------

    async def memberships(self, user_id: str) -> list[Membership]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(
                select(memberships.c.org_id, organizations.c.name, memberships.c.role)
                .join(organizations, organizations.c.id == memberships.c.org_id)
                .where(memberships.c.user_id == user_id).order_by(organizations.c.name))).all()
        return [Membership(r.org_id, r.name, r.role) for r in rows]

    async def org_members(self, org_id: str) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(
                select(users, memberships.c.role).join(memberships, memberships.c.user_id == users.c.id)
                .where(memberships.c.org_id == org_id).order_by(users.c.email))).all()
        return [{**user_object(r), "role": r.role} for r in rows]

    async def add_membership(self, user_id: str, org_id: str, role: Any) -> None:
        if role not in ROLES:
            raise invalid_request(f"'role' must be one of {', '.join(ROLES)}.", param="role")
        async with self.engine.begin() as conn:
            found = (await conn.execute(select(memberships.c.role).where(and_(
                memberships.c.user_id == user_id, memberships.c.org_id == org_id)))).first()
            if found is None:
                await conn.execute(insert(memberships).values(user_id=user_id, org_id=org_id, role=role, created_at=now_ms()))
            else:
                await conn.execute(update(memberships).where(and_(
                    memberships.c.user_id == user_id, memberships.c.org_id == org_id)).values(role=role))

    async def remove_membership(self, user_id: str, org_id: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(delete(memberships).where(and_(
                memberships.c.user_id == user_id, memberships.c.org_id == org_id)))

    # ---- one-time links ------------------------------------------------------------------

    async def invite(self, org_id: str | None, role: str, email: str | None, created_by: str | None,
                     hours: float) -> tuple[str, dict[str, Any]]:
        """A one-time link's token (shown once) and the invitation. `org_id` None with role
        `operator` is the set-up link for the first operator."""
        if org_id is not None and role not in ROLES:
            raise invalid_request(f"'role' must be one of {', '.join(ROLES)}.", param="role")
        token = "inv_" + secrets.token_urlsafe(24)
        now = now_ms()
        values = {"id": "invite_" + secrets.token_hex(8), "token_hash": token_digest(token), "org_id": org_id,
                  "role": role, "email": normal_email(email) if email else None, "created_by": created_by,
                  "created_at": now, "expires_at": now + int(hours * 3_600_000), "used_at": None, "used_by": None}
        async with self.engine.begin() as conn:
            if org_id is None:  # one set-up link at a time: a new one replaces any unused one
                await conn.execute(update(invitations).where(and_(
                    invitations.c.org_id.is_(None), invitations.c.used_at.is_(None))).values(expires_at=now))
            await conn.execute(insert(invitations).values(**values))
        return token, _invitation_object(values)

    async def invitation(self, token: str) -> dict[str, Any] | None:
        """The invitation a link's token opens, if it is unused and unexpired."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(invitations).where(invitations.c.token_hash == token_digest(token)))).first()
        if row is None or row.used_at is not None or row.expires_at <= now_ms():
            return None
        return _invitation_object(row._mapping)

    async def use_invitation(self, invitation_id: str, user_id: str) -> bool:
        """Marks it used; False when someone else used it first (a link works once)."""
        async with self.engine.begin() as conn:
            result = await conn.execute(update(invitations).where(and_(
                invitations.c.id == invitation_id, invitations.c.used_at.is_(None),
                invitations.c.expires_at > now_ms())).values(used_at=now_ms(), used_by=user_id))
        return bool(result.rowcount)

    async def list_invitations(self, org_id: str | None = None) -> list[dict[str, Any]]:
        q = select(invitations).where(invitations.c.org_id.is_not(None)).order_by(invitations.c.created_at.desc())
        if org_id:
            q = q.where(invitations.c.org_id == org_id)
        async with self.engine.connect() as conn:
            return [_invitation_object(r._mapping) for r in (await conn.execute(q.limit(200))).all()]


def _verify(hashed: str, password: str) -> bool:
    try:
        return bool(_HASHER.verify(hashed, password))
    except (VerificationError, InvalidHashError):
        return False


def _invitation_object(row: Any) -> dict[str, Any]:
    now = now_ms()
    status = "used" if row["used_at"] else ("expired" if row["expires_at"] <= now else "open")
    return {"id": row["id"], "object": "invitation", "org_id": row["org_id"], "role": row["role"],
            "email": row["email"], "created_at": row["created_at"] // 1000, "expires_at": row["expires_at"] // 1000,
            "status": status}
