"""One PostgreSQL connection driven from the Trio thread: libpq in non-blocking mode, no worker
thread per statement.

The hot write of POST /emails (:mod:`etrans.adapters.sql.group_commit`) used to cost a thread hop, a
pool checkout with its pre-ping, BEGIN, INSERT and COMMIT round trips, and a GIL hand-over after
each of them, while the Trio thread was busy serving requests: the waits added up to more than
the work.  :class:`TrioPqConnection` sends one statement with ``PQsendQueryParams`` and waits for
its result in Trio's epoll loop (``wait_readable``), like
:mod:`etrans.adapters._net.redis_trio` does for Redis.  Only the connect runs in a worker thread
(libpq's connect may resolve a host name).  Measured: bench/api.py ratio 0.477 -> 0.563 (one
run each) when the group commit moved from SQLAlchemy in a worker thread to this connection.

It speaks through :mod:`psycopg.pq`, psycopg's documented libpq wrapper, and raises psycopg's
exception classes (``psycopg.errors.lookup(sqlstate)``: ``UniqueViolation`` is a
``psycopg.IntegrityError``, a lost connection a ``psycopg.OperationalError``), so callers handle
errors as with psycopg itself.

Statements run in autocommit: one statement is one transaction (a ``WITH ... INSERT ... INSERT``
statement writes both of its tables or neither).  Parameters are sent in text format (``str``,
``bytes`` already encoded, or ``None`` for NULL); results come back in text format.
:meth:`TrioPqConnection.execute_script` sends several statements in one round trip (the simple
query protocol, no parameters): the outbox relay opens its transaction with ``BEGIN; SELECT ...``
and ends it with ``UPDATE ...; COMMIT`` (:mod:`etrans.adapters.sql.outbox_store`).  A result
larger than libpq's input buffer is read on while the socket holds data, not one scheduling
round of the Trio run queue per 16 KB.

A statement that takes longer than ``timeout`` seconds, a cancelled statement, or a connection
error closes the connection (its state is unknown) and raises ``psycopg.OperationalError``; the
next :meth:`execute` connects again.  As with any client, a statement whose answer was lost may
still have been committed.  Like SQLAlchemy's ``pool_pre_ping``, a connection that has been idle
for ``ping_after_idle`` seconds is checked with ``SELECT 1`` first (a server restart or an idle
timeout in between is then met by reconnecting, not by failing the statement); under load the
connection is never idle and pays nothing.  Inside a transaction (after ``BEGIN``) there is no
such check: a lost connection fails the statement, it never reconnects into autocommit.

A hot statement can be sent ``prepared=b"name"``: it is prepared (parsed and planned) once per
connection - again after a reconnect - and then only executed.  Measured on the webhooks
worker's success write (a ``WITH`` of four statements over ``json_to_recordset``): 0.37-0.42 ms
per statement unprepared, 0.09-0.15 ms prepared (psycopg, 1,500 statements each).
"""

from __future__ import annotations

import select
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psycopg
import psycopg.errors
import trio
from psycopg import pq

if TYPE_CHECKING:
    from collections.abc import Sequence

    from psycopg.pq.abc import PGconn, PGresult
    from sqlalchemy.engine import URL


@dataclass(frozen=True)
class QueryResult:
    """Rows of a statement, text format (``None`` for NULL), and the affected row count."""

    rows: list[tuple[str | None, ...]]
    rowcount: int


def _error_from(result: PGresult | None, pgconn: PGconn) -> psycopg.Error:
    if result is not None:
        message = (result.error_field(pq.DiagnosticField.MESSAGE_PRIMARY)
                   or result.error_message)
        detail = result.error_field(pq.DiagnosticField.MESSAGE_DETAIL)
        if detail:
            message = bytes(message) + b"\nDETAIL:  " + bytes(detail)
    else:
        message = pgconn.error_message
    text = bytes(message).decode("utf-8", "replace").strip() or "PostgreSQL error"
    sqlstate = result.error_field(pq.DiagnosticField.SQLSTATE) if result is not None else None
    if sqlstate:
        try:
            return psycopg.errors.lookup(sqlstate.decode())(text)
        except KeyError:
            return psycopg.DatabaseError(text)
    return psycopg.OperationalError(text)


def _readable_now(fd: int) -> bool:
    """Whether the socket holds data to read (without waiting)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


class TrioPqConnection:
    """``await conn.execute(sql, params)`` from Trio; one statement at a time (a lock)."""

    def __init__(self, conninfo: str, *, timeout: float = 30.0,
                 ping_after_idle: float = 5.0) -> None:
        self._conninfo = conninfo.encode()
        self._timeout = timeout
        self._ping_after_idle = ping_after_idle
        self._pgconn: PGconn | None = None
        self._fd = -1
        self._last_used = 0.0
        self._lock = trio.Lock()
        self._prepared: set[bytes] = set()  # names prepared on the current connection

    @classmethod
    def from_sqlalchemy_url(cls, url: str | URL, *, application_name: str = "etrans",
                            connect_timeout: int = 5, timeout: float = 30.0,
                            ping_after_idle: float = 5.0) -> TrioPqConnection:
        """From a SQLAlchemy ``postgresql+psycopg://`` URL (e.g. ``engine.url``)."""
        from psycopg.conninfo import make_conninfo
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        params: dict[str, str | int | None] = {
            "host": parsed.host, "port": parsed.port, "dbname": parsed.database,
            "user": parsed.username, "password": parsed.password,
            "connect_timeout": connect_timeout, "application_name": application_name,
        }
        for name, value in parsed.query.items():  # e.g. ?sslmode=require, ?host=/run/postgresql
            params[name] = value if isinstance(value, str) else value[-1]
        conninfo = make_conninfo("", **{k: v for k, v in params.items() if v is not None})
        return cls(conninfo, timeout=timeout, ping_after_idle=ping_after_idle)

    @property
    def connected(self) -> bool:
        return self._pgconn is not None

    async def execute(self, sql: bytes, params: Sequence[str | bytes | None] = (), *,
                      prepared: bytes | None = None) -> QueryResult:
        """Run one statement; raise a psycopg error when PostgreSQL refuses it.  With
        ``prepared``, the statement is prepared under that name on first use per connection
        (one ``sql`` per name)."""
        values = [p.encode() if isinstance(p, str) else p for p in params]
        return await self._execute(sql, values, prepared=prepared)

    async def execute_script(self, sql: bytes) -> QueryResult:
        """Run several statements separated by ``;`` in one round trip (the simple query
        protocol: no parameters, so every value in ``sql`` must be a literal the caller built
        safely, e.g. from integers).  ``BEGIN; SELECT ...`` leaves the transaction open;
        ``UPDATE ...; COMMIT`` ends it.  A statement that fails skips the rest and raises; the
        rows of every statement that returned some, in order."""
        return await self._execute(sql, None)

    async def _execute(self, sql: bytes, values: list[bytes | None] | None, *,
                       prepared: bytes | None = None) -> QueryResult:
        async with self._lock:
            if (self._pgconn is not None
                    and self._pgconn.transaction_status == pq.TransactionStatus.IDLE
                    and trio.current_time() - self._last_used > self._ping_after_idle):
                # Not inside a transaction (a reconnect there would silently leave it).
                try:
                    self._outcome(self._pgconn, await self._send(self._pgconn, b"SELECT 1", []))
                except psycopg.OperationalError:
                    self._close()  # gone while idle: connect again below
            if self._pgconn is None:
                await self._connect()
            pgconn = self._pgconn
            assert pgconn is not None
            if prepared is not None and prepared not in self._prepared:
                self._outcome(pgconn, await self._send(pgconn, sql, [], prepare=prepared))
                self._prepared.add(prepared)
            results = await self._send(pgconn, sql, values, prepared=prepared)
            self._last_used = trio.current_time()
            return self._outcome(pgconn, results)

    async def _send(self, pgconn: PGconn, sql: bytes, values: list[bytes | None] | None, *,
                    prepare: bytes | None = None, prepared: bytes | None = None,
                    ) -> list[PGresult]:
        try:
            with trio.fail_after(self._timeout):
                if prepare is not None:
                    pgconn.send_prepare(prepare, sql)
                elif prepared is not None:
                    pgconn.send_query_prepared(prepared, values)
                elif values is None:
                    pgconn.send_query(sql)
                else:
                    pgconn.send_query_params(sql, values)
                return await self._round_trip(pgconn)
        except trio.TooSlowError:
            self._close()
            raise psycopg.OperationalError(
                f"no answer from PostgreSQL within {self._timeout:g} s") from None
        except BaseException:
            # Cancelled or failed mid-statement: the connection's state is unknown.
            self._close()
            raise

    def _outcome(self, pgconn: PGconn, results: list[PGresult]) -> QueryResult:
        rows: list[tuple[str | None, ...]] = []
        rowcount = 0
        for result in results:
            status = result.status
            if status == pq.ExecStatus.TUPLES_OK:
                ncols = result.nfields
                for row in range(result.ntuples):
                    values = []
                    for col in range(ncols):
                        value = result.get_value(row, col)
                        values.append(None if value is None else bytes(value).decode())
                    rows.append(tuple(values))
            elif status != pq.ExecStatus.COMMAND_OK:
                error = _error_from(result, pgconn)
                if pgconn.status != pq.ConnStatus.OK:
                    self._close()
                raise error
            status_text = result.command_status or b""
            last = status_text.rsplit(b" ", 1)[-1]
            rowcount = int(last) if last.isdigit() else rowcount
        if pgconn.status != pq.ConnStatus.OK:
            self._close()
            raise _error_from(None, pgconn)
        return QueryResult(rows=rows, rowcount=rowcount)

    async def _round_trip(self, pgconn: PGconn) -> list[PGresult]:
        # The statement is sent; psycopg.pq raises psycopg.OperationalError when the connection
        # fails.
        fd = self._fd
        while pgconn.flush():  # a large statement: libpq's output buffer is not empty yet
            await self._wait_read_or_write(pgconn, fd)
        results: list[PGresult] = []
        reads = 0
        while True:
            while pgconn.is_busy():
                # libpq reads at most its input buffer per call (16 KB while the rows are parsed
                # as they come): wait for the socket only when it holds nothing more.  Waiting
                # after each read made a large result cost one whole round of the Trio run queue
                # per 16 KB (the outbox relay's read of 250 rows took ~1.2 s beside 30 busy
                # tasks, 0.08 s now: docs/performance.md).  A checkpoint every 64 reads.
                reads += 1
                if reads % 64 == 0:
                    await trio.lowlevel.checkpoint()
                if not _readable_now(fd):
                    await trio.lowlevel.wait_readable(fd)
                pgconn.consume_input()
            result = pgconn.get_result()
            if result is None:
                return results
            results.append(result)

    @staticmethod
    async def _wait_read_or_write(pgconn: PGconn, fd: int) -> None:
        # libpq: while PQflush returns 1, wait for read- or write-readiness; on read-readiness
        # consume input (the server may be answering while we are still sending).
        async def readable() -> None:
            await trio.lowlevel.wait_readable(fd)
            pgconn.consume_input()
            nursery.cancel_scope.cancel()

        async def writable() -> None:
            await trio.lowlevel.wait_writable(fd)
            nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(readable)
            nursery.start_soon(writable)

    async def _connect(self) -> None:
        pgconn = await trio.to_thread.run_sync(pq.PGconn.connect, self._conninfo)
        if pgconn.status != pq.ConnStatus.OK:
            message = bytes(pgconn.error_message).decode("utf-8", "replace").strip()
            pgconn.finish()
            raise psycopg.OperationalError(message or "could not connect to PostgreSQL")
        pgconn.nonblocking = 1
        self._pgconn, self._fd = pgconn, pgconn.socket

    def _close(self) -> None:
        pgconn, self._pgconn = self._pgconn, None
        self._prepared = set()
        if pgconn is None:
            return
        if self._fd >= 0:
            trio.lowlevel.notify_closing(self._fd)
        self._fd = -1
        pgconn.finish()

    async def aclose(self) -> None:
        async with self._lock:
            self._close()
