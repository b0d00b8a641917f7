"""The referral program: every organisation has a code and a link; an organisation that signs up
through it is linked to its referrer once, for good, and when one of its top-ups or redemptions
settles the referrer is credited `percent` of it (capped per referee, within the first months)
as a `referral_credit` entry whose cause is the entry that earned it."""

from __future__ import annotations

import calendar
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from sqlalchemy import and_, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from switchyard.accounts.postings import feed, now_ms, post
from switchyard.config import ReferralSettings
from switchyard.metering.cost import NANOS_PER_USD, usd
from switchyard.store.schema import ledger_entries, organizations

_ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"  # no 0/o, 1/l/i: read aloud and typed by people
CODE_LENGTH = 8


@dataclass(frozen=True, slots=True)
class ReferralPolicy:
    percent: Decimal = Decimal(0)  # of each referee top-up or redemption; 0 turns the program off
    cap_nanos: int | None = None  # the most one referee earns its referrer, for good
    months: int | None = None  # credits only within this many months of the referee's sign-up


def referral_policy(settings: ReferralSettings) -> ReferralPolicy:
    cap = int(Decimal(settings.cap_usd) * NANOS_PER_USD) if settings.cap_usd else None
    return ReferralPolicy(Decimal(settings.percent), cap, settings.months or None)


def add_months(epoch_ms: int, months: int) -> int:
    """The same moment `months` calendar months later (UTC; the 31st becomes the month's last day)."""
    at = datetime.fromtimestamp(epoch_ms / 1000, tz=timezone.utc)
    month = at.month - 1 + months
    year, month = at.year + month // 12, month % 12 + 1
    day = min(at.day, calendar.monthrange(year, month)[1])
    return int(at.replace(year=year, month=month, day=day).timestamp() * 1000)


def new_code() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(CODE_LENGTH))


class Referrals:
    def __init__(self, policy: ReferralPolicy = ReferralPolicy()) -> None:
        self.policy = policy

    async def earn(self, conn: AsyncConnection, referee_id: str, entry_id: int, amount_nanos: int) -> tuple[str, int] | None:
        """In the transaction of a referee's top-up or redemption (entry `entry_id`): credit its
        referrer, if the program, the window and the cap allow. Returns (referrer, credit)."""
        policy = self.policy
        if policy.percent <= 0 or amount_nanos <= 0:
            return None
        # Locked (PostgreSQL), so two top-ups settling at once cannot both fit under the cap.
        org = (await conn.execute(select(organizations.c.referred_by, organizations.c.referred_at)
                                  .where(organizations.c.id == referee_id).with_for_update())).first()
        if org is None or org.referred_by is None:
            return None
        if policy.months and now_ms() >= add_months(org.referred_at, policy.months):
            return None
        credit = int((Decimal(amount_nanos) * policy.percent / 100).to_integral_value(rounding=ROUND_FLOOR))
        source = f"referee:{referee_id}"
        if policy.cap_nanos is not None:
            earned = (await conn.execute(select(func.coalesce(func.sum(ledger_entries.c.amount_nanos), 0)).where(and_(
                ledger_entries.c.org_id == org.referred_by, ledger_entries.c.source == source)))).scalar_one()
            credit = min(credit, policy.cap_nanos - int(earned))
        if credit <= 0:
            return None
        await post(conn, org.referred_by, "referral_credit", credit, cause_id=entry_id, source=source,
                   note=f"{self.policy.percent.normalize():f}% of {usd(amount_nanos)} USD credited to a referred organisation")
        return org.referred_by, credit

    async def code_of(self, engine: AsyncEngine, org_id: str) -> str:
        """The organisation's referral code, made the first time it is asked for."""
        for _ in range(8):
            try:
                async with engine.begin() as conn:
                    found = (await conn.execute(select(organizations.c.referral_code)
                                                .where(organizations.c.id == org_id))).scalar()
                    if found:
                        return str(found)
                    await conn.execute(update(organizations).where(and_(
                        organizations.c.id == org_id, organizations.c.referral_code.is_(None))).values(
                        referral_code=new_code()))
            except IntegrityError:  # another organisation drew the same code: draw again
                continue
        raise RuntimeError(f"could not give {org_id} a referral code")

    async def link(self, engine: AsyncEngine, referee_id: str, code: str, excluded: set[str]) -> str | None:
        """Link a newly created organisation to the owner of `code`, once; never to itself or to an
        organisation in `excluded` (those the person signing up already belongs to: a self-referral)."""
        code = code.strip().lower()
        async with engine.begin() as conn:
            referrer = (await conn.execute(select(organizations.c.id).where(organizations.c.referral_code == code))).scalar()
            if referrer is None or referrer == referee_id or referrer in excluded:
                return None
            done = await conn.execute(update(organizations).where(and_(
                organizations.c.id == referee_id, organizations.c.referred_by.is_(None))).values(
                referred_by=referrer, referred_at=now_ms()))
            if done.rowcount != 1:
                return None
            await feed(conn, "org", referee_id)
        return str(referrer)

    async def summary(self, engine: AsyncEngine, org_id: str) -> dict[str, Any]:
        """The organisation's code, the organisations it referred and what each has earned it."""
        code = await self.code_of(engine, org_id)
        async with engine.connect() as conn:
            referees = (await conn.execute(select(organizations.c.id, organizations.c.name, organizations.c.referred_at)
                                           .where(organizations.c.referred_by == org_id)
                                           .order_by(organizations.c.referred_at))).all()
            earned = dict((await conn.execute(
                select(ledger_entries.c.source, func.sum(ledger_entries.c.amount_nanos))
                .where(and_(ledger_entries.c.org_id == org_id, ledger_entries.c.source.like("referee:%")))
                .group_by(ledger_entries.c.source))).all())
        rows = [{"org_id": r.id, "name": r.name, "referred_at": r.referred_at // 1000,
                 "earned_nanos": int(earned.get(f"referee:{r.id}", 0))} for r in referees]
        total = sum(r["earned_nanos"] for r in rows)
        return {"object": "referrals", "org_id": org_id, "code": code, "percent": format(self.policy.percent.normalize(), "f"),
                "referees": rows, "earned_nanos": total, "earned_usd": usd(total)}
