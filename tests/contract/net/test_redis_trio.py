"""Conformance of the Trio-native Redis client (etrans.adapters._net.redis_trio) against the real
redis-server, checked through redis-py (an independent client): URL forms and RESP; the commands
the adapters send, with redis-py's view of what they stored; pipelining of concurrent tasks;
Lua scripts by SHA with the NOSCRIPT reload; error replies as RedisReplyError on a connection
that stays; refused, killed and silent connections as RedisUnavailable; AUTH and SELECT from
the URL; unix sockets; rediss:// (TLS, verified); the readiness probe on a connection of its own.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest
import redis
import trio

from etrans.adapters._net.redis_trio import (
    RedisAddress,
    RedisReplyError,
    RedisUnavailable,
    Script,
    encode_command,
    open_redis,
    parse_reply,
)
from tests.harness.servers import RedisServer, free_port

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


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


@pytest.fixture
def admin(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


async def test_the_commands_the_adapters_send(redis_url: str, admin: redis.Redis) -> None:
    k = f"etrans-test:commands:{uuid.uuid4().hex}:"
    async with open_redis(redis_url) as client:
        assert await client.execute("SET", k + "a", "é", "EX", 60, "NX") == "OK"
        assert await client.execute("SET", k + "a", "other", "EX", 60, "NX") is None
        assert await client.execute("GET", k + "a") == "é".encode()
        assert await client.execute("GET", k + "missing") is None
        assert await client.execute("SET", k + "b", b"\x00\xff", "EX", 60) == "OK"
        assert await client.execute("MGET", k + "a", k + "missing", k + "b") == [
            "é".encode(), None, b"\x00\xff"]
        assert await client.execute("HSET", k + "h", "7", "v") == 1
        assert await client.execute("HGET", k + "h", "7") == b"v"
        assert await client.execute("INCR", k + "n") == 1
        assert await client.execute("PEXPIRE", k + "n", 60_000) == 1
        assert 0 < await client.execute("PTTL", k + "n") <= 60_000
        # What redis-py reads is what was written.
        assert admin.get(k + "a") == "é".encode()
        assert admin.get(k + "b") == b"\x00\xff"
        assert 0 < admin.ttl(k + "b") <= 60
        assert admin.hget(k + "h", "7") == b"v"
        assert await client.execute("HDEL", k + "h", "7") == 1
        assert await client.execute("DEL", k + "a", k + "b", k + "n") == 3
        assert admin.exists(k + "a", k + "b", k + "n", k + "h") == 0


async def test_scripts_run_by_sha_and_are_sent_again_after_noscript(
        redis_url: str, admin: redis.Redis) -> None:
    script = Script("return {KEYS[1], ARGV[1], #ARGV, '" + uuid.uuid4().hex + "'}")
    async with open_redis(redis_url) as client:
        assert (await script.run(client, ["k"], ["a", 2]))[:3] == [b"k", b"a", 2]
        assert admin.script_exists(script.sha) == [True]  # loaded by the EVAL fallback
        admin.script_flush()  # as after a restart: the next EVALSHA gets NOSCRIPT
        assert (await script.run(client, ["k2"], [b"b"]))[:3] == [b"k2", b"b", 1]
        assert admin.script_exists(script.sha) == [True]


async def test_error_replies_raise_and_the_connection_stays(
        redis_url: str, admin: redis.Redis) -> None:
    key = f"etrans-test:errors:{uuid.uuid4().hex}"
    admin.set(key, "not a number", ex=60)
    async with open_redis(redis_url) as client:
        with pytest.raises(RedisReplyError, match="not an integer"):
            await client.execute("INCR", key)
        with pytest.raises(RedisReplyError, match="boom"):  # a script error, not a NOSCRIPT
            await Script("return redis.error_reply('boom')").run(client, [], [])
        with pytest.raises(RedisReplyError, match="unknown command"):
            await client.execute("NO-SUCH-COMMAND")
        assert await client.execute("PING") == "PONG"
        assert client.statistics()["connects"] == 1


async def test_a_refused_connection_is_unavailable() -> None:
    async with open_redis("redis://127.0.0.1:1/0", reply_timeout=2.0) as client:
        with trio.fail_after(5), pytest.raises(RedisUnavailable):
            await client.execute("PING")
        with trio.fail_after(5), pytest.raises(OSError, match="connect"):
            await client.check()


class _Server(RedisServer):
    """A private redis-server with extra arguments (``{workdir}`` is replaced)."""

    def __init__(self, *extra: str, password: str | None = None) -> None:
        super().__init__(password=password)
        self.extra = extra

    def command(self) -> list[str]:
        return [*super().command(), *(a.format(workdir=self.workdir) for a in self.extra)]


@pytest.fixture
def server_factory() -> Iterator[type[_Server]]:
    started: list[_Server] = []

    class Started(_Server):
        def __init__(self, *extra: str, password: str | None = None) -> None:
            super().__init__(*extra, password=password)
            started.append(self)
            self.start()

    yield Started
    for server in started:
        server.stop()


async def test_auth_and_database_from_the_url(server_factory: type[_Server]) -> None:
    server = server_factory(password="s3cret-pw")
    url = f"redis://:{quote(server.password or '', safe='')}@127.0.0.1:{server.port}/3"
    async with open_redis(url) as client:
        assert await client.execute("SET", "k", "in db 3") == "OK"
        await client.check()
    plain = redis.Redis(port=server.port, password=server.password, db=3)
    try:
        assert plain.get("k") == b"in db 3"
    finally:
        plain.close()
    async with open_redis(f"redis://:wrong@127.0.0.1:{server.port}/0") as client:
        with trio.fail_after(5), pytest.raises(RedisUnavailable, match="AUTH"):
            await client.execute("PING")


async def test_a_unix_socket(server_factory: type[_Server]) -> None:
    server = server_factory("--unixsocket", "{workdir}/redis.sock", "--unixsocketperm", "700")
    assert server.workdir is not None
    async with open_redis(f"unix://{server.workdir}/redis.sock?db=2") as client:
        assert await client.execute("SET", "k", "over unix") == "OK"
        await client.check()
    plain = redis.Redis(port=server.port, db=2)
    try:
        assert plain.get("k") == b"over unix"
    finally:
        plain.close()


async def test_rediss_verifies_the_server_certificate(
        server_factory: type[_Server], smtp_certificates: Any, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    smtp_certificates.server_cert.cert_chain_pems[0].write_to_path(str(cert))
    smtp_certificates.server_cert.private_key_pem.write_to_path(str(key))
    tls_port = free_port()
    server_factory("--tls-port", str(tls_port), "--tls-cert-file", str(cert),
                   "--tls-key-file", str(key), "--tls-ca-cert-file", smtp_certificates.ca_file,
                   "--tls-auth-clients", "no")
    url = f"rediss://127.0.0.1:{tls_port}/0"
    async with open_redis(url, reply_timeout=3.0) as client:  # the test CA is not trusted
        with trio.fail_after(10), pytest.raises(RedisUnavailable):
            await client.execute("PING")
    monkeypatch.setenv("SSL_CERT_FILE", smtp_certificates.ca_file)  # now it is
    async with open_redis(url, reply_timeout=3.0) as client:
        assert await client.execute("PING") == "PONG"
        await client.check()


async def test_the_probe_uses_a_connection_of_its_own(redis_url: str) -> None:
    async with open_redis(redis_url) as client, trio.open_nursery() as nursery:
        nursery.start_soon(client.execute, "BLPOP", f"etrans-test:probe:{uuid.uuid4().hex}", 2)
        await trio.sleep(0.1)
        before = client.statistics()
        with trio.fail_after(1.5):  # not behind the BLPOP
            await client.check()
        assert client.statistics() == before
