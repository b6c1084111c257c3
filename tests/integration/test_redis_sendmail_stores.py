"""sendmail's Redis stores on the Trio-native client, against the real Redis: the credential
source's short memory of decrypted values, and the delivery marks' prebuilt RESP commands."""

from __future__ import annotations

import uuid

import pytest
import redis
import trio

from etrans.adapters._net.redis_trio import open_redis
from etrans.adapters.crypto.credentials import AUTH_HASH, CredentialCipher, SmtpCredentials
from etrans.adapters.redis.credential_source import RedisCredentialSource
from etrans.app.sendmail import CredentialsUnavailable


async def test_credentials_are_cached_for_a_short_time_and_misses_are_not(
        redis_url: str) -> None:
    cipher = CredentialCipher("0123456789abcdef0123456789abcdef", "fedcba9876543210")
    user_id = f"etrans-test-{uuid.uuid4().hex[:10]}"
    admin = redis.Redis.from_url(redis_url)
    try:
        async with open_redis(redis_url) as client:
            source = RedisCredentialSource(client, cipher, cache_seconds=0.5)
            with pytest.raises(CredentialsUnavailable):
                await source.fetch(user_id)
            admin.hset(AUTH_HASH, user_id, cipher.encrypt(SmtpCredentials("u", "old")))
            assert (await source.fetch(user_id)).password == "old"  # a miss is not cached
            admin.hset(AUTH_HASH, user_id, cipher.encrypt(SmtpCredentials("u", "new")))
            assert (await source.fetch(user_id)).password == "old"  # cached
            await trio.sleep(0.6)
            assert (await source.fetch(user_id)).password == "new"  # rotation picked up
    finally:
        admin.hdel(AUTH_HASH, user_id)
        admin.close()


async def test_delivery_marks_prebuilt_commands(redis_url: str) -> None:
    """RedisDeliveryMarks writes its GET/SET in RESP itself (execute_encoded): the same bytes
    as encode_command, and Redis stores the mark with its TTL (non-ASCII ids included)."""
    from etrans.adapters.redis.delivery_marks import RedisDeliveryMarks

    prefix = f"etrans-test:marks:{uuid.uuid4().hex}:"
    message_id = "<é-" + uuid.uuid4().hex + "@example.com>"
    plain = redis.Redis.from_url(redis_url)
    async with open_redis(redis_url) as client:
        marks = RedisDeliveryMarks(client, ttl_seconds=3600, prefix=prefix)
        assert await marks.outcome(message_id) is None
        await marks.record(message_id, "rejecting:{\"a@b\": \"550 nö\"}")
        assert await marks.outcome(message_id) == "rejecting:{\"a@b\": \"550 nö\"}"
        await marks.record(message_id, "delivered")
        assert await marks.outcome(message_id) == "delivered"
    try:
        key = marks.key(message_id)
        assert plain.get(key) == b"delivered"
        assert 3590 <= plain.ttl(key) <= 3600
    finally:
        plain.delete(marks.key(message_id))
