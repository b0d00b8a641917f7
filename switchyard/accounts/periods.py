"""Budget periods: `daily`, `weekly` (from Monday) and `monthly`, aligned to the calendar in the
configured time zone. A budget with a period counts only what was spent since the start of the
current period; every worker works the boundary out from its own clock, so spend resets at the
boundary everywhere at once, with no job to run and no database read.

A request is billed to the period in which it was admitted (its hold names that period's start):
one still in flight across the boundary does not eat into the new period.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

PERIODS = ("daily", "weekly", "monthly")
# For tests of the boundary itself: seconds added to this process's clock (unset in production).
CLOCK_OFFSET_ENV = "SWITCHYARD_CLOCK_OFFSET_SECONDS"


def clock() -> Callable[[], float]:
    offset = float(os.environ.get(CLOCK_OFFSET_ENV) or 0)
    return (lambda: time.time() + offset) if offset else time.time


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as UTC or Europe/Berlin)") from None


class Periods:
    """The start of the current period of each kind, cached until the next boundary."""

    __slots__ = ("tz", "now", "_current")

    def __init__(self, tz: str = "UTC", now: Callable[[], float] | None = None) -> None:
        self.tz = zone(tz)
        self.now = now or clock()
        self._current: dict[str, tuple[int, int]] = {}  # period -> (start ms, next start ms)

    def start(self, period: str | None) -> int | None:
        """Epoch ms at which the current `period` began (None: no period)."""
        if period is None:
            return None
        now_ms = int(self.now() * 1000)
        found = self._current.get(period)
        if found is None or not found[0] <= now_ms < found[1]:
            found = self._current[period] = bounds(period, now_ms, self.tz)
        return found[0]

    def end(self, period: str) -> int:
        self.start(period)
        return self._current[period][1]


def bounds(period: str, now_ms: int, tz: ZoneInfo) -> tuple[int, int]:
    """[start, next start) in epoch ms of the `period` holding `now_ms`, in `tz`'s calendar."""
    local = datetime.fromtimestamp(now_ms / 1000, tz)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "daily":
        first, after = midnight, midnight + timedelta(days=1)
    elif period == "weekly":
        first = midnight - timedelta(days=local.weekday())
        after = first + timedelta(days=7)
    elif period == "monthly":
        first = midnight.replace(day=1)
        after = (first + timedelta(days=32)).replace(day=1)
    else:
        raise ValueError(f"unknown budget period {period!r}")
    # Wall-clock arithmetic, then back to an instant: a DST change moves the boundary with the zone.
    start = first.replace(tzinfo=None).replace(tzinfo=tz)
    end = after.replace(tzinfo=None).replace(tzinfo=tz)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)
