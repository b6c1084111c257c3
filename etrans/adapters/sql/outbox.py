"""The outbox relay: publishes ``email_outbox`` rows to Kafka, then marks them published.

POST /emails commits the ``email_messages`` row and its outbox row in one transaction and
returns; this relay (a task of ``etrans serve``) does the publishing.  So a row never exists
without being published (or failed, below), and nothing is published without its row.

One pass, one transaction of the :class:`~etrans.adapters.sql.outbox_store.OutboxStore` (PostgreSQL
for ``serve``, SQLite for ``etrans dev``): lock the pending rows, ``ORDER BY attempts, id``,
skipping rows another process holds (several ``serve`` processes share the work without
publishing a row twice), publish every row (``KafkaProducer.publish_many``: the rows of
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
in the format ``etrans sendmail`` uses, is queued in the same transaction for LOG_TOPIC, with
its ``email.failed`` event for KAFKA_EVENTS_TOPIC.  Then commit.

With ``events_topic``, each send request (a row with a ``message_id``) is published with its
``email.queued`` event (:mod:`etrans.adapters.sql.outbox_events`) in the same wait, the event
produced once the request is acknowledged (``KafkaProducer.publish_chained``; a publisher
without it: one more wait): the row is marked published only when both were acknowledged (a
broker that took the request but not the event: the row is retried, both are published again,
same event id).  Published rows are deleted ``retention`` seconds after publication, 1000 at a
time.

Scheduled emails' rows wait (``due_at``): every ``release_every_seconds`` (1 s; at once again
after a full batch) the store releases the due ones (:meth:`OutboxStore.release_due`) and the
next pass publishes them: within ~1.5 s of ``scheduled_at``, never before (the database's
clock), and a restart loses nothing (it is all rows).

The relay decides and publishes; the store holds the rows (no SQL here).  Delivery is
at-least-once: a crash between the ack and the commit publishes those rows again (the
message_id lets consumers recognise a repeat).

While the broker is unreachable, publishing waits (up to librdkafka's ``message.timeout.ms``),
the rows stay pending and are retried with a back-off; requests keep being accepted.  On
shutdown the relay makes one last pass of at most ``final_pass_seconds`` and returns, whatever
is still pending (the next start publishes it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from etrans.adapters.kafka.client import PublishFailure
from etrans.adapters.sql.outbox_events import failed_record, queued_record
from etrans.adapters.sql.outbox_publishing import publish_chained, publish_records
from etrans.adapters.sql.outbox_store import FailedRow, OutboxRow, PassOutcome
from etrans.adapters.sql.outbox_traces import PassSpans, trace_id_of
from etrans.app.tracing import ContextOnlyTracer
from etrans.observability import get_logger

if TYPE_CHECKING:
    from etrans.adapters.sql.outbox_store import OutboxStore
    from etrans.app.ports import EventPublisher
    from etrans.app.tracing import Tracer

log = get_logger(__name__)

# (payload of the failed row, reason) -> the (key, value) of its Reject events.
RejectEvents = Callable[[bytes, str], Sequence[tuple[bytes | None, bytes]]]

# The response of the Reject events of a failed email (the shape of docs/wire-formats.md).
REJECT_CODE = "554 5.3.4"


@dataclass
class RelayStatistics:
    published: int = 0
    failed: int = 0  # failures of a pass (retried later, or given up)
    given_up: int = 0  # rows marked failed
    deleted: int = 0  # published rows deleted after the retention period
    released: int = 0  # rows of scheduled emails made pending when due
    passes: int = 0
    last_error: str | None = None


class OutboxRelay:
    def __init__(self, store: OutboxStore, publisher: EventPublisher, *, batch_size: int = 1000,
                 idle_seconds: float = 0.5, linger_seconds: float = 0.05,
                 linger_min_rows: int = 10,
                 max_backoff_seconds: float = 10.0, max_attempts: int = 10,
                 retention_seconds: float = 24 * 3600.0, cleanup_every_seconds: float = 10.0,
                 final_pass_seconds: float = 3.0, log_topic: str | None = None,
                 reject_events: RejectEvents | None = None,
                 max_pass_bytes: int = 64 * 1024 * 1024,
                 events_topic: str | None = None,
                 release_every_seconds: float = 1.0, tracer: Tracer | None = None) -> None:
        self._store = store
        self._publisher = publisher
        # Rows one pass takes at most.  Under load a pass is slow: its statements and its broker
        # waits queue behind the requests of ``etrans serve`` for the Trio thread and the CPU
        # (1-2 s per pass measured by bench/e2e.py on 2 shared cores), so this bounds what the
        # relay publishes per second: at 200 the outbox backlog grew by 200-row steps while
        # POST /emails accepted 250/s (docs/performance.md).
        self._batch = batch_size
        # Payload bytes one pass holds at most (at least one row): 1000 emails of 25 MB would
        # otherwise be 25 GB in memory at once (twice that while hex-decoded).
        self._max_pass_bytes = max_pass_bytes
        self._budget_reached = False  # the last pass left selected rows for the next one
        self._idle = idle_seconds
        # After a wake-up, wait this long so that one pass (one transaction, one commit) takes
        # the rows of many requests: the relay's cost per email falls as the load rises.  Only
        # under load, when the last pass carried at least ``linger_min_rows`` rows: below, each
        # pass is woken by the commit (``notify``) and rows that arrive during a pass go in the
        # next one, and a wait would only delay the email (it added 50 ms to every email's time
        # to inbox at idle: docs/performance.md).
        self._linger = linger_seconds
        self._linger_min_rows = linger_min_rows
        self._max_backoff = max_backoff_seconds
        self._max_attempts = max_attempts
        self._retention = retention_seconds
        self._cleanup_every = cleanup_every_seconds
        self._next_cleanup = 0.0
        self._final_pass = final_pass_seconds
        self._log_topic = log_topic
        self._reject_events = reject_events if log_topic else None
        self._events_topic = events_topic  # email.queued / email.failed (None: none)
        self._tracer = tracer or ContextOnlyTracer()  # spans of traced rows (outbox_traces)
        self._release_every = release_every_seconds
        self._next_release = 0.0
        self._wakeup = trio.Event()
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
        await self._store.aclose()

    async def _relay(self, shutdown_requested: trio.Event | None) -> None:
        backoff = self._idle
        while True:
            self._wakeup = trio.Event()
            stopping = shutdown_requested is not None and shutdown_requested.is_set()
            await self._release_due_if_time()
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
                if progress >= self._linger_min_rows:
                    await trio.sleep(self._linger)

    async def relay_once(self) -> tuple[int, int]:
        """One pass; returns (published, failed): failed counts the rows not published."""
        outcome = await self._relay_pass()
        return len(outcome.published), outcome.retried + len(outcome.failed)

    async def _relay_pass(self) -> PassOutcome:
        self.stats.passes += 1
        outcome = await self._store.relay_pass(self._batch, self._within_budget, self._decide,
                                               self._max_pass_bytes)
        self._count(outcome)
        return outcome

    async def _decide(self, rows: Sequence[OutboxRow]) -> PassOutcome:
        """Publish the pass's rows; what the store is to write."""
        return self._outcome(rows, await self._publish_all(rows))

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

    def _outcome(self, rows: Sequence[OutboxRow],
                 results: dict[int, PublishFailure | str | None]) -> PassOutcome:
        outcome = PassOutcome()
        for row in rows:
            result = results.get(row.id)
            if result is None:
                outcome.published.append(row.id)
                continue
            failure = (result if isinstance(result, PublishFailure)
                       else PublishFailure("unreachable", str(result)))
            error = failure.error[:500]
            if failure.kind == "refused":
                outcome.failed.append(self._failed(
                    row, f"the Kafka producer refused the record: {error}", answered=False))
            elif failure.kind == "answered" and row.attempts + 1 >= self._max_attempts:
                outcome.failed.append(self._failed(
                    row, f"the Kafka broker refused the record {row.attempts + 1} times: {error}",
                    answered=True))
            elif failure.kind == "answered":
                outcome.answered[row.id] = error
            else:
                outcome.unreachable[row.id] = error
        return outcome

    def _failed(self, row: OutboxRow, reason: str, *, answered: bool) -> FailedRow:
        """The row fails; its email's Reject events (LOG_TOPIC) go with it."""
        failed = FailedRow(row, reason, answered)
        if row.message_id is None:
            return failed
        events: list[tuple[str, bytes | None, bytes]] = []
        record = (failed_record(row.payload, f"{REJECT_CODE} {failed.response}")
                  if self._events_topic is not None else None)
        if record is not None and self._events_topic is not None:
            events.append((self._events_topic, record[0], record[1]))
        if self._reject_events is None or self._log_topic is None:
            return failed._replace(events=events)
        try:
            rejects = self._reject_events(row.payload, f"{REJECT_CODE} {failed.response}")
        except Exception as exc:  # an unreadable payload: the email still fails
            log.warning("no Reject events for a failed outbox row", row_id=row.id,
                        message_id=row.message_id, error=repr(exc),
                        trace_id=trace_id_of(row.traceparent))
            return failed._replace(events=events)
        return failed._replace(events=[*((self._log_topic, key, value) for key, value in rejects),
                                       *events])

    def _count(self, outcome: PassOutcome) -> None:
        self.stats.published += len(outcome.published)
        self.stats.failed += outcome.retried + len(outcome.failed)
        self.stats.given_up += len(outcome.failed)
        errors = [*outcome.answered.values(), *outcome.unreachable.values()]
        if errors:
            self.stats.last_error = errors[0]
            log.warning("outbox publish failed", failed=len(errors),
                        published=len(outcome.published), error=errors[0])
        for failed in outcome.failed:
            self.stats.last_error = failed.reason
            log.error("outbox row failed: never published", row_id=failed.row.id,
                      topic=failed.row.topic, message_id=failed.row.message_id,
                      reason=failed.reason, trace_id=trace_id_of(failed.row.traceparent))

    # -- scheduled emails --------------------------------------------------------------------

    async def _release_due_if_time(self) -> None:
        if trio.current_time() < self._next_release:
            return
        self._next_release = trio.current_time() + self._release_every
        try:
            released = await self.release_due()
        except Exception as exc:  # the pass that follows will say more if the database is down
            log.warning("releasing scheduled outbox rows failed", error=repr(exc))
            return
        if released >= self._batch:
            self._next_release = 0.0  # more may be due: again before the next pass

    async def release_due(self) -> int:
        """Make the due rows of scheduled emails pending (at most one batch); how many."""
        released = await self._store.release_due(self._batch)
        self.stats.released += released
        return released

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
            count = await self._store.delete_published(self._retention, batch)
            deleted += count
            if count < batch:
                break
            await trio.lowlevel.checkpoint()
        self.stats.deleted += deleted
        if deleted:
            log.info("deleted published outbox rows", deleted=deleted,
                     retention_hours=round(self._retention / 3600, 2))
        return deleted

    # -- publishing --------------------------------------------------------------------------

    async def _publish_all(self, rows: Sequence[OutboxRow]
                           ) -> dict[int, PublishFailure | str | None]:
        spans = PassSpans(self._tracer, rows)
        records = [(row.topic, bytes(row.payload), None if row.key is None else row.key.encode())
                   for row in rows]
        if self._events_topic is not None and hasattr(self._publisher, "publish_chained"):
            # Each event produced as soon as its request is acknowledged: one wait for both.
            results, failed = await publish_chained(self._publisher, rows, records, [
                queued_record(row.payload) if row.message_id is not None else None
                for row in rows], self._events_topic, spans.headers())
            spans.end(results)
            return {row_id: PublishFailure("unreachable", f"email.queued event: {failed[row_id]}")
                    if result is None and failed[row_id] is not None else result
                    for row_id, result in results.items()}
        results = await publish_records(self._publisher, rows, records, spans.headers())
        spans.end(results)
        if self._events_topic is None:
            return results
        # Then the email.queued event of each send request the broker took, in one more wait.
        queued: list[tuple[int, tuple[str, bytes | None, bytes | None]]] = []
        traced = spans.headers()  # each event in its request's trace (its record's header)
        headers = []
        for index, row in enumerate(rows):
            event = (queued_record(row.payload)
                     if row.message_id is not None and results[row.id] is None else None)
            if event is not None:
                queued.append((row.id, (self._events_topic, event[1], event[0])))
                headers.append(traced[index] if traced is not None else None)
        if queued:
            errors = await publish_records(self._publisher,
                [row_id for row_id, _ in queued], [record for _, record in queued],
                headers if traced is not None else None)
            for row_id, error in errors.items():
                if error is not None:
                    # The request is out, its event is not: both again (at least once).
                    results[row_id] = PublishFailure("unreachable",
                                                     f"email.queued event: {error}")
        return results
