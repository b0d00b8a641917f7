"""Watching for alerts, off the request path: after each group of bills a worker commits, the
organisations and keys in it are looked at once (from memory, and the hourly sums for spend
spikes); every few seconds the deployments' breakers and the alerts already fired are too.

An alert fires once per crossing: firing inserts a state row (organisation, kind, subject) that
every worker shares, so a second worker, or the next request, finds it there and sends nothing;
the row goes when the condition does (a top-up lifts the balance back), arming the alert again.
Budget and spike subjects name their period or hour, so each period gets its own alerts."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Iterable
from typing import Any

import orjson
from sqlalchemy import and_, delete, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from switchyard.accounts.directory import Directory
from switchyard.accounts.periods import Periods
from switchyard.accounts.records import OPERATOR_ORG_ID, KeyRecord, OrgRecord
from switchyard.alerts.delivery import Deliverer
from switchyard.background import Background
from switchyard.config import AlertSettings
from switchyard.metering.cost import usd
from switchyard.metering.rollups import HOUR
from switchyard.store.schema import alert_deliveries, alert_settings, alert_states, usage_rollups

log = logging.getLogger("switchyard.alerts")
KINDS = ("balance_below", "org_budget", "key_budget", "key_spend_spike", "breaker_open")
SWEEP_SECONDS = 2.0
BATCH_SECONDS = 0.5  # bills are looked at in groups this far apart: under load, not once per commit


class AlertWatch(Background):
    def __init__(self, engine: AsyncEngine, directory: Directory, periods: Periods, settings: AlertSettings,
                 deliverer: Deliverer, breakers: Any = None) -> None:
        """`breakers()`: (deployment id, model, open?) of every deployment this worker routes to."""
        self.engine = engine
        self.directory = directory
        self.periods = periods
        self.settings = settings
        self.deliverer = deliverer
        self.breakers = breakers
        self._touched_orgs: set[str] = set()
        self._touched_keys: set[str] = set()
        self._wake = asyncio.Event()
        self._rules: dict[str, Any] = {}
        self._fired: set[tuple[str, str, str]] = set()
        self.fired = 0

    # Called by the ledger writer with each committed group (synchronously: only notes who).
    def on_settled(self, batch: Iterable[tuple[Any, Any]]) -> None:
        for settlement, _ in batch:
            self._touched_orgs.add(settlement.org_id)
            self._touched_keys.add(settlement.key_id)
        self._wake.set()

    async def _run(self) -> None:
        last_sweep = 0.0
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=SWEEP_SECONDS)
            except TimeoutError:
                pass
            await asyncio.sleep(BATCH_SECONDS)  # let a busy worker's commits gather into one check
            self._wake.clear()
            try:
                await self._load_rules()
                orgs, keys = self._touched_orgs, self._touched_keys
                self._touched_orgs, self._touched_keys = set(), set()
                sweep = time.monotonic() - last_sweep >= SWEEP_SECONDS
                if sweep:
                    last_sweep = time.monotonic()
                    orgs |= set(self._rules)  # a top-up or a raised budget clears alerts without a request
                await self.check(orgs, keys)
                if sweep and self.breakers is not None:
                    await self.check_breakers()
            except Exception:
                log.exception("checking alerts failed")

    async def _load_rules(self) -> None:
        """The settings, and the alerts fired and not yet cleared (so a clear writes only when one is)."""
        async with self.engine.connect() as conn:
            self._rules = {r.org_id: r for r in (await conn.execute(select(alert_settings))).all()}
            self._fired = {(r.org_id, r.kind, r.subject) for r in (await conn.execute(select(alert_states))).all()}

    # ---- conditions ----------------------------------------------------------------------

    async def check(self, org_ids: Iterable[str], key_ids: Iterable[str]) -> None:
        for org_id in org_ids:
            rules = self._rules.get(org_id)
            org = self.directory.orgs.get(org_id)
            if rules is None or org is None:
                continue
            if rules.balance_below_nanos is not None and org.prepaid:
                subject = str(rules.balance_below_nanos)
                if org.balance_nanos < rules.balance_below_nanos:
                    await self.fire(org_id, "balance_below", subject, f"Balance below ${usd(rules.balance_below_nanos)}",
                                    f"{org.name}'s balance is ${usd(org.balance_nanos)}, below the "
                                    f"${usd(rules.balance_below_nanos)} you asked to be told about.",
                                    {"balance_usd": usd(org.balance_nanos), "threshold_usd": usd(rules.balance_below_nanos)})
                else:
                    await self.clear(org_id, "balance_below", subject)
            if org.budget_nanos:
                await self._budget(rules, org_id, "org_budget", org.name, org, org.budget_nanos, org.budget_period)
            for key in self.directory.keys_of(org_id):
                if key.budget_nanos:
                    await self._budget(rules, org_id, "key_budget", key.name, key, key.budget_nanos, key.budget_period)
        await self._spikes([k for k in key_ids if (rec := self.directory.key_by_id(k)) is not None
                            and (r := self._rules.get(rec.org_id)) is not None and r.key_hourly_nanos])

    async def _budget(self, rules: Any, org_id: str, kind: str, name: str, who: OrgRecord | KeyRecord,
                      budget: int, period: str | None) -> None:
        start = self.periods.start(period)
        spent = who.spent_in(start)
        ident = who.id
        for percent in _percents(rules.budget_percents):
            subject = f"{ident}:{percent}:{start or 0}"
            if spent * 100 >= budget * percent:
                what = "key" if kind == "key_budget" else "organization"
                await self.fire(org_id, kind, subject, f"{name}: {percent}% of its budget spent",
                                f"The {what} {name} has spent ${usd(spent)} of its ${usd(budget)} "
                                f"{period or ''} budget ({percent}%).",
                                {"id": ident, "percent": percent, "spent_usd": usd(spent), "budget_usd": usd(budget),
                                 "budget_period": period, "period_start": start // 1000 if start else None})
            else:
                await self.clear(org_id, kind, subject)

    async def _spikes(self, key_ids: list[str]) -> None:
        if not key_ids:
            return
        hour = int(time.time() * 1000) // HOUR * HOUR
        r = usage_rollups.c
        async with self.engine.connect() as conn:
            spent = dict((await conn.execute(select(r.key_id, func.sum(r.cost_nanos)).where(and_(
                r.span == HOUR, r.bucket == hour, r.key_id.in_(key_ids))).group_by(r.key_id))).all())
        for key_id, cost in spent.items():
            key = self.directory.key_by_id(key_id)
            if key is None:
                continue
            limit = self._rules[key.org_id].key_hourly_nanos
            if int(cost) >= limit:
                await self.fire(key.org_id, "key_spend_spike", f"{key_id}:{hour}", f"{key.name}: spend spike",
                                f"The key {key.name} has spent ${usd(int(cost))} this hour, past ${usd(limit)}.",
                                {"key_id": key_id, "spent_usd": usd(int(cost)), "threshold_usd": usd(limit),
                                 "hour_start": hour // 1000})

    async def check_breakers(self) -> None:
        if not (self.settings.operator_webhook or self.settings.operator_email):
            return
        for dep_id, model, is_open in self.breakers():
            if is_open:
                await self.fire(OPERATOR_ORG_ID, "breaker_open", dep_id, f"Deployment {dep_id} is failing",
                                f"The circuit breaker of {dep_id} (model {model}) has opened: requests go to "
                                "other deployments until it recovers.", {"deployment": dep_id, "model": model})
            else:
                await self.clear(OPERATOR_ORG_ID, "breaker_open", dep_id)

    # ---- firing --------------------------------------------------------------------------

    async def fire(self, org_id: str, kind: str, subject: str, title: str, text: str, data: dict[str, Any]) -> bool:
        """Record the crossing and queue its deliveries, once across every worker."""
        targets = self._targets(org_id)
        now = int(time.time() * 1000)
        payload = orjson.dumps({"id": "alert_" + secrets.token_hex(10), "object": "alert", "type": kind,
                                "org_id": org_id, "created_at": now // 1000, "title": title, "text": text,
                                "data": data}).decode()
        try:
            async with self.engine.begin() as conn:
                await conn.execute(insert(alert_states).values(org_id=org_id, kind=kind, subject=subject[:200],
                                                               fired_at=now))
                for channel, target in targets:
                    await conn.execute(insert(alert_deliveries).values(
                        org_id=org_id, kind=kind, channel=channel, target=target, payload=payload, status="pending",
                        attempts=0, last_error=None, next_attempt_at=now, created_at=now, delivered_at=None))
        except IntegrityError:
            return False  # fired already, by this worker or another, and not cleared since
        self.fired += 1
        self._fired.add((org_id, kind, subject[:200]))
        log.info("alert %s for %s (%s): %d deliveries", kind, org_id, subject, len(targets))
        self.deliverer.wake()
        return True

    async def clear(self, org_id: str, kind: str, subject: str) -> None:
        if (org_id, kind, subject[:200]) not in self._fired:
            return  # nothing fired: no write
        self._fired.discard((org_id, kind, subject[:200]))
        s = alert_states.c
        async with self.engine.begin() as conn:
            await conn.execute(delete(alert_states).where(and_(s.org_id == org_id, s.kind == kind,
                                                               s.subject == subject[:200])))

    def _targets(self, org_id: str) -> list[tuple[str, str]]:
        if org_id == OPERATOR_ORG_ID and org_id not in self._rules:
            out = [("webhook", self.settings.operator_webhook)] if self.settings.operator_webhook else []
            return out + ([("email", self.settings.operator_email)] if self.settings.operator_email else [])
        rules = self._rules.get(org_id)
        if rules is None:
            return []
        out = [("webhook", rules.webhook_url)] if rules.webhook_url else []
        if rules.email and self.settings.smtp_host:
            out.append(("email", rules.email))
        return out


def _percents(text: str | None) -> list[int]:
    return sorted({int(p) for p in (text or "").split(",") if p.strip().isdigit() and 0 < int(p) <= 1000})
