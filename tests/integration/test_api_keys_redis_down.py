"""API-key authentication and revocation when Redis (the key cache) or PostgreSQL fails (issue 12
item 8): a lookup falls back to the database, a revocation whose cache write failed is kept and
retried, the database stays the source of truth, and a database that cannot answer is 503, never
500.  Each test runs its own redis-server (not the harness's) and stops it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import redis as redis_lib

from etrans.domain.api_keys import hash_api_key
from tests.harness.servers import RedisServer
from tests.integration.account_api import new_user_id, open_api
from tests.integration.sending_api import open_sending_api

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()


async def test_api_key_authentication_falls_back_to_the_database_when_redis_is_down(
        etrans_env: Any, billing_db: Any, own_redis: RedisServer) -> None:
    async with open_sending_api(etrans_env, billing_db, REDIS_URI=own_redis.url,
                                redis_reply_timeout=2.0) as api:
        user = api.user()
        key, _ = api.api_key(user, "read_only")
        deleted, _ = api.api_key(user, "read_only", deleted=True)
        assert (await api.call("GET", "/emails", {"X-API-KEY": key}))[0] == 200  # cached
        own_redis.stop()
        for _ in range(3):
            status, body = await api.call("GET", "/emails", {"X-API-KEY": key})
            assert status == 200, body
        assert (await api.call("GET", "/emails", {"X-API-KEY": deleted}))[0] == 401
        unknown = {"X-API-KEY": "etrans_live_unknown"}
        assert (await api.call("GET", "/emails", unknown))[0] == 401
        own_redis.start()
        import trio

        await trio.sleep(1.1)  # past the cache's back-off: Redis is used again
        assert (await api.call("GET", "/emails", {"X-API-KEY": key}))[0] == 200
        admin = redis_lib.Redis.from_url(own_redis.url)
        try:  # the restarted (empty) Redis holds the key's entry again
            assert admin.exists(f"{api.env['ETRANS_REDIS_PREFIX']}apikey:{hash_api_key(key)}")
        finally:
            admin.close()


async def test_delete_revokes_durably_when_the_cache_write_fails(
        usend_db_url: str, dns_server: Any, own_redis: RedisServer) -> None:
    admin = redis_lib.Redis.from_url(own_redis.url)
    try:
        async with open_api(usend_db_url=usend_db_url, redis_url=own_redis.url,
                            dns_address=dns_server.address) as api:
            user = new_user_id()
            status, created = await api.call("POST", "/api-keys", user, json={"name": "k"})
            assert status == 200
            headers = {"X-API-KEY": created["key"]}
            assert (await api.call("GET", "/api-keys", headers))[0] == 200  # cached as valid
            key_hash = hash_api_key(created["key"]).encode()
            cached = [k for k in admin.keys("*apikey:*") if key_hash in k]
            assert len(cached) == 1
            # Redis answers reads but refuses every write (NOREPLICAS): the revocation cannot be
            # written and the "valid" entry stays in Redis.
            admin.config_set("min-replicas-to-write", 1)
            status, body = await api.call("DELETE", f"/api-keys/{created['id']}", user)
            assert (status, body) == (200, {"id": created["id"], "deleted": True})
            assert admin.get(cached[0]) != b"revoked"
            assert (await api.call("GET", "/api-keys", headers))[0] == 401
            # Redis takes writes again: the pending revocation is written at the next use.
            admin.config_set("min-replicas-to-write", 0)
            import trio

            await trio.sleep(1.1)
            assert (await api.call("GET", "/api-keys", headers))[0] == 401
            assert admin.get(cached[0]) == b"revoked"
            # Redis down while deleting: still deleted, in the database.
            status, other = await api.call("POST", "/api-keys", user, json={"name": "other"})
            assert (await api.call("GET", "/api-keys", {"X-API-KEY": other["key"]}))[0] == 200
            own_redis.stop()
            assert (await api.call("DELETE", f"/api-keys/{other['id']}", user))[0] == 200
            assert (await api.call("GET", "/api-keys", {"X-API-KEY": other["key"]}))[0] == 401
            assert (await api.call("GET", f"/api-keys/{other['id']}", user))[0] == 404
    finally:
        admin.close()


async def test_api_key_lookup_answers_503_when_the_database_cannot_answer(
        etrans_env: Any, billing_db: Any, own_redis: RedisServer) -> None:
    from tests.harness.servers import free_port

    nowhere = f"postgresql://etrans:pw@127.0.0.1:{free_port()}/usend"
    async with open_sending_api(etrans_env, billing_db, REDIS_URI=own_redis.url,
                                USEND_DB_URI=nowhere) as api:
        for redis_up in (True, False):  # a cache miss, then no cache at all
            if not redis_up:
                own_redis.stop()
            status, body = await api.call("GET", "/emails", {"X-API-KEY": "etrans_live_x"})
            assert (status, body) == (503, {"detail": "Database unavailable"}), redis_up
