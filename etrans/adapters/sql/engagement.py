"""``email_engagement_events`` (:class:`~etrans.app.ports.EngagementStore`): the opens and
clicks fetchlog consumes from KAFKA_EVENTS_TOPIC, one statement per batch.

PostgreSQL: one ``INSERT ... SELECT FROM unnest(...) JOIN email_messages ... ON CONFLICT
(event_id) DO NOTHING``; SQLite (``etrans dev``): the same INSERT ... SELECT, executed for every
row of the batch in one ``executemany`` and one transaction.  The join keeps out message ids that
are no email of the USEND DB (nothing to count them on), the key keeps out events already
recorded (a replay, a retried batch).  ``email_messages.status`` is never touched: an open does
not undo a bounce.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from etrans.errors import RetryLater

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy import Connection

    from etrans.adapters.sql import Database
    from etrans.domain.engagement import Engagement

_PG_RECORD = """
INSERT INTO email_engagement_events (event_id, message_id, kind, url, user_agent, at)
SELECT v.event_id, m.message_id, v.kind, v.url, v.user_agent, v.at
FROM unnest(CAST(:event_ids AS text[]), CAST(:message_ids AS text[]), CAST(:kinds AS text[]),
            CAST(:urls AS text[]), CAST(:agents AS text[]), CAST(:ats AS timestamptz[]))
     AS v(event_id, message_id, kind, url, user_agent, at)
JOIN email_messages AS m ON m.message_id = v.message_id
ON CONFLICT (event_id) DO NOTHING
"""

# SQLite needs the WHERE to tell the SELECT's end from the upsert clause.
_SQLITE_RECORD = """
INSERT INTO email_engagement_events (event_id, message_id, kind, url, user_agent, at)
SELECT :event_id, m.message_id, :kind, :url, :agent, :at
FROM email_messages AS m WHERE m.message_id = :message_id
ON CONFLICT (event_id) DO NOTHING
"""


class SqlEngagementStore:
    """Records opens and clicks of API emails in the USEND DB ``database`` (PostgreSQL or
    ``etrans dev``'s SQLite)."""

    name = "usend_db"

    def __init__(self, database: Database) -> None:
        self.database = database

    async def record(self, engagements: Sequence[Engagement]) -> int:
        if not engagements:
            return 0
        return await self.database.run(self._record, engagements)

    def _record(self, engagements: Sequence[Engagement]) -> int:
        from sqlalchemy.exc import SQLAlchemyError

        ordered = sorted(engagements, key=lambda e: e.event_id)
        try:
            with self.database.engine.begin() as conn:
                if conn.dialect.name == "sqlite":
                    return self._sqlite(conn, ordered)
                return self._postgresql(conn, ordered)
        except SQLAlchemyError as exc:
            raise RetryLater(
                f"USEND DB engagement events failed: {exc.__class__.__name__}") from exc

    @staticmethod
    def _postgresql(conn: Connection, ordered: Sequence[Engagement]) -> int:
        from sqlalchemy import text

        params = {
            "event_ids": [e.event_id for e in ordered],
            "message_ids": [e.message_id for e in ordered],
            "kinds": [e.kind for e in ordered],
            "urls": [e.url for e in ordered],
            "agents": [e.user_agent for e in ordered],
            "ats": [e.at for e in ordered],
        }
        return int(conn.execute(text(_PG_RECORD), params).rowcount or 0)

    @staticmethod
    def _sqlite(conn: Connection, ordered: Sequence[Engagement]) -> int:
        from sqlalchemy import bindparam, text

        from etrans.adapters.sql.portable import TIMESTAMPTZ

        statement = text(_SQLITE_RECORD).bindparams(bindparam("at", type_=TIMESTAMPTZ))
        rows = [{"event_id": e.event_id, "message_id": e.message_id, "kind": e.kind,
                 "url": e.url, "agent": e.user_agent, "at": e.at} for e in ordered]
        return int(conn.execute(statement, rows).rowcount or 0)

    async def check(self) -> None:
        await self.database.check()


def engagement_summary(conn: Connection, message_id: str) -> dict[str, Any]:
    """GET /emails/{id}'s ``opens``, ``clicks``, ``first_opened_at``, ``first_clicked_at`` of
    one email (0 and None when it has none): one grouped query on the table's index."""
    from sqlalchemy import func, select

    from etrans.adapters.sql.usend_engagement import EmailEngagementEvent

    table = EmailEngagementEvent.__table__
    query = (select(table.c.kind, func.count(), func.min(table.c.at))
             .where(table.c.message_id == message_id).group_by(table.c.kind))
    found = {kind: (int(count), first) for kind, count, first in conn.execute(query)}
    opens, first_open = found.get("open", (0, None))
    clicks, first_click = found.get("click", (0, None))
    return {"opens": opens, "clicks": clicks, "first_opened_at": first_open,
            "first_clicked_at": first_click}
