"""The engagement worker of ``etrans fetchlog``: ``email.opened`` / ``email.clicked`` events from
KAFKA_EVENTS_TOPIC -> delivery-log documents (GET /logs) + ``email_engagement_events`` (GET
/emails/{id}'s counts), a second pipeline in the fetchlog process (``docs/tracking.md``).

:class:`EngagementTask` is the pipeline's :class:`~etrans.pipeline.BatchTask`.  For each batch it

1. decodes every record (``etrans/domain/events.py``); a record that is no event, or an open /
   click without a usable message id or url, is logged and skipped (*invalid*) - committed past
   with the others, never dead-lettered, never fatal; events of other types are *ignored*;
2. writes the documents of the opens and clicks with one unordered ``insert_many`` (event id =
   the event's id: a replay is a duplicate, not a second document), labelled with the event's
   ``user_id`` and ``source`` ``API`` so GET /logs shows them to that user only;
3. records them in the USEND DB (when configured) with one statement
   (:class:`~etrans.app.ports.EngagementStore`, idempotent by event id); an email's status is
   never changed.

Only when both succeeded does the call return, and only then may the pipeline commit the
batch's offsets; MongoDB or the USEND DB unavailable -> :class:`~etrans.errors.RetryLater`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import trio

from etrans.domain.engagement import Engagement, engagement_of, log_document
from etrans.domain.events import InvalidEmailEvent, decode_event
from etrans.observability import get_logger

if TYPE_CHECKING:
    from collections.abc import Sequence

    from etrans.app.ports import EngagementStore, LogDocumentWriter
    from etrans.observability import ErrorSink
    from etrans.pipeline import Message, Pipeline, PipelineConfig, PipelineStats
    from etrans.pipeline.source import MessageSourceFactory
    from etrans.runtime import Shutdown

log = get_logger(__name__)


@dataclass
class EngagementCounters:
    """Records by outcome, counted once per successful batch call."""

    stored: int = 0  # new delivery-log documents
    duplicates: int = 0  # documents already stored: replays and retried batches
    recorded: int = 0  # new rows of email_engagement_events
    ignored: int = 0  # events of other types
    invalid: int = 0  # not an event, or an open / click without message id: skipped
    batches: int = 0


class EngagementTask:
    """BatchTask: decode, store the documents, record the opens and clicks (see the module
    docstring)."""

    def __init__(self, writer: LogDocumentWriter, store: EngagementStore | None = None,
                 reporter: ErrorSink | None = None) -> None:
        self.writer = writer
        self.store = store
        self.reporter = reporter
        self.counters = EngagementCounters()

    def statistics(self) -> EngagementCounters:
        return EngagementCounters(**asdict(self.counters))

    async def __call__(self, messages: Sequence[Message]) -> None:
        try:
            await self._process(messages)
        except Exception as exc:
            if self.reporter is not None and messages:
                self.reporter.capture(exc, batch_size=len(messages), **messages[0].where())
            raise

    async def _process(self, messages: Sequence[Message]) -> None:
        engagements: dict[str, Engagement] = {}
        ignored = invalid = 0
        for message in messages:
            try:
                engagement = engagement_of(decode_event(message.value))
            except InvalidEmailEvent as exc:
                invalid += 1
                log.warning("skipping a record of the events topic that is not a usable event",
                            error=str(exc), **message.where())
                continue
            if engagement is None:
                ignored += 1
            else:
                engagements[engagement.event_id] = engagement
        documents: list[dict[str, Any]] = [log_document(e) for e in engagements.values()]
        result = await self.writer.insert(documents) if documents else None
        recorded = 0
        if self.store is not None and engagements:
            recorded = await self.store.record(list(engagements.values()))
        counters = self.counters
        if result is not None:
            counters.stored += result.inserted
            counters.duplicates += result.duplicates
        counters.recorded += recorded
        counters.ignored += ignored
        counters.invalid += invalid
        counters.batches += 1


async def run_engagement(config: PipelineConfig, task: EngagementTask, shutdown: Shutdown, *,
                         source: MessageSourceFactory | None = None,
                         task_status: trio.TaskStatus[Pipeline] = trio.TASK_STATUS_IGNORED,
                         ) -> PipelineStats:
    """The MongoDB indexes (the unique ``event_id`` makes replays duplicates), then the pipeline
    until shutdown (or the end with ``stop_at_end``)."""
    from etrans.pipeline import Pipeline
    from etrans.workers.fetchlog import ensure_indexes

    # False: shutdown was requested first, and the pipeline below stops at once.
    await ensure_indexes(task.writer, shutdown, task.reporter)
    pipeline = Pipeline(config, batch_task=task, source=source)
    log.info("consuming", worker="engagement", topics=list(config.topics),
             group_id=config.group_id, workers=config.workers, batch_size=config.batch_size,
             from_earliest=config.from_earliest, stop_at_end=config.stop_at_end)
    stats = await pipeline.run(shutdown, task_status=task_status)
    log.info("engagement stopped", pipeline=repr(stats), **asdict(task.statistics()))
    return stats
