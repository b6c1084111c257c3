"""Request rate counters in Redis: one fixed window per bucket, counted by one Lua script.

A bucket (``<prefix><bucket>``, e.g. ``etrans:ratelimit:key:42``) is an integer whose lifetime is
the window: the first request of a window creates it with ``PEXPIRE window``, every request adds
one, and the script answers the count and the milliseconds left in the window.  Redis runs a
script at once, so a burst of concurrent requests is counted exactly (a burst of 60 against a
limit of 50 admits 50).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from etrans.adapters._net.redis_trio import TrioRedis
    from etrans.adapters.redis.client import RedisClient

PREFIX = "etrans:ratelimit:"

# KEYS: the counter.  ARGV: the window in milliseconds.  Returns {count, ms left in the window}.
_HIT = """
local n = redis.call('INCR', KEYS[1])
local left = redis.call('PTTL', KEYS[1])
if n == 1 or left < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  left = tonumber(ARGV[1])
end
return {n, left}
"""


class RedisRateCounter:
    """:class:`etrans.app.ports.RateCounter` on Redis: redis-py in a worker thread, or the
    Trio-native client after ``use_trio_client`` (every API request asks: no thread hop)."""

    def __init__(self, redis: RedisClient, *, prefix: str = PREFIX) -> None:
        self._redis = redis
        self._prefix = prefix
        self._fast: TrioRedis | None = None
        self._script = redis.client.register_script(_HIT)

    def use_trio_client(self, fast: TrioRedis | None) -> None:
        self._fast = fast

    async def hit(self, bucket: str, window_seconds: int) -> tuple[int, float]:
        key = self._prefix + bucket
        window_ms = window_seconds * 1000
        if self._fast is not None:
            reply = await self._hit_fast(self._fast, key, window_ms)
        else:
            reply = await self._redis.run(self._script, keys=[key], args=[window_ms])
        count, left_ms = reply
        return int(count), max(0.0, int(left_ms) / 1000)

    async def _hit_fast(self, fast: TrioRedis, key: str, window_ms: int) -> list[int]:
        from etrans.adapters._net.redis_trio import RedisReplyError

        try:
            return await fast.execute("EVALSHA", self._script.sha, 1, key, window_ms)  # type: ignore[no-any-return]
        except RedisReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await fast.execute("EVAL", _HIT, 1, key, window_ms)  # type: ignore[no-any-return]
