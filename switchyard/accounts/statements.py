"""Monthly statements: what an organisation's money did in a calendar month (UTC): the opening
balance, every credit, refund, redemption, referral credit, adjustment and reversal, the usage
(the month's settled requests), the closing balance, and the usage by model. Every figure comes
from the ledger (usage by model from the rollups, checked against it), so the statement adds up
to the ledger to the nano-dollar: opening + movements - usage = closing = the ledger's sum up to
the month's end."""

from __future__ import annotations

import calendar
import csv
import io
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from switchyard.metering import rollups
from switchyard.metering.cost import usd
from switchyard.metering.rollups import DAY
from switchyard.store.schema import ledger_entries as le
from switchyard.wire.errors import invalid_request

USAGE_KINDS = ("reserve", "release", "settle")  # a request's own entries: reported together as usage


def month_span(month: str) -> tuple[int, int]:
    """[start, end) in epoch ms of a `YYYY-MM` month, UTC."""
    try:
        year, mon = (int(p) for p in month.split("-"))
        if len(month) != 7 or not 1 <= mon <= 12 or year < 2000:
            raise ValueError
    except ValueError:
        raise invalid_request(f"'{month[:20]}' is not a month: use YYYY-MM, e.g. 2026-11.", param="month") from None
    start = int(datetime(year, mon, 1, tzinfo=timezone.utc).timestamp() * 1000)
    return start, start + calendar.monthrange(year, mon)[1] * DAY


async def monthly_statement(engine: AsyncEngine, org: dict[str, Any], month: str) -> dict[str, Any]:
    start, end = month_span(month)
    org_id = org["id"]
    async with engine.connect() as conn:
        opening = (await conn.execute(select(func.coalesce(func.sum(le.c.amount_nanos), 0)).where(and_(
            le.c.org_id == org_id, le.c.created_at < start)))).scalar_one()
        moves = (await conn.execute(select(le).where(and_(
            le.c.org_id == org_id, le.c.created_at >= start, le.c.created_at < end,
            le.c.kind.not_in(USAGE_KINDS))).order_by(le.c.id))).all()
        settled = (await conn.execute(select(func.coalesce(func.sum(le.c.amount_nanos), 0)).where(and_(
            le.c.org_id == org_id, le.c.created_at >= start, le.c.created_at < end,
            le.c.kind.in_(USAGE_KINDS))))).scalar_one()
        ledger_closing = (await conn.execute(select(func.coalesce(func.sum(le.c.amount_nanos), 0)).where(and_(
            le.c.org_id == org_id, le.c.created_at < end)))).scalar_one()
    by_model = await rollups.top(engine, by="model", start=start, end=end, org_id=org_id, limit=1000)
    movements = [{"id": r.id, "created_at": r.created_at // 1000, "kind": r.kind, "amount_nanos": int(r.amount_nanos),
                  "amount_usd": usd(int(r.amount_nanos)), "note": r.note, "cause_id": r.cause_id} for r in moves]
    closing = int(opening) + sum(m["amount_nanos"] for m in movements) + int(settled)
    models = [{"model": r["group"], "requests": r["requests"], "input_tokens": r["input_tokens"],
               "output_tokens": r["output_tokens"], "cost_nanos": r["cost_nanos"], "cost_usd": usd(r["cost_nanos"])}
              for r in by_model]
    totals: dict[str, int] = {}
    for m in movements:
        totals[m["kind"]] = totals.get(m["kind"], 0) + m["amount_nanos"]
    return {
        "object": "statement", "month": month, "org": {"id": org_id, "name": org["name"], "prepaid": org["prepaid"]},
        "period_start": start // 1000, "period_end": end // 1000,
        "opening_nanos": int(opening), "movements": movements, "totals_by_kind_nanos": totals,
        "usage_nanos": -int(settled), "closing_nanos": closing, "by_model": models,
        # What the client can check: the statement equals the ledger, and usage by model its total.
        "ledger_closing_nanos": int(ledger_closing), "adds_up": closing == int(ledger_closing),
        "usage_by_model_nanos": sum(m["cost_nanos"] for m in models),
        **{f"{k}_usd": usd(v) for k, v in (("opening", int(opening)), ("usage", -int(settled)), ("closing", closing))},
    }


def statement_csv(statement: dict[str, Any]) -> str:
    """One line per figure, as an accountant imports it: section, date, description, amount."""
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["section", "date", "description", "amount_usd"])
    w.writerow(["balance", datetime.fromtimestamp(statement["period_start"], timezone.utc).date().isoformat(),
                "opening balance", statement["opening_usd"]])
    for m in statement["movements"]:
        day = datetime.fromtimestamp(m["created_at"], timezone.utc).date().isoformat()
        w.writerow([m["kind"], day, m["note"] or "", m["amount_usd"]])
    for r in statement["by_model"]:
        w.writerow(["usage", "", f"{r['model']}: {r['requests']} requests, {r['input_tokens']} input and "
                                 f"{r['output_tokens']} output tokens", "-" + r["cost_usd"] if r["cost_nanos"] else "0"])
    end = datetime.fromtimestamp(statement["period_end"] - 1, timezone.utc).date().isoformat()
    w.writerow(["usage", end, "usage, total", usd(-statement["usage_nanos"])])
    w.writerow(["balance", end, "closing balance", statement["closing_usd"]])
    return out.getvalue()
