"""ApiKeyCache (:mod:`etrans.app.ports`): Redis (``RedisApiKeyCache``), the ``etrans dev`` store
(``LocalApiKeyCache``) and the fake of the unit tests cache alike.

What authentication relies on: an entry is the record, ``missing`` or ``revoked``; lookups only
fill what is absent, so a revocation is never overwritten by a lookup that raced with the
deletion; entries expire (30 s, 10 s for ``missing``, a day for ``revoked``); an entry that
cannot be read counts as not cached.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import trio

from etrans.adapters.redis.api_key_cache import encode_entry
from etrans.app.records import MISSING, REVOKED, ApiKeyRecord
from etrans.domain.api_keys import Permission

RECORD = ApiKeyRecord(id=3, user_id=9, permission=Permission.sending_access,
                      expires_at=datetime(2030, 1, 1, 12, 30, tzinfo=UTC))
OTHER = ApiKeyRecord(id=4, user_id=9, permission=Permission.full_access, expires_at=None)


async def test_records_and_unknown_keys_are_cached(kv: Any) -> None:
    cache = kv.api_key_cache()
    assert await cache.get("a" * 64) is None
    await cache.put("a" * 64, RECORD)
    await cache.put("b" * 64, OTHER)
    await cache.put("c" * 64, None)
    assert await cache.get("a" * 64) == RECORD
    assert await cache.get("b" * 64) == OTHER
    assert await cache.get("c" * 64) == MISSING
    await cache.put("a" * 64, OTHER)  # only what is absent is written
    assert await cache.get("a" * 64) == RECORD


async def test_a_revocation_is_never_overwritten(kv: Any) -> None:
    cache = kv.api_key_cache()
    await cache.put("a" * 64, RECORD)
    await cache.revoke("a" * 64)
    await cache.put("a" * 64, RECORD)  # a lookup that raced with the deletion
    await cache.put("a" * 64, None)
    assert await cache.get("a" * 64) == REVOKED
    await cache.revoke("d" * 64)  # never cached: revoked all the same
    assert await cache.get("d" * 64) == REVOKED


async def test_concurrent_lookups_and_a_revocation(kv: Any) -> None:
    cache = kv.api_key_cache()
    await cache.revoke("e" * 64)
    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(cache.put, "e" * 64, RECORD)
    assert await cache.get("e" * 64) == REVOKED


async def test_entries_expire_after_their_documented_lifetimes(kv_store: Any) -> None:
    cache = kv_store.api_key_cache()
    prefix = f"{kv_store.prefix}apikey:"
    await cache.put("a" * 64, RECORD)
    await cache.put("b" * 64, None)
    await cache.revoke("c" * 64)
    assert await kv_store.get(prefix + "a" * 64) == encode_entry(RECORD)
    assert await kv_store.get(prefix + "b" * 64) == MISSING
    for key_hash, lifetime in (("a", 30), ("b", 10), ("c", 86_400)):
        left = await kv_store.ttl(prefix + key_hash * 64)
        assert left is not None
        assert lifetime - 2 <= left <= lifetime, key_hash
    await kv_store.expire(prefix + "a" * 64)
    assert await cache.get("a" * 64) is None
    await cache.put("a" * 64, OTHER)  # expired: the next lookup fills it again
    assert await cache.get("a" * 64) == OTHER


async def test_an_unreadable_entry_counts_as_not_cached(kv_store: Any) -> None:
    cache = kv_store.api_key_cache()
    await kv_store.set(f"{kv_store.prefix}apikey:" + "f" * 64, '{"id": "not a number"')
    assert await cache.get("f" * 64) is None
