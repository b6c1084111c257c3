"""Writes the SMTP credential cache the sendmail worker reads: Redis hash ``auth``, field =
user_id (decimal), value = the encrypted form of :mod:`etrans.adapters.credentials`.

A value this process wrote less than ``memo_seconds`` ago is not written again (the hot path of
POST /emails); a changed value is always written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from etrans.adapters.credentials import AUTH_HASH

if TYPE_CHECKING:
    from etrans.adapters.redis_store import RedisClient


class RedisCredentialCache:
    def __init__(self, redis: RedisClient, *, hash_name: str = AUTH_HASH,
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
        await self._redis.run(self._redis.client.hset, self._hash, str(user_id), value)
        if len(self._memo) > 100_000:
            self._memo.clear()
        self._memo[user_id] = (now + self._memo_seconds, value)
