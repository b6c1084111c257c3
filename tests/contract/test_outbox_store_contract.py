"""The outbox store contract (:class:`etrans.adapters.sql.outbox_store.OutboxStore`), run on
PostgreSQL (:class:`PgOutboxStore`, what ``etrans serve`` uses) and on SQLite
(:class:`etrans.dev.sqlite_outbox.SqliteOutboxStore`, ``etrans dev``): which rows a pass takes
and in what order, what each outcome writes, rollback when the pass fails, the retention.

The PostgreSQL database is one migrated database of this module (a pass takes every pending
row of its database, so it cannot be the session's shared USEND DB); each test empties it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import delete, insert, select

from etrans.adapters.sql.outbox_store import FailedRow, OutboxRow, PassOutcome
from etrans.adapters.sql.usend import EmailMessage, EmailOutbox

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence
    from pathlib import Path

    from etrans.adapters.sql import Database

OUTBOX = EmailOutbox.__table__
EMAILS = EmailMessage.__table__


@dataclass
class Backend:
    name: str
    db: Database
    store: Any  # OutboxStore

    def add(self, *rows: dict[str, Any]) -> list[int]:
        now = datetime.now(UTC)
        with self.db.engine.begin() as conn:
            return [conn.execute(insert(OUTBOX).returning(OUTBOX.c.id),
                                 {"topic": "t", "key": None, "created_at": now, **row}
                                 ).scalar_one() for row in rows]

    def add_email(self, message_id: str, status: str = "queued") -> None:
        with self.db.engine.begin() as conn:
            conn.execute(insert(EMAILS).values(
                message_id=message_id, user_id=7, from_address="s@example.test",
                to_addresses=["r@example.org"], subject="Hi", html="x", status=status,
                created_at=datetime.now(UTC)))

    def rows(self) -> dict[int, Any]:
        with self.db.engine.connect() as conn:
            return {r.id: r for r in conn.execute(select(OUTBOX).order_by(OUTBOX.c.id))}

    def email(self, message_id: str) -> Any:
        with self.db.engine.connect() as conn:
            return conn.execute(select(EMAILS).where(EMAILS.c.message_id == message_id)).one()


@pytest.fixture(scope="module")
def pg_outbox_url(fresh_database: Callable[..., str]) -> str:
    from etrans.adapters.sql import migrations

    url = fresh_database("outbox_contract")
    migrations.upgrade(url)
    return url


@pytest.fixture(params=["postgres", "sqlite"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "postgres":
        from etrans.adapters.sql import usend_database
        from etrans.adapters.sql.outbox_store import PgOutboxStore

        db = usend_database(request.getfixturevalue("pg_outbox_url"), pool_size=2)
        with db.engine.begin() as conn:
            conn.execute(delete(OUTBOX))
            conn.execute(delete(EMAILS))
        store: Any = PgOutboxStore.of(db)
    else:
        from etrans.dev.sqlite_db import create_schema, sqlite_database
        from etrans.dev.sqlite_outbox import SqliteOutboxStore

        db = sqlite_database(tmp_path / "usend.sqlite3")
        create_schema(db)
        store = SqliteOutboxStore(db)
    try:
        yield Backend(request.param, db, store)
    finally:
        await store.aclose()
        db.dispose()


def _all(pending: Sequence[tuple[int, int]]) -> list[int]:
    return [row_id for row_id, _ in pending]


async def test_a_pass_takes_pending_rows_by_attempts_then_id_with_their_sizes(
        backend: Backend) -> None:
    ids = backend.add({"payload": b"a" * 10, "attempts": 2}, {"payload": b"b" * 20},
                      {"payload": b"c" * 30, "attempts": 1}, {"payload": b"d"},
                      {"payload": b"e", "published_at": datetime.now(UTC)},
                      {"payload": b"f", "failed_at": datetime.now(UTC)})
    seen: list[Sequence[tuple[int, int]]] = []
    read: list[Sequence[OutboxRow]] = []

    def choose(pending: Sequence[tuple[int, int]]) -> list[int]:
        seen.append(list(pending))
        return [row_id for row_id, _ in pending][:2]

    async def decide(rows: Sequence[OutboxRow]) -> PassOutcome:
        read.append(rows)
        return PassOutcome()

    assert await backend.store.relay_pass(3, choose, decide) == PassOutcome()
    assert seen == [[(ids[1], 20), (ids[3], 1), (ids[2], 30)]]  # limit 3: not ids[0]
    assert [(r.id, r.payload, r.attempts) for r in read[0]] == [
        (ids[1], b"b" * 20, 0), (ids[3], b"d", 0)]


async def test_nothing_chosen_is_an_empty_pass_without_publishing(backend: Backend) -> None:
    backend.add({"payload": b"x"})

    async def decide(rows: Sequence[OutboxRow]) -> PassOutcome:
        raise AssertionError("nothing to publish")

    assert await backend.store.relay_pass(10, lambda pending: [], decide) == PassOutcome()
    assert await backend.store.relay_pass(10, _all, _publish_all) != PassOutcome()
    assert await backend.store.relay_pass(10, _all, decide) == PassOutcome()  # none pending


async def _publish_all(rows: Sequence[OutboxRow]) -> PassOutcome:
    return PassOutcome(published=[row.id for row in rows])


async def test_each_outcome_is_written_in_the_pass(backend: Backend) -> None:
    payload = b"\x00\xff not even UTF-8"
    published, answered, unreachable, refused, given_up, orphan = backend.add(
        {"payload": payload, "key": "k"}, {"payload": b"2", "attempts": 1}, {"payload": b"3"},
        {"payload": b"4", "message_id": "m-refused"}, {"payload": b"5", "message_id": "m-gone",
                                                       "attempts": 2},
        {"payload": b"6"})
    backend.add_email("m-refused")
    backend.add_email("m-gone", status="sent")  # already past queued: left as it is
    rows_read: dict[int, OutboxRow] = {}

    async def decide(rows: Sequence[OutboxRow]) -> PassOutcome:
        rows_read.update({row.id: row for row in rows})
        return PassOutcome(
            published=[published], answered={answered: "broker said no"},
            unreachable={unreachable: "no broker"},
            failed=[FailedRow(rows_read[refused], "too large", answered=False,
                              events=[("logs", b"m-refused", b'{"Event":"Reject"}'),
                                      ("logs", None, b"\x01")]),
                    FailedRow(rows_read[given_up], "refused 3 times", answered=True),
                    FailedRow(rows_read[orphan], "no email", answered=True)])

    await backend.store.relay_pass(10, _all, decide)
    assert rows_read[published].payload == payload
    assert rows_read[published].key == "k"
    rows = backend.rows()
    assert rows[published].published_at is not None
    assert rows[published].attempts == 1
    assert (rows[answered].attempts, rows[answered].last_error) == (2, "broker said no")
    assert rows[answered].published_at is None
    assert rows[answered].failed_at is None
    assert (rows[unreachable].attempts, rows[unreachable].last_error) == (0, "no broker")
    assert (rows[refused].attempts, rows[refused].last_error) == (0, "too large")
    assert (rows[given_up].attempts, rows[given_up].last_error) == (3, "refused 3 times")
    assert all(rows[i].failed_at is not None for i in (refused, given_up, orphan))
    refused_email = backend.email("m-refused")
    assert (refused_email.status, refused_email.last_event) == ("failed", "outbox")
    assert refused_email.response == "etrans: not queued for delivery: too large"
    assert backend.email("m-gone").status == "sent"
    events = [(r.topic, r.key, bytes(r.payload)) for i, r in rows.items() if i > orphan]
    assert events == [("logs", "m-refused", b'{"Event":"Reject"}'), ("logs", None, b"\x01")]
    # Failed rows are never taken again; the retried and the new events are.
    taken: list[int] = []

    def choose(pending: Sequence[tuple[int, int]]) -> list[int]:
        taken.extend(row_id for row_id, _ in pending)
        return []

    await backend.store.relay_pass(10, choose, decide)
    assert taken == [unreachable, *[i for i in rows if i > orphan], answered]


async def test_a_failing_pass_rolls_back(backend: Backend) -> None:
    [row_id] = backend.add({"payload": b"x", "message_id": "m"})
    backend.add_email("m")

    async def decide(rows: Sequence[OutboxRow]) -> PassOutcome:
        raise RuntimeError("publishing blew up")

    with pytest.raises(RuntimeError):
        await backend.store.relay_pass(10, _all, decide)
    assert backend.rows()[row_id].published_at is None
    assert await backend.store.relay_pass(10, _all, _publish_all) == PassOutcome(
        published=[row_id])
    assert backend.rows()[row_id].published_at is not None


async def test_delete_published_removes_only_old_published_rows_up_to_the_limit(
        backend: Backend) -> None:
    now = datetime.now(UTC)
    old = now - timedelta(hours=25)
    olds = backend.add(*[{"payload": b"o", "published_at": old - timedelta(seconds=i)}
                         for i in range(3)])
    kept = backend.add({"payload": b"new", "published_at": now},
                       {"payload": b"pending", "created_at": old},
                       {"payload": b"failed", "failed_at": old})
    assert await backend.store.delete_published(24 * 3600.0, 2) == 2
    assert set(backend.rows()) == {olds[0], *kept}  # the oldest went first
    assert await backend.store.delete_published(24 * 3600.0, 2) == 1
    assert await backend.store.delete_published(24 * 3600.0, 2) == 0
    assert set(backend.rows()) == set(kept)


# -- scheduled emails: waiting rows (due_at) ------------------------------------------------------

async def test_a_pass_never_takes_a_waiting_row(backend: Backend) -> None:
    soon = datetime.now(UTC) + timedelta(hours=1)
    past = datetime.now(UTC) - timedelta(seconds=1)
    _, _, pending = backend.add({"payload": b"w", "due_at": soon},
                                {"payload": b"due, not released", "due_at": past},
                                {"payload": b"p"})
    seen: list[int] = []

    def choose(rows: Sequence[tuple[int, int]]) -> list[int]:
        seen.extend(row_id for row_id, _ in rows)
        return []

    await backend.store.relay_pass(10, choose, _publish_all)
    assert seen == [pending]


async def test_release_due_makes_due_rows_pending_earliest_first_and_their_emails_queued(
        backend: Backend) -> None:
    now = datetime.now(UTC)
    for name in ("m-late", "m-early", "m-future", "m-cancelled"):
        backend.add_email(name, status="scheduled")
    late, early, future, gone_email, event = backend.add(
        {"payload": b"1", "message_id": "m-late", "due_at": now - timedelta(seconds=1)},
        {"payload": b"2", "message_id": "m-early", "due_at": now - timedelta(seconds=60)},
        {"payload": b"3", "message_id": "m-future", "due_at": now + timedelta(hours=1)},
        {"payload": b"4", "message_id": "m-other", "due_at": now - timedelta(seconds=30)},
        {"payload": b"5", "due_at": now - timedelta(seconds=10)})
    backend.add({"payload": b"p", "due_at": now - timedelta(days=1),
                 "published_at": now})  # published: not waiting
    assert await backend.store.release_due(2) == 2  # the two earliest: early and gone_email
    rows = backend.rows()
    assert [i for i in (late, early, future, gone_email, event) if rows[i].due_at is None] == [
        early, gone_email]
    assert backend.email("m-early").status == "queued"
    assert backend.email("m-late").status == "scheduled"
    assert await backend.store.release_due(10) == 2  # event (no email) and late
    assert await backend.store.release_due(10) == 0
    assert backend.email("m-late").status == "queued"
    assert backend.email("m-future").status == "scheduled"
    assert backend.rows()[future].due_at is not None
    taken: list[int] = []

    def choose(pending: Sequence[tuple[int, int]]) -> list[int]:
        taken.extend(row_id for row_id, _ in pending)
        return []

    await backend.store.relay_pass(10, choose, _publish_all)
    assert taken == [late, early, gone_email, event]  # then in the relay's order (attempts, id)


async def test_release_due_leaves_a_cancelled_email_as_it_is(backend: Backend) -> None:
    backend.add_email("m-c", status="cancelled")
    backend.add({"payload": b"x", "message_id": "m-c",
                 "due_at": datetime.now(UTC) - timedelta(seconds=1)})
    assert await backend.store.release_due(10) == 1
    assert backend.email("m-c").status == "cancelled"


# -- the backlog (the metrics of serve and dev) ---------------------------------------------------

async def test_backlog_counts_rows_waiting_to_be_published_and_the_oldest_wait(
        backend: Backend) -> None:
    assert await backend.store.backlog() == (0, 0.0)
    now = datetime.now(UTC)
    backend.add({"payload": b"pending for 30 s", "created_at": now - timedelta(seconds=30)},
                {"payload": b"pending, new"},
                {"payload": b"published", "published_at": now,
                 "created_at": now - timedelta(hours=2)},
                {"payload": b"failed", "failed_at": now, "created_at": now - timedelta(hours=2)},
                {"payload": b"scheduled, not due", "due_at": now + timedelta(hours=1),
                 "created_at": now - timedelta(hours=2)})
    rows, age = await backend.store.backlog()
    assert rows == 2
    assert 30 <= age < 90
    # A scheduled row due for 300 s and not yet released waits since its due time.
    backend.add({"payload": b"overdue", "due_at": now - timedelta(seconds=300),
                 "created_at": now - timedelta(days=1)})
    rows, age = await backend.store.backlog()
    assert rows == 3
    assert 300 <= age < 360


async def test_a_pass_reads_each_rows_traceparent(backend: Backend) -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    ids = backend.add({"payload": b"a", "traceparent": traceparent}, {"payload": b"b"})
    read: list[OutboxRow] = []

    async def decide(rows: Sequence[OutboxRow]) -> PassOutcome:
        read.extend(rows)
        return PassOutcome()

    await backend.store.relay_pass(10, lambda pending: [i for i, _ in pending], decide)
    assert [(r.id, r.traceparent) for r in read] == [(ids[0], traceparent), (ids[1], None)]


async def test_the_events_of_a_failed_row_keep_its_traceparent(backend: Backend) -> None:
    """The Reject and email.failed events queued for a failed row are published later, by
    another pass: they keep the row's trace (the relay puts it in their records' header)."""
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    traced, plain = backend.add(
        {"payload": b"a", "message_id": "m-traced", "traceparent": traceparent},
        {"payload": b"b", "message_id": "m-plain"})
    backend.add_email("m-traced")
    backend.add_email("m-plain")

    async def decide(rows: Sequence[OutboxRow]) -> PassOutcome:
        return PassOutcome(failed=[
            FailedRow(row, "too large", answered=False,
                      events=[("logs", row.message_id.encode() if row.message_id else None,
                               b'{"Event":"Reject"}')]) for row in rows])

    await backend.store.relay_pass(10, _all, decide)
    events = {r.key: r.traceparent for i, r in backend.rows().items() if i > plain}
    assert events == {"m-traced": traceparent, "m-plain": None}
    assert traced < plain


async def test_a_pass_reads_the_chosen_rows_whatever_its_byte_budget(backend: Backend) -> None:
    """``max_bytes`` tells the store what ``choose`` will take (PostgreSQL reads those payloads
    with the lock); the rows ``choose`` picks are read whole whatever it said."""
    ids = backend.add({"payload": b"a" * 10}, {"payload": b"b" * 10}, {"payload": b"c" * 10},
                      {"payload": b"d" * 10})
    read: list[Sequence[OutboxRow]] = []

    async def decide(rows: Sequence[OutboxRow]) -> PassOutcome:
        read.append(rows)
        return PassOutcome()

    def within_25(pending: Sequence[tuple[int, int]]) -> list[int]:
        return [row_id for row_id, _ in pending][:2]

    await backend.store.relay_pass(10, within_25, decide, 25)
    await backend.store.relay_pass(10, _all, decide, 25)  # beyond what it said
    await backend.store.relay_pass(10, lambda pending: [ids[2]], decide, 0)
    assert [[(r.id, r.payload) for r in rows] for rows in read] == [
        [(ids[0], b"a" * 10), (ids[1], b"b" * 10)],
        [(ids[i], bytes([97 + i]) * 10) for i in range(4)],
        [(ids[2], b"c" * 10)]]
