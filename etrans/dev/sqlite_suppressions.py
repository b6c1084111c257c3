"""The suppression list of ``etrans dev``: :class:`~etrans.adapters.sql.suppressions_repo.
PgSuppressionStore` on the SQLite USEND DB (:mod:`etrans.dev.sqlite_db`).

The three statements written in PostgreSQL's dialect get portable equivalents: the lookup is
``address IN (...)`` on the primary key, and the inserts go one per entry (``ON CONFLICT DO
NOTHING``, in one transaction: SQLite's writer lock makes the batch atomic).  ``created_at`` is
set here with microseconds, as the PostgreSQL clock does (SQLite's default has whole seconds).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, select, text

from etrans.adapters.sql.portable import TIMESTAMPTZ
from etrans.adapters.sql.suppressions_repo import (
    COLUMNS,
    TABLE,
    PgSuppressionStore,
    to_record,
)
from etrans.domain.suppressions import SuppressionReason

if TYPE_CHECKING:
    from collections.abc import Sequence

    from etrans.app.records import Suppression
    from etrans.domain.delivery_log import RecipientOutcome

_ADD_ONE = text("""
INSERT INTO suppressions (user_id, address, reason, message_id, response, created_at)
VALUES (:user_id, :address, :reason, :message_id, :response, :created_at)
ON CONFLICT (user_id, address) DO NOTHING
""").bindparams(bindparam("created_at", type_=TIMESTAMPTZ))

_ADD_HARD_BOUNCE = text(f"""
INSERT INTO suppressions (user_id, address, reason, message_id, response, created_at)
SELECT user_id, :recipient, '{SuppressionReason.HARD_BOUNCE}', :message_id, :response, :now
FROM email_messages WHERE message_id = :message_id
ON CONFLICT (user_id, address) DO NOTHING
""").bindparams(bindparam("now", type_=TIMESTAMPTZ))


class SqliteSuppressionStore(PgSuppressionStore):
    """The suppression list in ``usend.sqlite3``."""

    def _suppressed(self, user_id: int, addresses: list[str]) -> list[Suppression]:
        query = select(*COLUMNS).where(TABLE.c.user_id == user_id,
                                       TABLE.c.address.in_(addresses))
        with self.database.engine.connect() as conn:
            return [to_record(row) for row in conn.execute(query)]

    def _add(self, entries: Sequence[Suppression]) -> int:
        now = datetime.now(UTC)
        added = 0
        with self.database.engine.begin() as conn:
            for e in entries:
                added += int(conn.execute(_ADD_ONE, {
                    "user_id": e.user_id, "address": e.address, "reason": e.reason,
                    "message_id": e.message_id, "response": e.response,
                    "created_at": e.created_at or now}).rowcount or 0)
        return added

    def _add_hard_bounces(self, outcomes: Sequence[RecipientOutcome]) -> int:
        now = datetime.now(UTC)
        added = 0
        with self.database.engine.begin() as conn:
            for o in outcomes:
                added += int(conn.execute(_ADD_HARD_BOUNCE, {
                    "recipient": o.recipient, "message_id": o.message_id,
                    "response": o.response, "now": now}).rowcount or 0)
        return added


__all__ = ["SqliteSuppressionStore"]
