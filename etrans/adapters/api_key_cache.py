"""Redis cache of API key lookups, keyed by the key's SHA-256.

``etrans:apikey:<sha256>`` holds JSON ``{"id", "user_id", "permission", "expires_at"}`` for
``ttl_seconds`` (30), ``"missing"`` for an unknown hash (``missing_ttl_seconds``, 10) or
``"revoked"`` (a day: longer than any positive entry can live).  Positive and negative entries are
written with ``SET NX``, so a lookup racing with a deletion can never overwrite the revocation:
a deleted key fails on the very next request.  Expiry is checked by the caller on every request.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING

from etrans.app.records import MISSING, REVOKED, ApiKeyRecord
from etrans.domain.api_keys import Permission

if TYPE_CHECKING:
    from etrans.adapters.redis_store import RedisClient
    from etrans.adapters.redis_trio import TrioRedis

PREFIX = "etrans:apikey:"


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
    def __init__(self, redis: RedisClient, *, ttl_seconds: int = 30, missing_ttl_seconds: int = 10,
                 revoked_ttl_seconds: int = 86_400, prefix: str = PREFIX) -> None:
        self._redis = redis
        self._fast: TrioRedis | None = None
        self._ttl = ttl_seconds
        self._missing_ttl = missing_ttl_seconds
        self._revoked_ttl = revoked_ttl_seconds
        self._prefix = prefix

    def use_trio_client(self, fast: TrioRedis | None) -> None:
        """Lookups (one per request with a key) go through the Trio-native client: no thread."""
        self._fast = fast

    async def get(self, key_hash: str) -> ApiKeyRecord | str | None:
        if self._fast is not None:
            raw = await self._fast.execute("GET", self._prefix + key_hash)
        else:
            raw = await self._redis.run(self._redis.client.get, self._prefix + key_hash)
        if raw is None:
            return None
        return decode_entry(raw.decode() if isinstance(raw, bytes) else str(raw))

    async def put(self, key_hash: str, record: ApiKeyRecord | None) -> None:
        if record is None:
            value, ttl = MISSING, self._missing_ttl
        else:
            value, ttl = encode_entry(record), self._ttl
        await self._redis.run(self._redis.client.set, self._prefix + key_hash, value, ex=ttl,
                              nx=True)

    async def revoke(self, key_hash: str) -> None:
        await self._redis.run(self._redis.client.set, self._prefix + key_hash, REVOKED,
                              ex=self._revoked_ttl)
