"""The Trio-native Redis client (etrans.adapters._net.redis_trio) against the real Redis, and the
sendmail credential cache built on it."""

from __future__ import annotations

import uuid

import pytest
import redis
import trio

from etrans.adapters._net.redis_trio import (
    RedisAddress,
    RedisReplyError,
    RedisUnavailable,
    encode_command,
    open_redis,
    parse_reply,
)
from etrans.adapters.crypto.credentials import AUTH_HASH, CredentialCipher, SmtpCredentials
from etrans.adapters.redis.credential_source import RedisCredentialSource
from etrans.app.sendmail import CredentialsUnavailable


def test_url_forms() -> None:
    assert RedisAddress.from_url("redis://127.0.0.1:6380/3") == RedisAddress(
        host="127.0.0.1", port=6380, db=3)
    address = RedisAddress.from_url("rediss://us%40r:p%2Fw@cache.example:6390/2")
    assert (address.tls, address.username, address.password, address.db) == (
        True, "us@r", "p/w", 2)
    assert RedisAddress.from_url("redis://:secret@h").password == "secret"
    assert RedisAddress.from_url("unix:///run/redis.sock?db=4") == RedisAddress(
        unix_path="/run/redis.sock", db=4)


def test_resp_encoding_and_parsing() -> None:
    assert encode_command(("SET", "k", b"v\r\n", 7)) == (
        b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv\r\n\r\n$1\r\n7\r\n")
    wire = b"+OK\r\n:12\r\n$-1\r\n$3\r\na\r\n\r\n*2\r\n$1\r\nx\r\n:1\r\n-ERR bad\r\n"
    values, position = [], 0
    while position < len(wire):
        value, position = parse_reply(wire, position)
        values.append(value)
    assert values[:5] == ["OK", 12, None, b"a\r\n", [b"x", 1]]
    assert isinstance(values[5], RedisReplyError)
    # An incomplete reply is not consumed.
    _, position = parse_reply(b"$5\r\nab", 0)
    assert position == 0


async def test_concurrent_commands_share_writes_and_get_their_own_replies(
        redis_url: str) -> None:
    prefix = f"etrans-test:redis-trio:{uuid.uuid4().hex}:"
    async with open_redis(redis_url) as client:
        results: dict[int, object] = {}

        async def one(index: int) -> None:
            await client.execute("SET", f"{prefix}{index}", f"value-{index}", "EX", 60)
            results[index] = await client.execute("GET", f"{prefix}{index}")

        async with trio.open_nursery() as nursery:
            for index in range(50):
                nursery.start_soon(one, index)
        assert results == {i: f"value-{i}".encode() for i in range(50)}
        stats = client.statistics()
        assert stats["commands"] == 100
        assert stats["writes"] < 100  # pipelined: several commands per write
        assert stats["connects"] == 1
        with pytest.raises(RedisReplyError):
            await client.execute("INCR", f"{prefix}0")  # not an integer
        assert await client.execute("DEL", *(f"{prefix}{i}" for i in range(50))) == 50


async def test_a_killed_connection_fails_waiting_calls_and_the_next_command_reconnects(
        redis_url: str) -> None:
    name = f"etrans-test-{uuid.uuid4().hex[:12]}"
    async with open_redis(redis_url) as client:
        await client.execute("CLIENT", "SETNAME", name)
        # BLPOP keeps the call waiting on the server; killing the connection must end it.
        key = f"etrans-test:never:{uuid.uuid4().hex}"
        outcome: list[BaseException] = []

        async def blocked() -> None:
            try:
                await client.execute("BLPOP", key, 30)
            except RedisUnavailable as exc:
                outcome.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(blocked)
            await trio.sleep(0.3)
            admin = redis.Redis.from_url(redis_url)
            try:
                client_id = await trio.to_thread.run_sync(_client_id, admin, name)
                assert client_id is not None
                killed = await trio.to_thread.run_sync(
                    admin.execute_command, "CLIENT", "KILL", "ID", client_id)
            finally:
                admin.close()
            assert killed
        assert len(outcome) == 1
        assert await client.execute("PING") == "PONG"
        assert client.statistics()["connects"] == 2


def _client_id(admin: redis.Redis, name: str) -> int | None:
    for client in admin.client_list():
        if client.get("name") == name:
            return int(client["id"])
    return None


async def test_unanswered_commands_time_out(redis_url: str) -> None:
    async with open_redis(redis_url, reply_timeout=0.4) as client:
        key = f"etrans-test:never:{uuid.uuid4().hex}"
        with trio.fail_after(5), pytest.raises(RedisUnavailable):
            await client.execute("BLPOP", key, 10)  # the server holds the reply back
        assert await client.execute("PING") == "PONG"  # on a new connection


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
