"""What an operator can do to accounts: one implementation for the admin API and the CLI.

Every mutation writes its row(s), a ledger entry where money moves, and a change-feed row, in
one transaction, so balances always equal their ledger sums and every worker sees the change.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import Row, and_, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from switchyard.accounts.funds import Funds
from switchyard.accounts.keys import digest, new_key
from switchyard.accounts.periods import PERIODS, Periods
from switchyard.accounts.postings import FundsSync, feed, post
from switchyard.credits.referrals import Referrals
from switchyard.accounts.records import OPERATOR_ORG_ID
from switchyard.metering.cost import NANOS_PER_USD, usd
from switchyard.metering.rollups import DAY, HOUR, MINUTE
from switchyard.store.schema import api_keys, ledger_entries, organizations, usage_rollups
from switchyard.wire.errors import GatewayError, invalid_request, not_found

MONEY_KINDS = ("topup", "reserve", "settle", "release", "refund", "adjustment", "redemption", "referral_credit", "reversal")
MAX_NANOS = 10**18  # one billion USD per amount: sums of them stay far inside a 64-bit integer


def now_ms() -> int:
    return int(time.time() * 1000)


def to_nanos(value: Any, param: str) -> int:
    """A USD amount given as a decimal string or integer to exact nano-dollars."""
    if isinstance(value, float) or isinstance(value, bool):
        raise invalid_request(f"'{param}' must be a decimal string such as \"10.50\", not a float.", param=param)
    try:
        nanos = Decimal(str(value)) * NANOS_PER_USD
    except ArithmeticError:  # decimal.InvalidOperation, Overflow, ...
        raise invalid_request(f"'{param}' is not a decimal amount.", param=param) from None
    if not nanos.is_finite() or abs(nanos) > MAX_NANOS:
        raise invalid_request(f"'{param}' must be a finite amount of at most {usd(MAX_NANOS)} USD.", param=param)
    if nanos != nanos.to_integral_value():
        raise invalid_request(f"'{param}' has more than 9 decimal places.", param=param)
    return int(nanos)


def _multiplier(value: Any) -> str:
    try:
        m = Decimal(str(value))
    except ArithmeticError:
        raise invalid_request("'price_multiplier' is not a decimal.", param="price_multiplier") from None
    if isinstance(value, float) or not m.is_finite() or not (Decimal(0) <= m <= Decimal(100)):
        raise invalid_request("'price_multiplier' must be a decimal string between 0 and 100.", param="price_multiplier")
    return str(m)


def org_object(row: Row[Any] | Any, periods: Periods) -> dict[str, Any]:
    return {
        "id": row.id, "object": "organization", "name": row.name, "tier": row.tier,
        "price_multiplier": row.price_multiplier, "prepaid": bool(row.prepaid),
        "balance_nanos": int(row.balance_nanos), "balance_usd": usd(int(row.balance_nanos)),
        "overdraft_usd": usd(int(row.overdraft_nanos)), "rpm_limit": row.rpm_limit, "tpm_limit": row.tpm_limit,
        "max_reserve_tokens": row.max_reserve_tokens, "created_at": row.created_at // 1000,
        "price_group": getattr(row, "price_group", None), "referred_by": getattr(row, "referred_by", None),
        **_budget_fields(row, periods),
    }


def key_object(row: Row[Any] | Any, periods: Periods) -> dict[str, Any]:
    return {
        "id": row.id, "object": "api_key", "org_id": row.org_id, "name": row.name, "key_hint": row.key_hint,
        "allowed_models": orjson.loads(row.allowed_models) if row.allowed_models else None,
        "budget_usd": usd(row.budget_nanos) if row.budget_nanos is not None else None,
        "spent_usd": usd(int(row.spent_nanos)), "spent_nanos": int(row.spent_nanos),
        "overdraft_usd": usd(int(row.overdraft_nanos)), "rpm_limit": row.rpm_limit, "tpm_limit": row.tpm_limit,
        "cache_ttl": row.cache_ttl_seconds, "max_reserve_tokens": row.max_reserve_tokens, **_budget_fields(row, periods),
        "expires_at": row.expires_at // 1000 if row.expires_at else None,
        "revoked_at": row.revoked_at // 1000 if row.revoked_at else None,
        "created_at": row.created_at // 1000, "owner_user_id": row.owner_user_id,
    }


_feed = feed


def _period(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if value not in PERIODS:
        raise invalid_request(f"'budget_period' must be one of {', '.join(PERIODS)} (or null), not {str(value)[:20]!r}.",
                              param="budget_period")
    return str(value)


def _optional_nanos(value: Any, param: str) -> int | None:
    return None if value is None else to_nanos(value, param)


def _budget_fields(row: Any, periods: Periods) -> dict[str, Any]:
    """A budget and what it has spent in its current period (nothing yet, once a new period begins)."""
    budget, period = getattr(row, "budget_nanos", None), getattr(row, "budget_period", None)
    spent = int(getattr(row, "spent_nanos", 0) or 0)
    current = periods.start(period)
    if period is not None and getattr(row, "period_start", None) != current:
        spent = 0
    return {"budget_usd": usd(budget) if budget is not None else None, "budget_period": period,
            "period_start": current // 1000 if current is not None else None,
            "period_spent_nanos": spent, "period_spent_usd": usd(spent)}


def valid_org_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise invalid_request("'name' is required.", param="name")
    name = value.strip()
    if len(name) > 200:
        raise invalid_request("'name' may have at most 200 characters.", param="name")
    if name.startswith(("org_", "key_")):  # lookups take an id or a name: a name must not read as an id
        raise invalid_request("An organization name cannot start with 'org_' or 'key_'.", param="name")
    return name


def _bool(value: Any, param: str) -> bool:
    if not isinstance(value, bool):
        raise invalid_request(f"'{param}' must be true or false.", param=param)
    return value


def _allowed_models(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
        raise invalid_request("'allowed_models' must be a list of model names or null.", param="allowed_models")
    return orjson.dumps(value).decode()


def _optional_int(value: Any, param: str, minimum: int = 0) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        kind = "positive" if minimum == 1 else "non-negative"
        raise invalid_request(f"'{param}' must be a {kind} integer or null.", param=param)
    return value


class AccountsAdmin:
    def __init__(
        self, engine: AsyncEngine, tiers: Iterable[str], funds: FundsSync | None = None,
        served: Iterable[str] | None = None, referrals: Referrals | None = None,
        price_groups: Iterable[str] = (), periods: Periods | None = None,
    ) -> None:
        """`served`: the model names this deployment serves, to warn about keys limited to others.
        `referrals`: the referral program that credits referrers when a referee's top-up settles."""
        self.engine = engine
        self.tiers = set(tiers)
        self.served = frozenset(served) if served is not None else None
        # Shared holds (Redis) follow every change of what an org or key may spend.
        self.funds: FundsSync = funds or Funds()
        self.referrals = referrals or Referrals()
        self.price_groups = frozenset(price_groups)  # the groups the config defines
        self.periods = periods or Periods()  # budget periods, in the configured time zone

    def _price_group(self, group: Any) -> str | None:
        if group is None or group == "":
            return None
        if not isinstance(group, str) or group not in self.price_groups:
            known = ", ".join(sorted(self.price_groups)) or "none are configured"
            raise invalid_request(f"Unknown price group '{group}' ({known}).", param="price_group")
        return group

    def _tier(self, tier: Any) -> str:
        if not isinstance(tier, str) or tier not in self.tiers:
            raise invalid_request(f"Unknown tier '{tier}'. Known tiers: {', '.join(sorted(self.tiers))}.", param="tier")
        return str(tier)

    async def ensure_operator_org(self) -> None:
        """The organisation that config keys and the master key bill to: metered, never refused."""
        try:
            async with self.engine.begin() as conn:
                found = (await conn.execute(select(organizations.c.id).where(organizations.c.id == OPERATOR_ORG_ID))).first()
                if found is None:
                    t = now_ms()
                    await conn.execute(insert(organizations).values(
                        id=OPERATOR_ORG_ID, name="operator", tier="unlimited" if "unlimited" in self.tiers else sorted(self.tiers)[0],
                        price_multiplier="1", prepaid=False, balance_nanos=0, overdraft_nanos=0,
                        rpm_limit=None, tpm_limit=None, created_at=t, updated_at=t,
                    ))
        except IntegrityError:
            # Replicas starting together on one database: another one inserted it first.
            async with self.engine.connect() as conn:
                found = (await conn.execute(select(organizations.c.id).where(organizations.c.id == OPERATOR_ORG_ID))).first()
            if found is None:
                raise

    # ---- organisations -------------------------------------------------------------------

    async def create_org(self, body: Mapping[str, Any]) -> dict[str, Any]:
        name = valid_org_name(body.get("name"))
        t = now_ms()
        values = {
            "id": "org_" + secrets.token_hex(10), "name": name,
            "tier": self._tier(body.get("tier", "tier-1")),
            "price_multiplier": _multiplier(body.get("price_multiplier", "1")),
            "prepaid": _bool(body.get("prepaid", True), "prepaid"), "balance_nanos": 0,
            "overdraft_nanos": to_nanos(body.get("overdraft_usd", "0"), "overdraft_usd"),
            "rpm_limit": _optional_int(body.get("rpm_limit"), "rpm_limit"),
            "tpm_limit": _optional_int(body.get("tpm_limit"), "tpm_limit"),
            "max_reserve_tokens": _optional_int(body.get("max_reserve_tokens"), "max_reserve_tokens", 1),
            "price_group": self._price_group(body.get("price_group")),
            "budget_nanos": _optional_nanos(body.get("budget_usd"), "budget_usd"),
            "budget_period": _period(body.get("budget_period")), "spent_nanos": 0,
            "created_at": t, "updated_at": t,
        }
        try:
            async with self.engine.begin() as conn:
                await conn.execute(insert(organizations).values(**values))
                await _feed(conn, "org", values["id"])
        except IntegrityError:
            raise GatewayError(409, f"An organization named '{values['name']}' already exists.", param="name", code="conflict") from None
        return await self.get_org(values["id"])

    async def get_org(self, ref: str) -> dict[str, Any]:
        """By id, else by name (an id always wins: names cannot look like ids)."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(organizations).where(organizations.c.id == ref))).first()
            if row is None:
                row = (await conn.execute(select(organizations).where(organizations.c.name == ref))).first()
        if row is None:
            raise not_found(f"No organization '{ref}'.", param="org")
        return org_object(row, self.periods)

    async def list_orgs(self) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            return [org_object(r, self.periods) for r in await conn.execute(select(organizations).order_by(organizations.c.created_at))]

    async def update_org(self, ref: str, body: Mapping[str, Any]) -> dict[str, Any]:
        before = await self.get_org(ref)
        org_id = before["id"]
        values: dict[str, Any] = {}
        if "tier" in body:
            values["tier"] = self._tier(body["tier"])
        if "price_multiplier" in body:
            values["price_multiplier"] = _multiplier(body["price_multiplier"])
        if "prepaid" in body:
            values["prepaid"] = _bool(body["prepaid"], "prepaid")
        if "overdraft_usd" in body:
            values["overdraft_nanos"] = to_nanos(body["overdraft_usd"], "overdraft_usd")
        for field in ("rpm_limit", "tpm_limit"):
            if field in body:
                values[field] = _optional_int(body[field], field)
        if "max_reserve_tokens" in body:
            values["max_reserve_tokens"] = _optional_int(body["max_reserve_tokens"], "max_reserve_tokens", 1)
        if "price_group" in body:
            values["price_group"] = self._price_group(body["price_group"])
        if "budget_usd" in body:
            values["budget_nanos"] = _optional_nanos(body["budget_usd"], "budget_usd")
        if "budget_period" in body:
            values["budget_period"] = _period(body["budget_period"])
        if "name" in body:
            if not isinstance(body["name"], str) or not body["name"].strip():
                raise invalid_request("'name' must be a non-empty string.", param="name")
            values["name"] = valid_org_name(body["name"])
        if not values:
            raise invalid_request("Nothing to update.")
        values["updated_at"] = now_ms()
        try:
            async with self.engine.begin() as conn:
                await conn.execute(update(organizations).where(organizations.c.id == org_id).values(**values))
                await _feed(conn, "org", org_id)
        except IntegrityError:
            raise GatewayError(409, f"An organization named '{values['name']}' already exists.", param="name", code="conflict") from None
        after = await self.get_org(org_id)
        same_budget_kind = (before["budget_usd"] is None) == (after["budget_usd"] is None) and (
            before["budget_period"] == after["budget_period"])
        if after["prepaid"] != before["prepaid"] or not same_budget_kind:
            for period in {self.periods.start(before["budget_period"]), self.periods.start(after["budget_period"])}:
                await self.funds.forget(org_id=org_id, period=period)
        else:
            if after["budget_usd"] is not None and after["budget_usd"] != before["budget_usd"]:
                await self.funds.credit_org_budget(
                    org_id, to_nanos(after["budget_usd"], "budget_usd") - to_nanos(before["budget_usd"], "budget_usd"),
                    self.periods.start(after["budget_period"]))
            if "overdraft_nanos" in values:
                await self.funds.credit_org(
                    org_id, values["overdraft_nanos"] - to_nanos(before["overdraft_usd"], "overdraft_usd"))
        return after

    async def move_money(self, ref: str, amount_nanos: int, kind: str, note: str | None = None) -> dict[str, Any]:
        """Top-ups (positive), refunds (positive) and adjustments (either sign), each a ledger entry."""
        if kind not in ("topup", "refund", "adjustment"):
            raise invalid_request(f"Unknown kind '{kind}'.", param="kind")
        if kind in ("topup", "refund") and amount_nanos <= 0:
            raise invalid_request("The amount must be positive.", param="amount_usd")
        org_id = (await self.get_org(ref))["id"]
        async with self.engine.begin() as conn:
            entry_id = await post(conn, org_id, kind, amount_nanos, note=note)
            earned = await self.referrals.earn(conn, org_id, entry_id, amount_nanos) if kind == "topup" else None
        await self.funds.credit_org(org_id, amount_nanos)
        if earned is not None:
            await self.funds.credit_org(*earned)
        return await self.get_org(org_id)

    async def reverse_entry(self, ref: str, entry_id: Any, note: str | None = None) -> dict[str, Any]:
        """Undo a top-up or redemption (money refunded outside switchyard, a chargeback): a
        `reversal` entry of the opposite amount, and the same for every referral credit it earned.
        An entry is reversed at most once."""
        if type(entry_id) is not int or entry_id <= 0:
            raise invalid_request("'entry_id' must be a ledger entry's id.", param="entry_id")
        org_id = (await self.get_org(ref))["id"]
        moved: list[tuple[str, int]] = []
        le = ledger_entries.c
        async with self.engine.begin() as conn:
            entry = (await conn.execute(select(ledger_entries).where(and_(le.id == entry_id, le.org_id == org_id)))).first()
            if entry is None:
                raise not_found(f"No ledger entry {entry_id} in this organization.", param="entry_id")
            if entry.kind not in ("topup", "redemption"):
                raise invalid_request(f"Only top-ups and redemptions can be reversed, not a '{entry.kind}' entry.",
                                      param="entry_id")
            for undone in [entry, *(await conn.execute(select(ledger_entries).where(and_(
                    le.cause_id == entry_id, le.kind == "referral_credit")))).all()]:
                claimed = await conn.execute(update(ledger_entries).where(and_(
                    le.id == undone.id, le.reversed_at.is_(None))).values(reversed_at=now_ms()))
                if claimed.rowcount != 1:
                    if undone.id == entry_id:
                        raise GatewayError(409, f"Ledger entry {entry_id} has already been reversed.", param="entry_id",
                                           code="already_reversed")
                    continue
                why = note if undone.id == entry_id else f"the {entry.kind} (entry {entry_id}) that earned it was reversed"
                await post(conn, undone.org_id, "reversal", -undone.amount_nanos, cause_id=undone.id,
                           source=undone.source, note=why or f"reversal of entry {undone.id}")
                moved.append((undone.org_id, -undone.amount_nanos))
        for org, delta in moved:
            await self.funds.credit_org(org, delta)
        return {"object": "ledger.reversal", "entry_id": entry_id, "reversed": [
            {"org_id": org, "amount_nanos": delta, "amount_usd": usd(delta)} for org, delta in moved]}

    async def balance(self, ref: str) -> dict[str, Any]:
        """The stored balance beside the ledger's sum: they must agree to the nano-dollar."""
        org = await self.get_org(ref)
        async with self.engine.connect() as conn:
            total = (await conn.execute(select(func.coalesce(func.sum(ledger_entries.c.amount_nanos), 0))
                                        .where(ledger_entries.c.org_id == org["id"]))).scalar_one()
        return {
            "object": "balance", "org_id": org["id"], "balance_nanos": org["balance_nanos"],
            "balance_usd": org["balance_usd"], "ledger_sum_nanos": int(total),
            "consistent": int(total) == org["balance_nanos"],
        }

    async def ledger(self, ref: str, limit: int = 100, after: int | None = None,
                     before: int | None = None, newest_first: bool = False) -> dict[str, Any]:
        """Entries in id order (`after` continues), or newest first (`before` continues)."""
        org_id = (await self.get_org(ref))["id"]
        q = select(ledger_entries).where(ledger_entries.c.org_id == org_id)
        if after is not None:
            q = q.where(ledger_entries.c.id > after)
        if before is not None:
            q = q.where(ledger_entries.c.id < before)
        order = ledger_entries.c.id.desc() if newest_first else ledger_entries.c.id
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q.order_by(order).limit(limit + 1))).all()
        data = [{"id": r.id, "object": "ledger_entry", "kind": r.kind, "amount_nanos": int(r.amount_nanos),
                 "amount_usd": usd(int(r.amount_nanos)), "key_id": r.key_id, "request_id": r.request_id,
                 "note": r.note, "created_at": r.created_at // 1000, "cause_id": r.cause_id, "source": r.source,
                 "reversed_at": r.reversed_at // 1000 if r.reversed_at is not None else None} for r in rows[:limit]]
        return {"object": "list", "data": data, "has_more": len(rows) > limit}

    # ---- keys ----------------------------------------------------------------------------

    async def create_key(self, body: Mapping[str, Any], owner_user_id: str | None = None) -> dict[str, Any]:
        """`owner_user_id`: the console user who made it (members manage only their own)."""
        org_ref = body.get("org_id") or body.get("org")
        if not isinstance(org_ref, str):
            raise invalid_request("'org_id' is required.", param="org_id")
        org_id = (await self.get_org(org_ref))["id"]
        allowed = _allowed_models(body.get("allowed_models"))
        expires = body.get("expires_at")
        if expires is not None and (not isinstance(expires, int) or isinstance(expires, bool)):
            raise invalid_request("'expires_at' must be a unix timestamp in seconds.", param="expires_at")
        plaintext = new_key("live")
        values = {
            "id": "key_" + secrets.token_hex(10), "org_id": org_id, "name": str(body.get("name") or "unnamed"),
            "key_hash": digest(plaintext), "key_hint": f"{plaintext[:11]}...{plaintext[-4:]}",
            "allowed_models": allowed,
            "budget_nanos": to_nanos(body["budget_usd"], "budget_usd") if body.get("budget_usd") is not None else None,
            "spent_nanos": 0, "overdraft_nanos": to_nanos(body.get("overdraft_usd", "0"), "overdraft_usd"),
            "rpm_limit": _optional_int(body.get("rpm_limit"), "rpm_limit"),
            "tpm_limit": _optional_int(body.get("tpm_limit"), "tpm_limit"),
            "cache_ttl_seconds": _optional_int(body.get("cache_ttl"), "cache_ttl"),
            "max_reserve_tokens": _optional_int(body.get("max_reserve_tokens"), "max_reserve_tokens", 1),
            "expires_at": expires * 1000 if expires else None, "revoked_at": None, "created_at": now_ms(),
            "owner_user_id": owner_user_id, "budget_period": _period(body.get("budget_period")),
        }
        async with self.engine.begin() as conn:
            await conn.execute(insert(api_keys).values(**values))
            await _feed(conn, "key", values["id"])
        obj = await self.get_key(values["id"])
        obj["key"] = plaintext  # shown once; only its hash is kept
        self._warn_unserved(obj)
        return obj

    def _warn_unserved(self, key: dict[str, Any]) -> None:
        """A key limited to models nobody serves here can use nothing: say so, beside the key."""
        allowed = key.get("allowed_models")
        if self.served is None or allowed is None:
            return
        missing = [m for m in allowed if m not in self.served]
        if missing:
            served = ", ".join(sorted(self.served)) or "none"
            key["warnings"] = [f"Model '{m}' is not served by this gateway (served: {served}); the key cannot "
                               "use it until the config serves it." for m in missing]

    async def get_key(self, key_id: str) -> dict[str, Any]:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).first()
        if row is None:
            raise not_found(f"No API key '{key_id}'.", param="key_id")
        return key_object(row, self.periods)

    async def list_keys(self, org_ref: str | None = None) -> list[dict[str, Any]]:
        q = select(api_keys).order_by(api_keys.c.created_at)
        if org_ref:
            q = q.where(api_keys.c.org_id == (await self.get_org(org_ref))["id"])
        async with self.engine.connect() as conn:
            return [key_object(r, self.periods) for r in await conn.execute(q)]

    async def update_key(self, key_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        before = await self.get_key(key_id)
        values: dict[str, Any] = {}
        if body.get("revoked"):
            values["revoked_at"] = now_ms()
        if "budget_usd" in body:
            values["budget_nanos"] = to_nanos(body["budget_usd"], "budget_usd") if body["budget_usd"] is not None else None
        if "overdraft_usd" in body:
            values["overdraft_nanos"] = to_nanos(body["overdraft_usd"], "overdraft_usd")
        if "allowed_models" in body:
            values["allowed_models"] = _allowed_models(body["allowed_models"])
        for field in ("rpm_limit", "tpm_limit"):
            if field in body:
                values[field] = _optional_int(body[field], field)
        if "cache_ttl" in body:
            values["cache_ttl_seconds"] = _optional_int(body["cache_ttl"], "cache_ttl")
        if "max_reserve_tokens" in body:
            values["max_reserve_tokens"] = _optional_int(body["max_reserve_tokens"], "max_reserve_tokens", 1)
        if "budget_period" in body:
            values["budget_period"] = _period(body["budget_period"])
        if "name" in body:
            values["name"] = str(body["name"])
        if not values:
            raise invalid_request("Nothing to update.")
        async with self.engine.begin() as conn:
            await conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(**values))
            await _feed(conn, "key", key_id)
        after = await self.get_key(key_id)
        if "allowed_models" in body:
            self._warn_unserved(after)
        if (before["budget_usd"] is None) != (after["budget_usd"] is None) or before["budget_period"] != after["budget_period"]:
            for period in {self.periods.start(before["budget_period"]), self.periods.start(after["budget_period"])}:
                await self.funds.forget(key_id=key_id, period=period)
        elif after["budget_usd"] is not None:
            def room(k: dict[str, Any]) -> int:
                return to_nanos(k["budget_usd"], "budget_usd") + to_nanos(k["overdraft_usd"], "overdraft_usd")

            await self.funds.credit_key(key_id, room(after) - room(before), self.periods.start(after["budget_period"]))
        return after

    async def revoke_key(self, key_id: str) -> dict[str, Any]:
        return await self.update_key(key_id, {"revoked": True})

    # ---- usage ---------------------------------------------------------------------------

    async def usage(
        self,
        *,
        org_id: str | None = None,
        key_id: str | None = None,
        group_by: Iterable[str] = (),
        bucket: str | None = None,
        start: int | None = None,
        end: int | None = None,
    ) -> dict[str, Any]:
        """Tokens, requests and cost, grouped by key, model and/or time bucket (minute/hour/day),
        from the rollups (kept for good while request records are pruned): the hourly sums when
        every edge asked for falls on an hour, else the per-minute sums (ranges to the minute)."""
        r = usage_rollups.c
        columns: list[Any] = []
        names: list[str] = []
        group = set(group_by)
        unknown = group - {"key", "model", "org", "deployment"}
        if unknown:
            raise invalid_request(f"Cannot group by {', '.join(sorted(unknown))}.", param="group_by")
        for name, col in (("org_id", r.org_id), ("key_id", r.key_id), ("model", r.model), ("deployment", r.deployment)):
            if name.removesuffix("_id") in group:
                columns.append(col.label(name))
                names.append(name)
        edges = [t * 1000 for t in (start, end) if t is not None]
        span = HOUR if bucket != "minute" and all(t % HOUR == 0 for t in edges) else MINUTE
        if bucket is not None:
            size = {"minute": MINUTE, "hour": HOUR, "day": DAY}.get(bucket)
            if size is None:
                raise invalid_request("'bucket' must be minute, hour or day.", param="bucket")
            columns.append((r.bucket - r.bucket % size).label("bucket_ms"))
            names.append("bucket_ms")
        measures = [func.coalesce(func.sum(getattr(r, m)), 0).label(m) for m in (
            "requests", "errors", "input_tokens", "cached_tokens", "cache_write_tokens", "output_tokens",
            "reasoning_tokens", "image_tokens", "cost_nanos")]
        conditions = [r.span == span]
        if org_id:
            conditions.append(r.org_id == org_id)
        if key_id:
            conditions.append(r.key_id == key_id)
        if start is not None:
            conditions.append(r.bucket >= start * 1000 - start * 1000 % span)
        if end is not None:
            conditions.append(r.bucket < end * 1000)
        q = select(*columns, *measures).where(and_(*conditions))
        if columns:
            q = q.group_by(*[c for c in columns]).order_by(*[c for c in columns])
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q)).all()
        data = []
        for r in rows:
            item: dict[str, Any] = {n: getattr(r, n) for n in names}
            if "bucket_ms" in item:
                item["bucket_start"] = int(item.pop("bucket_ms")) // 1000
            for m in ("requests", "errors", "input_tokens", "cached_tokens", "cache_write_tokens", "output_tokens",
                      "reasoning_tokens", "image_tokens", "cost_nanos"):
                item[m] = int(getattr(r, m))
            item["cost_usd"] = usd(item["cost_nanos"])
            data.append(item)
        return {"object": "usage", "group_by": sorted(group), "bucket": bucket, "data": data}
