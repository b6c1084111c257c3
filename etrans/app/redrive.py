"""Re-driving dead letters (``etrans dlq``): list them, show one, replay them to their source;
and putting the outbox rows the relay gave up on back in its queue (``etrans outbox
retry-failed``).

The records come from a :class:`DeadLetterLog` (the Kafka adapter reads KAFKA_DEAD_LETTER_TOPIC
without a consumer group, from the beginning to the ends it had when the command started: what
is dead-lettered meanwhile, a replayed message that fails again included, waits for the next
run).  :func:`scan_dead_letters` hands every record a :class:`DeadLetterFilter` takes to a
callback; :func:`replay_dead_letters` produces each one's original key, value and headers to its
source topic (``etrans-source``), into the partition it was read from when that still exists.

Replaying is at least once: a run cut short after the broker took a record but before it was
counted is replayed again by the next run, and a record that was dead-lettered twice (the
pipeline retried the dead-lettering after a lost ack) appears twice in the topic.  Within one
run, a source record (``topic/partition/offset``) is replayed once whatever the number of its
copies.  Across runs nothing is remembered here: what makes a second delivery harmless is the
consumer - ``etrans sendmail`` skips a message_id it has marked delivered or rejected (Redis
``etrans:sendmail:done:<message_id>``, kept ``SENDMAIL_DELIVERED_TTL_SECONDS``), ``fetchlog``
stores an ``event_id`` once, ``webhooks`` sends an event id once per endpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import trio

from etrans.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    from collections.abc import Awaitable, Sequence
    from datetime import datetime

    from etrans.domain.dead_letters import DeadLetter, DeadLetterFilter


@dataclass(frozen=True)
class ScanBatch:
    """Records of the dead-letter topic, in offset order per partition.  ``total``: how many
    records the scan covers in all (known before the first batch), for a progress bar."""

    letters: Sequence[DeadLetter]
    total: int


class DeadLetterLog(Protocol):
    """The dead-letter topic, read back."""

    topic: str

    async def scan(self, send: trio.MemorySendChannel[ScanBatch]) -> None:
        """Send every record from each partition's beginning up to its end as the scan found it
        at its start, in batches; close ``send`` when done."""
        ...

    async def read(self, partition: int, offset: int) -> DeadLetter | None:
        """The record at ``partition/offset``; None when there is none."""
        ...

    async def partition_count(self, topic: str) -> int | None:
        """How many partitions ``topic`` has; None when the broker has no such topic."""
        ...


class RecordPublisher(Protocol):
    """Produces one record and returns once the broker acknowledged it (raises otherwise)."""

    async def publish(self, topic: str, value: bytes | None, key: bytes | None = None,
                      headers: Sequence[tuple[str, bytes]] | None = None, *,
                      partition: int | None = None) -> None: ...


Progress = Callable[[int, int], None]  # (total, records scanned since the last call)


async def check_filter(log: DeadLetterLog, wanted: DeadLetterFilter) -> None:
    """InvalidInput for a filter that cannot match anything for a reason the operator should
    hear about: a source topic the broker does not know, or since >= until."""
    if wanted.topic is not None and await log.partition_count(wanted.topic) is None:
        raise InvalidInput(f"unknown topic {wanted.topic!r}: the broker has no such topic")
    if wanted.since is not None and wanted.until is not None and wanted.since >= wanted.until:
        raise InvalidInput("--since must be before --until")


async def scan_dead_letters(log: DeadLetterLog, wanted: DeadLetterFilter,
                            each: Callable[[DeadLetter], Awaitable[None]],
                            progress: Progress | None = None) -> tuple[int, int]:
    """``each(letter)`` for every record ``wanted`` takes, in order; returns (matched,
    scanned)."""
    matched = scanned = 0
    send, receive = trio.open_memory_channel[ScanBatch](1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(log.scan, send)
        async with receive:
            async for batch in receive:
                scanned += len(batch.letters)
                for letter in batch.letters:
                    if wanted.matches(letter):
                        matched += 1
                        await each(letter)
                if progress is not None:
                    progress(batch.total, len(batch.letters))
    return matched, scanned


async def show_dead_letter(log: DeadLetterLog, partition: int, offset: int) -> DeadLetter:
    letter = await log.read(partition, offset)
    if letter is None:
        raise NotFound(f"no record at {partition}/{offset} of {log.topic}")
    return letter


@dataclass
class ReplayReport:
    """What a replay did.  ``replayed`` counts what the broker acknowledged (in a dry run: what
    would have been produced)."""

    dry_run: bool = False
    matched: int = 0
    replayed: int = 0
    duplicates: int = 0  # copies of a source record already replayed in this run
    no_source: list[str] = field(default_factory=list)  # partition/offset without etrans-source
    failed: dict[str, str] = field(default_factory=dict)  # partition/offset -> why


Replayed = Callable[["DeadLetter", str | None], None]  # (letter, None or why it failed)


class _Replay:
    def __init__(self, log: DeadLetterLog, publisher: RecordPublisher | None,
                 report: ReplayReport, on_replayed: Replayed | None) -> None:
        self.log = log
        self.publisher = publisher
        self.report = report
        self.on_replayed = on_replayed
        self.seen: set[tuple[str, int, int]] = set()
        self.partitions: dict[str, int | None] = {}

    async def __call__(self, letter: DeadLetter) -> None:
        report = self.report
        report.matched += 1
        source = letter.source
        if source is None:
            report.no_source.append(letter.where)
            self._tell(letter, "no etrans-source header: not a dead letter of etrans")
            return
        identity = (source.topic, source.partition, source.offset)
        if identity in self.seen:
            report.duplicates += 1
            return
        self.seen.add(identity)
        if source.topic not in self.partitions:
            self.partitions[source.topic] = await self.log.partition_count(source.topic)
        count = self.partitions[source.topic]
        if count is None:
            report.failed[letter.where] = f"source topic {source.topic!r} does not exist"
            self._tell(letter, report.failed[letter.where])
            return
        if self.publisher is not None:
            try:
                await self.publisher.publish(
                    source.topic, letter.value, letter.key, letter.replay_headers(),
                    partition=source.partition if source.partition < count else None)
            except Exception as exc:
                report.failed[letter.where] = str(exc) or type(exc).__name__
                self._tell(letter, report.failed[letter.where])
                return
        report.replayed += 1
        self._tell(letter, None)

    def _tell(self, letter: DeadLetter, problem: str | None) -> None:
        if self.on_replayed is not None:
            self.on_replayed(letter, problem)


async def replay_dead_letters(log: DeadLetterLog, publisher: RecordPublisher,
                              wanted: DeadLetterFilter, *, dry_run: bool = False,
                              on_replayed: Replayed | None = None,
                              progress: Progress | None = None) -> ReplayReport:
    """Produce every dead letter ``wanted`` takes to its source topic (nothing when
    ``dry_run``), one at a time, each acknowledged before the next."""
    await check_filter(log, wanted)
    report = ReplayReport(dry_run=dry_run)
    replay = _Replay(log, None if dry_run else publisher, report, on_replayed)
    await scan_dead_letters(log, wanted, replay, progress)
    return report


# -- the outbox rows marked failed -------------------------------------------------------------


@dataclass(frozen=True)
class FailedOutboxRow:
    """An ``email_outbox`` row the relay gave up on (``failed_at`` set)."""

    id: int
    topic: str
    message_id: str | None
    attempts: int
    failed_at: datetime | None
    last_error: str | None


class FailedOutbox(Protocol):
    """The outbox rows marked failed, and putting them back in the relay's queue."""

    async def failed_rows(self, *, ids: Sequence[int] = (), topic: str | None = None
                          ) -> list[FailedOutboxRow]:
        """The failed rows, oldest first (only ``ids``, only ``topic``, when given)."""
        ...

    async def retry(self, ids: Sequence[int]) -> int:
        """In one transaction: each of ``ids`` still failed and unpublished gets ``failed_at``,
        ``attempts`` and ``last_error`` cleared (the relay takes it again) and its email, when it
        is ``failed``, ``queued`` again; returns how many rows."""
        ...


@dataclass
class OutboxRetryReport:
    rows: list[FailedOutboxRow]
    retried: int = 0
    dry_run: bool = False


async def retry_failed_outbox(store: FailedOutbox, *, ids: Sequence[int] = (),
                              topic: str | None = None,
                              dry_run: bool = False) -> OutboxRetryReport:
    """Put the failed outbox rows (all, or those of ``ids`` / ``topic``) back in the relay's
    queue; the relay of a running ``etrans serve`` publishes them in its next pass.  Unknown ids
    are InvalidInput (nothing is retried)."""
    rows = await store.failed_rows(ids=ids, topic=topic)
    missing = sorted(set(ids) - {row.id for row in rows})
    if missing:
        raise InvalidInput("not failed outbox rows (unknown, published or not failed): "
                           + ", ".join(map(str, missing)))
    report = OutboxRetryReport(rows=rows, dry_run=dry_run)
    if not dry_run and rows:
        report.retried = await store.retry([row.id for row in rows])
    return report
