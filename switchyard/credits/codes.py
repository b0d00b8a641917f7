"""Redemption codes: operators generate them in batches (a value, a count, an expiry, optionally
one organisation or tier), customers redeem them for credit. Codes are random, stored as their
SHA-256 only, and shown once, when made. A code is redeemed at most once however many try at the
same moment, on any worker or replica: the row is claimed with a conditional UPDATE in the same
transaction as the ledger entry that credits it."""

from __future__ import annotations

import csv
import hashlib
import io
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from switchyard.accounts.postings import FundsSync, now_ms, post
from switchyard.credits.referrals import Referrals
from switchyard.metering.cost import usd
from switchyard.store.schema import code_batches, organizations, redemption_codes
from switchyard.wire.errors import GatewayError, invalid_request, not_found

_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"  # 31 symbols, none mistaken for another
GROUPS, GROUP_LENGTH = 4, 5  # SY-XXXXX-XXXXX-XXXXX-XXXXX: about 99 bits of chance
MAX_CODES = 10_000  # in one batch
MAX_VALUE_NANOS = 10**15  # a million USD per code


@dataclass(frozen=True, slots=True)
class Redeemed:
    org_id: str
    amount_nanos: int
    batch_id: str
    batch_name: str
    entry_id: int
    referrer: tuple[str, int] | None  # (organisation, credit) when a referral credit was earned


def new_code() -> str:
    return "SY-" + "-".join("".join(secrets.choice(_ALPHABET) for _ in range(GROUP_LENGTH)) for _ in range(GROUPS))


def normalise(code: str) -> str:
    """What a person typed, as stored: case, spaces and dashes do not matter."""
    text = "".join(ch for ch in code.upper() if ch.isalnum())
    return text.removeprefix("SY")


def code_hash(code: str) -> str:
    return hashlib.sha256(normalise(code).encode()).hexdigest()


def batch_object(row: Any, redeemed: int = 0) -> dict[str, Any]:
    return {
        "id": row.id, "object": "code_batch", "name": row.name, "value_usd": usd(row.value_nanos),
        "value_nanos": row.value_nanos, "count": row.count, "redeemed": redeemed,
        "expires_at": row.expires_at // 1000 if row.expires_at is not None else None,
        "org_id": row.org_id, "tier": row.tier, "created_at": row.created_at // 1000,
        "revoked_at": row.revoked_at // 1000 if row.revoked_at is not None else None,
    }


def codes_csv(batch: dict[str, Any], codes: list[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["code", "value_usd", "batch", "expires_at"])
    for code in codes:
        writer.writerow([code, batch["value_usd"], batch["name"], batch["expires_at"] or ""])
    return out.getvalue()


def _refused(status: int, message: str, code: str) -> GatewayError:
    return GatewayError(status, message, param="code", code=code)


class CodeBook:
    def __init__(self, engine: AsyncEngine, referrals: Referrals, funds: FundsSync | None = None) -> None:
        """`funds`: the in-memory or shared holds view, told of every credit once it is committed."""
        self.engine = engine
        self.referrals = referrals
        self.funds = funds

    async def create_batch(self, name: Any, value_nanos: int, count: Any, expires_at_ms: int | None = None,
                           org_id: str | None = None, tier: str | None = None) -> tuple[dict[str, Any], list[str]]:
        """A batch of `count` new codes worth `value_nanos` each; the codes are returned this once."""
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise invalid_request("'name' must be a non-empty string of at most 200 characters.", param="name")
        if not 0 < value_nanos <= MAX_VALUE_NANOS:
            raise invalid_request("'value_usd' must be positive, at most 1000000.", param="value_usd")
        if type(count) is not int or not 1 <= count <= MAX_CODES:
            raise invalid_request(f"'count' must be an integer from 1 to {MAX_CODES:,}.", param="count")
        if expires_at_ms is not None and expires_at_ms <= now_ms():
            raise invalid_request("'expires_at' must be in the future.", param="expires_at")
        batch_id = "cb_" + secrets.token_hex(10)
        codes = [new_code() for _ in range(count)]
        async with self.engine.begin() as conn:
            if org_id is not None and (await conn.execute(
                    select(organizations.c.id).where(organizations.c.id == org_id))).first() is None:
                raise not_found(f"No organization '{org_id}'.", param="org_id")
            await conn.execute(insert(code_batches).values(
                id=batch_id, name=name.strip(), value_nanos=value_nanos, count=count, expires_at=expires_at_ms,
                org_id=org_id, tier=tier, created_at=now_ms()))
            await conn.execute(insert(redemption_codes), [
                {"code_hash": code_hash(c), "batch_id": batch_id, "hint": c[-4:]} for c in codes])
        return await self.get_batch(batch_id), codes

    async def get_batch(self, batch_id: str) -> dict[str, Any]:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(code_batches).where(code_batches.c.id == batch_id))).first()
            if row is None:
                raise not_found(f"No code batch '{batch_id}'.", param="batch_id")
            redeemed = (await conn.execute(select(func.count()).where(and_(
                redemption_codes.c.batch_id == batch_id, redemption_codes.c.redeemed_at.is_not(None))))).scalar_one()
        return batch_object(row, int(redeemed))

    async def list_batches(self) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(code_batches).order_by(code_batches.c.created_at.desc()))).all()
            counts = dict((await conn.execute(
                select(redemption_codes.c.batch_id, func.count()).where(redemption_codes.c.redeemed_at.is_not(None))
                .group_by(redemption_codes.c.batch_id))).all())
        return [batch_object(r, int(counts.get(r.id, 0))) for r in rows]

    async def revoke_batch(self, batch_id: str) -> dict[str, Any]:
        """Codes of a revoked batch can no longer be redeemed (those already redeemed stay)."""
        async with self.engine.begin() as conn:
            await conn.execute(update(code_batches).where(and_(
                code_batches.c.id == batch_id, code_batches.c.revoked_at.is_(None))).values(revoked_at=now_ms()))
        return await self.get_batch(batch_id)

    async def redeem(self, code: Any, org_id: str, user_id: str | None = None) -> Redeemed:
        """Credit the organisation with the code's value, once; unknown, used, expired, revoked and
        restricted codes each get their own error, and change nothing."""
        if not isinstance(code, str) or not 10 <= len(normalise(code)) <= 64:
            raise invalid_request("'code' must be a redemption code such as SY-XXXXX-XXXXX-XXXXX-XXXXX.", param="code")
        digest = code_hash(code)
        now = now_ms()
        async with self.engine.begin() as conn:
            row = (await conn.execute(
                select(redemption_codes.c.redeemed_at, code_batches, organizations.c.tier.label("org_tier"))
                .join(code_batches, code_batches.c.id == redemption_codes.c.batch_id)
                .join(organizations, organizations.c.id == org_id)
                .where(redemption_codes.c.code_hash == digest))).first()
            if row is None:
                raise _refused(404, "This code does not exist. Check it for typos.", "code_not_found")
            if row.redeemed_at is not None:
                raise _refused(409, "This code has already been redeemed.", "code_already_redeemed")
            if row.revoked_at is not None:
                raise _refused(410, "This code has been withdrawn by the operator.", "code_revoked")
            if row.expires_at is not None and row.expires_at <= now:
                raise _refused(410, "This code has expired.", "code_expired")
            if (row.org_id is not None and row.org_id != org_id) or (row.tier is not None and row.tier != row.org_tier):
                raise _refused(403, "This code cannot be redeemed by this organisation.", "code_not_for_this_organization")
            claimed = await conn.execute(update(redemption_codes).where(and_(
                redemption_codes.c.code_hash == digest, redemption_codes.c.redeemed_at.is_(None))).values(
                redeemed_at=now, org_id=org_id, user_id=user_id))
            if claimed.rowcount != 1:  # someone else redeemed it a moment ago
                raise _refused(409, "This code has already been redeemed.", "code_already_redeemed")
            entry_id = await post(conn, org_id, "redemption", row.value_nanos, source=f"code_batch:{row.id}",
                                  note=f"code …{code.strip()[-4:]} of batch '{row.name}'")
            await conn.execute(update(redemption_codes).where(redemption_codes.c.code_hash == digest)
                               .values(entry_id=entry_id))
            earned = await self.referrals.earn(conn, org_id, entry_id, row.value_nanos)
        if self.funds is not None:
            await self.funds.credit_org(org_id, row.value_nanos)
            if earned is not None:
                await self.funds.credit_org(*earned)
        return Redeemed(org_id, row.value_nanos, row.id, row.name, entry_id, earned)
