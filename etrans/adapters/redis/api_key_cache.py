"""Redis cache of API key lookups, keyed by the key's SHA-256.

``etrans:apikey:<sha256>`` holds JSON ``{"id", "user_id", "permission", "expires_at"}`` for
``ttl_seconds`` (30), ``"missing"`` for an unknown hash (``missing_ttl_seconds``, 10) or
``"revoked"`` (a day: longer than any positive entry can live).  Positive and negative entries are
written with ``SET NX``, so a lookup racing with a deletion can never overwrite the revocation:
a deleted key fails on the very next request.  Expiry is checked by the caller on every request.

Redis is a cache here, never the authority: when a command fails (down, timeout, an error reply
such as NOREPLICAS), ``get`` answers "not cached" so the caller asks the database, ``put`` is
skipped, and Redis is left alone for ``retry_after_seconds`` (1 s) so that requests do not each
wait for it.  A revocation that could not be written is kept in memory (``pending_revocations``):
``get`` answers ``revoked`` for it in this process, and it is written before anything else once
Redis takes commands again.  The row is deleted in the database first, so the key stays refused
by every process whatever Redis holds once the positive entries (30 s) have expired.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING

import trio

from etrans.adapters._net.redis_trio import RedisReplyError, RedisUnavailable
from etrans.app.records import MISSING, REVOKED, ApiKeyRecord
from etrans.domain.api_keys import Permission
from etrans.observability import get_logger

if TYPE_CHECKING:
    from etrans.adapters.redis.client import TrioRedis

PREFIX = "etrans:apikey:"

log = get_logger(__name__)


def encode_entry(record: ApiKeyRecord) -> str:
    """A positive cache entry (also the ``etrans dev`` store's format)."""
    return json.dumps({
        "id": record.id, "user_id": record.user_id, "permission": record.permission.name,
        "expires_at": record.expires_at.isoformat() if record.expires_at else None,
    })


def decode_entry(text: str) -> ApiKeyRecord | str | None:
    """``missing``/``revoked`` as they are, a record, or None for an unreadable entry (then the
    key is looked up again)."""
    if text in (MISSING, REVOKED):
        return text
    try:
        data = json.loads(text)
        expires = data["expires_at"]
        return ApiKeyRecord(
            id=int(data["id"]), user_id=int(data["user_id"]),
            permission=Permission[data["permission"]],
            expires_at=datetime.fromisoformat(expires) if expires else None,
        )
    except (ValueError, KeyError, TypeError):
        return None


class RedisApiKeyCache:
    def __init__(self, redis: TrioRedis, *, ttl_seconds: int = 30, missing_ttl_seconds: int = 10,
                 revoked_ttl_seconds: int = 86_400, prefix: str = PREFIX,
                 retry_after_seconds: float = 1.0) -> None:
        self._redis = redis
        self._ttl = ttl_seconds
        self._missing_ttl = missing_ttl_seconds
        self._revoked_ttl = revoked_ttl_seconds
        self._prefix = prefix
        self._retry_after = retry_after_seconds
        # What a failing Redis raises: no answer, or an error reply (such as NOREPLICAS).
        self._failures = (RedisUnavailable, RedisReplyError, OSError)
        self._down_until: float | None = None  # trio.current_time() before which Redis is skipped
        # Revocations not yet written to Redis (a dict: insertion-ordered, no duplicates).
        self.pending_revocations: dict[str, None] = {}

    async def get(self, key_hash: str) -> ApiKeyRecord | str | None:
        if key_hash in self.pending_revocations:
            await self._available()  # a chance to write it
            return REVOKED
        if not await self._available():
            return None
        try:
            raw = await self._redis.execute("GET", self._prefix + key_hash)
        except self._failures as exc:
            self._failed("get", exc)
            return None
        self._recovered()
        if raw is None:
            return None
        return decode_entry(raw.decode() if isinstance(raw, bytes) else str(raw))

    async def put(self, key_hash: str, record: ApiKeyRecord | None) -> None:
        if record is None:
            value, ttl = MISSING, self._missing_ttl
        else:
            value, ttl = encode_entry(record), self._ttl
        if not await self._available():
            return
        try:
            await self._redis.execute("SET", self._prefix + key_hash, value, "EX", ttl, "NX")
        except self._failures as exc:
            self._failed("put", exc)
            return
        self._recovered()

    async def revoke(self, key_hash: str) -> None:
        """Never raises for Redis: a revocation that cannot be written now is kept and retried."""
        self.pending_revocations[key_hash] = None
        if self._down_until is None or trio.current_time() >= self._down_until:
            await self._write_pending()

    async def _available(self) -> bool:
        """False while Redis is being left alone; pending revocations go first when it is back."""
        if self._down_until is not None and trio.current_time() < self._down_until:
            return False
        if self.pending_revocations:
            return await self._write_pending()
        return True

    async def _write_pending(self) -> bool:
        for key_hash in list(self.pending_revocations):
            try:
                await self._redis.execute("SET", self._prefix + key_hash, REVOKED,
                                          "EX", self._revoked_ttl)
            except self._failures as exc:
                self._failed("revoke", exc)
                return False
            self.pending_revocations.pop(key_hash, None)
        self._recovered()
        return True

    def _recovered(self) -> None:
        if self._down_until is not None:
            self._down_until = None
            log.info("api key cache: redis answers again")

    def _failed(self, operation: str, exc: BaseException) -> None:
        if self._down_until is None:  # one warning per outage, not one per request
            log.warning("api key cache: redis failed, keys are looked up in the database",
                        operation=operation, error=type(exc).__name__,
                        revocations_pending=len(self.pending_revocations))
        self._down_until = trio.current_time() + self._retry_after
