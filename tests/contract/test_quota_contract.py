"""QuotaCounter (:mod:`etrans.app.ports`): Redis (``RedisQuota``), the ``etrans dev`` store
(``LocalQuota``) and the fake of the unit tests count alike.

What POST /emails relies on: a reservation is all or nothing and exact under concurrency (never
overshoots a limit), the refusing window is named, releasing gives back without going below zero,
UTC hours/days/months are separate counters, and the counters live as long as their windows
(``docs/api.md``, "Quotas").
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import trio

from etrans.adapters.redis.quota import quota_keys
from etrans.domain.quota import QuotaLimits

NOW = datetime(2026, 3, 10, 14, 30, tzinfo=UTC)


async def _usage(quota: Any, domain_id: int, now: datetime = NOW) -> tuple[int, int, int]:
    usage = await quota.usage(domain_id, now)
    return usage.daily, usage.hourly, usage.monthly


async def test_a_reservation_counts_every_window(kv: Any) -> None:
    quota = kv.quota()
    assert await _usage(quota, 1) == (0, 0, 0)
    assert await quota.reserve(1, QuotaLimits(daily=10, hourly=5, monthly=100), 3, NOW) is None
    assert await quota.reserve(1, QuotaLimits(), 2, NOW) is None  # no limit: unlimited
    assert await _usage(quota, 1) == (5, 5, 5)
    assert await _usage(quota, 2) == (0, 0, 0)  # domains count apart


async def test_concurrent_reservations_never_overshoot(kv: Any) -> None:
    quota = kv.quota()
    limits = QuotaLimits(daily=1000, hourly=50, monthly=None)
    refusals: list[str | None] = []

    async def one() -> None:
        refusals.append(await quota.reserve(7, limits, 1, NOW))

    async with trio.open_nursery() as nursery:
        for _ in range(200):
            nursery.start_soon(one)
    assert Counter(refusals) == {"hourly": 150, None: 50}
    assert await _usage(quota, 7) == (50, 50, 50)


async def test_a_refused_reservation_counts_nothing_and_names_the_window(kv: Any) -> None:
    quota = kv.quota()
    limits = QuotaLimits(daily=10, hourly=8, monthly=9)
    assert await quota.reserve(3, limits, 7, NOW) is None
    assert await quota.reserve(3, limits, 4, NOW) == "daily"  # checked first: 11 > 10
    assert await quota.reserve(3, QuotaLimits(hourly=8, monthly=9), 2, NOW) == "hourly"
    assert await quota.reserve(3, QuotaLimits(monthly=9), 3, NOW) == "monthly"
    assert await _usage(quota, 3) == (7, 7, 7)  # nothing of the refused ones
    assert await quota.reserve(3, limits, 1, NOW) is None  # what is left is still there
    assert await quota.reserve(3, QuotaLimits(daily=0), 1, NOW) == "daily"  # 0: nothing at all
    assert await _usage(quota, 3) == (8, 8, 8)


async def test_release_gives_back_and_never_goes_below_zero(kv: Any) -> None:
    quota = kv.quota()
    assert await quota.reserve(4, QuotaLimits(hourly=5), 5, NOW) is None
    assert await quota.reserve(4, QuotaLimits(hourly=5), 1, NOW) == "hourly"
    await quota.release(4, 2, NOW)
    assert await _usage(quota, 4) == (3, 3, 3)
    assert await quota.reserve(4, QuotaLimits(hourly=5), 2, NOW) is None
    await quota.release(4, 60, NOW)
    assert await _usage(quota, 4) == (0, 0, 0)
    await quota.release(5, 1, NOW)  # nothing reserved: nothing happens
    assert await _usage(quota, 5) == (0, 0, 0)


async def test_windows_are_utc_hours_days_and_months(kv: Any) -> None:
    quota = kv.quota()
    limits = QuotaLimits(daily=3, hourly=2, monthly=4)
    assert await quota.reserve(6, limits, 2, NOW) is None
    assert await quota.reserve(6, limits, 1, NOW + timedelta(minutes=29)) == "hourly"
    next_hour = NOW + timedelta(minutes=30)  # 15:00 UTC
    assert await quota.reserve(6, limits, 1, next_hour) is None
    assert await quota.reserve(6, limits, 1, next_hour) == "daily"
    next_day = datetime(2026, 3, 11, 0, 0, tzinfo=UTC)
    assert await quota.reserve(6, limits, 1, next_day) is None
    assert await quota.reserve(6, limits, 1, next_day) == "monthly"
    assert await quota.reserve(6, limits, 2, datetime(2026, 4, 1, tzinfo=UTC)) is None
    assert await _usage(quota, 6, next_hour) == (3, 1, 4)
    # The same instant in another offset is the same window.
    assert await _usage(quota, 6, next_hour.astimezone(ZoneInfo("America/New_York"))) == (3, 1, 4)


async def test_counters_keep_the_documented_keys_and_lifetimes(kv_store: Any) -> None:
    quota = kv_store.quota()
    assert await quota.reserve(9, QuotaLimits(daily=10), 2, NOW) is None
    await quota.release(9, 1, NOW)
    keys, ttls = quota_keys(f"{kv_store.prefix}quota:", 9, NOW)
    assert [key.rsplit(":", 2)[1:] for key in keys] == [["d", "20260310"], ["h", "2026031014"],
                                                         ["m", "202603"]]
    for key, ttl in zip(keys, ttls, strict=True):
        assert await kv_store.get(key) == "1"
        left = await kv_store.ttl(key)
        assert left is not None
        assert ttl - 5 <= left <= ttl
    # A counter whose window is over is gone: a new one starts from zero.
    await kv_store.expire(keys[1])
    assert await _usage(quota, 9) == (1, 0, 1)
    assert await quota.reserve(9, QuotaLimits(hourly=1), 1, NOW) is None
