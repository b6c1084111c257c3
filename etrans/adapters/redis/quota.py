"""Sending quota counters in Redis, counted atomically by one Lua script.

Keys (``docs/api.md``, "Quotas"): ``etrans:quota:<domain_id>:h:<YYYYMMDDHH>``,
``...:d:<YYYYMMDD>``, ``...:m:<YYYYMM>`` (UTC windows), each an integer with a TTL a little longer
than its window.  :meth:`RedisQuota.reserve` checks every limit and increments every counter in a
single script run: Redis runs scripts one at a time, so concurrent sends can never overshoot
(200 concurrent sends against an hourly limit of 50 admit exactly 50).  Redis not answering
raises :class:`~etrans.adapters.redis.client.RedisDown` (503 with Retry-After).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from etrans.adapters.redis.client import Script, unavailable_as_503
from etrans.domain.quota import QuotaLimits, QuotaUsage, windows

if TYPE_CHECKING:
    from datetime import datetime

    from etrans.adapters.redis.client import TrioRedis

PREFIX = "etrans:quota:"
_WHAT = "Quota counter"

# KEYS: daily, hourly, monthly counters.  ARGV: count, the three limits (-1 = none), three TTLs.
_RESERVE = Script("""
local n = tonumber(ARGV[1])
local names = {'daily', 'hourly', 'monthly'}
for i = 1, 3 do
  local limit = tonumber(ARGV[1 + i])
  if limit >= 0 then
    local used = tonumber(redis.call('GET', KEYS[i]) or '0')
    if used + n > limit then return names[i] end
  end
end
for i = 1, 3 do
  redis.call('INCRBY', KEYS[i], n)
  redis.call('EXPIRE', KEYS[i], tonumber(ARGV[4 + i]))
end
return ''
""")

# KEYS: the three counters; ARGV: count.  Never below zero.
_RELEASE = Script("""
local n = tonumber(ARGV[1])
for i = 1, 3 do
  local used = tonumber(redis.call('GET', KEYS[i]) or '0')
  if used > 0 then redis.call('DECRBY', KEYS[i], math.min(n, used)) end
end
return 1
""")


def quota_keys(prefix: str, domain_id: int, now: datetime) -> tuple[list[str], list[int]]:
    """The counters of a domain at ``now`` (day, hour, month) and their lifetimes in seconds:
    ``<prefix><domain_id>:{d:YYYYMMDD,h:YYYYMMDDHH,m:YYYYMM}`` (also the ``etrans dev`` store's)."""
    w = windows(now)
    base = f"{prefix}{domain_id}"
    return ([f"{base}:d:{w.day}", f"{base}:h:{w.hour}", f"{base}:m:{w.month}"],
            [w.day_ttl, w.hour_ttl, w.month_ttl])


def _limit(value: int | None) -> int:
    return -1 if value is None else value


class RedisQuota:
    """Implements :class:`etrans.app.ports.QuotaCounter` on the process's Redis client."""

    def __init__(self, redis: TrioRedis, *, prefix: str = PREFIX) -> None:
        self._redis = redis
        self._prefix = prefix
        self._keys_memo: dict[tuple[int, int], tuple[list[str], list[int]]] = {}

    def keys(self, domain_id: int, now: datetime) -> tuple[list[str], list[int]]:
        # The UTC hour decides all three windows: remembered per (domain, hour), since every
        # send asks (strftime x3 per request showed in profiles).
        memo_key = (domain_id, int(now.timestamp() // 3600))
        hit = self._keys_memo.get(memo_key)
        if hit is not None:
            return hit
        keys = quota_keys(self._prefix, domain_id, now)
        if len(self._keys_memo) > 10_000:
            self._keys_memo.clear()
        self._keys_memo[memo_key] = keys
        return keys

    async def reserve(self, domain_id: int, limits: QuotaLimits, count: int,
                      now: datetime) -> str | None:
        keys, ttls = self.keys(domain_id, now)
        args = [count, _limit(limits.daily), _limit(limits.hourly), _limit(limits.monthly), *ttls]
        with unavailable_as_503(_WHAT):
            refused = await _RESERVE.run(self._redis, keys, args)
        text = refused.decode() if isinstance(refused, bytes) else str(refused or "")
        return text or None

    async def release(self, domain_id: int, count: int, now: datetime) -> None:
        keys, _ = self.keys(domain_id, now)
        with unavailable_as_503(_WHAT):
            await _RELEASE.run(self._redis, keys, [count])

    async def usage(self, domain_id: int, now: datetime) -> QuotaUsage:
        keys, _ = self.keys(domain_id, now)
        with unavailable_as_503(_WHAT):
            daily, hourly, monthly = await self._redis.execute("MGET", *keys)
        return QuotaUsage(daily=int(daily or 0), hourly=int(hourly or 0),
                          monthly=int(monthly or 0))
