"""Group commit of POST /emails rows (etrans.adapters.sql.group_commit through UsendRepository.save)
against real PostgreSQL: concurrent saves share transactions, every caller's rows are committed
before it returns, a bad caller's rows fail alone, a database outage fails every caller."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
import trio
from sqlalchemy import func, select

from etrans.adapters.sql import usend_database
from etrans.adapters.sql.usend import EmailMessage, EmailOutbox
from etrans.adapters.sql.usend_repo import UsendRepository
from etrans.app.records import NewEmail
from etrans.errors import InvalidInput

EMAILS = EmailMessage.__table__
OUTBOX = EmailOutbox.__table__


def _email(user_id: int, message_id: str | None = None) -> NewEmail:
    message_id = message_id or f"<{uuid.uuid4().hex}@group.example>"
    return NewEmail(
        message_id=message_id, user_id=user_id, domain_id=None,
        from_address="a@group.example", to=["b@example.org"], cc=[], bcc=[], reply_to=None,
        subject="s", html=None, text="t", headers=None, tags=None, attachments=None,
        template_id=None, template_data=None, created_at=datetime.now(UTC), topic="t",
        kafka_key=message_id.encode(), kafka_value=b"{}",
    )


@pytest.fixture
def repo(usend_db_url: str) -> Any:
    db = usend_database(usend_db_url, pool_size=4)
    yield UsendRepository(db), db
    db.dispose()


def _counts(db: Any, user_id: int) -> tuple[int, int]:
    with db.engine.connect() as conn:
        rows = conn.execute(select(func.count()).select_from(EMAILS)
                            .where(EMAILS.c.user_id == user_id)).scalar()
        outbox = conn.execute(
            select(func.count()).select_from(OUTBOX.join(
                EMAILS, EMAILS.c.message_id == OUTBOX.c.message_id))
            .where(EMAILS.c.user_id == user_id)).scalar()
    return int(rows or 0), int(outbox or 0)


def test_concurrent_saves_share_transactions_and_are_committed_on_return(repo: Any) -> None:
    store, db = repo
    user_id = 900_000_000 + uuid.uuid4().int % 90_000_000
    seen_after_return: list[bool] = []

    async def one(email: NewEmail) -> None:
        await store.save([email])
        # Committed before save returned: visible from another connection right away.
        with db.engine.connect() as conn:
            seen_after_return.append(conn.execute(
                select(func.count()).select_from(OUTBOX)
                .where(OUTBOX.c.message_id == email.message_id)).scalar() == 1)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(200):
                nursery.start_soon(one, _email(user_id))

    trio.run(main)
    stats = store.statistics()["group_commit"]
    assert _counts(db, user_id) == (200, 200)
    assert all(seen_after_return)
    assert len(seen_after_return) == 200
    assert stats.items == 200
    assert stats.rounds < 200  # some callers shared a transaction
    assert stats.largest_round > 1


def test_a_bad_caller_fails_alone_and_its_rows_are_all_or_nothing(repo: Any) -> None:
    store, db = repo
    user_id = 900_000_000 + uuid.uuid4().int % 90_000_000
    taken = f"<{uuid.uuid4().hex}@group.example>"
    trio.run(store.save, [_email(user_id, taken)])
    outcomes: dict[int, str] = {}

    async def one(index: int, emails: list[NewEmail]) -> None:
        try:
            await store.save(emails)
            outcomes[index] = "ok"
        except psycopg.IntegrityError:
            outcomes[index] = "IntegrityError"
        except Exception as exc:
            outcomes[index] = type(exc).__name__

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for index in range(30):
                # Caller 7 repeats a taken message_id next to a fresh one: both must fail.
                emails = ([_email(user_id), _email(user_id, taken)] if index == 7
                          else [_email(user_id)])
                nursery.start_soon(one, index, emails)

    trio.run(main)
    assert outcomes.pop(7) == "IntegrityError"
    assert set(outcomes.values()) == {"ok"}
    assert _counts(db, user_id) == (1 + 29, 1 + 29)


def test_database_down_fails_every_caller(fresh_database: Any) -> None:
    from etrans.adapters.sql import migrations

    url = fresh_database("groupdown")
    migrations.upgrade(url)
    db = usend_database(url.rsplit("/", 1)[0] + "/no_such_database_" + uuid.uuid4().hex[:8],
                        pool_size=2)
    store = UsendRepository(db)
    outcomes: list[str] = []

    async def one() -> None:
        try:
            await store.save([_email(1)])
            outcomes.append("ok")
        except Exception as exc:
            outcomes.append(type(exc).__name__)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(one)

    try:
        trio.run(main)
    finally:
        db.dispose()
    assert outcomes == ["OperationalError"] * 10
    # No per-caller retries after a connection failure: at most one attempt per round.
    assert store.statistics()["group_commit"].split_rounds == 0


def test_cancelled_callers_are_committed_as_if_uncancelled(repo: Any) -> None:
    # Like a cancelled uncancellable thread call: a caller cancelled while waiting for its round
    # (or while leading one) gets its rows committed; nobody's round is left half-handled.
    store, db = repo
    user_id = 900_000_000 + uuid.uuid4().int % 90_000_000
    finished: list[str] = []

    async def one(email: NewEmail) -> None:
        try:
            await store.save([email])
        finally:
            finished.append(email.message_id)

    async def main() -> None:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                for _ in range(40):
                    nursery.start_soon(one, _email(user_id))
                await trio.lowlevel.checkpoint()
                scope.cancel()
        # The cancellation reached every caller only after its save had an outcome.
        assert len(finished) == 40

    trio.run(main)
    assert _counts(db, user_id) == (40, 40)


def test_the_outbox_payload_is_the_exact_bytes_and_json_columns_keep_null(repo: Any) -> None:
    # The group's rows travel as one JSON document: the Kafka payload must come back byte for
    # byte (non-ASCII, escapes, quotes), a NULL column must stay NULL, an empty list stay [].
    store, db = repo
    user_id = 900_000_000 + uuid.uuid4().int % 90_000_000
    payload = ('{"payload":{"subject":"Grüße \\"quoted\\" ✓","body":"line\\nnext\\\\ \\u0000",'
               '"to":["Zoë <z@example.org>"]}}').encode()
    plain, rich = _email(user_id), _email(user_id)
    rich = dataclasses.replace(rich, kafka_value=payload, headers={"X-A": "é"},
                               tags=[{"name": "t"}], cc=[], subject="Grüße ✓")

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for email in (plain, rich):
                nursery.start_soon(store.save, [email])

    trio.run(main)
    with db.engine.connect() as conn:
        stored = conn.execute(select(OUTBOX.c.payload).where(
            OUTBOX.c.message_id == rich.message_id)).scalar()
        row = conn.execute(select(EMAILS).where(EMAILS.c.message_id == rich.message_id)).one()
        other = conn.execute(select(EMAILS).where(EMAILS.c.message_id == plain.message_id)).one()
    assert bytes(stored) == rich.kafka_value
    assert (row.headers, row.tags, row.cc_addresses, row.subject) == (
        rich.headers, rich.tags, [], rich.subject)
    assert (other.headers, other.tags, other.attachments) == (None, None, None)


def test_a_bad_caller_among_50_good_ones_splits_the_round_by_halves(repo: Any) -> None:
    # A data error (here NUL, which PostgreSQL text cannot store) in a round of 51 callers: the
    # bad one fails alone and the 50 good ones are still written in shared statements, not one
    # statement each (52 statements before: the failed round, then one per caller).
    store, db = repo
    user_id = 900_000_000 + uuid.uuid4().int % 90_000_000
    outcomes: dict[int, str] = {}
    statements: list[int] = []
    write_group = store._writer._write_group

    async def counted(emails: list[NewEmail]) -> None:
        statements.append(len(emails))
        await write_group(emails)

    store._writer._write_group = counted

    async def one(index: int, email: NewEmail) -> None:
        try:
            await store.save([email])
            outcomes[index] = "ok"
        except InvalidInput as exc:  # a 400: the database refused the data (NUL)
            outcomes[index] = type(exc.__cause__).__name__

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            # The first caller leads a round alone; the 51 others queue behind it: one round.
            nursery.start_soon(one, -1, _email(user_id))
            await trio.lowlevel.checkpoint()
            for index in range(51):
                email = _email(user_id)
                if index == 30:
                    email = dataclasses.replace(email, subject="bad \x00 subject")
                nursery.start_soon(one, index, email)

    trio.run(main)
    stats = store.statistics()["group_commit"]
    assert outcomes.pop(30) == "UntranslatableCharacter"  # a psycopg.DataError
    assert set(outcomes.values()) == {"ok"}
    assert _counts(db, user_id) == (51, 51)
    assert stats.largest_round == 51
    assert stats.split_rounds == 1
    # 1 (the first round) + 1 (the failed round) + halving down to the bad caller: 2 per level.
    assert len(statements) <= 2 + 2 * 6, statements
    assert stats.statements == len(statements)
