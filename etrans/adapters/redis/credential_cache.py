"""Writes the SMTP credential cache the sendmail worker reads: Redis hash ``auth``, field =
user_id (decimal), value = the encrypted form of :mod:`etrans.adapters.crypto.credentials`.

A value this process wrote less than ``memo_seconds`` ago is not written again (the hot path of
POST /emails); a changed value is always written.  :meth:`RedisCredentialCache.forget` removes a
user's field only while it still holds one of the given values (a Lua compare-and-delete): a
deleted domain's sender stops being cached, a newer credential written meanwhile is kept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from etrans.adapters.crypto.credentials import AUTH_HASH
from etrans.adapters.redis.client import Script, unavailable_as_503

if TYPE_CHECKING:
    from collections.abc import Collection

    from etrans.adapters.redis.client import TrioRedis

# KEYS[1] = hash, ARGV[1] = field, ARGV[2..] = the values that may be removed.
_DELETE_IF_ONE_OF = Script("""
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then return 0 end
for i = 2, #ARGV do
  if current == ARGV[i] then return redis.call('HDEL', KEYS[1], ARGV[1]) end
end
return 0
""")


class RedisCredentialCache:
    def __init__(self, redis: TrioRedis, *, hash_name: str = AUTH_HASH,
                 memo_seconds: float = 30.0) -> None:
        self._redis = redis
        self._hash = hash_name
        self._memo_seconds = memo_seconds
        self._memo: dict[int, tuple[float, str]] = {}

    async def store(self, user_id: int, value: str) -> None:
        now = trio.current_time()
        memo = self._memo.get(user_id)
        if memo is not None and memo[0] > now and memo[1] == value:
            return
        with unavailable_as_503("Credential cache"):
            await self._redis.execute("HSET", self._hash, str(user_id), value)
        if len(self._memo) > 100_000:
            self._memo.clear()
        self._memo[user_id] = (now + self._memo_seconds, value)

    async def forget(self, user_id: int, values: Collection[str]) -> bool:
        """Remove the user's field if it holds one of ``values``; True when removed."""
        self._memo.pop(user_id, None)
        if not values:
            return False
        removed = await _DELETE_IF_ONE_OF.run(self._redis, [self._hash], [str(user_id), *values])
        return bool(removed)
