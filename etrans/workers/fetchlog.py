"""The fetchlog worker: delivery-log events from LOG_TOPIC -> MongoDB documents (+ email status).

:class:`FetchlogTask` is the pipeline's :class:`~etrans.pipeline.BatchTask`.  For each batch it

1. decodes every event (JSON object, usable ``@timestamp``); a bad one makes the batch raise
   :class:`~etrans.errors.PoisonMessage` - the pipeline then re-runs the batch one message at a
   time, so only the bad message is dead-lettered and committed past;
2. drops events whose ``Event`` is not in STORE_EVENT_TYPES (*filtered*) and those whose message
   id matches SKIP_MESSAGE_ID_PATTERN (*skipped*) - counted, and committed past like the others;
   a document whose event proves a bounce gets its ``bounce_class`` (:mod:`etrans.domain.bounces`);
3. records on each document who sent its message (``user_id``, ``source``: "API" for a row of
   ``email_messages``, else "SMTP"; one USEND lookup per batch, remembered) when the USEND DB is
   configured, then writes the documents with one unordered ``insert_many``; events already
   stored (a replay, a retried batch) are duplicate keys on the unique ``event_id`` index and
   are ignored;
4. advances ``email_messages.status`` in the USEND DB (when configured) for the batch's messages,
   and each recipient's outcome and bounce class (``email_recipient_outcomes``);
5. puts each recipient whose outcome is a hard bounce of an API email on its sender's suppression
   list (``suppressions``; idempotent, so a replayed or retried batch adds nothing twice);
6. publishes one ``email.delivered`` / ``email.delayed`` / ``email.bounced`` event per document
   of an API email that proves it (:func:`~etrans.domain.status_events.delivery_log_event`) to
   KAFKA_EVENTS_TOPIC - also for documents already stored: a replay publishes the same ids.

Trace context: :mod:`etrans.workers.log_traces`.

Only when all of it succeeded does the call return, and only then may the pipeline commit the
batch's offsets.  MongoDB, PostgreSQL or the broker (events) unavailable ->
:class:`~etrans.errors.RetryLater`: the pipeline retries the batch with backoff and commits
nothing past it.

:func:`run_fetchlog` runs the whole service: indexes, the backfill of documents stored without
``source`` (:mod:`etrans.workers.log_labels`, in the background), the pipeline, the TTY
progress line and the final summary.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, TextIO, cast

import trio

from etrans.app.email_events import publish_events
from etrans.app.tracing import ContextOnlyTracer
from etrans.domain.delivery_log import (
    EventFilter,
    InvalidEvent,
    Verdict,
    add_bounce_class,
    decode_event,
    recipient_outcomes,
    status_changes,
    to_document,
)
from etrans.domain.status_events import delivery_log_event
from etrans.errors import PoisonMessage
from etrans.observability import get_logger
from etrans.workers.log_labels import label_documents, run_backfill
from etrans.workers.log_traces import add_email_traces, record_trace, trace_documents

if TYPE_CHECKING:
    from collections.abc import Sequence

    from etrans.app.ports import (
        EmailStatusStore,
        EventPublisher,
        LogDocumentWriter,
        LogLabels,
        MessageOwners,
        SuppressionStore,
    )
    from etrans.app.tracing import Tracer
    from etrans.domain.trace_context import TraceContext
    from etrans.observability import ErrorSink
    from etrans.pipeline import Message, Pipeline, PipelineConfig, PipelineStats
    from etrans.pipeline.source import MessageSourceFactory
    from etrans.runtime import Shutdown

log = get_logger(__name__)


@dataclass
class FetchlogCounters:
    """Events by outcome, counted once per successful batch call (not per failed attempt)."""

    stored: int = 0  # new documents inserted
    duplicates: int = 0  # already stored: replays and retried batches
    filtered: int = 0  # Event not in STORE_EVENT_TYPES
    skipped: int = 0  # message_id matches SKIP_MESSAGE_ID_PATTERN
    invalid: int = 0  # undecodable / unusable: poison, committed past
    status_updates: int = 0  # email_messages rows advanced
    suppressed: int = 0  # recipients newly put on their sender's suppression list
    email_events: int = 0  # delivered/delayed/bounced events published (KAFKA_EVENTS_TOPIC)
    batches: int = 0

    @property
    def events(self) -> int:
        return self.stored + self.duplicates + self.filtered + self.skipped + self.invalid

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "events": self.events}


class FetchlogTask:
    """BatchTask: decode, filter, store, advance email statuses (see the module docstring)."""

    def __init__(
        self,
        event_filter: EventFilter,
        writer: LogDocumentWriter,
        statuses: EmailStatusStore | None = None,
        reporter: ErrorSink | None = None,
        owners: MessageOwners | None = None,
        suppressions: SuppressionStore | None = None,
        events: EventPublisher | None = None,
        events_topic: str = "email-events",
        tracer: Tracer | None = None,
    ) -> None:
        self.event_filter = event_filter
        self.writer = writer
        self.statuses = statuses
        self.reporter = reporter
        self.owners = owners
        self.suppressions = suppressions
        self.events = events  # None: no email events (no USEND DB: no API email is known)
        self.events_topic = events_topic
        self.tracer = tracer or ContextOnlyTracer()
        self.counters = FetchlogCounters()

    def statistics(self) -> FetchlogCounters:
        return FetchlogCounters(**asdict(self.counters))

    async def __call__(self, messages: Sequence[Message]) -> None:
        try:
            await self._process(messages)
        except PoisonMessage as exc:
            if len(messages) == 1:
                self.counters.invalid += 1
                self._report(exc, messages)
            raise
        except Exception as exc:
            self._report(exc, messages)
            raise

    async def _process(self, messages: Sequence[Message]) -> None:
        documents: list[dict[str, Any]] = []
        traces: list[TraceContext | None] = []  # of each document: its record's traceparent
        filtered = skipped = 0
        for message in messages:
            try:
                event = decode_event(message.value)
                verdict = self.event_filter.verdict(event)
                if verdict is Verdict.STORE:
                    document = to_document(event)
                    add_bounce_class(document, event.get("bounce_class"))
                    documents.append(document)
                    traces.append(record_trace(message))
            except InvalidEvent as exc:
                # The pipeline re-runs a multi-message batch one message at a time, so that only
                # this one is dead-lettered: storing the others now would be wasted work.
                raise PoisonMessage(f"invalid delivery-log event: {exc}") from None
            if verdict is Verdict.FILTERED:
                filtered += 1
            elif verdict is Verdict.SKIPPED:
                skipped += 1

        if self.owners is not None and documents:
            await label_documents(documents, self.owners)
            add_email_traces(documents, traces, self.owners)
        result = await self.writer.insert(documents)
        updated = suppressed = 0
        # Only the status store and the suppression list read the outcomes (without the USEND
        # DB computing them was ~6% of the CPU per event: bench/fetchlog.py's no-op sink run).
        wanted = self.statuses is not None or self.suppressions is not None
        outcomes = recipient_outcomes(documents) if documents and wanted else []
        if self.statuses is not None and documents:
            updated = await self.statuses.apply(status_changes(documents))
            await self.statuses.record_outcomes(outcomes)
        if self.suppressions is not None and outcomes:
            suppressed = await self.suppressions.add_hard_bounces(outcomes)
        events = []
        if self.events is not None and self.owners is not None:
            found = [(delivery_log_event(document), trace)
                     for document, trace in zip(documents, traces, strict=True)]
            events = [event for event, _ in found if event is not None]
            # Each in its email's trace (the header), when known.
            await publish_events(self.events, self.events_topic, events, [
                trace.traceparent if trace is not None else None
                for event, trace in found if event is not None])

        trace_documents(self.tracer, documents, traces)
        counters = self.counters
        counters.stored += result.inserted
        counters.duplicates += result.duplicates
        counters.filtered += filtered
        counters.skipped += skipped
        counters.status_updates += updated
        counters.suppressed += suppressed
        counters.email_events += len(events)
        counters.batches += 1

    def _report(self, exc: BaseException, messages: Sequence[Message]) -> None:
        if self.reporter is not None:
            first = messages[0] if messages else None
            self.reporter.capture(exc, batch_size=len(messages),
                                  **(first.where() if first is not None else {}))


async def _first_of(*waits: Any) -> None:
    async with trio.open_nursery() as nursery:
        async def until(wait: Any) -> None:
            await wait()
            nursery.cancel_scope.cancel()

        for wait in waits:
            nursery.start_soon(until, wait)


# -- the service ----------------------------------------------------------------------------------

class Progress:
    """One refreshed line on a terminal: events done, events remaining, rate (for replays)."""

    def __init__(self, task: FetchlogTask, stream: TextIO, interval: float = 0.5) -> None:
        self.task = task
        self.stream = stream
        self.interval = interval
        self.started = time.monotonic()

    def line(self, stats: PipelineStats | None) -> str:
        done = self.task.counters.events
        elapsed = max(time.monotonic() - self.started, 1e-9)
        remaining = "?"
        if stats is not None:
            lags = [p.lag for p in stats.partitions]
            if lags and all(lag is not None for lag in lags):
                remaining = str(sum(lag for lag in lags if lag is not None))
        return (f"fetchlog: {done} events done, {remaining} remaining, "
                f"{done / elapsed:,.0f} events/s")

    async def run(self, pipeline: Pipeline) -> None:
        try:
            while True:
                self._write(self.line(_stats(pipeline)))
                await trio.sleep(self.interval)
        finally:
            # Cancelled when the pipeline finished: the last state stays on screen.
            self._write(self.line(_stats(pipeline)) + "\n")

    def _write(self, text: str) -> None:
        self.stream.write("\r\x1b[2K" + text)
        self.stream.flush()


def _stats(pipeline: Pipeline) -> PipelineStats | None:
    try:
        return pipeline.statistics()
    except Exception:  # statistics before the consumer started: nothing to show yet
        return None


async def ensure_indexes(writer: LogDocumentWriter, shutdown: Shutdown,
                         reporter: ErrorSink | None = None) -> bool:
    """Create the indexes, retrying with backoff while MongoDB is unreachable; False when the
    process was asked to stop first."""
    delay = 0.5
    while not shutdown.requested.is_set():
        try:
            names = await writer.ensure_indexes()
        except Exception as exc:
            log.warning("mongodb not ready, retrying index creation", error=str(exc),
                        retry_in=delay)
            if reporter is not None:
                reporter.capture(exc, step="ensure_indexes")
            with trio.move_on_after(delay):
                await shutdown.wait_requested()
            delay = min(delay * 2, 30.0)
            continue
        log.info("mongodb indexes ready", indexes=names)
        return True
    return False


async def run_fetchlog(
    config: PipelineConfig,
    task: FetchlogTask,
    shutdown: Shutdown,
    *,
    progress_stream: TextIO | None = None,
    source: MessageSourceFactory | None = None,
    task_status: trio.TaskStatus[Pipeline] = trio.TASK_STATUS_IGNORED,
) -> FetchlogCounters:
    """Indexes, then the pipeline until shutdown (or the end with ``stop_at_end``); summary.
    ``task_status.started(pipeline)`` once its consumer has subscribed (or, when shutdown came
    during the indexes, with the pipeline that will not run)."""
    from etrans.pipeline import Pipeline

    started = time.monotonic()
    pipeline = Pipeline(config, batch_task=task, source=source)
    if not await ensure_indexes(task.writer, shutdown, task.reporter):
        task_status.started(pipeline)
        return task.statistics()
    log.info("consuming", topics=list(config.topics), group_id=config.group_id,
             workers=config.workers, batch_size=config.batch_size,
             from_earliest=config.from_earliest, stop_at_end=config.stop_at_end)
    backfilled: trio.Event | None = None
    async with trio.open_nursery() as nursery:
        if progress_stream is not None:
            nursery.start_soon(Progress(task, progress_stream).run, pipeline)
        if task.owners is None and hasattr(task.writer, "set_labels_complete"):
            # This run stores documents without labels: the next run with USEND_DB_URI must
            # walk the collection again.
            try:
                await task.writer.set_labels_complete(False)
            except Exception as exc:  # the documents are still stored; only the marker is late
                log.warning("could not withdraw the log backfill marker", error=str(exc))
        elif task.owners is not None and hasattr(task.writer, "unlabelled"):
            backfilled = trio.Event()
            labels = cast("LogLabels", task.writer)  # it has `unlabelled`: the MongoDB writer
            nursery.start_soon(run_backfill, labels, task.owners, task.reporter, backfilled)
        stats = await pipeline.run(shutdown, task_status=task_status)
        if backfilled is not None and config.stop_at_end:
            # A replay to the end also finishes the backfill (unless asked to stop first).
            await _first_of(backfilled.wait, shutdown.wait_requested)
        nursery.cancel_scope.cancel()

    counters = task.statistics()
    elapsed = time.monotonic() - started
    rate = counters.events / elapsed if elapsed > 0 else 0.0
    log.info("fetchlog summary", seconds=round(elapsed, 3), events_per_second=round(rate, 1),
             poisoned=stats.poisoned, retries=stats.failed, **counters.as_dict())
    if progress_stream is not None:
        progress_stream.write(
            f"fetchlog: {counters.events} events in {elapsed:.1f} s ({rate:,.0f}/s): "
            f"{counters.stored} stored, {counters.duplicates} already stored, "
            f"{counters.filtered} filtered, {counters.skipped} skipped, "
            f"{counters.invalid} invalid; {counters.status_updates} email statuses advanced\n"
        )
        progress_stream.flush()
    return counters


def progress_stream_for(replay: bool, stream: TextIO = sys.stderr) -> TextIO | None:
    """The terminal to draw progress on: replays (``--from-earliest``/``--stop-at-end``) on a
    TTY only; a service under systemd logs its summary instead."""
    return stream if replay and stream.isatty() else None
