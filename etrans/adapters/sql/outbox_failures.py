"""The outbox rows the relay gave up on (:class:`~etrans.app.redrive.FailedOutbox` in SQL).

A row gets ``failed_at`` when the Kafka producer refused it at once or the broker refused it
``ETRANS_OUTBOX_MAX_ATTEMPTS`` times (``etrans/adapters/sql/outbox.py``); its email became
``failed``.  Once the cause is fixed (a topic's ``max.message.bytes`` raised, a producer limit
corrected), :meth:`SqlFailedOutbox.retry` clears ``failed_at``, ``attempts`` and ``last_error``
so that the relay publishes the row again, and sets its email back to ``queued``.  The Reject
and ``email.failed`` events published when it failed are not taken back.

SQLAlchemy Core in a worker thread: the same statements on PostgreSQL and on ``etrans dev``'s
SQLite.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import select, update

from etrans.adapters.sql.usend import EmailMessage, EmailOutbox
from etrans.app.redrive import FailedOutboxRow

if TYPE_CHECKING:
    from collections.abc import Sequence

    from etrans.adapters.sql import Database

_OUTBOX = EmailOutbox.__table__
_EMAILS = EmailMessage.__table__


class SqlFailedOutbox:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def failed_rows(self, *, ids: Sequence[int] = (), topic: str | None = None
                          ) -> list[FailedOutboxRow]:
        return await self._db.run(self._failed_rows, list(ids), topic)

    def _failed_rows(self, ids: list[int], topic: str | None) -> list[FailedOutboxRow]:
        query = (select(_OUTBOX.c.id, _OUTBOX.c.topic, _OUTBOX.c.message_id, _OUTBOX.c.attempts,
                        _OUTBOX.c.failed_at, _OUTBOX.c.last_error)
                 .where(_OUTBOX.c.failed_at.is_not(None), _OUTBOX.c.published_at.is_(None))
                 .order_by(_OUTBOX.c.failed_at, _OUTBOX.c.id))
        if ids:
            query = query.where(_OUTBOX.c.id.in_(ids))
        if topic is not None:
            query = query.where(_OUTBOX.c.topic == topic)
        with self._db.engine.connect() as conn:
            return [FailedOutboxRow(row.id, row.topic, row.message_id, row.attempts,
                                    row.failed_at, row.last_error)
                    for row in conn.execute(query)]

    async def retry(self, ids: Sequence[int]) -> int:
        return await self._db.run(self._retry, list(ids))

    def _retry(self, ids: list[int]) -> int:
        still_failed = (_OUTBOX.c.id.in_(ids), _OUTBOX.c.failed_at.is_not(None),
                        _OUTBOX.c.published_at.is_(None))
        with self._db.engine.begin() as conn:
            message_ids = [m for (m,) in conn.execute(
                select(_OUTBOX.c.message_id).where(*still_failed).with_for_update())
                if m is not None]
            count = conn.execute(update(_OUTBOX).where(*still_failed).values(
                failed_at=None, attempts=0, last_error=None)).rowcount
            if message_ids:
                conn.execute(update(_EMAILS).where(
                    _EMAILS.c.message_id.in_(message_ids), _EMAILS.c.status == "failed",
                    _EMAILS.c.last_event == "outbox",
                ).values(status="queued", response=None, updated_at=datetime.now(UTC)))
        return int(count)
