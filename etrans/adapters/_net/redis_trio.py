"""A small Trio-native Redis client that pipelines the commands of concurrent tasks.

Owns one connection (``redis://``, ``rediss://`` or ``unix://`` URL: user, password and database
are honoured) and the RESP2 protocol.  Every task calls :meth:`TrioRedis.execute` and waits for
its own reply; commands issued while others are on the wire are written together in one
``send`` (automatic pipelining), and replies are matched to callers in order.  Ten sendmail
workers thus share one round trip instead of ten thread hops.

Errors: a Redis error reply raises :class:`RedisReplyError`; a connection that fails, or a reply
later than ``timeout`` seconds (checked every ``min(1, timeout/4)`` s), raises
:class:`RedisUnavailable` in every caller waiting on that connection, and the next command opens
a new connection.  A command whose caller gave up may
still have been executed (as with any client).

Use it as ``async with open_redis(url) as redis: ...`` (it runs its tasks in a nursery).  It is
the one Redis client of every etrans process: each subcommand opens one and hands it to all its
Redis adapters.  :meth:`TrioRedis.check` is the readiness probe (PING on a connection of its own);
:class:`Script` runs Lua scripts by SHA-1, reloading them on NOSCRIPT.

Why our own client: sendmail with redis-py in worker threads sent 1,252 msg/s against 7,873 for
raw smtplib in the same run (bench/sendmail.py, 20,000 messages: ratio 0.154); with this client,
3,056 msg/s (ratio 0.388), the thread hop per Redis command being the largest cost.
"""

from __future__ import annotations

import hashlib
import ssl
from collections import deque
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

import trio

from etrans.adapters._net.fast_stream import FastSocketStream
from etrans.adapters._net.resp import (
    INCOMPLETE,
    RedisReplyError,
    RedisUnavailable,
    encode_command,
    parse_reply,
)
from etrans.observability import get_logger

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

__all__ = ["RedisAddress", "RedisReplyError", "RedisUnavailable", "Script", "TrioRedis",
           "encode_command", "open_redis", "parse_reply"]

log = get_logger(__name__)

PROBE_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class RedisAddress:
    host: str = "127.0.0.1"
    port: int = 6379
    unix_path: str | None = None
    tls: bool = False
    username: str | None = None
    password: str | None = None
    db: int = 0

    @classmethod
    def from_url(cls, url: str) -> RedisAddress:
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"unsupported Redis URL scheme {parts.scheme!r}")
        db_text = query.get("db", [""])[0]
        if parts.scheme != "unix" and parts.path.strip("/"):
            db_text = parts.path.strip("/")
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 6379,
            unix_path=unquote(parts.path) if parts.scheme == "unix" else None,
            tls=parts.scheme == "rediss",
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            db=int(db_text or 0),
        )


async def _exchange(stream: trio.abc.Stream, commands: list[tuple[Any, ...]]) -> list[Any]:
    """Write ``commands`` in one send and read their replies (error replies returned, not
    raised): the handshake of a new connection and the readiness probe."""
    await stream.send_all(b"".join(encode_command(c) for c in commands))
    buffer = bytearray()
    replies: list[Any] = []
    position = 0
    while len(replies) < len(commands):
        reply, after = parse_reply(buffer, position)
        if reply is INCOMPLETE:
            chunk = await stream.receive_some(65536)
            if not chunk:
                raise RedisUnavailable("redis closed the connection")
            buffer += chunk
            continue
        replies.append(reply)
        position = after
    return replies


class Script:
    """A Lua script run by its SHA-1 (EVALSHA); sent in full (EVAL, which also caches it) when
    the server answers NOSCRIPT: after a restart, SCRIPT FLUSH or on a new server."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def run(self, redis: TrioRedis, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        try:
            return await redis.execute("EVALSHA", self.sha, len(keys), *keys, *args)
        except RedisReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await redis.execute("EVAL", self.source, len(keys), *keys, *args)


class _Call:
    """One command: its bytes, when it was issued, the waiting task and the reply.

    The caller parks with ``wait_task_rescheduled`` and is rescheduled by :meth:`complete`
    (cheaper than a ``trio.Event`` per command)."""

    __slots__ = ("at", "data", "done", "result", "task")

    def __init__(self, data: bytes, at: float) -> None:
        self.data = data
        self.at = at
        self.done = False
        self.result: Any = None
        self.task: trio.lowlevel.Task | None = None

    def complete(self, result: Any) -> None:
        if self.done:
            return
        self.done = True
        self.result = result
        task, self.task = self.task, None
        if task is not None:
            trio.lowlevel.reschedule(task)


class _Connection:
    """One connection's queues; its writer and reader tasks live in ``scope``."""

    def __init__(self) -> None:
        self.queued: list[_Call] = []  # not yet written
        self.inflight: deque[_Call] = deque()  # written, reply awaited, in order
        self.writer: trio.lowlevel.Task | None = None  # set while the writer waits for work
        self.ready = trio.Event()
        self.failure: BaseException | None = None
        self.scope = trio.CancelScope()

    def wake_writer(self) -> None:
        writer, self.writer = self.writer, None
        if writer is not None:
            trio.lowlevel.reschedule(writer)

    def fail(self, reason: BaseException) -> None:
        if self.failure is None:
            self.failure = reason
        for call in (*self.inflight, *self.queued):
            call.complete(RedisUnavailable(f"redis connection lost: {reason!r}"))
        self.inflight.clear()
        self.queued.clear()
        self.ready.set()
        self.scope.cancel()


class TrioRedis:
    """Automatic pipelining over one connection; see the module docstring."""

    name = "redis"

    def __init__(self, url: str, nursery: trio.Nursery, *, timeout: float = 5.0) -> None:
        self.address = RedisAddress.from_url(url)
        self.timeout = timeout
        self._nursery = nursery
        self._connection: _Connection | None = None
        self._commands = 0
        self._writes = 0
        self._connects = 0

    def statistics(self) -> dict[str, int]:
        return {"commands": self._commands, "writes": self._writes, "connects": self._connects}

    async def execute(self, *args: Any) -> Any:
        """Run one command; its decoded reply (bytes, int, str, None or a list)."""
        return await self.execute_encoded(encode_command(args))

    async def execute_encoded(self, command: bytes) -> Any:
        """:meth:`execute` for a command already in RESP (:func:`encode_command`'s output):
        callers that send the same command shapes over and over prebuild the constant parts."""
        call = _Call(command, trio.current_time())
        connection = self._connection
        if connection is None or connection.failure is not None:
            connection = self._connection = _Connection()
            self._nursery.start_soon(self._run, connection)
        connection.queued.append(call)
        connection.wake_writer()
        self._commands += 1
        # No cancel scope per call (they cost more than the rest of this method): the
        # connection's watchdog fails every waiting call when the oldest is late.
        call.task = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            call.task = None  # cancelled: the reply, when it comes, is dropped
            call.done = True
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)
        result = call.result
        if isinstance(result, RedisUnavailable | RedisReplyError):
            raise result
        return result

    async def _open_stream(self) -> trio.abc.Stream:
        address = self.address
        if address.unix_path is not None:
            return await FastSocketStream.open_unix(address.unix_path)
        stream: trio.abc.Stream = await FastSocketStream.open_tcp(address.host, address.port)
        if address.tls:
            tls = trio.SSLStream(stream, ssl.create_default_context(),
                                 server_hostname=address.host)
            await tls.do_handshake()
            stream = tls
        return stream

    async def _connect(self) -> trio.abc.Stream:
        """A new connection, authenticated and on its database (AUTH/SELECT); the caller closes
        it.  Raises :class:`RedisUnavailable` when AUTH or SELECT is refused."""
        stream = await self._open_stream()
        try:
            handshake: list[tuple[Any, ...]] = []
            if self.address.password is not None:
                handshake.append(("AUTH", self.address.username, self.address.password)
                                 if self.address.username else ("AUTH", self.address.password))
            if self.address.db:
                handshake.append(("SELECT", self.address.db))
            if handshake:
                replies = await _exchange(stream, handshake)
                for command, reply in zip(handshake, replies, strict=True):
                    if isinstance(reply, RedisReplyError):
                        raise RedisUnavailable(f"redis {command[0]} failed: {reply}")
        except BaseException:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)
            raise
        return stream

    async def check(self) -> None:
        """Readiness probe: PING on a connection of its own, opened and closed for the probe, so
        it never waits behind (nor adds to) the commands of requests."""
        with trio.fail_after(PROBE_TIMEOUT_SECONDS):
            stream = await self._connect()
            try:
                (reply,) = await _exchange(stream, [("PING",)])
            finally:
                with trio.CancelScope(shield=True):
                    await trio.aclose_forcefully(stream)
        if isinstance(reply, RedisReplyError):
            raise reply

    async def _run(self, connection: _Connection) -> None:
        """Connect, then write and read until the connection fails."""
        stream: trio.abc.Stream | None = None
        try:
            with connection.scope:
                with trio.fail_after(self.timeout):
                    stream = await self._connect()
                    self._connects += 1
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._write, connection, stream)
                    nursery.start_soon(self._read, connection, stream)
                    nursery.start_soon(self._watch, connection)
        except Exception as exc:
            log.warning("redis connection failed", error=repr(exc))
            connection.fail(exc)
        finally:
            connection.fail(RedisUnavailable("connection closed"))
            if stream is not None:
                with trio.CancelScope(shield=True):
                    await trio.aclose_forcefully(stream)

    async def _watch(self, connection: _Connection) -> None:
        """Fail the connection when a command waits longer than ``timeout`` for its reply:
        a server that does not answer is left rather than waited behind."""
        while True:
            await trio.sleep(min(1.0, self.timeout / 4))
            oldest = connection.inflight[0] if connection.inflight else (
                connection.queued[0] if connection.queued else None)
            if oldest is not None and trio.current_time() - oldest.at > self.timeout:
                raise RedisUnavailable(f"redis did not answer within {self.timeout:g} s")

    async def _write(self, connection: _Connection, stream: trio.abc.Stream) -> None:
        while True:
            if not connection.queued:
                connection.writer = trio.lowlevel.current_task()

                def abort(_: Any) -> trio.lowlevel.Abort:
                    connection.writer = None
                    return trio.lowlevel.Abort.SUCCEEDED

                await trio.lowlevel.wait_task_rescheduled(abort)
            # Let the other ready tasks add their commands first: they go out in one write.
            await trio.lowlevel.cancel_shielded_checkpoint()
            batch, connection.queued = connection.queued, []
            if not batch:
                continue
            connection.inflight.extend(batch)
            self._writes += 1
            await stream.send_all(b"".join(call.data for call in batch))

    async def _read(self, connection: _Connection, stream: trio.abc.Stream) -> None:
        buffer = bytearray()
        # Replies come after commands were written: wait for the socket before recv (see
        # FastSocketStream.receive_reply); TLS streams read as usual.
        receive = (stream.receive_reply if isinstance(stream, FastSocketStream)
                   else stream.receive_some)
        while True:
            chunk = await receive(65536)
            if not chunk:
                raise RedisUnavailable("redis closed the connection")
            buffer += chunk
            position = 0
            while True:
                reply, position_after = parse_reply(buffer, position)
                if reply is INCOMPLETE:
                    break
                position = position_after
                if not connection.inflight:
                    raise RedisUnavailable("redis sent a reply nobody asked for")
                connection.inflight.popleft().complete(reply)
            del buffer[:position]

    def close_connection(self) -> None:
        if self._connection is not None:
            self._connection.fail(RedisUnavailable("closed"))


@asynccontextmanager
async def open_redis(url: str, *, reply_timeout: float = 5.0) -> AsyncIterator[TrioRedis]:
    async with trio.open_nursery() as nursery:
        redis = TrioRedis(url, nursery, timeout=reply_timeout)
        try:
            yield redis
        finally:
            log.info("redis client closed", **redis.statistics())
            redis.close_connection()
            nursery.cancel_scope.cancel()
