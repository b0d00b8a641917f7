"""An organisation's alert settings (where to send, what to watch) and its delivery log, as the
admin API, the organisation's own API and the console read and write them."""

from __future__ import annotations

import re
import secrets
import time
from typing import Any
from urllib.parse import urlsplit

import orjson

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from switchyard.accounts.admin import to_nanos
from switchyard.metering.cost import usd
from switchyard.store.schema import alert_deliveries, alert_settings
from switchyard.wire.errors import invalid_request

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{2,}$")
DEFAULT_PERCENTS = "80,100"


def rules_object(row: Any, org_id: str, secret: str | None = None) -> dict[str, Any]:
    """The settings; the webhook secret only when just made (afterwards, its last characters)."""
    if row is None:
        return {"object": "alert_settings", "org_id": org_id, "webhook_url": None, "email": None,
                "balance_below_usd": None, "budget_percents": [80, 100], "key_hourly_usd": None, "webhook_secret_hint": None}
    out = {
        "object": "alert_settings", "org_id": org_id, "webhook_url": row.webhook_url, "email": row.email,
        "balance_below_usd": usd(row.balance_below_nanos) if row.balance_below_nanos is not None else None,
        "budget_percents": [int(p) for p in (row.budget_percents or "").split(",") if p],
        "key_hourly_usd": usd(row.key_hourly_nanos) if row.key_hourly_nanos is not None else None,
        "webhook_secret_hint": ("…" + row.webhook_secret[-4:]) if row.webhook_secret else None,
    }
    if secret is not None:
        out["webhook_secret"] = secret  # shown once: the receiver checks signatures with it
    return out


async def get_rules(engine: AsyncEngine, org_id: str) -> dict[str, Any]:
    async with engine.connect() as conn:
        row = (await conn.execute(select(alert_settings).where(alert_settings.c.org_id == org_id))).first()
    return rules_object(row, org_id)


async def set_rules(engine: AsyncEngine, org_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """Replace the settings with `body`'s (every field optional; null turns a watch off)."""
    url = body.get("webhook_url") or None
    if url is not None:
        parts = urlsplit(str(url))
        if parts.scheme not in ("http", "https") or not parts.hostname or len(str(url)) > 500:
            raise invalid_request("'webhook_url' must be an http(s) URL.", param="webhook_url")
    email = body.get("email") or None
    if email is not None and (not isinstance(email, str) or not _EMAIL.match(email)):
        raise invalid_request("'email' must be an email address.", param="email")
    percents = body.get("budget_percents", [80, 100])
    if not isinstance(percents, list) or not all(type(p) is int and 0 < p <= 1000 for p in percents) or len(percents) > 10:
        raise invalid_request("'budget_percents' must be a list of whole percentages, e.g. [80, 100].",
                              param="budget_percents")
    balance = _amount(body.get("balance_below_usd"), "balance_below_usd")
    hourly = _amount(body.get("key_hourly_usd"), "key_hourly_usd")
    async with engine.begin() as conn:
        old = (await conn.execute(select(alert_settings).where(alert_settings.c.org_id == org_id))).first()
        keep = old.webhook_secret if old is not None and old.webhook_secret and not body.get("rotate_secret") else None
        secret = keep or ("whsec_" + secrets.token_urlsafe(24) if url else None)
        values = {
            "org_id": org_id, "webhook_url": url, "webhook_secret": secret, "email": email,
            "balance_below_nanos": balance,
            "budget_percents": ",".join(str(p) for p in sorted(set(percents))),
            "key_hourly_nanos": hourly,
            "updated_at": int(time.time() * 1000),
        }
        await conn.execute(delete(alert_settings).where(alert_settings.c.org_id == org_id))
        await conn.execute(insert(alert_settings).values(**values))
        row = (await conn.execute(select(alert_settings).where(alert_settings.c.org_id == org_id))).first()
    return rules_object(row, org_id, secret if secret and secret != keep else None)


def _amount(value: Any, param: str) -> int | None:
    if value is None:
        return None
    nanos = to_nanos(value, param)
    if nanos < 0:
        raise invalid_request(f"'{param}' must not be negative.", param=param)
    return nanos


async def delivery_log(engine: AsyncEngine, org_id: str, limit: int = 100) -> list[dict[str, Any]]:
    d = alert_deliveries.c
    async with engine.connect() as conn:
        rows = (await conn.execute(select(alert_deliveries).where(d.org_id == org_id)
                                   .order_by(d.id.desc()).limit(limit))).all()
    return [{"id": r.id, "object": "alert_delivery", "type": r.kind, "channel": r.channel, "target": r.target,
             "status": r.status, "attempts": r.attempts, "last_error": r.last_error,
             "created_at": r.created_at // 1000, "delivered_at": r.delivered_at // 1000 if r.delivered_at else None,
             "title": _title(r.payload)} for r in rows]


def _title(payload: str) -> str:
    try:
        return str(orjson.loads(payload).get("title") or "")
    except ValueError:
        return ""
