"""The stores the Redis-family contracts run on: Redis, the ``etrans dev`` local store, fakes.

Every adapter is built by one small method here, as the bootstrap builds it (``serve`` for Redis,
``dev`` for the local store), under a key prefix of its own per test: when a constructor changes,
one line changes here and every contract keeps running on both.

Besides the adapters, :class:`RedisBackend` and :class:`LocalBackend` give a raw view of the
keys (``get``, ``ttl``, ``expire``, ``set``): the stand-in promises the same keys, values and
lifetimes as Redis (``docs/wire-formats.md``), and ``expire`` ends a lifetime at once, so expiry
is tested without waiting for it.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import trio

from etrans.dev import kv

if TYPE_CHECKING:
    from pathlib import Path

    import redis

    from etrans.adapters.crypto.credentials import CredentialCipher
    from etrans.adapters.redis.client import TrioRedis


class RedisBackend:
    """The real adapters on the Redis of the test session, all on one Trio-native client (as
    every etrans process); the raw view reads Redis through redis-py, independently of it."""

    name = "redis"

    def __init__(self, client: redis.Redis, fast: TrioRedis, prefix: str) -> None:
        self.client = client
        self.fast = fast
        self.prefix = prefix

    async def _raw(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs))

    # -- the adapters ---------------------------------------------------------------------------

    def quota(self) -> Any:
        from etrans.adapters.redis.quota import RedisQuota

        return RedisQuota(self.fast, prefix=f"{self.prefix}quota:")

    def api_key_cache(self) -> Any:
        from etrans.adapters.redis.api_key_cache import RedisApiKeyCache

        return RedisApiKeyCache(self.fast, prefix=f"{self.prefix}apikey:")

    def idempotency(self) -> Any:
        from etrans.adapters.redis.idempotency import RedisIdempotencyStore

        return RedisIdempotencyStore(self.fast, prefix=f"{self.prefix}idem:")

    def credential_cache(self) -> Any:
        from etrans.adapters.redis.credential_cache import RedisCredentialCache

        return RedisCredentialCache(self.fast, hash_name=f"{self.prefix}auth")

    def credential_source(self, cipher: CredentialCipher) -> Any:
        from etrans.adapters.redis.credential_source import RedisCredentialSource

        # No in-process memory of decrypted values: the contract is about the store.
        return RedisCredentialSource(self.fast, cipher, hash_name=f"{self.prefix}auth",
                                     cache_seconds=0)

    def delivery_marks(self, **options: Any) -> Any:
        from etrans.adapters.redis.delivery_marks import RedisDeliveryMarks

        return RedisDeliveryMarks(self.fast, prefix=f"{self.prefix}sendmail:done:", **options)

    # -- the raw view ---------------------------------------------------------------------------

    async def get(self, key: str) -> str | None:
        value = await self._raw(self.client.get, key)
        return None if value is None else value.decode()

    async def hget(self, name: str, field: str) -> str | None:
        value = await self._raw(self.client.hget, name, field)
        return None if value is None else value.decode()

    async def ttl(self, key: str) -> float | None:
        """Seconds left (None: no expiry; KeyError: no such key)."""
        millis = await self._raw(self.client.pttl, key)
        if millis == -2:
            raise KeyError(key)
        return None if millis == -1 else millis / 1000

    async def set(self, key: str, value: str) -> None:
        await self._raw(self.client.set, key, value)

    async def expire(self, key: str) -> None:
        """End the key's lifetime now, as if its TTL had run out."""
        await self._raw(self.client.pexpire, key, 1)
        await trio.sleep(0.005)

    async def restart(self) -> None:
        """Redis keeps its data: new adapters see what the old ones wrote."""

    async def cleanup(self) -> None:
        keys = await self._raw(lambda: list(self.client.scan_iter(
            match=f"{self.prefix}*", count=1000)))
        if keys:
            await self._raw(self.client.delete, *keys)


class LocalBackend:
    """The stand-ins of ``etrans dev`` on their SQLite file (``state.sqlite3``)."""

    name = "local"

    def __init__(self, path: Path, prefix: str) -> None:
        self.path = path
        self.prefix = prefix
        self.store = kv.LocalStore(path)

    def quota(self) -> Any:
        return kv.LocalQuota(self.store, prefix=f"{self.prefix}quota:")

    def api_key_cache(self) -> Any:
        return kv.LocalApiKeyCache(self.store, prefix=f"{self.prefix}apikey:")

    def idempotency(self) -> Any:
        return kv.LocalIdempotencyStore(self.store, prefix=f"{self.prefix}idem:")

    def credential_cache(self) -> Any:
        return kv.LocalCredentialCache(self.store, hash_name=f"{self.prefix}auth")

    def credential_source(self, cipher: CredentialCipher) -> Any:
        return kv.LocalCredentialSource(self.store, cipher, hash_name=f"{self.prefix}auth")

    def delivery_marks(self, **options: Any) -> Any:
        return kv.LocalDeliveryMarks(self.store, prefix=f"{self.prefix}sendmail:done:",
                                     **options)

    async def get(self, key: str) -> str | None:
        return await self.store.run(self.store.get, key)

    async def hget(self, name: str, field: str) -> str | None:
        return await self.store.run(self.store.hget, name, field)

    async def ttl(self, key: str) -> float | None:
        return await self.store.run(self.store.ttl, key)

    async def set(self, key: str, value: str) -> None:
        await self.store.run(self.store.set, key, value)

    async def expire(self, key: str) -> None:
        await self.store.run(self.store.expire, key, 0.001)
        await trio.sleep(0.005)

    async def restart(self) -> None:
        """A new process on the same data directory."""
        self.store.close()
        self.store = kv.LocalStore(self.path)

    async def cleanup(self) -> None:
        self.store.close()


def unique_prefix() -> str:
    """Keys of one test: ``etrans:test:<unique>:`` (the Redis of the session is shared)."""
    return f"etrans:test:{uuid.uuid4().hex[:12]}:"
