"""The in-memory view of organisations and keys that every request reads (never the database)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

OPERATOR_ORG_ID = "org_operator"


@dataclass(slots=True)
class OrgRecord:
    id: str
    name: str
    tier: str
    price_multiplier: Decimal
    prepaid: bool
    balance_nanos: int
    overdraft_nanos: int
    rpm_limit: int | None
    tpm_limit: int | None
    max_reserve_tokens: int | None = None  # output reserved for a request without its own limit
    price_group: str | None = None  # per-model price factors of a group of organisations (config)
    budget_nanos: int | None = None  # a spending cap of its own, optionally per period
    budget_period: str | None = None
    spent_nanos: int = 0  # since period_start (all time without a period)
    period_start: int | None = None

    def spent_in(self, period_start: int | None) -> int:
        """What counts against the budget in the period that began at `period_start`."""
        return self.spent_nanos if period_start is None or self.period_start == period_start else 0

    @classmethod
    def from_row(cls, row: Any) -> OrgRecord:
        return cls(
            id=row.id, name=row.name, tier=row.tier, price_multiplier=Decimal(row.price_multiplier),
            prepaid=bool(row.prepaid), balance_nanos=int(row.balance_nanos), overdraft_nanos=int(row.overdraft_nanos),
            rpm_limit=row.rpm_limit, tpm_limit=row.tpm_limit, max_reserve_tokens=row.max_reserve_tokens,
            price_group=getattr(row, "price_group", None), budget_nanos=getattr(row, "budget_nanos", None),
            budget_period=getattr(row, "budget_period", None), spent_nanos=int(getattr(row, "spent_nanos", 0) or 0),
            period_start=getattr(row, "period_start", None),
        )


@dataclass(slots=True)
class KeyRecord:
    id: str
    org_id: str
    name: str
    allowed_models: frozenset[str] | None
    budget_nanos: int | None
    spent_nanos: int
    overdraft_nanos: int
    rpm_limit: int | None
    tpm_limit: int | None
    expires_at: int | None  # epoch ms
    revoked_at: int | None
    is_admin: bool = False
    cache_ttl: int | None = None  # seconds; responses cached by default for this key
    max_reserve_tokens: int | None = None  # overrides the organisation's
    budget_period: str | None = None  # daily | weekly | monthly: the budget resets at each boundary
    period_start: int | None = None  # the period spent_nanos counts (None: all time)

    def spent_in(self, period_start: int | None) -> int:
        """What counts against the budget in the period that began at `period_start`."""
        return self.spent_nanos if period_start is None or self.period_start == period_start else 0

    @classmethod
    def from_row(cls, row: Any) -> KeyRecord:
        allowed = orjson.loads(row.allowed_models) if row.allowed_models else None
        return cls(
            id=row.id, org_id=row.org_id, name=row.name,
            allowed_models=frozenset(allowed) if allowed is not None else None,
            budget_nanos=row.budget_nanos, spent_nanos=int(row.spent_nanos), overdraft_nanos=int(row.overdraft_nanos),
            rpm_limit=row.rpm_limit, tpm_limit=row.tpm_limit, expires_at=row.expires_at, revoked_at=row.revoked_at,
            cache_ttl=row.cache_ttl_seconds, max_reserve_tokens=row.max_reserve_tokens,
            budget_period=getattr(row, "budget_period", None), period_start=getattr(row, "period_start", None),
        )


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: its key and its organisation (live records, kept current)."""

    key: KeyRecord
    org: OrgRecord

    @property
    def key_id(self) -> str:
        return self.key.id

    @property
    def is_admin(self) -> bool:
        return self.key.is_admin

    def may_use(self, model: str) -> bool:
        allowed = self.key.allowed_models
        return allowed is None or model in allowed
