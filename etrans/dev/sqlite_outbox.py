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
from etrans.adapters.sql.usend import EmailMessage, EmailOutbox, EmailRecipientOutcome
from etrans.app.scheduled_release import DueEmail
from etrans.domain.suppressions import normalise_address

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from etrans.adapters.sql import Database
    from etrans.app.schedule_ports import DueEmailScreen
    from etrans.app.scheduled_release import Release

_OUTBOX = EmailOutbox.__table__
_EMAILS = EmailMessage.__table__
_OUTCOMES = EmailRecipientOutcome.__table__


def _due_now(now: datetime) -> tuple[Any, ...]:
    """A waiting row whose time has come."""
    c = _OUTBOX.c
    return (c.published_at.is_(None), c.failed_at.is_(None), c.due_at.is_not(None),
            c.due_at <= now)


class SqliteOutboxStore:
    def __init__(self, db: Database, screen: DueEmailScreen | None = None) -> None:
        self._db = db
        self._screen = screen  # the suppression list checked again at release (as PostgreSQL)

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
        if self._screen is None:
            return await self._db.run(self._release, self._due(limit), [])
        # Every SQLite transaction here is BEGIN IMMEDIATE (the suppression list's lookup too),
        # so the screen cannot run inside the release's: the due rows are read, screened, then
        # released in a transaction that takes only those still due (a cancelled or moved one
        # is not).  A suppression added in between (milliseconds) is missed, as a send's
        # unguarded lookup would miss it; ``etrans dev`` has one relay, so a row is released
        # once.
        due = await self._db.run(self._due_emails, limit)
        emails = [email for email, _ in due if email is not None]
        releases = list(await self._screen.screen(emails)) if emails else []
        return await self._db.run(self._release, [row for _, row in due], releases)

    def _due(self, limit: int) -> Any:
        c = _OUTBOX.c
        return (select(c.id, c.message_id, c.traceparent, _EMAILS.c.user_id,
                       _EMAILS.c.to_addresses, _EMAILS.c.cc_addresses, _EMAILS.c.bcc_addresses,
                       _EMAILS.c.from_address)
                .select_from(_OUTBOX.outerjoin(_EMAILS, (_EMAILS.c.message_id == c.message_id)
                                               & (_EMAILS.c.status == "scheduled")))
                .where(*_due_now(datetime.now(UTC))).order_by(c.due_at).limit(limit))

    def _due_emails(self, limit: int) -> list[tuple[DueEmail | None, int]]:
        """The due rows' ids, with what the screen reads of the scheduled emails among them."""
        o = _OUTCOMES.c
        with self._db.engine.begin() as conn:
            rows = conn.execute(self._due(limit)).all()
            listed: dict[str, set[str]] = {}
            for message_id, recipient in conn.execute(select(o.message_id, o.recipient).where(
                    o.message_id.in_([r.message_id for r in rows if r.user_id is not None]),
                    o.outcome == "suppressed")):
                listed.setdefault(message_id, set()).add(recipient)
        return [(DueEmail(r.id, r.message_id, int(r.user_id), tuple(r.to_addresses or ()),
                          tuple(r.cc_addresses or ()), tuple(r.bcc_addresses or ()),
                          frozenset(listed.get(r.message_id, ())), r.from_address or "")
                 if r.user_id is not None else None, r.id) for r in rows]

    def _release(self, due: Any, releases: Sequence[Release]) -> int:
        """Release the ``due`` rows (a query, or ids) still due; ``releases``: what the screen
        found in them."""
        c = _OUTBOX.c
        now = datetime.now(UTC)
        with self._db.engine.begin() as conn:
            ids = (list(due) if isinstance(due, list)
                   else [r.id for r in conn.execute(due).all()])
            rows = conn.execute(select(c.id, c.message_id, c.traceparent)
                                .where(c.id.in_(ids), *_due_now(now))).all()
            if not rows:
                return 0
            still = {r.id for r in rows}
            found = [r for r in releases if r.row_id in still]
            dropped = {r.row_id for r in found if r.nothing_left or r.failure is not None}
            _write_suppressed(conn, found, {r.id: r.traceparent for r in rows}, now)
            conn.execute(update(_OUTBOX).where(c.id.in_(still - dropped)).values(due_at=None))
            conn.execute(update(_EMAILS).where(
                _EMAILS.c.message_id.in_([r.message_id for r in rows
                                          if r.message_id and r.id not in dropped]),
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


def _write_suppressed(conn: Any, releases: Sequence[Release],
                      traceparents: dict[int, str | None], now: datetime) -> None:
    """The recipients newly suppressed at release: their outcomes and events, the rows of
    emails with no recipient left deleted (status suppressed), the others' payloads without
    them; the emails that fail, failed (etrans.adapters.sql.outbox_release on PostgreSQL)."""
    c = _OUTBOX.c
    for release in releases:
        for s in release.suppressed:
            recipient = normalise_address(s.email)
            conn.execute(delete(_OUTCOMES).where(_OUTCOMES.c.message_id == release.message_id,
                                                 _OUTCOMES.c.recipient == recipient))
            conn.execute(insert(_OUTCOMES).values(
                message_id=release.message_id, recipient=recipient, outcome="suppressed",
                response=s.reason, event_at=now, updated_at=now))
        for topic, key, value in release.events:
            conn.execute(insert(_OUTBOX).values(
                topic=topic, key=key.decode(), payload=value, created_at=now,
                traceparent=traceparents.get(release.row_id)))
        if release.failure is not None:
            conn.execute(update(_OUTBOX).where(c.id == release.row_id).values(
                failed_at=now, due_at=None, last_error=release.failure))
            conn.execute(update(_EMAILS).where(_EMAILS.c.message_id == release.message_id,
                                               _EMAILS.c.status == "scheduled")
                         .values(status="failed", last_event="outbox",
                                 response=release.failure, updated_at=now))
        elif release.nothing_left:
            conn.execute(delete(_OUTBOX).where(c.id == release.row_id))
            conn.execute(update(_EMAILS).where(_EMAILS.c.message_id == release.message_id,
                                               _EMAILS.c.status == "scheduled")
                         .values(status="suppressed", updated_at=now))
        else:
            payload = conn.execute(select(c.payload).where(c.id == release.row_id)).scalar_one()
            conn.execute(update(_OUTBOX).where(c.id == release.row_id)
                         .values(payload=release.payload(bytes(payload))))


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
