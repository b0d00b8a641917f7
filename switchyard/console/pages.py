"""The customer's pages, each inside one organisation: overview, usage, request log, keys,
billing, models and prices, playground. Each renders a template and is also its own JSON."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from switchyard.accounts.admin import now_ms
from switchyard.accounts.statements import monthly_statement, statement_csv
from switchyard.console.prices import price_rows
from switchyard.console.web import HEADERS, Visit, event_stream, not_found_page, page, render
from switchyard.metering import request_log, rollups
from switchyard.metering.cost import usd
from switchyard.metering.request_log import LogFilter
from switchyard.metering.rollups import DAY, HOUR, MINUTE
from switchyard.wire.errors import GatewayError, invalid_request

PLAYGROUND_KEY_MINUTES = 60
PLAYGROUND_KEY_PREFIX = "playground · "
BUCKETS = {"minute": (MINUTE, MINUTE), "hour": (HOUR, HOUR), "day": (HOUR, DAY)}  # bucket -> (rollup read, size)
MAX_POINTS = 5000  # a usage chart's buckets: a wider range needs a coarser bucket


def _state(visit: Visit) -> Any:
    return visit.request.app.state.sy


def _engine(visit: Visit) -> Any:
    return _state(visit).admin.engine


def day_start(ms: int) -> int:
    return ms - ms % DAY


def month_start(ms: int) -> int:
    d = datetime.fromtimestamp(ms / 1000, timezone.utc)
    return int(datetime(d.year, d.month, 1, tzinfo=timezone.utc).timestamp() * 1000)


def chart_series(points: list[dict[str, Any]], start: int, end: int, size: int, measure: str) -> dict[str, Any]:
    """Series for the chart library: one x per bucket (seconds) across the whole range, zeros
    where nothing happened, one y series per group (model, key...)."""
    xs = list(range(start - start % size, end, size))
    index = {x: i for i, x in enumerate(xs)}
    groups: dict[str, list[int]] = {}
    for p in points:
        name = str(p.get("group", "all"))
        ys = groups.setdefault(name, [0] * len(xs))
        i = index.get(p["bucket"] - p["bucket"] % size)
        if i is not None:
            ys[i] += p[measure]
    return {"x": [x // 1000 for x in xs], "series": groups}


def charts(points: list[dict[str, Any]], start: int, end: int, size: int) -> dict[str, Any]:
    return {
        "requests": chart_series(points, start, end, size, "requests"),
        "tokens": chart_series([{**p, "tokens": p["input_tokens"] + p["output_tokens"]} for p in points], start, end, size, "tokens"),
        "spend": chart_series([{**p, "usd": p["cost_nanos"] / 1e9} for p in points], start, end, size, "usd"),
    }


async def overview(visit: Visit) -> Response:
    state, org = _state(visit), visit.org
    assert org is not None
    now = now_ms()
    data: dict[str, Any] = {"org": {"id": org["id"], "name": org["name"], "prepaid": org["prepaid"]}}
    if visit.can("billing"):
        data["balance_nanos"] = org["balance_nanos"]
        data["held_nanos"] = state.gateway.billing.funds.org_held(org["id"])
    if visit.can("usage"):
        engine = _engine(visit)
        hour_start = now - now % MINUTE - 59 * MINUTE
        month_from = day_start(now) - 29 * DAY
        today, month, last_hour, days = await asyncio.gather(
            rollups.totals(engine, org_id=org["id"], start=day_start(now), end=now + HOUR),
            rollups.totals(engine, org_id=org["id"], start=month_start(now), end=now + HOUR),
            rollups.series(engine, org_id=org["id"], span=MINUTE, bucket=MINUTE, start=hour_start, end=now + MINUTE,
                           group="model"),
            rollups.series(engine, org_id=org["id"], span=HOUR, bucket=DAY, start=month_from, end=now + HOUR,
                           group="model"),
        )
        data.update(today=today, month=month,
                    last_hour=charts(last_hour, hour_start, now - now % MINUTE + MINUTE, MINUTE),
                    last_30_days=charts(days, month_from, day_start(now) + DAY, DAY))
    return render(visit, "overview.html", data)


def _range(request: Request, default_days: int = 7) -> tuple[int, int]:
    q = request.query_params
    now = now_ms()
    try:
        start = _date_ms(q["start"]) if q.get("start") else day_start(now) - (default_days - 1) * DAY
        end = _date_ms(q["end"]) + DAY if q.get("end") else day_start(now) + DAY
    except ValueError:
        raise invalid_request("Dates are YYYY-MM-DD.", param="start") from None
    if end <= start:
        raise invalid_request("The range ends before it starts.", param="end")
    return start, end


def _date_ms(text: str) -> int:
    return int(datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=timezone.utc).timestamp() * 1000)


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d")


async def usage(visit: Visit) -> Response:
    q = visit.request.query_params
    group = q.get("group", "model")
    bucket = q.get("bucket", "day")
    if group not in ("model", "key", "deployment") or bucket not in BUCKETS:
        return render(visit, "error.html", {"error": {"message": "group is model, key or deployment; bucket is "
                                                                  "minute, hour or day."}}, status=400)
    start, end = _range(visit.request, 1 if bucket == "minute" else 7)
    span, size = BUCKETS[bucket]
    if (end - start) // size > MAX_POINTS:
        return render(visit, "error.html", {"error": {"message": f"That is more than {MAX_POINTS} {bucket}s: pick a "
                                                                  "shorter range or a coarser bucket."}}, status=400)
    assert visit.org is not None
    points = await rollups.series(_engine(visit), org_id=visit.org["id"], span=span, bucket=size, start=start, end=end,
                                  group=group)
    if group == "key":  # people know their keys by name
        names = {k["id"]: k["name"] for k in await _state(visit).admin.list_keys(visit.org["id"])}
        for p in points:
            p["group"] = names.get(p["group"], p["group"])
    rows = [{"bucket_start": p["bucket"] // 1000, group: p["group"],
             **{m: p[m] for m in rollups.MEASURES if m != "latency_ms"}, "cost_usd": usd(p["cost_nanos"])}
            for p in points]
    if q.get("format") == "csv":
        return _csv(rows, f"usage-{visit.org['name']}-{_day(start)}-{_day(end - DAY)}.csv")
    totals: dict[str, dict[str, int]] = {}
    for p in points:
        total = totals.setdefault(str(p["group"]), dict.fromkeys(rollups.MEASURES, 0))
        for m in rollups.MEASURES:
            total[m] += p[m]
    # The table sums the range per group (the chart and the CSV keep every bucket).
    summary = sorted(({group: name, **t} for name, t in totals.items()), key=lambda t: (-t["cost_nanos"], t[group]))
    data = {"group": group, "bucket": bucket, "start": _day(start), "end": _day(end - DAY), "data": rows,
            "totals": summary, "chart": charts(points, start, end, size)}
    return render(visit, "usage.html", data)


def _csv(rows: list[dict[str, Any]], filename: str) -> Response:
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            # A cell starting with = + - @ would be a formula in a spreadsheet: quote it as text.
            writer.writerow({k: f"'{v}" if isinstance(v, str) and v[:1] in "=+-@" else v for k, v in row.items()})
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in filename)
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={**HEADERS, "content-disposition": f'attachment; filename="{safe}"'})


async def _keys(visit: Visit) -> list[dict[str, Any]]:
    assert visit.org is not None
    now = now_ms() // 1000
    # Expired playground keys are of no more use to anyone: not listed (they stay in the API).
    keys = [k for k in await _state(visit).admin.list_keys(visit.org["id"])
            if not (k["name"].startswith(PLAYGROUND_KEY_PREFIX) and k["expires_at"] and k["expires_at"] <= now)]
    if not visit.can("all_keys"):
        keys = [k for k in keys if k.get("owner_user_id") == visit.user["id"]]
    return keys


async def requests_page(visit: Visit) -> Response:
    q = visit.request.query_params
    assert visit.org is not None
    keys = await _state(visit).admin.list_keys(visit.org["id"])
    key_id = q.get("key") or None
    status = q.get("status") or None
    if status is not None and status not in request_log.STATUSES:
        status = None
    try:
        start = _date_ms(q["start"]) if q.get("start") else None
        end = _date_ms(q["end"]) + DAY if q.get("end") else None
    except ValueError:
        start = end = None
    assert visit.org is not None
    where = LogFilter(key_id=key_id, model=q.get("model") or None, status=status, start=start, end=end)
    found = await request_log.page(_engine(visit), visit.org["id"], where, q.get("after"), 50)
    models = sorted({name for name, _ in _state(visit).table.names()})
    return render(visit, "requests.html", {**found, "filters": {"key": key_id, "model": where.model, "status": status,
                                                               "start": q.get("start", ""), "end": q.get("end", "")}},
                  keys=keys, models=models, statuses=request_log.STATUSES)


async def request_detail(visit: Visit) -> Response:
    assert visit.org is not None
    found = await request_log.one(_engine(visit), visit.org["id"], visit.request.path_params["request_id"])
    if found is None:
        return not_found_page(visit.request, visit)
    return render(visit, "request.html", found)


def _form_int(form: Any, name: str) -> int | None:
    text = str(form.get(name) or "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        raise invalid_request(f"'{name}' must be a whole number.", param=name) from None
    if value < 0:
        raise invalid_request(f"'{name}' cannot be negative.", param=name)
    return value


def _key_body(form: Any) -> dict[str, Any]:
    body: dict[str, Any] = {}
    budget = str(form.get("budget_usd") or "").strip()
    body["budget_usd"] = budget or None
    body["budget_period"] = str(form.get("budget_period") or "") or None
    body["rpm_limit"] = _form_int(form, "rpm_limit")
    body["tpm_limit"] = _form_int(form, "tpm_limit")
    return body


async def keys_page(visit: Visit) -> Response:
    assert visit.org is not None
    state = _state(visit)
    if visit.request.method == "POST":
        form = visit.form
        assert form is not None
        name = str(form.get("name") or "").strip()[:200] or "unnamed"
        allowed = [m.strip() for m in str(form.get("allowed_models") or "").split(",") if m.strip()] or None
        body = {"org_id": visit.org["id"], "name": name, "allowed_models": allowed, **_key_body(form)}
        days = _form_int(form, "expires_days")
        if days:
            body["expires_at"] = now_ms() // 1000 + days * 86400
        created = await state.admin.create_key(body, owner_user_id=visit.user["id"])
        await state.directory.refresh()
        return render(visit, "key_created.html", created)
    keys = await _keys(visit)
    models = sorted({name for name, _ in state.table.names()})
    return render(visit, "keys.html", {"object": "list", "data": keys}, models=models)


async def _own_key(visit: Visit) -> dict[str, Any] | None:
    key_id = visit.request.path_params["key_id"]
    return next((k for k in await _keys(visit) if k["id"] == key_id), None)


async def key_revoke(visit: Visit) -> Response:
    key = await _own_key(visit)
    if key is None:
        return not_found_page(visit.request, visit)
    state = _state(visit)
    await state.admin.revoke_key(key["id"])
    await state.directory.refresh()
    return RedirectResponse(visit.url("/keys"), status_code=303)


async def key_edit(visit: Visit) -> Response:
    key = await _own_key(visit)
    if key is None:
        return not_found_page(visit.request, visit)
    state = _state(visit)
    assert visit.form is not None
    await state.admin.update_key(key["id"], _key_body(visit.form))
    await state.directory.refresh()
    return RedirectResponse(visit.url("/keys"), status_code=303)


async def billing(visit: Visit) -> Response:
    assert visit.org is not None
    state = _state(visit)
    after = visit.request.query_params.get("after")
    try:
        cursor = int(after) if after else None
    except ValueError:
        cursor = None
    ledger = await state.admin.ledger(visit.org["id"], 50, before=cursor, newest_first=True)
    ledger["next_cursor"] = ledger["data"][-1]["id"] if ledger["has_more"] else None
    data = {"balance_nanos": visit.org["balance_nanos"], "held_nanos": state.gateway.billing.funds.org_held(visit.org["id"]),
            "prepaid": visit.org["prepaid"], "ledger": ledger, "months": _months()}
    return render(visit, "billing.html", data)


def _months(count: int = 12) -> list[str]:
    now = datetime.now(timezone.utc)
    out = []
    year, month = now.year, now.month
    for _ in range(count):
        out.append(f"{year:04d}-{month:02d}")
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return out


async def statement(visit: Visit) -> Response:
    """A printable monthly statement: money in and out, and what the month's usage cost by model
    (`?format=csv` or `json` for the same figures as data)."""
    assert visit.org is not None
    month = visit.request.query_params.get("month") or _months(1)[0]
    try:
        data = await monthly_statement(_engine(visit), visit.org, month)
    except GatewayError as err:
        return render(visit, "error.html", {"error": {"message": err.message}}, status=400)
    fmt = visit.request.query_params.get("format")
    if fmt == "csv":
        return Response(statement_csv(data), media_type="text/csv", headers={
            "content-disposition": f'attachment; filename="statement-{visit.org["id"]}-{month}.csv"'})
    if fmt == "json":
        return Response(orjson.dumps(data), media_type="application/json", headers=HEADERS)
    return render(visit, "statement.html", data)


async def models_page(visit: Visit) -> Response:
    assert visit.org is not None
    billing, own = _state(visit).gateway.billing, Decimal(visit.org["price_multiplier"])
    rows = price_rows(_state(visit).table, lambda model: billing.factor(own, visit.org.get("price_group"), model))
    return render(visit, "models.html", {"price_multiplier": visit.org["price_multiplier"], "data": rows})


async def playground(visit: Visit) -> Response:
    models = sorted({name for name, _ in _state(visit).table.names()})
    return render(visit, "playground.html", {"models": models})


async def playground_key(visit: Visit) -> Response:
    """A short-lived key of the user's own, so a playground reply is billed and limited like
    any request; the page keeps it in memory and asks for a new one when it expires."""
    assert visit.org is not None
    state = _state(visit)
    created = await state.admin.create_key({
        "org_id": visit.org["id"], "name": PLAYGROUND_KEY_PREFIX + visit.user["email"],
        "expires_at": now_ms() // 1000 + PLAYGROUND_KEY_MINUTES * 60}, owner_user_id=visit.user["id"])
    await state.directory.refresh()
    return Response(orjson.dumps({"key": created["key"], "expires_at": created["expires_at"]}),
                    media_type="application/json", headers=HEADERS)


async def events(visit: Visit) -> Response:
    """Server-sent events: each of this organisation's requests as it is billed, from any worker."""
    assert visit.org is not None
    state, org_id = _state(visit), visit.org["id"]
    return event_stream(state.events, lambda event: event["org_id"] == org_id)


def routes() -> list[Route]:
    o = "/console/o/{org}"
    return [
        Route(o, page(overview), methods=["GET"]),
        Route(o + "/usage", page(usage, need="usage"), methods=["GET"]),
        Route(o + "/requests", page(requests_page, need="usage"), methods=["GET"]),
        Route(o + "/requests/{request_id}", page(request_detail, need="usage"), methods=["GET"]),
        Route(o + "/keys", page(keys_page, need="keys"), methods=["GET", "POST"]),
        Route(o + "/keys/{key_id}/revoke", page(key_revoke, need="keys"), methods=["POST"]),
        Route(o + "/keys/{key_id}", page(key_edit, need="keys"), methods=["POST"]),
        Route(o + "/billing", page(billing, need="billing"), methods=["GET"]),
        Route(o + "/billing/statement", page(statement, need="billing"), methods=["GET"]),
        Route(o + "/models", page(models_page, need="models"), methods=["GET"]),
        Route(o + "/playground", page(playground, need="playground"), methods=["GET"]),
        Route(o + "/playground/key", page(playground_key, need="playground"), methods=["POST"]),
        Route(o + "/events", page(events, need="usage"), methods=["GET"]),
    ]

