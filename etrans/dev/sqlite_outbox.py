"""The outbox rows of ``etrans dev`` on SQLite: :class:`SqliteOutboxStore`, the
:class:`~etrans.adapters.sql.outbox_store.OutboxStore` of the embedded USEND DB.

A pass is one transaction in a worker thread (SQLite's connections are blocking); the relay's
``decide`` (publishing) is called back on the Trio thread with ``trio.from_thread.run``, while
the transaction holds the rows.  ``BEGIN IMMEDIATE`` (:func:`etrans.dev.sqlite_db.sqlite_engine`)
serialises passes, so ``FOR UPDATE SKIP LOCKED`` has nothing to skip here.  Same rules as the
PostgreSQL store (``tests/contract/test_outbox_store_contract.py``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import trio
from sqlalchemy import delete, func, insert, select, update

from etrans.adapters.sql.outbox_store import OutboxRow, PassOutcome
from etrans.adapters.sql.usend import EmailMessage, EmailOutbox

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from etrans.adapters.sql import Database

_OUTBOX = EmailOutbox.__table__
_EMAILS = EmailMessage.__table__


class SqliteOutboxStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def relay_pass(
            self, limit: int, choose: Callable[[Sequence[tuple[int, int]]], list[int]],
            decide: Callable[[Sequence[OutboxRow]], Awaitable[PassOutcome]],
            max_bytes: int = 0) -> PassOutcome:
        # max_bytes: no round trips to save in-process (choose alone decides).
        return await self._db.run(self._pass, limit, choose, decide)

    def _pass(self, limit: int, choose: Callable[[Sequence[tuple[int, int]]], list[int]],
              decide: Callable[[Sequence[OutboxRow]], Awaitable[PassOutcome]]) -> PassOutcome:
        c = _OUTBOX.c
        pending = (select(c.id, func.length(c.payload))
                   .where(c.published_at.is_(None), c.failed_at.is_(None), c.due_at.is_(None))
                   .order_by(c.attempts, c.id).limit(limit)
                   .with_for_update(skip_locked=True))
        with self._db.engine.begin() as conn:
            ids = choose([(r[0], r[1] or 0) for r in conn.execute(pending).all()])
            if not ids:
                return PassOutcome()
            query = (select(c.id, c.topic, c.key, c.payload, c.message_id, c.attempts,
                            c.traceparent).where(c.id.in_(ids)).order_by(c.attempts, c.id))
            rows = [OutboxRow(r.id, r.topic, r.key, bytes(r.payload), r.message_id, r.attempts,
                              r.traceparent) for r in conn.execute(query).all()]
            outcome = trio.from_thread.run(decide, rows)
            _write(conn, outcome)
        return outcome

    async def delete_published(self, older_than_seconds: float, limit: int) -> int:
        return await self._db.run(self._delete_batch, older_than_seconds, limit)

    def _delete_batch(self, older_than_seconds: float, limit: int) -> int:
        c = _OUTBOX.c
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_seconds)
        oldest = (select(c.id).where(c.published_at.is_not(None), c.published_at < cutoff)
                  .order_by(c.published_at).limit(limit))
        with self._db.engine.begin() as conn:
            return int(conn.execute(delete(_OUTBOX).where(c.id.in_(oldest))).rowcount or 0)

    async def release_due(self, limit: int) -> int:
        return await self._db.run(self._release_due, limit)

    def _release_due(self, limit: int) -> int:
        c = _OUTBOX.c
        now = datetime.now(UTC)
        due = (select(c.id, c.message_id)
               .where(c.published_at.is_(None), c.failed_at.is_(None), c.due_at.is_not(None),
                      c.due_at <= now)
               .order_by(c.due_at).limit(limit))
        with self._db.engine.begin() as conn:
            rows = conn.execute(due).all()
            if not rows:
                return 0
            conn.execute(update(_OUTBOX).where(c.id.in_([r.id for r in rows])).values(due_at=None))
            conn.execute(update(_EMAILS).where(
                _EMAILS.c.message_id.in_([r.message_id for r in rows if r.message_id]),
                _EMAILS.c.status == "scheduled").values(status="queued", updated_at=now))
        return len(rows)

    async def backlog(self) -> tuple[int, float]:
        return await self._db.run(self._backlog)

    def _backlog(self) -> tuple[int, float]:
        c = _OUTBOX.c
        now = datetime.now(UTC)
        unpublished = (c.published_at.is_(None), c.failed_at.is_(None))
        with self._db.engine.connect() as conn:
            pending, created = conn.execute(select(func.count(), func.min(c.created_at))
                                            .where(*unpublished, c.due_at.is_(None))).one()
            overdue, due = conn.execute(select(func.count(), func.min(c.due_at)).where(
                *unpublished, c.due_at.is_not(None), c.due_at <= now)).one()
        ages = [(now - (t if t.tzinfo else t.replace(tzinfo=UTC))).total_seconds()
                for t in (created, due) if t is not None]
        return int(pending) + int(overdue), max([0.0, *ages])

    async def aclose(self) -> None:
        """Nothing of its own: the engine belongs to the caller."""


def _write(conn: Any, outcome: PassOutcome) -> None:
    c = _OUTBOX.c
    now = datetime.now(UTC)
    if outcome.published:
        conn.execute(update(_OUTBOX).where(c.id.in_(outcome.published))
                     .values(published_at=now, attempts=c.attempts + 1))
    for row_id, error in outcome.answered.items():
        conn.execute(update(_OUTBOX).where(c.id == row_id)
                     .values(attempts=c.attempts + 1, last_error=error))
    for row_id, error in outcome.unreachable.items():
        conn.execute(update(_OUTBOX).where(c.id == row_id).values(last_error=error))
    for failed in outcome.failed:
        row = failed.row
        conn.execute(update(_OUTBOX).where(c.id == row.id).values(
            failed_at=now, attempts=c.attempts + int(failed.answered), last_error=failed.reason))
        if row.message_id is None:
            continue
        conn.execute(update(_EMAILS).where(_EMAILS.c.message_id == row.message_id,
                                           _EMAILS.c.status == "queued")
                     .values(status="failed", last_event="outbox", response=failed.response,
                             updated_at=now))
        for topic, key, value in failed.events:
            conn.execute(insert(_OUTBOX).values(
                topic=topic, key=key.decode() if key is not None else None, payload=value,
                created_at=now, traceparent=row.traceparent))
