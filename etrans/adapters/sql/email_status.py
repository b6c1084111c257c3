"""``email_messages.status`` in the USEND DB, advanced by delivery-log events (fetchlog).

One ``UPDATE ... FROM unnest(...)`` per batch: a row changes only when the new status ranks
strictly higher than the stored one (:data:`etrans.domain.delivery_log.STATUS_RANK`), so the
update is monotonic and idempotent whatever order events arrive in, and concurrent batches cannot
move a status backwards (PostgreSQL re-checks the WHERE clause on the locked row).  Message ids
that are not in the table (SMTP-submitted mail) simply match no row.

Each recipient's outcome goes to ``email_recipient_outcomes`` the same way
(:meth:`EmailStatusUpdater.record_outcomes`): one ``INSERT ... SELECT FROM unnest(...) JOIN
email_messages ... ON CONFLICT DO UPDATE`` per batch, the update only when the new outcome ranks
strictly higher than the stored one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from etrans.domain.delivery_log import DELIVERED, STATUS_RANK
from etrans.errors import RetryLater

if TYPE_CHECKING:
    from collections.abc import Sequence

    from etrans.adapters.sql import Database
    from etrans.domain.delivery_log import RecipientOutcome, StatusChange



def rank_of(column: str) -> str:
    """SQL: the :data:`STATUS_RANK` of the status in ``column`` (-1 for an unknown one)."""
    return f"CASE {column} " + " ".join(
        f"WHEN '{status}' THEN {rank}" for status, rank in STATUS_RANK.items()) + " ELSE -1 END"


_RANK_OF_STORED = rank_of("m.status")

_UPDATE = f"""
UPDATE email_messages AS m
SET status = v.status,
    last_event = v.event,
    response = v.response,
    sent_at = COALESCE(m.sent_at, v.at),
    delivered_at = CASE WHEN v.status = '{DELIVERED}' THEN v.at ELSE m.delivered_at END,
    updated_at = now()
FROM unnest(CAST(:message_ids AS text[]), CAST(:statuses AS text[]), CAST(:ranks AS int[]),
            CAST(:ats AS timestamptz[]), CAST(:events AS text[]), CAST(:responses AS text[]))
     AS v(message_id, status, rank, at, event, response)
WHERE m.message_id = v.message_id AND ({_RANK_OF_STORED}) < v.rank
"""


# The rows of a batch locked in one order (message id) before the UPDATE: the UPDATE locks them
# in the order of its join plan (heap order with a hash join, array order with a nested loop),
# and two concurrent batches planned differently deadlocked (seen in CI: DeadlockDetected on
# email_messages, the batch retried as RetryLater).
_LOCK = """
SELECT 1 FROM email_messages WHERE message_id = ANY(CAST(:message_ids AS text[]))
ORDER BY message_id FOR UPDATE
"""


# Columns the upsert sets; a row changes only when its outcome is behind the new one.
OUTCOME_UPSERT = f"""
ON CONFLICT (message_id, recipient) DO UPDATE
SET outcome = excluded.outcome, bounce_class = excluded.bounce_class,
    response = excluded.response, event_at = excluded.event_at, updated_at = excluded.updated_at
WHERE ({rank_of("email_recipient_outcomes.outcome")}) < ({rank_of("excluded.outcome")})
"""

_RECORD_OUTCOMES = f"""
INSERT INTO email_recipient_outcomes
    (message_id, recipient, outcome, bounce_class, response, event_at, updated_at)
SELECT v.message_id, v.recipient, v.outcome, v.bounce_class, v.response, v.at, now()
FROM unnest(CAST(:message_ids AS text[]), CAST(:recipients AS text[]), CAST(:outcomes AS text[]),
            CAST(:classes AS text[]), CAST(:responses AS text[]), CAST(:ats AS timestamptz[]))
     AS v(message_id, recipient, outcome, bounce_class, response, at)
JOIN email_messages AS m ON m.message_id = v.message_id
{OUTCOME_UPSERT}
"""

RECIPIENT_LENGTH = 320


class EmailStatusUpdater:
    """Applies :class:`~etrans.domain.delivery_log.StatusChange` s to ``email_messages``."""

    name = "usend_db"

    def __init__(self, database: Database) -> None:
        self.database = database

    def _apply(self, changes: Sequence[StatusChange]) -> int:
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError

        ordered = sorted(changes, key=lambda c: c.message_id)
        params = {
            "message_ids": [c.message_id for c in ordered],
            "statuses": [c.status for c in ordered],
            "ranks": [c.rank for c in ordered],
            "ats": [c.at for c in ordered],
            "events": [c.event[:32] for c in ordered],
            "responses": [c.response for c in ordered],
        }
        try:
            with self.database.engine.begin() as conn:
                conn.execute(text(_LOCK), {"message_ids": params["message_ids"]})
                result = conn.execute(text(_UPDATE), params)
                return int(result.rowcount or 0)
        except SQLAlchemyError as exc:
            raise RetryLater(f"USEND DB status update failed: {exc.__class__.__name__}") from exc

    async def apply(self, changes: Sequence[StatusChange]) -> int:
        """Advance the emails that are behind; returns how many rows changed."""
        if not changes:
            return 0
        return await self.database.run(self._apply, changes)

    def _record_outcomes(self, outcomes: Sequence[RecipientOutcome]) -> int:
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError

        ordered = sorted(outcomes, key=lambda o: (o.message_id, o.recipient))
        params = {
            "message_ids": [o.message_id for o in ordered],
            "recipients": [o.recipient[:RECIPIENT_LENGTH] for o in ordered],
            "outcomes": [o.outcome for o in ordered],
            "classes": [o.bounce_class for o in ordered],
            "responses": [o.response for o in ordered],
            "ats": [o.at for o in ordered],
        }
        try:
            with self.database.engine.begin() as conn:
                return int(conn.execute(text(_RECORD_OUTCOMES), params).rowcount or 0)
        except SQLAlchemyError as exc:
            raise RetryLater(
                f"USEND DB recipient outcomes failed: {exc.__class__.__name__}") from exc

    async def record_outcomes(self, outcomes: Sequence[RecipientOutcome]) -> int:
        """Advance the recipients of API emails that are behind; returns how many rows were
        written (inserted or advanced)."""
        if not outcomes:
            return 0
        return await self.database.run(self._record_outcomes, outcomes)

    async def check(self) -> None:
        await self.database.check()
