"""Budget periods: calendar boundaries in a time zone (across a DST change), and an in-process
hold book that starts each period's budget afresh while last period's requests are in flight."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from switchyard.accounts.funds import Funds
from switchyard.accounts.periods import Periods, bounds, zone
from switchyard.accounts.records import KeyRecord, OrgRecord, Principal
from switchyard.wire.errors import GatewayError


def ms(*args: int, tz: str = "UTC") -> int:
    return int(datetime(*args, tzinfo=zone(tz)).timestamp() * 1000)


@pytest.mark.parametrize(("period", "at", "start", "end"), [
    ("daily", (2026, 3, 29, 12), (2026, 3, 29), (2026, 3, 30)),  # the day Berlin loses an hour
    ("weekly", (2026, 12, 3, 8), (2026, 11, 30), (2026, 12, 7)),  # from Monday
    ("monthly", (2026, 12, 31, 23), (2026, 12, 1), (2027, 1, 1)),
    ("monthly", (2027, 2, 14, 1), (2027, 2, 1), (2027, 3, 1)),
])
def test_periods_follow_the_local_calendar(period: str, at: tuple[int, ...], start: tuple[int, ...],
                                           end: tuple[int, ...]) -> None:
    tz = "Europe/Berlin"
    assert bounds(period, ms(*at, tz=tz), zone(tz)) == (ms(*start, tz=tz), ms(*end, tz=tz))


def test_the_current_period_moves_with_the_clock() -> None:
    now = [ms(2026, 11, 30, 14, 59, 59, tz="UTC")]  # 23:59:59 in Tokyo
    periods = Periods("Asia/Tokyo", now=lambda: now[0] / 1000)
    november = periods.start("monthly")
    now[0] += 2000
    assert periods.start("monthly") == ms(2026, 12, 1, tz="Asia/Tokyo") > november
    assert periods.start(None) is None
    with pytest.raises(ValueError):
        Periods("Mars/Olympus")


def principal(spent: int, period_start: int | None) -> Principal:
    org = OrgRecord(id="org", name="o", tier="t", price_multiplier=Decimal(1), prepaid=False, balance_nanos=0,
                    overdraft_nanos=0, rpm_limit=None, tpm_limit=None)
    key = KeyRecord(id="key", org_id="org", name="k", allowed_models=None, budget_nanos=1000, spent_nanos=spent,
                    overdraft_nanos=0, rpm_limit=None, tpm_limit=None, expires_at=None, revoked_at=None,
                    budget_period="monthly", period_start=period_start)
    return Principal(key, org)


def test_a_new_period_starts_the_budget_afresh() -> None:
    async def go() -> None:
        funds = Funds()
        old, new = 100, 200
        who = principal(spent=900, period_start=old)
        in_flight = await funds.reserve(who, 100, key_period=old)  # the last of the old period
        with pytest.raises(GatewayError) as refused:
            await funds.reserve(who, 1, key_period=old)
        assert refused.value.code == "insufficient_quota" and "this month" in refused.value.message
        # The boundary passes: the old period's spend and holds no longer count.
        fresh = await funds.reserve(who, 1000, key_period=new)
        await funds.release(in_flight, 100)
        await funds.release(fresh, 0)
        assert funds.key_held("key") == 0

    asyncio.run(go())
