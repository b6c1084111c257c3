"""Request rate counters in Redis: one fixed window per bucket, counted by one Lua script.

A bucket (``<prefix><bucket>``, e.g. ``etrans:ratelimit:key:42``) is an integer whose lifetime is
the window: the first request of a window creates it with ``PEXPIRE window``, every request adds
one, and the script answers the count and the milliseconds left in the window.  Redis runs a
script at once, so a burst of concurrent requests is counted exactly (a burst of 60 against a
limit of 50 admits 50).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from etrans.adapters.redis.client import Script

if TYPE_CHECKING:
    from etrans.adapters.redis.client import TrioRedis

PREFIX = "etrans:ratelimit:"

# KEYS: the counter.  ARGV: the window in milliseconds.  Returns {count, ms left in the window}.
_HIT = Script("""
local n = redis.call('INCR', KEYS[1])
local left = redis.call('PTTL', KEYS[1])
if n == 1 or left < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  left = tonumber(ARGV[1])
end
return {n, left}
""")


class RedisRateCounter:
    """:class:`etrans.app.ports.RateCounter` on the process's Redis client (every API request
    asks: one pipelined script call, no thread hop)."""

    def __init__(self, redis: TrioRedis, *, prefix: str = PREFIX) -> None:
        self._redis = redis
        self._prefix = prefix

    async def hit(self, bucket: str, window_seconds: int) -> tuple[int, float]:
        count, left_ms = await _HIT.run(self._redis, [self._prefix + bucket],
                                        [window_seconds * 1000])
        return int(count), max(0.0, int(left_ms) / 1000)
