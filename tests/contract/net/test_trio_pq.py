"""Conformance of the Trio-native PostgreSQL connection (etrans.adapters._net.trio_pq) against
real PostgreSQL: results and text/bytes/NULL parameters, psycopg's error classes, a statement
larger than libpq's buffers, timeouts and cancellation (the connection is dropped and the next
statement reconnects), a refused connect, a connection lost while idle or inside a transaction."""

from __future__ import annotations

import time
import uuid
from typing import Any

import psycopg
import pytest
import trio

from etrans.adapters._net.trio_pq import TrioPqConnection


@pytest.fixture
async def conn(fresh_database: Any) -> Any:
    connection = TrioPqConnection.from_sqlalchemy_url(fresh_database("triopq"), timeout=5.0)
    yield connection
    await connection.aclose()


async def test_rows_nulls_rowcount_and_parameters(conn: TrioPqConnection) -> None:
    result = await conn.execute(b"SELECT $1::int + 1, NULL::text, $2::text", ["41", "é✓"])
    assert result.rows == [("42", None, "é✓")]
    assert result.rowcount == 1
    await conn.execute(b"CREATE TABLE t (a int PRIMARY KEY, b text)")
    inserted = await conn.execute(b"INSERT INTO t SELECT g, NULL FROM generate_series(1, 5) g")
    assert inserted.rowcount == 5
    assert (await conn.execute(b"SELECT count(*) FROM t WHERE b IS NULL")).rows == [("5",)]


async def test_bytes_and_null_parameters(conn: TrioPqConnection) -> None:
    payload = b"\x00\xff not even UTF-8 \\"
    hex_text = b"\\x" + payload.hex().encode()  # bytea input, as the outbox relay sends it
    result = await conn.execute(b"SELECT encode($1::bytea, 'hex'), $2::text IS NULL, $3::text",
                                [hex_text, None, "é".encode()])
    assert result.rows == [(payload.hex(), "t", "é")]


async def test_errors_are_psycopgs_classes_and_the_connection_stays(
        conn: TrioPqConnection) -> None:
    await conn.execute(b"CREATE TABLE u (a int PRIMARY KEY)")
    await conn.execute(b"INSERT INTO u VALUES (1)")
    with pytest.raises(psycopg.errors.UniqueViolation, match="duplicate key") as caught:
        await conn.execute(b"INSERT INTO u VALUES (1)")
    assert isinstance(caught.value, psycopg.IntegrityError)
    assert "Key (a)=(1)" in str(caught.value)  # the DETAIL line is kept
    with pytest.raises(psycopg.DataError):
        await conn.execute(b"SELECT $1::int", ["not a number"])
    with pytest.raises(psycopg.errors.UndefinedTable):
        await conn.execute(b"SELECT * FROM no_such_table")
    # Autocommit: the failed statements left no transaction open; the connection goes on.
    assert conn.connected
    assert (await conn.execute(b"SELECT count(*) FROM u")).rows == [("1",)]


async def test_a_script_runs_several_statements_in_one_round_trip(
        conn: TrioPqConnection) -> None:
    """execute_script: ``BEGIN; ...`` leaves the transaction open, ``...; COMMIT`` ends it (the
    outbox relay's two round trips); a failing statement skips the rest and raises."""
    await conn.execute(b"CREATE TABLE s (a int PRIMARY KEY)")
    begun = await conn.execute_script(b"BEGIN; INSERT INTO s VALUES (1); SELECT a FROM s")
    assert begun.rows == [("1",)]
    assert (await conn.execute(b"SELECT 'open'")).rows == [("open",)]  # still inside it
    await conn.execute(b"ROLLBACK")  # so the insert goes
    assert (await conn.execute_script(b"BEGIN; INSERT INTO s VALUES (2); COMMIT")).rows == []
    with pytest.raises(psycopg.errors.UniqueViolation):
        await conn.execute_script(b"BEGIN; INSERT INTO s VALUES (3); INSERT INTO s VALUES (2)")
    await conn.execute(b"ROLLBACK")
    assert (await conn.execute(b"SELECT array_agg(a) FROM s")).rows == [("{2}",)]


async def test_a_large_result_is_read_without_a_scheduling_round_per_read(
        conn: TrioPqConnection, monkeypatch: pytest.MonkeyPatch) -> None:
    """libpq reads at most its input buffer (16 KB while the rows are parsed as they come) per
    call: waiting for the socket after each read made a 4 MB result cost ~250 waits, each a
    whole round of the Trio run queue (in ``etrans serve`` under load, the outbox relay's read
    of its rows took up to 2.3 s: docs/performance.md).  What the socket already holds is read
    on; the task waits only when it is empty (and checkpoints every 64 reads)."""
    waits = 0
    wait_readable = trio.lowlevel.wait_readable

    async def counted(fd: int) -> None:
        nonlocal waits
        waits += 1
        await wait_readable(fd)

    stop = trio.Event()

    async def busy() -> None:  # other tasks, as a server's requests: the server sends meanwhile
        while not stop.is_set():
            until = time.perf_counter() + 0.002
            while time.perf_counter() < until:
                pass
            await trio.lowlevel.checkpoint()

    await conn.execute(b"SELECT 1")
    monkeypatch.setattr(trio.lowlevel, "wait_readable", counted)
    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(busy)
        result = await conn.execute(b"SELECT repeat('x', 2000) FROM generate_series(1, 2000)")
        stop.set()
    assert len(result.rows) == 2000
    assert waits < 64, waits


async def test_a_statement_larger_than_the_socket_buffers(conn: TrioPqConnection) -> None:
    big = "x" * (20 * 1024 * 1024)
    assert (await conn.execute(b"SELECT length($1::text)", [big])).rows == [(str(len(big)),)]


async def test_concurrent_callers_take_turns(conn: TrioPqConnection) -> None:
    results: list[str] = []

    async def one(n: int) -> None:
        rows = (await conn.execute(b"SELECT $1::int * 2, pg_sleep(0.01)", [str(n)])).rows
        results.append(str(rows[0][0]))

    async with trio.open_nursery() as nursery:
        for n in range(20):
            nursery.start_soon(one, n)
    assert sorted(results, key=int) == [str(2 * n) for n in range(20)]


async def test_timeout_and_cancellation_drop_the_connection_then_reconnect(
        fresh_database: Any) -> None:
    url = fresh_database("triopq")
    conn = TrioPqConnection.from_sqlalchemy_url(url, timeout=0.3)
    try:
        marker = f"etrans-test-{uuid.uuid4().hex[:8]}"
        await conn.execute(b"SELECT set_config('application_name', $1, false)", [marker])
        with pytest.raises(psycopg.OperationalError, match=r"within 0\.3 s"):
            await conn.execute(b"SELECT pg_sleep(5)")
        assert not conn.connected
        # A new connection (the old one, with its session setting, is gone).
        name = (await conn.execute(b"SELECT current_setting('application_name')")).rows
        assert name == [("etrans",)]

        with trio.move_on_after(0.1) as scope:
            await conn.execute(b"SELECT pg_sleep(5)")
        assert scope.cancelled_caught
        assert not conn.connected
        assert (await conn.execute(b"SELECT 1")).rows == [("1",)]
    finally:
        await conn.aclose()


async def test_a_refused_connect_is_an_operational_error(postgres_admin_url: str) -> None:
    url = postgres_admin_url.rsplit("/", 1)[0] + f"/no_such_db_{uuid.uuid4().hex[:8]}"
    conn = TrioPqConnection.from_sqlalchemy_url(url)
    with pytest.raises(psycopg.OperationalError, match="does not exist"):
        await conn.execute(b"SELECT 1")
    assert not conn.connected


@pytest.fixture
async def idle_checked_pair(fresh_database: Any) -> Any:
    """A connection checked after 50 ms idle, and a second one to end its session with."""
    url = fresh_database("triopq")
    conn = TrioPqConnection.from_sqlalchemy_url(url, ping_after_idle=0.05)
    other = TrioPqConnection.from_sqlalchemy_url(url)
    yield conn, other
    await conn.aclose()
    await other.aclose()


async def _end_session(conn: TrioPqConnection, other: TrioPqConnection) -> str | None:
    pid = (await conn.execute(b"SELECT pg_backend_pid()")).rows[0][0]
    await other.execute(b"SELECT pg_terminate_backend($1::int)", [pid])
    await trio.sleep(0.1)
    return pid


async def test_a_connection_lost_while_idle_is_replaced_before_the_statement(
        idle_checked_pair: Any) -> None:
    # As pool_pre_ping: the server ended the idle session (restart, idle timeout, an operator's
    # pg_terminate_backend); the next statement reconnects instead of failing.
    conn, other = idle_checked_pair
    first_pid = await _end_session(conn, other)
    assert first_pid is not None
    second_pid = (await conn.execute(b"SELECT pg_backend_pid()")).rows[0][0]
    assert second_pid != first_pid


async def test_a_connection_lost_inside_a_transaction_fails_instead_of_reconnecting(
        idle_checked_pair: Any) -> None:
    # After BEGIN, reconnecting would run the next statements outside the transaction.
    conn, other = idle_checked_pair
    await conn.execute(b"CREATE TABLE v (a int)")
    await conn.execute(b"BEGIN")
    await _end_session(conn, other)
    with pytest.raises(psycopg.OperationalError):
        await conn.execute(b"INSERT INTO v VALUES (1)")
    assert not conn.connected
    assert (await other.execute(b"SELECT count(*) FROM v")).rows == [("0",)]


async def test_a_prepared_statement_is_prepared_once_per_connection(
        idle_checked_pair: Any) -> None:
    conn, other = idle_checked_pair
    sql = b"SELECT $1::int * 2"
    assert (await conn.execute(sql, ["21"], prepared=b"double")).rows == [("42",)]
    assert (await conn.execute(sql, ["5"], prepared=b"double")).rows == [("10",)]
    listed = await conn.execute(b"SELECT count(*) FROM pg_prepared_statements"
                                b" WHERE name = 'double'")
    assert listed.rows == [("1",)]
    with pytest.raises(psycopg.DataError):  # a refused execution keeps the statement
        await conn.execute(sql, ["x"], prepared=b"double")
    assert (await conn.execute(sql, ["4"], prepared=b"double")).rows == [("8",)]
    await _end_session(conn, other)  # a new connection: prepared again on first use
    assert (await conn.execute(sql, ["3"], prepared=b"double")).rows == [("6",)]
