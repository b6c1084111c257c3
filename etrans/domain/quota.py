"""Sending quota arithmetic: windows, limits, remaining.  Counting itself is atomic in Redis
(:mod:`etrans.adapters.redis_quota`); this module only says which windows and what they allow.

Windows are UTC calendar hours, days and months: an hourly limit of 50 admits 50 emails between
10:00:00 and 10:59:59 UTC.  A limit of ``None`` means unlimited.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True)
class QuotaLimits:
    daily: int | None = None
    hourly: int | None = None
    monthly: int | None = None


@dataclass(frozen=True)
class QuotaWindows:
    """Window identifiers and how long their counters must live (seconds, with a margin)."""

    hour: str
    day: str
    month: str
    hour_ttl: int
    day_ttl: int
    month_ttl: int


@dataclass(frozen=True)
class QuotaUsage:
    daily: int
    hourly: int
    monthly: int


def windows(now: datetime) -> QuotaWindows:
    now = now.astimezone(UTC)
    return QuotaWindows(
        hour=now.strftime("%Y%m%d%H"), day=now.strftime("%Y%m%d"), month=now.strftime("%Y%m"),
        hour_ttl=2 * 3600, day_ttl=2 * 86400, month_ttl=33 * 86400,
    )


def remaining(limit: int | None, used: int) -> int | None:
    if limit is None:
        return None
    return max(0, limit - used)


def hourly_from_daily(daily: int) -> int:
    """The spec's derivation when only a daily figure is known (100000/day -> 4166/hour); at
    least 1 for a positive daily limit, so a small daily limit does not forbid sending."""
    return max(1, daily // 24) if daily > 0 else 0


def monthly_from_daily(daily: int) -> int:
    return daily * 31


_PERIOD = {"hourly": "hour", "daily": "day", "monthly": "month"}


def exceeded_message(window: str, limit: int) -> str:
    """``("hourly", 50)`` -> "Hourly sending quota exceeded: the limit is 50 emails per hour"."""
    return (f"{window.capitalize()} sending quota exceeded: the limit is {limit} emails per "
            f"{_PERIOD.get(window, window)}")
