"""Cancelling and moving scheduled emails in the USEND DB: port
:class:`etrans.app.schedule_ports.ScheduleStore`.

Portable SQLAlchemy Core: the same class runs on PostgreSQL and on ``etrans dev``'s SQLite file
(``tests/contract/test_schedule_store_contract.py``).  One transaction per change, locking the
email's waiting outbox row first and then writing the email: the order of the relay's release
(:mod:`etrans.adapters.sql.outbox_store`), so the two cannot deadlock.  If the relay holds the
row, the change waits for its commit, then finds the row no longer waiting (PostgreSQL re-reads
a locked row's predicate) and answers the status the relay gave (``queued``): never a cancelled
email that is sent, nor a sent email shown cancelled.  On SQLite, ``BEGIN IMMEDIATE`` serialises
the two.  Blocking work runs in ``Database.run``; a database that does not answer is
UpstreamUnavailable (503).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import OperationalError

from etrans.adapters.sql.usend import EmailMessage, EmailOutbox
from etrans.app.records import ScheduleChange
from etrans.domain.status import RAW_CANCELLED, RAW_SCHEDULED
from etrans.errors import UpstreamUnavailable

if TYPE_CHECKING:
    from etrans.adapters.sql import Database

_EMAILS = EmailMessage.__table__
_OUTBOX = EmailOutbox.__table__


class SqlSchedules:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def cancel(self, user_id: int, message_id: str) -> ScheduleChange | None:
        return await self._run(user_id, message_id, None)

    async def move(self, user_id: int, message_id: str, at: datetime
                   ) -> ScheduleChange | None:
        return await self._run(user_id, message_id, at)

    async def _run(self, user_id: int, message_id: str, at: datetime | None
                   ) -> ScheduleChange | None:
        try:
            return await self.db.run(self._change, user_id, message_id, at)
        except OperationalError as exc:
            raise UpstreamUnavailable("USEND DB unavailable", retry_after_seconds=5) from exc

    def _change(self, user_id: int, message_id: str, at: datetime | None
                ) -> ScheduleChange | None:
        """``at`` None: cancel; else move to ``at``."""
        e, o = _EMAILS.c, _OUTBOX.c
        mine = (e.user_id == user_id, e.message_id == message_id)
        with self.db.engine.begin() as conn:
            email = conn.execute(select(e.status, e.scheduled_at).where(*mine)).first()
            if email is None:
                return None
            waiting = None
            if email.status == RAW_SCHEDULED:
                waiting = conn.execute(
                    select(o.id).where(o.message_id == message_id, o.due_at.is_not(None),
                                       o.published_at.is_(None), o.failed_at.is_(None))
                    .with_for_update()).scalar()
            if waiting is None:  # not scheduled, or released by the relay meanwhile
                now = conn.execute(select(e.status, e.scheduled_at).where(*mine)).one()
                return _change(message_id, now, changed=False)
            changed_at = datetime.now(UTC)
            if at is None:
                conn.execute(delete(_OUTBOX).where(o.id == waiting))
                values: dict[str, Any] = {"status": RAW_CANCELLED}
            else:
                conn.execute(update(_OUTBOX).where(o.id == waiting).values(due_at=at))
                values = {"scheduled_at": at}
            conn.execute(update(_EMAILS).where(*mine).values(updated_at=changed_at, **values))
            after = conn.execute(select(e.status, e.scheduled_at).where(*mine)).one()
        return _change(message_id, after, changed=True)


def _change(message_id: str, row: Any, *, changed: bool) -> ScheduleChange:
    return ScheduleChange(message_id=message_id, status=row.status,
                          scheduled_at=row.scheduled_at, changed=changed)
