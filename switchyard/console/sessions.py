"""Console sessions: a random token in a signed, HttpOnly, SameSite=Lax cookie; the server
keeps only the token's hash, so a session is revocable and a database leak opens none.
Every session carries its own CSRF token, which each state-changing request must echo."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import and_, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from switchyard.accounts.admin import now_ms
from switchyard.console.people import token_digest, user_object
from switchyard.store.schema import console_sessions, users

COOKIE = "sy_console"


def console_secret(data_dir: Path) -> bytes:
    """The key that signs session cookies: made once per data directory, readable only by its
    owner; every worker and every restart reads the same one. Published whole with a hard
    link, so a worker starting at the same moment never reads a half-written file."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "console_secret"
    if not path.exists():
        tmp = data_dir / f".console_secret.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another worker published first: use theirs
        finally:
            tmp.unlink()
    return bytes.fromhex(path.read_text().strip())


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    user: dict[str, Any]
    csrf_token: str


class Sessions:
    def __init__(self, engine: AsyncEngine, secret: bytes, hours: float) -> None:
        self.engine = engine
        self._secret = secret
        self._lifetime_ms = int(hours * 3_600_000)

    def _sign(self, token: str) -> str:
        return hmac.new(self._secret, token.encode(), hashlib.sha256).hexdigest()

    async def create(self, user_id: str, user_agent: str | None) -> tuple[str, int]:
        """The cookie value for a new session and its lifetime in seconds."""
        token = secrets.token_urlsafe(32)
        now = now_ms()
        async with self.engine.begin() as conn:
            await conn.execute(insert(console_sessions).values(
                id=token_digest(token), user_id=user_id, csrf_token=secrets.token_urlsafe(24), created_at=now,
                expires_at=now + self._lifetime_ms, revoked_at=None, user_agent=(user_agent or "")[:300] or None))
        return f"{token}.{self._sign(token)}", self._lifetime_ms // 1000

    async def lookup(self, cookie: str | None) -> Session | None:
        if not cookie or "." not in cookie:
            return None
        token, signature = cookie.rsplit(".", 1)
        if not hmac.compare_digest(signature, self._sign(token)):
            return None  # forged or from another installation: no database read
        async with self.engine.connect() as conn:
            row = (await conn.execute(
                select(console_sessions.c.id.label("session_id"), console_sessions.c.csrf_token, console_sessions.c.expires_at,
                       console_sessions.c.revoked_at, users)
                .join(users, users.c.id == console_sessions.c.user_id)
                .where(console_sessions.c.id == token_digest(token)))).first()
        if row is None or row.revoked_at is not None or row.expires_at <= now_ms() or row.disabled_at is not None:
            return None
        return Session(id=row.session_id, user=user_object(row), csrf_token=row.csrf_token)

    async def revoke(self, session_id: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(update(console_sessions).where(console_sessions.c.id == session_id)
                               .values(revoked_at=now_ms()))

    async def revoke_all(self, user_id: str, keep: str | None = None) -> int:
        """End every session of the user (but `keep`, the one asking); how many ended."""
        conditions = [console_sessions.c.user_id == user_id, console_sessions.c.revoked_at.is_(None)]
        if keep is not None:
            conditions.append(console_sessions.c.id != keep)
        async with self.engine.begin() as conn:
            result = await conn.execute(update(console_sessions).where(and_(*conditions)).values(revoked_at=now_ms()))
        return int(result.rowcount or 0)

    async def active(self, user_id: str) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(console_sessions).where(and_(
                console_sessions.c.user_id == user_id, console_sessions.c.revoked_at.is_(None),
                console_sessions.c.expires_at > now_ms())).order_by(console_sessions.c.created_at.desc()))).all()
        return [{"id": r.id[:12], "created_at": r.created_at // 1000, "expires_at": r.expires_at // 1000,
                 "user_agent": r.user_agent} for r in rows]


class AttemptWindow:
    """At most `limit` attempts per `seconds` per client address, in this worker (the
    account lockout in the database holds across workers)."""

    def __init__(self, limit: int, seconds: float) -> None:
        self.limit, self.seconds = limit, seconds
        self._seen: dict[str, deque[float]] = {}

    def allow(self, client: str) -> bool:
        now = time.monotonic()
        if len(self._seen) > 10_000:  # a flood of addresses: forget the idle ones
            self._seen = {k: v for k, v in self._seen.items() if v and v[-1] > now - self.seconds}
        seen = self._seen.setdefault(client, deque())
        while seen and seen[0] <= now - self.seconds:
            seen.popleft()
        if len(seen) >= self.limit:
            return False
        seen.append(now)
        return True
