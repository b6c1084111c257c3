"""In-process topics for ``etrans dev``: partitioned, persistent logs with consumer-group offsets.

:class:`LocalTopics` keeps every topic in one SQLite file (``topics.sqlite3`` in the data
directory): records are appended to a partition (by a hash of the key, round-robin without one)
and get consecutive offsets from 0; a consumer group commits, per partition, the offset of the
next record to read - Kafka's semantics, so a restarted process resumes where its group left off
and records not yet committed are delivered again.  Records every group has committed past are
dropped when the file is opened (so the file does not grow without end).

:class:`LocalPublisher` is the :class:`~etrans.app.ports.EventPublisher` (the shape of
:class:`~etrans.adapters.kafka.client.KafkaProducer`): ``publish`` returns once the record is
stored.  :class:`LocalMessageSource` is the pipeline's message source
(:class:`~etrans.pipeline.source.MessageSource`): a thread that plays the part of the Kafka
consumer thread - one consumer per group owning every partition - on the same
:class:`~etrans.pipeline.state.SharedState`, so tracking, back-pressure, commits after completion
and ``stop_at_end`` behave as with a broker.
"""

from __future__ import annotations

import base64
import itertools
import json
import sqlite3
import threading
import time
import zlib
from collections.abc import Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from etrans.observability import get_logger
from etrans.pipeline.message import Message
from etrans.pipeline.source import SourceThread

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from etrans.pipeline.offsets import TopicPartition

log = get_logger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS topics (name TEXT PRIMARY KEY, partitions INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL,
    key BLOB, value BLOB, headers TEXT, timestamp_ms INTEGER NOT NULL,
    PRIMARY KEY (topic, partition, offset)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS group_offsets (
    group_id TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL,
    offset INTEGER NOT NULL, PRIMARY KEY (group_id, topic, partition)) WITHOUT ROWID;
"""


def _encode_headers(headers: Any) -> str | None:
    if not headers:
        return None
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    return json.dumps([[name, base64.b64encode(value.encode() if isinstance(value, str)
                                               else bytes(value)).decode()]
                       for name, value in pairs])


def _decode_headers(text: str | None) -> tuple[tuple[str, bytes], ...]:
    if not text:
        return ()
    return tuple((name, base64.b64decode(value)) for name, value in json.loads(text))


class LocalTopics:
    """Every topic of one ``etrans dev`` process (thread-safe; calls block briefly on SQLite)."""

    name = "topics"

    def __init__(self, path: Path | str, *, partitions: int = 1) -> None:
        self.default_partitions = partitions
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self.pruned = self._prune()
        self._lock = threading.Lock()
        self.appended = threading.Condition(self._lock)
        self.version = 0  # bumped by every append: consumers wait for it to change
        self._partitions: dict[str, int] = dict(
            self._db.execute("SELECT name, partitions FROM topics"))
        self._ends: dict[TopicPartition, int] = {
            (t, p): end + 1 for t, p, end in self._db.execute(
                "SELECT topic, partition, MAX(offset) FROM records GROUP BY topic, partition")}
        self._round_robin = itertools.count()

    def _prune(self) -> int:
        """At open: drop the records every consumer group has committed past (keeping the last
        one of each partition, which carries its end offset).  A group that never committed on a
        partition keeps all of it.  Returns how many records were dropped."""
        before = self._db.total_changes
        self._db.execute("""
            DELETE FROM records WHERE offset < (
                SELECT MIN(g.offset) FROM group_offsets g
                WHERE g.topic = records.topic AND g.partition = records.partition)
            AND offset < (
                SELECT MAX(r.offset) FROM records r
                WHERE r.topic = records.topic AND r.partition = records.partition)""")
        return self._db.total_changes - before

    # -- topics and records ----------------------------------------------------------------------

    def partitions(self, topic: str) -> int:
        """The topic's partition count; the topic is created (``default_partitions``) if new."""
        with self._lock:
            return self._partitions_locked(topic)

    def create_topic(self, topic: str, partitions: int) -> None:
        """Create ``topic`` with ``partitions`` partitions (ValueError if it exists otherwise)."""
        with self._lock:
            count = self._partitions.get(topic)
            if count is None:
                self._db.execute("INSERT INTO topics VALUES (?, ?)", (topic, partitions))
                self._partitions[topic] = count = partitions
        if count != partitions:
            raise ValueError(f"topic {topic!r} exists with {count} partitions")

    def _partitions_locked(self, topic: str) -> int:
        count = self._partitions.get(topic)
        if count is None:
            count = self.default_partitions
            self._db.execute("INSERT OR IGNORE INTO topics VALUES (?, ?)", (topic, count))
            self._partitions[topic] = count
        return count

    def append(self, topic: str, value: bytes | None, key: bytes | None = None,
               headers: Any = None, partition: int | None = None) -> tuple[int, int]:
        """Store one record; returns its (partition, offset)."""
        with self._lock:
            count = self._partitions_locked(topic)
            if partition is None:
                spread = zlib.crc32(key) if key is not None else next(self._round_robin)
                partition = spread % count
            elif not 0 <= partition < count:
                raise ValueError(f"topic {topic!r} has no partition {partition}")
            offset = self._ends.get((topic, partition), 0)
            self._db.execute("INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (topic, partition, offset, key, value, _encode_headers(headers),
                              int(time.time() * 1000)))
            self._ends[(topic, partition)] = offset + 1
            self.version += 1
            self.appended.notify_all()
        return partition, offset

    def end_offset(self, topic: str, partition: int) -> int:
        """The offset the next record of the partition will get (Kafka's high watermark)."""
        with self._lock:
            return self._ends.get((topic, partition), 0)

    def read(self, topic: str, partition: int, start: int, limit: int) -> list[Message]:
        with self._lock:
            rows = self._db.execute(
                "SELECT offset, key, value, headers, timestamp_ms FROM records WHERE topic = ?"
                " AND partition = ? AND offset >= ? ORDER BY offset LIMIT ?",
                (topic, partition, start, limit)).fetchall()
        return [Message(topic, partition, offset, key, value, _decode_headers(headers), ts)
                for offset, key, value, headers, ts in rows]

    def wait_appended(self, version: int, timeout: float) -> int:
        """Wait until a record is appended after ``version`` (or ``timeout``); the new version."""
        with self._lock:
            if self.version == version:
                self.appended.wait(timeout)
            return self.version

    # -- consumer groups -------------------------------------------------------------------------

    def committed(self, group_id: str, topic: str, partition: int) -> int | None:
        with self._lock:
            row = self._db.execute(
                "SELECT offset FROM group_offsets"
                " WHERE group_id = ? AND topic = ? AND partition = ?",
                (group_id, topic, partition)).fetchone()
        return None if row is None else int(row[0])

    def commit(self, group_id: str, offsets: Mapping[TopicPartition, int]) -> None:
        if not offsets:
            return
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(
                    "INSERT INTO group_offsets VALUES (?, ?, ?, ?) ON CONFLICT (group_id, topic,"
                    " partition) DO UPDATE SET offset = excluded.offset",
                    [(group_id, t, p, o) for (t, p), o in offsets.items()])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def source(self) -> Callable[..., LocalMessageSource]:
        """The pipeline's message-source factory for these topics."""
        return partial(LocalMessageSource, self)

    async def check(self) -> None:
        await trio.to_thread.run_sync(self.end_offset, "-", 0)

    def close(self) -> None:
        with self._lock:
            self._db.close()


class LocalPublisher:
    """EventPublisher onto :class:`LocalTopics` (the interface of ``KafkaProducer``)."""

    name = "topics"

    def __init__(self, topics: LocalTopics) -> None:
        self.topics = topics
        self._limiter = trio.CapacityLimiter(4)
        self.published = 0

    async def publish(self, topic: str, value: bytes | None, key: bytes | None = None,
                      headers: Any = None, *, partition: int | None = None) -> None:
        await trio.to_thread.run_sync(
            partial(self.topics.append, topic, value, key, headers, partition),
            limiter=self._limiter)
        self.published += 1

    async def publish_many(self, records: Sequence[tuple[str, bytes | None, bytes | None]],
                           headers: Sequence[Any] | None = None) -> list[str | None]:
        """``KafkaProducer.publish_many``: one entry per record, None where it was stored."""
        errors: list[str | None] = []
        for index, (topic, value, key) in enumerate(records):
            try:
                await self.publish(topic, value, key, headers[index] if headers else None)
                errors.append(None)
            except Exception as exc:
                errors.append(repr(exc))
        return errors

    async def check(self) -> None:
        await self.topics.check()

    def close(self, timeout: float = 0.0) -> int:
        return 0  # nothing is ever queued: publish returns once the record is stored


class LocalMessageSource(SourceThread):
    """The consumer thread of a pipeline reading :class:`LocalTopics` (see the module docstring).

    Same constructor and callbacks as :class:`etrans.pipeline.consumer_thread.ConsumerThread`.
    """

    thread_name = "local-topic-consumer"

    def __init__(self, topics: LocalTopics, *args: Any, **callbacks: Any) -> None:
        self.topics = topics
        super().__init__(*args, **callbacks)
        self._positions: dict[TopicPartition, int] = {}

    def request_close(self) -> None:
        super().request_close()
        with self.topics.appended:  # wake the thread if it waits for new records
            self.topics.appended.notify_all()

    def _main(self) -> None:
        error: BaseException | None = None
        try:
            self._to_trio(self._on_subscribed)
            self._assign()
            self._loop()
        except BaseException as exc:  # reported to Trio, which re-raises it
            error = exc
            log.exception("local topic consumer failed")
        finally:
            try:
                self._commit()
            except Exception:
                log.exception("local topic commit at close failed")
            self._to_trio(self._on_exit, error)

    def _assign(self) -> None:
        config, topics = self.config, self.topics
        tps = [(topic, p) for topic in config.topics for p in range(topics.partitions(topic))]
        self.state.assign(tps)
        for tp in tps:
            committed = None if config.from_earliest else topics.committed(config.group_id, *tp)
            if committed is None:
                committed = 0 if config.auto_offset_reset == "earliest" else topics.end_offset(*tp)
            self._positions[tp] = committed
            if config.stop_at_end:
                with self.state.lock:
                    self.state.ends[tp] = topics.end_offset(*tp)
        log.info("partitions assigned", partitions=[f"{t}/{p}" for t, p in tps],
                 group_id=config.group_id)
        self._to_trio(self._on_assigned)

    def _loop(self) -> None:
        config, state, topics = self.config, self.state, self.topics
        next_commit = time.monotonic() + config.commit_interval
        version = topics.version
        while not self._close_requested.is_set():
            self._wait_for_room()
            handed = self._hand_out()
            now = time.monotonic()
            if now >= next_commit:
                self._commit()
                next_commit = now + config.commit_interval
            if config.stop_at_end and not self._end_notified and not state.stopping \
                    and state.reached_end():
                self._end_notified = True
                self._commit()
                self._to_trio(self._on_end_reached)
            if not handed:
                version = topics.wait_appended(version, config.poll_timeout)

    def _wait_for_room(self) -> None:
        state, limit = self.state, self.config.channel_size
        with state.lock:
            while state.outstanding >= limit and not state.stopping \
                    and not self._close_requested.is_set():
                state.wait_changed(self.config.poll_timeout)
            state.paused = False

    def _hand_out(self) -> int:
        state, handed = self.state, 0
        for tp, position in list(self._positions.items()):
            with state.lock:
                room = self.config.channel_size - state.outstanding
                end = state.ends.get(tp)
            if room <= 0:
                break
            if end is not None and position >= end:
                continue
            messages = self.topics.read(*tp, position, min(room, self.config.poll_batch))
            if not messages:
                continue
            self._positions[tp] = messages[-1].offset + 1
            envelopes = state.track(messages)
            if envelopes:
                handed += len(envelopes)
                self._to_trio(self._deliver, envelopes)
        with state.lock:
            for tp in self._positions:
                state.high_watermarks[tp] = self.topics.end_offset(*tp)
        return handed

    def _commit(self) -> None:
        offsets = self.state.offsets_to_commit()
        if not offsets:
            return
        self.topics.commit(self.config.group_id, offsets)
        self.state.committed(offsets)
