"""The dead-letter topic read back (:class:`~etrans.app.redrive.DeadLetterLog` on Kafka).

No consumer group: the partitions are assigned from their beginning, nothing is committed, so
reading changes nothing on the broker.  A scan stops at the ends the partitions had when it
started, taken from the first fetch response of each partition (the high watermark it carries,
or the offset of its end-of-partition event): ListOffsets (``get_watermark_offsets(cached=False)``)
is wrong on tansu after batch produces (see ``etrans/pipeline/consumer_thread.py``, _note_ends).
Records are handed to Trio only once every partition's end is known, so what a replay produces
and a worker dead-letters again during the scan is never read by it.

One thread owns each Consumer for its whole life (create, assign, consume, close); records go
to Trio through a memory channel, which bounds what is held in memory to a batch or two.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

import trio

from etrans.app.redrive import ScanBatch
from etrans.domain.dead_letters import DeadLetter

if TYPE_CHECKING:
    from collections.abc import Mapping

_READER_CONFIG: dict[str, str | int | bool] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "enable.partition.eof": True,
    "auto.offset.reset": "earliest",
}


# librdkafka's codes for an offset past the end: _AUTO_OFFSET_RESET (-140), OFFSET_OUT_OF_RANGE.
_OUT_OF_RANGE = frozenset({-140, 1})


class DeadLetterReadError(RuntimeError):
    """The dead-letter topic could not be read (the broker did not answer in time)."""


def _letter(record: Any) -> DeadLetter:
    headers = record.headers()
    return DeadLetter(topic=record.topic(), partition=record.partition(),
                      offset=record.offset(), timestamp_ms=record.timestamp()[1],
                      key=record.key(), value=record.value(),
                      headers=tuple(headers) if headers else ())


class KafkaDeadLetterLog:
    """KAFKA_DEAD_LETTER_TOPIC on the brokers of ``conf`` (a consumer's librdkafka settings;
    ``admin_conf`` for the metadata)."""

    def __init__(self, conf: Mapping[str, str | int | bool],
                 admin_conf: Mapping[str, str | int | bool], topic: str, *,
                 batch_size: int = 500, timeout: float = 30.0) -> None:
        self.topic = topic
        self._conf = dict(conf)
        self._admin_conf = dict(admin_conf)
        self._batch_size = batch_size
        self._timeout = timeout  # for the metadata and for each partition's first fetch

    def _consumer(self, **overrides: str) -> Any:
        from confluent_kafka import Consumer

        # librdkafka wants a group.id; with assign() and no commits, the group is never joined.
        return Consumer({**self._conf, **_READER_CONFIG,
                         "group.id": f"etrans-dlq-{uuid.uuid4().hex}", **overrides})

    # -- metadata ---------------------------------------------------------------------------

    async def partition_count(self, topic: str) -> int | None:
        return await trio.to_thread.run_sync(self._partition_count, topic)

    def _partition_count(self, topic: str) -> int | None:
        from confluent_kafka.admin import AdminClient

        metadata = AdminClient(dict(self._admin_conf)).list_topics(timeout=self._timeout)
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            return None
        return len(found.partitions)

    # -- scan -------------------------------------------------------------------------------

    async def scan(self, send: trio.MemorySendChannel[ScanBatch]) -> None:
        stop = threading.Event()
        async with send:
            try:
                await trio.to_thread.run_sync(self._scan, send, stop)
            finally:
                stop.set()  # cancelled: the thread stops at its next consume()

    def _scan(self, send: trio.MemorySendChannel[ScanBatch], stop: threading.Event) -> None:
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        count = self._partition_count(self.topic)
        if count is None:
            raise DeadLetterReadError(f"the dead-letter topic {self.topic!r} does not exist")
        consumer = self._consumer()
        try:
            consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING)
                             for p in range(count)])
            ends, positions, held, total = self._find_ends(consumer, count, stop)
            self._hand(send, [r for r in held if r.offset < ends[r.partition]], total)
            remaining = {p for p, end in ends.items() if positions[p] < end}
            while remaining and not stop.is_set():
                trio.from_thread.check_cancelled()
                batch: list[DeadLetter] = []
                for record in consumer.consume(self._batch_size, 0.2):
                    p = record.partition()
                    if record.error() is not None:
                        if self._is_eof(record) and record.offset() >= ends[p]:
                            remaining.discard(p)
                        continue
                    if record.offset() < ends[p]:
                        batch.append(_letter(record))
                    if record.offset() + 1 >= ends[p]:
                        remaining.discard(p)
                self._hand(send, batch, total)
        finally:
            consumer.close()

    @staticmethod
    def _is_eof(record: Any) -> bool:
        from confluent_kafka import KafkaError

        return bool(record.error().code() == KafkaError._PARTITION_EOF)

    def _find_ends(self, consumer: Any, count: int, stop: threading.Event
                   ) -> tuple[dict[int, int], dict[int, int], list[DeadLetter], int]:
        """Consume until every partition's end is known: (ends, where each partition's next
        record is, records read meanwhile, how many records the scan covers).  The end of a
        partition is the high watermark of the fetch that brought its first record, or the
        offset of its end-of-partition event."""
        from confluent_kafka import TopicPartition

        ends: dict[int, int] = {}
        firsts: dict[int, int] = {}
        positions: dict[int, int] = {}
        held: list[DeadLetter] = []
        deadline = time.monotonic() + self._timeout
        while len(ends) < count and not stop.is_set():
            trio.from_thread.check_cancelled()
            if time.monotonic() > deadline:
                raise DeadLetterReadError(
                    f"no answer from the broker for {self.topic!r} within {self._timeout:g} s")
            for record in consumer.consume(self._batch_size, 0.2):
                p = record.partition()
                if record.error() is not None:
                    if self._is_eof(record):
                        ends.setdefault(p, record.offset())
                        firsts.setdefault(p, record.offset())
                        positions[p] = max(positions.get(p, 0), record.offset())
                    elif record.error().fatal():
                        raise DeadLetterReadError(f"kafka consumer error: {record.error()}")
                    continue
                if p not in ends:
                    _low, high = consumer.get_watermark_offsets(
                        TopicPartition(self.topic, p), cached=True)
                    ends[p] = max(high, record.offset() + 1) if high and high > 0 else (
                        record.offset() + 1)
                    firsts.setdefault(p, record.offset())
                positions[p] = record.offset() + 1
                held.append(_letter(record))
        total = sum(max(0, ends[p] - firsts.get(p, ends[p])) for p in ends)
        return ends, positions, held, total

    @staticmethod
    def _hand(send: trio.MemorySendChannel[ScanBatch], letters: list[DeadLetter],
              total: int) -> None:
        if letters:
            # Blocks this thread while Trio has a batch to go through: the back-pressure.
            trio.from_thread.run(send.send, ScanBatch(letters, total))

    # -- one record -------------------------------------------------------------------------

    async def read(self, partition: int, offset: int) -> DeadLetter | None:
        return await trio.to_thread.run_sync(self._read, partition, offset)

    def _read(self, partition: int, offset: int) -> DeadLetter | None:
        from confluent_kafka import TopicPartition

        count = self._partition_count(self.topic)
        if count is None:
            raise DeadLetterReadError(f"the dead-letter topic {self.topic!r} does not exist")
        if not 0 <= partition < count or offset < 0:
            return None
        # An offset out of range is an error event ("error"), not a jump to the beginning.
        consumer = self._consumer(**{"auto.offset.reset": "error"})
        try:
            consumer.assign([TopicPartition(self.topic, partition, offset)])
            # A fetch from an offset that holds a record answers at once; past the end, tansu
            # answers nothing at all (no out-of-range error, no end-of-partition event).
            deadline = time.monotonic() + min(self._timeout, 5.0)
            while time.monotonic() < deadline:
                for record in consumer.consume(1, 0.2):
                    if record.error() is None:
                        # Past a compacted or deleted offset the next record comes instead.
                        return _letter(record) if record.offset() == offset else None
                    if self._is_eof(record) or record.error().code() in _OUT_OF_RANGE:
                        return None
                    if record.error().fatal():
                        raise DeadLetterReadError(f"kafka consumer error: {record.error()}")
            return None
        finally:
            consumer.close()
