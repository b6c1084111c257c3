"""The outbox relay: publishes ``email_outbox`` rows to Kafka, then marks them published.

POST /emails commits the ``email_messages`` row and its outbox row in one transaction and
returns; this relay (a task of ``etrans serve``) does the publishing.  So a row never exists
without being published (or failed, below), and nothing is published without its row.

One pass: open a transaction, ``SELECT ... WHERE published_at IS NULL AND failed_at IS NULL ORDER
BY attempts, id LIMIT batch FOR UPDATE SKIP LOCKED`` (several ``serve`` processes share the work
without publishing a row twice), publish every row (``KafkaProducer.publish_many``: the rows of
the pass, one wait for all the broker's acks), then, per row, by what the producer said
(:class:`~etrans.adapters.kafka.client.PublishFailure`):

- acknowledged: ``published_at`` is set;
- ``unreachable`` (brokers down, topic unavailable): only ``last_error``; nothing against the
  row, it keeps its place;
- ``answered`` (the broker refused this record): ``attempts`` + 1, so the row goes behind rows
  never tried (``ORDER BY attempts, id``: rows that keep failing cannot hold the head of the
  table); at ``max_attempts`` it fails, as below;
- ``refused`` (the producer refused it at once: larger than ``message.max.bytes``): it fails.

A failed row gets ``failed_at`` and is never selected again; its email (a row with a
``message_id``) becomes ``failed`` with the reason in ``email_messages.response`` (GET
/emails/{id} shows ``Failed`` and ``failure_reason``), and one ``Reject`` event per recipient,
in the format ``etrans sendmail`` uses, is queued in the same transaction for LOG_TOPIC.  Then
commit.  Published rows are deleted ``retention`` seconds after publication, 1000 at a time.

On PostgreSQL the pass runs on the Trio thread over a connection of its own
(:mod:`etrans.adapters._net.trio_pq`: no worker thread competing for the GIL with the requests);
on SQLite (``etrans dev``) in a worker thread.  Delivery is at-least-once: a crash between the
ack and the commit publishes those rows again (the message_id lets consumers recognise a repeat).

While the broker is unreachable, publishing waits (up to librdkafka's ``message.timeout.ms``),
the rows stay pending and are retried with a back-off; requests keep being accepted.  On
shutdown the relay makes one last pass of at most ``final_pass_seconds`` and returns, whatever
is still pending (the next start publishes it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, NamedTuple

import trio
from sqlalchemy import delete, func, insert, select, update

from etrans.adapters._net.trio_pq import TrioPqConnection
from etrans.adapters.kafka.client import PublishFailure
from etrans.adapters.sql.usend import EmailMessage, EmailOutbox
from etrans.observability import get_logger

if TYPE_CHECKING:
    from etrans.adapters.sql import Database
    from etrans.app.ports import EventPublisher

log = get_logger(__name__)

_OUTBOX = EmailOutbox.__table__
_EMAILS = EmailMessage.__table__

# (payload of the failed row, reason) -> the (key, value) of its Reject events.
RejectEvents = Callable[[bytes, str], Sequence[tuple[bytes | None, bytes]]]

# Lock the pass's rows and learn their sizes (octet_length does not read a TOASTed payload)...
_SELECT_PENDING = b"""
SELECT id, octet_length(payload) FROM email_outbox
WHERE published_at IS NULL AND failed_at IS NULL
ORDER BY attempts, id LIMIT $1 FOR UPDATE SKIP LOCKED
"""
# ... then read the payloads of those within the byte budget, as plain hex: the same text
# whatever the server's bytea_output setting.
_SELECT_ROWS = b"""
SELECT id, topic, key, encode(payload, 'hex'), message_id, attempts FROM email_outbox
WHERE id = ANY($1::bigint[]) ORDER BY attempts, id
"""
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
_QUEUE_EVENT = b"""
INSERT INTO email_outbox (topic, key, payload, created_at) VALUES ($1, $2, $3::bytea, now())
"""
_DELETE_PUBLISHED = b"""
DELETE FROM email_outbox WHERE id IN (
    SELECT id FROM email_outbox WHERE published_at < now() - make_interval(secs => $1::float8)
    ORDER BY published_at LIMIT $2::int FOR UPDATE SKIP LOCKED)
"""

# The response of the Reject events of a failed email (the shape of docs/wire-formats.md).
REJECT_CODE = "554 5.3.4"


class _Row(NamedTuple):
    id: int
    topic: str
    key: str | None
    payload: bytes
    message_id: str | None = None
    attempts: int = 0

    @classmethod
    def from_text(cls, row_id: str | None, topic: str | None, key: str | None,
                  payload: str | None, message_id: str | None = None,
                  attempts: str | None = "0") -> _Row:
        """From the text-format columns of ``_SELECT_PENDING`` (the payload hex-encoded)."""
        if row_id is None or topic is None or payload is None:  # NOT NULL columns
            raise ValueError(f"email_outbox row {row_id} without topic or payload")
        return cls(int(row_id), topic, key, bytes.fromhex(payload), message_id,
                   int(attempts or 0))


@dataclass
class _Outcome:
    """What one pass does to its rows."""

    published: list[int] = field(default_factory=list)
    answered: dict[int, str] = field(default_factory=dict)  # attempts + 1, retried later
    unreachable: dict[int, str] = field(default_factory=dict)  # retried, attempts unchanged
    # Rows that can never be published: (row, reason, whether the broker answered this time).
    failed: list[tuple[_Row, str, bool]] = field(default_factory=list)

    @property
    def retried(self) -> int:
        return len(self.answered) + len(self.unreachable)


@dataclass
class RelayStatistics:
    published: int = 0
    failed: int = 0  # failures of a pass (retried later, or given up)
    given_up: int = 0  # rows marked failed
    deleted: int = 0  # published rows deleted after the retention period
    passes: int = 0
    last_error: str | None = None


class OutboxRelay:
    def __init__(self, db: Database, publisher: EventPublisher, *, batch_size: int = 200,
                 idle_seconds: float = 0.5, linger_seconds: float = 0.05,
                 max_backoff_seconds: float = 10.0, max_attempts: int = 10,
                 retention_seconds: float = 24 * 3600.0, cleanup_every_seconds: float = 10.0,
                 final_pass_seconds: float = 3.0, log_topic: str | None = None,
                 reject_events: RejectEvents | None = None,
                 max_pass_bytes: int = 64 * 1024 * 1024) -> None:
        self._db = db
        self._publisher = publisher
        self._batch = batch_size
        # Payload bytes one pass holds at most (at least one row): 200 emails of 25 MB would
        # otherwise be 7 GB in memory at once (twice that while hex-decoded).
        self._max_pass_bytes = max_pass_bytes
        self._budget_reached = False  # the last pass left selected rows for the next one
        self._idle = idle_seconds
        # After a wake-up, wait this long so that one pass (one transaction, one commit) takes
        # the rows of many requests: the relay's cost per email falls as the load rises.
        self._linger = linger_seconds
        self._max_backoff = max_backoff_seconds
        self._max_attempts = max_attempts
        self._retention = retention_seconds
        self._cleanup_every = cleanup_every_seconds
        self._next_cleanup = 0.0
        self._final_pass = final_pass_seconds
        self._log_topic = log_topic
        self._reject_events = reject_events if log_topic else None
        self._wakeup = trio.Event()
        self._connection = (TrioPqConnection.from_sqlalchemy_url(db.engine.url)
                            if db.engine.dialect.name == "postgresql" else None)
        self.stats = RelayStatistics()

    def statistics(self) -> RelayStatistics:
        return self.stats

    def notify(self) -> None:
        """New rows were committed (called from the Trio thread)."""
        self._wakeup.set()

    async def run(self, shutdown_requested: trio.Event | None = None, *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Relay until cancelled, or until ``shutdown_requested``: then one last pass of at most
        ``final_pass_seconds``, and return even if rows are still pending."""
        task_status.started()
        try:
            async with trio.open_nursery() as nursery:
                if shutdown_requested is not None:
                    nursery.start_soon(self._limit_last_pass, shutdown_requested,
                                       nursery.cancel_scope)
                await self._relay(shutdown_requested)
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await self.aclose()

    async def _limit_last_pass(self, shutdown_requested: trio.Event,
                               scope: trio.CancelScope) -> None:
        await shutdown_requested.wait()
        self.notify()
        # A pass waiting for an unreachable broker would otherwise hold the drain for up to
        # message.timeout.ms; cut short, its transaction rolls back and its rows stay pending.
        scope.deadline = min(scope.deadline, trio.current_time() + self._final_pass)

    async def aclose(self) -> None:
        if self._connection is not None:
            await self._connection.aclose()

    async def _relay(self, shutdown_requested: trio.Event | None) -> None:
        backoff = self._idle
        while True:
            self._wakeup = trio.Event()
            stopping = shutdown_requested is not None and shutdown_requested.is_set()
            try:
                outcome = await self._relay_pass()
                progress = len(outcome.published) + len(outcome.failed)
                retried = outcome.retried
            except Exception as exc:  # database down: log, back off, retry
                log.warning("outbox pass failed", error=repr(exc))
                self.stats.last_error = repr(exc)
                progress, retried = 0, 1
            if stopping and progress < self._batch and not self._budget_reached:
                return  # the last pass is done (rows still pending wait for the next start)
            if retried and not progress:
                # Nothing got through (broker or database down): back off.  A pass that
                # published or failed some rows goes on at once.
                backoff = min(self._max_backoff, max(backoff * 2, 0.2))
                with trio.move_on_after(backoff):
                    if shutdown_requested is not None:
                        await shutdown_requested.wait()
                    else:
                        await trio.sleep_forever()
                continue
            backoff = self._idle
            # Time-gated: also under a load that keeps every pass full.
            await self._delete_published_if_due()
            if progress >= self._batch or (progress and self._budget_reached):
                continue  # more may be waiting
            if shutdown_requested is not None and shutdown_requested.is_set():
                continue  # one last pass
            with trio.move_on_after(self._idle):
                await self._wakeup.wait()
                await trio.sleep(self._linger)

    async def relay_once(self) -> tuple[int, int]:
        """One pass; returns (published, failed): failed counts the rows not published."""
        outcome = await self._relay_pass()
        return len(outcome.published), outcome.retried + len(outcome.failed)

    async def _relay_pass(self) -> _Outcome:
        self.stats.passes += 1
        if self._connection is not None:
            outcome = await self._trio_pass(self._connection)
        else:
            outcome = await self._db.run(self._pass)
        self._count(outcome)
        return outcome

    # -- deciding -----------------------------------------------------------------------------

    def _within_budget(self, sizes: Sequence[tuple[int, int]]) -> list[int]:
        """The ids of the first rows whose payloads fit ``max_pass_bytes`` (at least one); the
        others stay locked until the commit and go in a later pass."""
        ids: list[int] = []
        total = 0
        self._budget_reached = False
        for row_id, size in sizes:
            if ids and total + size > self._max_pass_bytes:
                self._budget_reached = True
                break
            ids.append(row_id)
            total += size
        return ids

    def _outcome(self, rows: Sequence[_Row], results: dict[int, PublishFailure | str | None]
                 ) -> _Outcome:
        outcome = _Outcome()
        for row in rows:
            result = results.get(row.id)
            if result is None:
                outcome.published.append(row.id)
                continue
            failure = (result if isinstance(result, PublishFailure)
                       else PublishFailure("unreachable", str(result)))
            error = failure.error[:500]
            if failure.kind == "refused":
                outcome.failed.append((row, f"the Kafka producer refused the record: {error}",
                                       False))
            elif failure.kind == "answered" and row.attempts + 1 >= self._max_attempts:
                outcome.failed.append((row, f"the Kafka broker refused the record "
                                            f"{row.attempts + 1} times: {error}", True))
            elif failure.kind == "answered":
                outcome.answered[row.id] = error
            else:
                outcome.unreachable[row.id] = error
        return outcome

    def _events_of(self, row: _Row, response: str) -> Sequence[tuple[bytes | None, bytes]]:
        if self._reject_events is None or row.message_id is None:
            return ()
        try:
            return self._reject_events(row.payload, response)
        except Exception as exc:  # an unreadable payload: the email still fails
            log.warning("no Reject events for a failed outbox row", row_id=row.id,
                        error=repr(exc))
            return ()

    def _count(self, outcome: _Outcome) -> None:
        self.stats.published += len(outcome.published)
        self.stats.failed += outcome.retried + len(outcome.failed)
        self.stats.given_up += len(outcome.failed)
        errors = [*outcome.answered.values(), *outcome.unreachable.values()]
        if errors:
            self.stats.last_error = errors[0]
            log.warning("outbox publish failed", failed=len(errors),
                        published=len(outcome.published), error=errors[0])
        for row, reason, _ in outcome.failed:
            self.stats.last_error = reason
            log.error("outbox row failed: never published", row_id=row.id, topic=row.topic,
                      message_id=row.message_id, reason=reason)

    # -- PostgreSQL, on the Trio thread ----------------------------------------------------------

    async def _trio_pass(self, conn: TrioPqConnection) -> _Outcome:
        await conn.execute(b"BEGIN")
        try:
            found = await conn.execute(_SELECT_PENDING, [str(self._batch)])
            ids = self._within_budget([(int(i or 0), int(n or 0)) for i, n in found.rows])
            rows: list[_Row] = []
            if ids:
                found = await conn.execute(_SELECT_ROWS, [_pg_array(ids)])
                rows = [_Row.from_text(*values) for values in found.rows]
            outcome = self._outcome(rows, await self._publish_all(rows) if rows else {})
            if outcome.published:
                await conn.execute(_MARK_PUBLISHED, [_pg_array(outcome.published)])
            for row_id, error in outcome.answered.items():
                await conn.execute(_MARK_ANSWERED, [str(row_id), error])
            if outcome.unreachable:
                await conn.execute(_MARK_UNREACHABLE, [
                    _pg_array(list(outcome.unreachable)), next(iter(outcome.unreachable.values()))])
            for row, reason, answered in outcome.failed:
                await conn.execute(_MARK_FAILED, [str(row.id), reason, "1" if answered else "0"])
                if row.message_id is None:
                    continue
                response = f"etrans: not queued for delivery: {reason}"
                await conn.execute(_FAIL_EMAIL, [row.message_id, response])
                for key, value in self._events_of(row, f"{REJECT_CODE} {response}"):
                    await conn.execute(_QUEUE_EVENT, [
                        self._log_topic, key, b"\\x" + value.hex().encode()])
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

    # -- SQLite (etrans dev), in a worker thread -------------------------------------------------

    def _pass(self) -> _Outcome:
        c = _OUTBOX.c
        pending = (select(c.id, func.length(c.payload))
                   .where(c.published_at.is_(None), c.failed_at.is_(None))
                   .order_by(c.attempts, c.id).limit(self._batch)
                   .with_for_update(skip_locked=True))
        with self._db.engine.begin() as conn:
            ids = self._within_budget([(r[0], r[1] or 0) for r in conn.execute(pending).all()])
            if not ids:
                return _Outcome()
            query = (select(c.id, c.topic, c.key, c.payload, c.message_id, c.attempts)
                     .where(c.id.in_(ids)).order_by(c.attempts, c.id))
            rows = [_Row(r.id, r.topic, r.key, bytes(r.payload), r.message_id, r.attempts)
                    for r in conn.execute(query).all()]
            outcome = self._outcome(rows, trio.from_thread.run(self._publish_all, rows))
            now = datetime.now(UTC)
            if outcome.published:
                conn.execute(update(_OUTBOX).where(c.id.in_(outcome.published))
                             .values(published_at=now, attempts=c.attempts + 1))
            for row_id, error in outcome.answered.items():
                conn.execute(update(_OUTBOX).where(c.id == row_id)
                             .values(attempts=c.attempts + 1, last_error=error))
            for row_id, error in outcome.unreachable.items():
                conn.execute(update(_OUTBOX).where(c.id == row_id).values(last_error=error))
            for row, reason, answered in outcome.failed:
                conn.execute(update(_OUTBOX).where(c.id == row.id).values(
                    failed_at=now, attempts=c.attempts + int(answered), last_error=reason))
                if row.message_id is None:
                    continue
                response = f"etrans: not queued for delivery: {reason}"
                conn.execute(update(_EMAILS).where(_EMAILS.c.message_id == row.message_id,
                                                   _EMAILS.c.status == "queued")
                             .values(status="failed", last_event="outbox", response=response,
                                     updated_at=now))
                for key, value in self._events_of(row, f"{REJECT_CODE} {response}"):
                    conn.execute(insert(_OUTBOX).values(
                        topic=self._log_topic, key=key.decode() if key is not None else None,
                        payload=value, created_at=now))
        return outcome

    # -- retention ---------------------------------------------------------------------------

    async def _delete_published_if_due(self) -> None:
        if trio.current_time() < self._next_cleanup:
            return
        self._next_cleanup = trio.current_time() + self._cleanup_every
        try:
            await self.delete_published()
        except Exception as exc:
            log.warning("deleting published outbox rows failed", error=repr(exc))

    async def delete_published(self, *, batch: int = 1000, max_batches: int = 20) -> int:
        """Delete rows published more than ``retention`` seconds ago, ``batch`` rows per
        statement (short transactions), at most ``max_batches`` statements; returns how many."""
        deleted = 0
        for _ in range(max_batches):
            if self._connection is not None:
                result = await self._connection.execute(
                    _DELETE_PUBLISHED, [repr(float(self._retention)), str(batch)])
                count = result.rowcount
            else:
                count = await self._db.run(self._delete_batch, batch)
            deleted += count
            if count < batch:
                break
            await trio.lowlevel.checkpoint()
        self.stats.deleted += deleted
        if deleted:
            log.info("deleted published outbox rows", deleted=deleted,
                     retention_hours=round(self._retention / 3600, 2))
        return deleted

    def _delete_batch(self, batch: int) -> int:
        c = _OUTBOX.c
        cutoff = datetime.now(UTC) - timedelta(seconds=self._retention)
        oldest = (select(c.id).where(c.published_at.is_not(None), c.published_at < cutoff)
                  .order_by(c.published_at).limit(batch))
        with self._db.engine.begin() as conn:
            return int(conn.execute(delete(_OUTBOX).where(c.id.in_(oldest))).rowcount or 0)

    # -- publishing --------------------------------------------------------------------------

    async def _publish_all(self, rows: Sequence[_Row]) -> dict[int, PublishFailure | str | None]:
        publish_many = getattr(self._publisher, "publish_many", None)
        if publish_many is not None:
            # One wait for the whole pass instead of a task and a wake-up per row.
            try:
                errors = await publish_many([
                    (row.topic, bytes(row.payload), row.key.encode() if row.key is not None
                     else None) for row in rows])
            except Exception as exc:
                errors = [PublishFailure("unreachable", repr(exc))] * len(rows)
            return {row.id: error for row, error in zip(rows, errors, strict=True)}
        outcomes: dict[int, PublishFailure | str | None] = {}

        async def publish(row: _Row) -> None:
            try:
                key = row.key.encode() if row.key is not None else None
                await self._publisher.publish(row.topic, bytes(row.payload), key)
                outcomes[row.id] = None
            except Exception as exc:
                outcomes[row.id] = repr(exc)

        async with trio.open_nursery() as nursery:
            for row in rows:
                nursery.start_soon(publish, row)
        return outcomes


def _pg_array(ids: Sequence[int]) -> str:
    return "{" + ",".join(map(str, ids)) + "}"
