"""Idempotency-Key records in Redis (``etrans:idem:<sha256(scope)>``).

``begin`` claims the key with ``SET NX`` as *in flight* (for ``in_flight_seconds``, 120, so a
crashed request does not block the key for a day); ``complete`` stores the response for
``ttl_seconds`` (24 h); ``abandon`` deletes the claim (a failed request may be retried with the
same key).  The fingerprint is the SHA-256 of the request (method, path, canonical JSON body).
Redis not answering raises :class:`~etrans.adapters.redis.client.RedisDown` (503, Retry-After).
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from etrans.adapters.redis.client import unavailable_as_503

if TYPE_CHECKING:
    from etrans.adapters.redis.client import TrioRedis

PREFIX = "etrans:idem:"
_WHAT = "Idempotency-Key store"


def record_key(prefix: str, scope: str) -> str:
    """``<prefix><sha256(scope)>`` (also the ``etrans dev`` store's key)."""
    return prefix + hashlib.sha256(scope.encode("utf-8", "surrogatepass")).hexdigest()


class RedisIdempotencyStore:
    def __init__(self, redis: TrioRedis, *, ttl_seconds: int = 86_400,
                 in_flight_seconds: int = 120, prefix: str = PREFIX) -> None:
        self._redis = redis
        self._ttl = ttl_seconds
        self._in_flight = in_flight_seconds
        self._prefix = prefix

    def _key(self, scope: str) -> str:
        return record_key(self._prefix, scope)

    async def begin(self, scope: str, fingerprint: str) -> tuple[str, Any]:
        with unavailable_as_503(_WHAT):
            return await self._begin(scope, fingerprint)

    async def _begin(self, scope: str, fingerprint: str) -> tuple[str, Any]:
        key = self._key(scope)
        claim = json.dumps({"state": "in_flight", "fp": fingerprint})
        redis = self._redis
        for _ in range(3):
            if await redis.execute("SET", key, claim, "EX", self._in_flight, "NX") is not None:
                return "started", None
            raw = await redis.execute("GET", key)
            if raw is None:
                continue  # expired between the two calls: claim again
            try:
                record = json.loads(raw)
            except ValueError:
                return "in_flight", None
            if record.get("fp") != fingerprint:
                return "mismatch", None
            if record.get("state") == "done":
                return "replay", (int(record["status"]), record["body"])
            return "in_flight", None
        return "in_flight", None

    async def complete(self, scope: str, fingerprint: str, status: int, body: Any) -> None:
        value = json.dumps({"state": "done", "fp": fingerprint, "status": status, "body": body},
                           ensure_ascii=False, separators=(",", ":"))
        with unavailable_as_503(_WHAT):
            await self._redis.execute("SET", self._key(scope), value, "EX", self._ttl)

    async def abandon(self, scope: str) -> None:
        with unavailable_as_503(_WHAT):
            await self._redis.execute("DEL", self._key(scope))
