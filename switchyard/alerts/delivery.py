"""Delivering alerts from the outbox (`alert_deliveries`): webhooks signed with HMAC-SHA256,
email over SMTP; a failed attempt is retried with exponential backoff, every attempt logged on
the delivery's row. Deliveries are claimed row by row, so several workers never send one twice.

The webhook's `X-Switchyard-Signature` is `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`
with the organisation's webhook secret: a receiver recomputes it and refuses old timestamps."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import smtplib
import time
from email.message import EmailMessage
from typing import Any

import orjson
from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from switchyard.background import Background
from switchyard.config import AlertSettings, FetchPolicy
from switchyard.fetch.guard import FetchRefused, GuardedSession
from switchyard.store.schema import alert_deliveries, alert_settings

log = logging.getLogger("switchyard.alerts")
MAX_ATTEMPTS = 6
LEASE_MS = 60_000  # a claimed delivery whose worker died is retried after this


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


class Deliverer(Background):
    def __init__(self, engine: AsyncEngine, settings: AlertSettings, fetch: FetchPolicy) -> None:
        self.engine = engine
        self.settings = settings
        self.fetch = fetch
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        session = GuardedSession(self.fetch)
        try:
            while True:
                try:
                    await self.deliver_due(session)
                except Exception:
                    log.exception("delivering alerts failed")
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=min(1.0, self.settings.retry_seconds))
                except TimeoutError:
                    pass
                self._wake.clear()
        finally:
            await session.close()

    async def deliver_due(self, session: GuardedSession) -> int:
        now = int(time.time() * 1000)
        d = alert_deliveries.c
        async with self.engine.connect() as conn:
            # The secret is read from the organisation's settings when sent, never kept in the log.
            due = (await conn.execute(
                select(alert_deliveries, alert_settings.c.webhook_secret.label("secret"))
                .join(alert_settings, alert_settings.c.org_id == d.org_id, isouter=True)
                .where(and_(or_(d.status == "pending", d.status == "retry", d.status == "sending"),
                            d.next_attempt_at <= now))
                .order_by(d.id).limit(50))).all()
        sent = 0
        for row in due:
            async with self.engine.begin() as conn:  # claim it: one worker sends it
                claimed = await conn.execute(update(alert_deliveries).where(and_(
                    d.id == row.id, d.status == row.status, d.next_attempt_at == row.next_attempt_at)).values(
                    status="sending", next_attempt_at=now + LEASE_MS))
            if claimed.rowcount != 1:
                continue
            error = await self._send(session, row)
            attempts = row.attempts + 1
            values: dict[str, Any] = {"attempts": attempts, "last_error": error}
            if error is None:
                values.update(status="delivered", delivered_at=int(time.time() * 1000))
                sent += 1
            elif attempts >= MAX_ATTEMPTS:
                values.update(status="failed")
                log.warning("alert delivery %s to %s failed %d times: %s", row.id, row.target, attempts, error)
            else:
                backoff = self.settings.retry_seconds * 2 ** (attempts - 1)
                values.update(status="retry", next_attempt_at=int((time.time() + backoff) * 1000))
            async with self.engine.begin() as conn:
                await conn.execute(update(alert_deliveries).where(d.id == row.id).values(**values))
        return sent

    async def _send(self, session: GuardedSession, row: Any) -> str | None:
        """None when delivered, else what went wrong (kept on the row)."""
        body = row.payload.encode()
        if row.channel == "webhook":
            timestamp = int(time.time())
            headers = {"Content-Type": "application/json", "User-Agent": "switchyard-alerts",
                       "X-Switchyard-Event": row.kind, "X-Switchyard-Delivery": str(row.id),
                       "X-Switchyard-Signature": signature(row.secret or "", timestamp, body)}
            try:
                status = await session.post(row.target, body, headers, timeout=self.settings.webhook_timeout_seconds)
            except FetchRefused as exc:
                return f"not sent: {exc}"
            return None if 200 <= status < 300 else f"HTTP {status}"
        try:
            await asyncio.to_thread(self._mail, row.target, orjson.loads(body))
        except (OSError, smtplib.SMTPException) as exc:
            return f"SMTP: {exc}"
        return None

    def _mail(self, to: str, payload: dict[str, Any]) -> None:
        smtp = self.settings
        message = EmailMessage()
        message["From"], message["To"] = smtp.smtp_from, to
        message["Subject"] = f"[switchyard] {payload.get('title') or payload.get('type')}"
        message.set_content(f"{payload.get('text') or ''}\n\n{orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode()}\n")
        with smtplib.SMTP(smtp.smtp_host, smtp.smtp_port, timeout=10) as client:
            if smtp.smtp_starttls:
                client.starttls()
            if smtp.smtp_username:
                client.login(smtp.smtp_username, os.environ.get(smtp.smtp_password_env, ""))
            client.send_message(message)
