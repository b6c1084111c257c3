"""The outbox relay: publishes ``email_outbox`` rows to Kafka, then marks them published.

POST /emails commits the ``email_messages`` row and its outbox row in one transaction and
returns; this relay (a task of ``etrans serve``) does the publishing.  So a row never exists
without being published eventually, and nothing is published without its row.

One pass: open a transaction, ``SELECT ... WHERE published_at IS NULL ORDER BY id LIMIT batch FOR
UPDATE SKIP LOCKED`` (several ``serve`` processes share the work without publishing a row twice),
publish every row (``KafkaProducer.publish_many``: the rows of the pass, one wait for all the
broker's acks), set ``published_at`` on the acknowledged ones and bump ``attempts``/``last_error``
on the others, commit.  On PostgreSQL the pass runs on the Trio thread over a connection of its
own (:mod:`etrans.adapters.sql.trio_pq`: no worker thread competing for the GIL with the
requests); on SQLite (``etrans dev``) in a worker thread.  Delivery is at-least-once: a crash
between the ack and the commit publishes those rows again (the message_id lets consumers
recognise a repeat).

While the broker is unreachable, publishing waits (up to librdkafka's ``message.timeout.ms``),
the rows stay pending and are retried with a back-off; requests keep being accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import trio
from sqlalchemy import select, update

from etrans.adapters.sql.trio_pq import TrioPqConnection
from etrans.adapters.sql.usend import EmailOutbox
from etrans.observability import get_logger

if TYPE_CHECKING:
    from etrans.adapters.sql import Database
    from etrans.app.ports import EventPublisher

log = get_logger(__name__)

_OUTBOX = EmailOutbox.__table__

# The payload as plain hex: the same text whatever the server's bytea_output setting.
_SELECT_PENDING = b"""
SELECT id, topic, key, encode(payload, 'hex') FROM email_outbox WHERE published_at IS NULL
ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
"""
_MARK_PUBLISHED = b"""
UPDATE email_outbox SET published_at = now(), attempts = attempts + 1 WHERE id = ANY($1::bigint[])
"""
_MARK_FAILED = b"""
UPDATE email_outbox SET attempts = attempts + 1, last_error = $2 WHERE id = $1::bigint
"""


class _Row(NamedTuple):
    id: int
    topic: str
    key: str | None
    payload: bytes

    @classmethod
    def from_text(cls, row_id: str | None, topic: str | None, key: str | None,
                  payload: str | None) -> _Row:
        """From the text-format columns of ``_SELECT_PENDING`` (the payload hex-encoded)."""
        if row_id is None or topic is None or payload is None:  # NOT NULL columns
            raise ValueError(f"email_outbox row {row_id} without topic or payload")
        return cls(int(row_id), topic, key, bytes.fromhex(payload))


@dataclass
class RelayStatistics:
    published: int = 0
    failed: int = 0
    passes: int = 0
    last_error: str | None = None


class OutboxRelay:
    def __init__(self, db: Database, publisher: EventPublisher, *, batch_size: int = 200,
                 idle_seconds: float = 0.5, linger_seconds: float = 0.05,
                 max_backoff_seconds: float = 10.0) -> None:
        self._db = db
        self._publisher = publisher
        self._batch = batch_size
        self._idle = idle_seconds
        # After a wake-up, wait this long so that one pass (one transaction, one commit) takes
        # the rows of many requests: the relay's cost per email falls as the load rises.
        self._linger = linger_seconds
        self._max_backoff = max_backoff_seconds
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
        """Relay until cancelled or ``shutdown_requested`` (then one last pass)."""
        task_status.started()
        try:
            await self._relay(shutdown_requested)
        finally:
            with trio.CancelScope(shield=True):
                await self.aclose()

    async def aclose(self) -> None:
        if self._connection is not None:
            await self._connection.aclose()

    async def _relay(self, shutdown_requested: trio.Event | None) -> None:
        backoff = self._idle
        while True:
            self._wakeup = trio.Event()
            try:
                published, failed = await self.relay_once()
            except Exception as exc:  # database down: log, back off, retry
                log.warning("outbox pass failed", error=repr(exc))
                self.stats.last_error = repr(exc)
                published, failed = 0, 1
            if failed and not published:
                # Nothing got through (broker or database down): back off.  A pass that
                # published some rows goes on at once, so a row that keeps failing (say, a
                # topic the broker refuses) does not slow the rows behind it.
                backoff = min(self._max_backoff, max(backoff * 2, 0.2))
                await trio.sleep(backoff)
                continue
            backoff = self._idle
            if published >= self._batch:
                continue  # more may be waiting
            if shutdown_requested is not None and shutdown_requested.is_set():
                return
            with trio.move_on_after(self._idle):
                await self._wakeup.wait()
                await trio.sleep(self._linger)

    async def relay_once(self) -> tuple[int, int]:
        """One pass; returns (published, failed)."""
        self.stats.passes += 1
        if self._connection is not None:
            return await self._trio_pass(self._connection)
        return await self._db.run(self._pass)

    async def _trio_pass(self, conn: TrioPqConnection) -> tuple[int, int]:
        await conn.execute(b"BEGIN")
        try:
            found = await conn.execute(_SELECT_PENDING, [str(self._batch)])
            rows = [_Row.from_text(*values) for values in found.rows]
            outcomes = await self._publish_all(rows) if rows else {}
            done = [row_id for row_id, error in outcomes.items() if error is None]
            failed = {row_id: error for row_id, error in outcomes.items() if error is not None}
            if done:
                await conn.execute(_MARK_PUBLISHED, ["{" + ",".join(map(str, done)) + "}"])
            for row_id, error in failed.items():
                await conn.execute(_MARK_FAILED, [str(row_id), error[:500]])
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
        return self._count(done, failed)

    def _count(self, done: list[int], failed: dict[int, str]) -> tuple[int, int]:
        self.stats.published += len(done)
        self.stats.failed += len(failed)
        if failed:
            self.stats.last_error = next(iter(failed.values()))
            log.warning("outbox publish failed", failed=len(failed), published=len(done),
                        error=self.stats.last_error)
        return len(done), len(failed)

    def _pass(self) -> tuple[int, int]:
        query = (select(_OUTBOX.c.id, _OUTBOX.c.topic, _OUTBOX.c.key, _OUTBOX.c.payload)
                 .where(_OUTBOX.c.published_at.is_(None)).order_by(_OUTBOX.c.id)
                 .limit(self._batch).with_for_update(skip_locked=True))
        with self._db.engine.begin() as conn:
            rows = conn.execute(query).all()
            if not rows:
                return 0, 0
            outcomes: dict[int, str | None] = trio.from_thread.run(self._publish_all, rows)
            done = [row_id for row_id, error in outcomes.items() if error is None]
            failed = {row_id: error for row_id, error in outcomes.items() if error is not None}
            now = datetime.now(UTC)
            if done:
                conn.execute(update(_OUTBOX).where(_OUTBOX.c.id.in_(done))
                             .values(published_at=now, attempts=_OUTBOX.c.attempts + 1))
            for row_id, error in failed.items():
                conn.execute(update(_OUTBOX).where(_OUTBOX.c.id == row_id)
                             .values(attempts=_OUTBOX.c.attempts + 1, last_error=error[:500]))
        return self._count(done, failed)

    async def _publish_all(self, rows: list[Any]) -> dict[int, str | None]:
        publish_many = getattr(self._publisher, "publish_many", None)
        if publish_many is not None:
            # One wait for the whole pass instead of a task and a wake-up per row.
            try:
                errors = await publish_many([
                    (row.topic, bytes(row.payload), row.key.encode() if row.key is not None
                     else None) for row in rows])
            except Exception as exc:
                errors = [repr(exc)] * len(rows)
            return {row.id: error for row, error in zip(rows, errors, strict=True)}
        outcomes: dict[int, str | None] = {}

        async def publish(row: Any) -> None:
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
