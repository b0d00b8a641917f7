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

    @classmethod
    def from_row(cls, row: Any) -> OrgRecord:
        return cls(
            id=row.id, name=row.name, tier=row.tier, price_multiplier=Decimal(row.price_multiplier),
            prepaid=bool(row.prepaid), balance_nanos=int(row.balance_nanos), overdraft_nanos=int(row.overdraft_nanos),
            rpm_limit=row.rpm_limit, tpm_limit=row.tpm_limit, max_reserve_tokens=row.max_reserve_tokens,
            price_group=getattr(row, "price_group", None),
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

    @classmethod
    def from_row(cls, row: Any) -> KeyRecord:
        allowed = orjson.loads(row.allowed_models) if row.allowed_models else None
        return cls(
            id=row.id, org_id=row.org_id, name=row.name,
            allowed_models=frozenset(allowed) if allowed is not None else None,
            budget_nanos=row.budget_nanos, spent_nanos=int(row.spent_nanos), overdraft_nanos=int(row.overdraft_nanos),
            rpm_limit=row.rpm_limit, tpm_limit=row.tpm_limit, expires_at=row.expires_at, revoked_at=row.revoked_at,
            cache_ttl=row.cache_ttl_seconds, max_reserve_tokens=row.max_reserve_tokens,
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
