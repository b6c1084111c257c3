"""Where the outbox relay's rows live: the :class:`OutboxStore` port and its PostgreSQL store.

The relay (:mod:`etrans.adapters.sql.outbox`) decides; a store holds the rows.  One pass is one
transaction, so the port is one call, :meth:`OutboxStore.relay_pass`: the store locks the
pending rows (``ORDER BY attempts, id``, skipping rows another process holds), asks the relay
which of them fit the pass (``choose``), reads those, hands them to the relay to publish
(``decide``), writes the :class:`PassOutcome` and commits.  On PostgreSQL that is two round
trips when every row got through: ``BEGIN`` with the lock and the read of the rows within the
pass's byte budget, then the write with the ``COMMIT`` (``_CLAIM``, ``_PUBLISH_AND_COMMIT``).
A store that fails or is cancelled rolls back: the rows stay pending.
:meth:`OutboxStore.delete_published` is the retention.
:meth:`OutboxStore.release_due` makes the rows of scheduled emails whose time has come pending
(``due_at`` NULL, the email ``scheduled`` -> ``queued``, one transaction); until then a pass
does not see them.

:class:`PgOutboxStore` runs the pass on the Trio thread over a connection of its own
(:mod:`etrans.adapters._net.trio_pq`: no worker thread competing for the GIL with the requests
of ``etrans serve``).  ``etrans dev``'s SQLite store is :mod:`etrans.dev.sqlite_outbox`; both
pass ``tests/contract/test_outbox_store_contract.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, Protocol

import trio

from etrans.adapters._net.trio_pq import TrioPqConnection

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from etrans.adapters.sql import Database
    from etrans.app.schedule_ports import DueEmailScreen



class OutboxRow(NamedTuple):
    id: int
    topic: str
    key: str | None
    payload: bytes
    message_id: str | None = None
    attempts: int = 0
    traceparent: str | None = None  # of the request that queued it: the record's header

    @classmethod
    def from_text(cls, row_id: str | None, topic: str | None, key: str | None,
                  payload: str | None, message_id: str | None = None,
                  attempts: str | None = "0", traceparent: str | None = None) -> OutboxRow:
        """From text-format columns (the payload hex-encoded)."""
        if row_id is None or topic is None or payload is None:  # NOT NULL columns
            raise ValueError(f"email_outbox row {row_id} without topic or payload")
        return cls(int(row_id), topic, key, bytes.fromhex(payload), message_id,
                   int(attempts or 0), traceparent)


class FailedRow(NamedTuple):
    """A row that can never be published: it gets ``failed_at``; its email (when it has a
    ``message_id``) becomes ``failed`` with ``response``, and ``events`` (topic, key, value: the
    Reject events for LOG_TOPIC) are queued as new outbox rows in the same transaction."""

    row: OutboxRow
    reason: str
    answered: bool  # the broker answered this time: attempts + 1
    events: Sequence[tuple[str, bytes | None, bytes]] = ()

    @property
    def response(self) -> str:
        return f"etrans: not queued for delivery: {self.reason}"


@dataclass
class PassOutcome:
    """What one pass does to its rows."""

    published: list[int] = field(default_factory=list)
    answered: dict[int, str] = field(default_factory=dict)  # attempts + 1, retried later
    unreachable: dict[int, str] = field(default_factory=dict)  # retried, attempts unchanged
    failed: list[FailedRow] = field(default_factory=list)

    @property
    def retried(self) -> int:
        return len(self.answered) + len(self.unreachable)


class OutboxStore(Protocol):
    async def relay_pass(
            self, limit: int, choose: Callable[[Sequence[tuple[int, int]]], list[int]],
            decide: Callable[[Sequence[OutboxRow]], Awaitable[PassOutcome]],
            max_bytes: int = 0) -> PassOutcome:
        """One transaction: lock up to ``limit`` pending rows, read those ``choose`` picks,
        ``decide`` (publish), write the outcome, commit; nothing chosen: an empty outcome.
        ``max_bytes``: what ``choose`` will take (the rows whose payloads fit it, at least
        one), which a store may read with the lock (PostgreSQL: one round trip for both)."""
        ...

    async def delete_published(self, older_than_seconds: float, limit: int) -> int:
        """Delete up to ``limit`` rows published more than ``older_than_seconds`` ago."""
        ...

    async def release_due(self, limit: int) -> int:
        """Make up to ``limit`` waiting rows whose ``due_at`` has come pending, earliest first,
        and their emails ``queued`` (one transaction, skipping rows another process holds);
        returns how many.  A store built with a screen (:class:`~etrans.app.schedule_ports.
        DueEmailScreen`) asks it in that transaction which emails have recipients suppressed
        since they were accepted: those are released without them, or, with none left, become
        ``suppressed`` and their rows are deleted (:mod:`etrans.app.scheduled_release`)."""
        ...

    async def backlog(self) -> tuple[int, float]:
        """(rows waiting to be published, seconds the oldest has waited; 0 when none): the
        pending rows since their creation, and the scheduled rows due but not yet released
        since their ``due_at``.  For the metrics: a query on the partial indexes of those rows
        only, whatever the number of rows published and kept."""
        ...

    async def aclose(self) -> None: ...


# The pass's rows, locked and read in one statement: every locked row's id and payload size
# (octet_length does not read a TOASTed payload) for ``choose``, and the payloads, as plain hex
# (the same text whatever the server's bytea_output), of the rows within the byte budget counted
# in the pass's order (at least the first row: what the relay's ``choose`` takes).  Rows beyond
# it stay locked until the commit and go in a later pass.  Only integers are formatted in
# (PgOutboxStore.relay_pass): it goes by the simple query protocol, after BEGIN (_CLAIM).
_CLAIM_ROWS = """SELECT id, topic, key,
    CASE WHEN row_number() OVER pass = 1 OR sum(size) OVER pass <= {max_bytes:d}
         THEN encode(payload, 'hex') END,
    message_id, attempts, traceparent, size
FROM (
    SELECT id, topic, key, payload, message_id, attempts, traceparent,
           octet_length(payload) AS size
    FROM email_outbox
    WHERE published_at IS NULL AND failed_at IS NULL AND due_at IS NULL
    ORDER BY attempts, id LIMIT {limit:d} FOR UPDATE SKIP LOCKED
) AS locked
WINDOW pass AS (ORDER BY attempts, id ROWS UNBOUNDED PRECEDING)
ORDER BY attempts, id
"""
# One round trip opens the pass's transaction, locks its rows and reads them.
_CLAIM = "BEGIN;\n" + _CLAIM_ROWS
# The payloads ``choose`` took beyond the budget the claim read (a caller's own ``choose``).
_SELECT_ROWS = b"""
SELECT id, topic, key, encode(payload, 'hex'), message_id, attempts, traceparent
FROM email_outbox WHERE id = ANY($1::bigint[]) ORDER BY attempts, id
"""
# The usual end of a pass (every row published): the write and the commit in one round trip.
_PUBLISH_AND_COMMIT = """UPDATE email_outbox SET published_at = now(), attempts = attempts + 1
WHERE id = ANY('{ids}'::bigint[]);
COMMIT"""
_MARK_PUBLISHED = b"""
UPDATE email_outbox SET published_at = now(), attempts = attempts + 1 WHERE id = ANY($1::bigint[])
"""
_MARK_ANSWERED = b"""
UPDATE email_outbox SET attempts = attempts + 1, last_error = $2 WHERE id = $1::bigint
"""
_MARK_UNREACHABLE = b"""
UPDATE email_outbox SET last_error = $2 WHERE id = ANY($1::bigint[])
"""
_MARK_FAILED = b"""
UPDATE email_outbox SET failed_at = now(), attempts = attempts + $3::int, last_error = $2
WHERE id = $1::bigint
"""
_FAIL_EMAIL = b"""
UPDATE email_messages SET status = 'failed', last_event = 'outbox', response = $2,
    updated_at = now()
WHERE message_id = $1 AND status = 'queued'
"""
# The failed row's events keep its traceparent: the relay publishes them in its trace.
_QUEUE_EVENT = b"""
INSERT INTO email_outbox (topic, key, payload, created_at, traceparent)
VALUES ($1, $2, $3::bytea, now(), $4)
"""
# The due rows by the waiting rows' index (ix_email_outbox_due_at), locked outbox first and then
# their emails: the order of the schedule's cancel and move (etrans.adapters.sql.schedules_repo),
# so the two cannot deadlock; a row one of them holds is skipped (next time it may be gone).
_RELEASE_DUE = b"""
WITH due AS (
    SELECT id FROM email_outbox
    WHERE published_at IS NULL AND failed_at IS NULL AND due_at IS NOT NULL AND due_at <= now()
    ORDER BY due_at LIMIT $1::int FOR UPDATE SKIP LOCKED
), released AS (
    UPDATE email_outbox AS o SET due_at = NULL FROM due WHERE o.id = due.id
    RETURNING o.message_id
), queued AS (
    UPDATE email_messages SET status = 'queued', updated_at = now()
    WHERE message_id IN (SELECT message_id FROM released) AND status = 'scheduled'
)
SELECT count(*) FROM released
"""
# Each subquery reads one partial index (ix_email_outbox_unpublished: the pending rows;
# ix_email_outbox_due_at: the waiting rows, the overdue ones by range): its cost follows the
# rows waiting, not the table (EXPLAIN in tests/integration/test_outbox_backlog.py).
_BACKLOG = b"""
WITH pending AS (
    SELECT count(*) AS n, min(created_at) AS oldest FROM email_outbox
    WHERE published_at IS NULL AND failed_at IS NULL AND due_at IS NULL
), overdue AS (
    SELECT count(*) AS n, min(due_at) AS oldest FROM email_outbox
    WHERE published_at IS NULL AND failed_at IS NULL AND due_at IS NOT NULL AND due_at <= now()
)
SELECT pending.n + overdue.n,
       greatest(coalesce(extract(epoch FROM now() - pending.oldest), 0),
                coalesce(extract(epoch FROM now() - overdue.oldest), 0), 0)
FROM pending, overdue
"""
_DELETE_PUBLISHED = b"""
DELETE FROM email_outbox WHERE id IN (
    SELECT id FROM email_outbox WHERE published_at < now() - make_interval(secs => $1::float8)
    ORDER BY published_at LIMIT $2::int FOR UPDATE SKIP LOCKED)
"""


class PgOutboxStore:
    """:class:`OutboxStore` on PostgreSQL, on the Trio thread (a connection of its own)."""

    def __init__(self, connection: TrioPqConnection,
                 backlog_connection: TrioPqConnection,
                 screen: DueEmailScreen | None = None) -> None:
        self._connection = connection
        # What releasing a scheduled email checks again (the suppression list); None: nothing
        # (:mod:`etrans.adapters.sql.outbox_release`).
        self._screen = screen
        # The metrics' reads: never inside a pass's transaction (an error there would abort
        # it), never waiting behind one.  Connected at the first scrape.
        self._backlog_connection = backlog_connection
        self._closed = False

    @classmethod
    def of(cls, db: Database, screen: DueEmailScreen | None = None) -> PgOutboxStore:
        """A store on its own connections to ``db``'s database (the relay's, the metrics')."""
        return cls(TrioPqConnection.from_sqlalchemy_url(db.engine.url),
                   TrioPqConnection.from_sqlalchemy_url(db.engine.url,
                                                        application_name="etrans-metrics"),
                   screen)

    async def relay_pass(
            self, limit: int, choose: Callable[[Sequence[tuple[int, int]]], list[int]],
            decide: Callable[[Sequence[OutboxRow]], Awaitable[PassOutcome]],
            max_bytes: int = 0) -> PassOutcome:
        # Two round trips for a pass whose rows all got through (the claim, the write with the
        # commit) and for an empty one (the claim, the commit): under load each wait of the
        # Trio thread is a scheduling delay behind the requests of ``etrans serve``
        # (docs/performance.md, "The relay's round trips").
        conn = self._connection
        try:
            found = await conn.execute_script(
                _CLAIM.format(limit=int(limit), max_bytes=int(max_bytes)).encode())
            ids = choose([(int(values[0] or 0), int(values[7] or 0)) for values in found.rows])
            outcome = PassOutcome()
            if ids:
                outcome = await decide(await self._rows(ids, found.rows))
            if outcome.published and not (outcome.retried or outcome.failed):
                await conn.execute_script(_PUBLISH_AND_COMMIT.format(
                    ids=_pg_array(outcome.published)).encode())
            else:
                await self._write(outcome)
                await conn.execute(b"COMMIT")
        except BaseException:
            # Roll back, shielded but within 5 s (a ROLLBACK that fails or is cut short closes
            # the connection: the transaction goes with it, the next pass reconnects).
            with trio.move_on_after(5) as cleanup:
                cleanup.shield = True
                if conn.connected:  # else the transaction went with the connection
                    try:
                        await conn.execute(b"ROLLBACK")
                    except Exception:
                        await conn.aclose()
            raise
        return outcome

    async def _rows(self, ids: Sequence[int], claimed: Sequence[tuple[str | None, ...]]
                    ) -> list[OutboxRow]:
        """The chosen rows, in the pass's order: as the claim read them, and the payloads it
        did not read (beyond its byte budget) in one more statement."""
        chosen = set(ids)
        read = {int(values[0] or 0): values[:7] for values in claimed
                if int(values[0] or 0) in chosen and values[3] is not None}
        missing = [row_id for row_id in ids if row_id not in read]
        if missing:
            found = await self._connection.execute(_SELECT_ROWS, [_pg_array(missing)])
            read.update({int(values[0] or 0): values for values in found.rows})
        return [OutboxRow.from_text(*read[int(values[0] or 0)]) for values in claimed
                if int(values[0] or 0) in chosen]

    async def _write(self, outcome: PassOutcome) -> None:
        conn = self._connection
        if outcome.published:
            await conn.execute(_MARK_PUBLISHED, [_pg_array(outcome.published)])
        for row_id, error in outcome.answered.items():
            await conn.execute(_MARK_ANSWERED, [str(row_id), error])
        if outcome.unreachable:
            await conn.execute(_MARK_UNREACHABLE, [
                _pg_array(list(outcome.unreachable)), next(iter(outcome.unreachable.values()))])
        for failed in outcome.failed:
            await conn.execute(_MARK_FAILED, [str(failed.row.id), failed.reason,
                                              "1" if failed.answered else "0"])
            if failed.row.message_id is None:
                continue
            await conn.execute(_FAIL_EMAIL, [failed.row.message_id, failed.response])
            for topic, key, value in failed.events:
                await conn.execute(_QUEUE_EVENT, [topic, key, b"\\x" + value.hex().encode(),
                                                  failed.row.traceparent])

    async def delete_published(self, older_than_seconds: float, limit: int) -> int:
        result = await self._connection.execute(
            _DELETE_PUBLISHED, [repr(float(older_than_seconds)), str(limit)])
        return result.rowcount

    async def release_due(self, limit: int) -> int:
        if self._screen is not None:
            from etrans.adapters.sql.outbox_release import release_due

            return await release_due(self._connection, self._screen, limit)
        result = await self._connection.execute(_RELEASE_DUE, [str(limit)])
        return int(result.rows[0][0] or 0)

    async def backlog(self) -> tuple[int, float]:
        if self._closed:  # the relay has stopped: no connection is reopened
            raise RuntimeError("the outbox store is closed")
        result = await self._backlog_connection.execute(_BACKLOG)
        rows, age = result.rows[0]
        return int(rows or 0), float(age or 0.0)

    async def aclose(self) -> None:
        self._closed = True
        await self._connection.aclose()
        await self._backlog_connection.aclose()


def _pg_array(ids: Sequence[int]) -> str:
    return "{" + ",".join(map(str, ids)) + "}"
