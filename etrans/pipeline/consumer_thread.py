"""The thread that owns one confluent-kafka Consumer for its whole life.

Everything that touches the Consumer happens here: subscribe, consume, pause/resume, the
rebalance callbacks (which run inside ``consume``), commits and ``close``.  Messages are copied into
:class:`~etrans.pipeline.message.Message` objects, tracked in the :class:`SharedState`, and handed
to Trio in lists through ``TrioToken.run_sync_soon`` (never blocking this thread).

Back-pressure: when ``outstanding`` (handed to Trio, not finished) reaches ``channel_size`` the
thread waits up to ``pause_after`` for room; if the workers are still busy it pauses every
assigned partition and keeps calling ``consume`` - so the consumer stays in the group however
long the workers take - and resumes once half of that room is free again.
Records that arrive when there is no room (``consume`` returns at least one, and a partition may
still deliver around the moment it is paused) are held on this thread, in order, and handed out
first once there is room: the messages held in memory - channel, dispatcher inbox, in flight and
held here - never exceed ``channel_size`` + ``held`` (``statistics()`` shows both), and the
handed-out part never exceeds ``channel_size``.

``consume`` is called without waiting while librdkafka has records, and otherwise waits for the
first one only (``consume(n, timeout)`` would wait for ``n``), so the workers are fed as soon as a
fetch arrives.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from etrans.observability import get_logger
from etrans.pipeline.instance_claim import GroupInstanceIdTaken, claim_group_instance_id
from etrans.pipeline.message import Message
from etrans.pipeline.source import SourceThread

if TYPE_CHECKING:

    from etrans.pipeline.offsets import TopicPartition

log = get_logger(__name__)


class ConsumerThread(SourceThread):
    """Runs the consumer loop on its own thread; Trio is told about events via callbacks.

    ``deliver(envelopes)``, ``on_subscribed()``, ``on_assigned()``, ``on_end_reached()`` and
    ``on_exit(error)`` are called in the Trio thread (through ``run_sync_soon``).
    """

    thread_name = "kafka-consumer"

    def __init__(self, *args: Any, **callbacks: Any) -> None:
        super().__init__(*args, **callbacks)
        self._consumer: Any = None
        self._paused = False
        self._seen: set[TopicPartition] = set()
        # Records consumed while there was no room for them (see _loop), oldest first.
        self._held: list[Message] = []

    # -- the loop --------------------------------------------------------------------------------

    def _main(self) -> None:
        from confluent_kafka import Consumer

        error: BaseException | None = None
        consumer = None
        claim = None
        try:
            if self.config.group_instance_id is not None:
                claim = claim_group_instance_id(self.config.group_id,
                                                self.config.group_instance_id)
            conf = self.config.consumer_config()
            if self.config.stop_at_end:
                conf["enable.partition.eof"] = True
            consumer = self._consumer = Consumer(conf)
            consumer.subscribe(list(self.config.topics), on_assign=self._on_assign,
                               on_revoke=self._on_revoke, on_lost=self._on_lost)
            self._to_trio(self._on_subscribed)
            self._loop(consumer)
            self._commit(consumer)
        except GroupInstanceIdTaken as exc:  # a configuration problem: no traceback
            error = exc
            log.error("kafka consumer not started", error=str(exc))
        except BaseException as exc:  # reported to Trio, which re-raises it
            error = exc
            log.exception("kafka consumer thread failed")
        finally:
            if consumer is not None:
                try:
                    consumer.close()  # eager protocol: runs _on_revoke, which commits
                except Exception:
                    log.exception("kafka consumer close failed")
            if claim is not None:
                claim.close()
            self._to_trio(self._on_exit, error)

    def _loop(self, consumer: Any) -> None:
        config, state = self.config, self.state
        next_commit = time.monotonic() + config.commit_interval
        while not self._close_requested.is_set():
            self._apply_back_pressure(consumer)
            # Never ask for more than there is room for.  What arrives beyond the room anyway
            # (consume() returns at least one record, paused or not) is held here, counted in
            # ``state.held``, and handed out first once there is room: outstanding never
            # exceeds channel_size.
            room = config.channel_size - state.outstanding - len(self._held)
            wanted = max(1, min(config.poll_batch, room))
            # Take what librdkafka already has without waiting; only when it has nothing, wait
            # for the first record (consume(n, timeout) would wait for n records, starving
            # the workers meanwhile), then take the rest of what arrived with it.
            records = consumer.consume(wanted, 0)
            if not records:
                records = consumer.consume(1, config.poll_timeout)
                if records and wanted > 1:
                    records += consumer.consume(wanted - 1, 0)
            if records or self._held:
                self._hand_out(consumer, records)
            now = time.monotonic()
            if now >= next_commit:
                self._commit(consumer)
                self._observe_watermarks(consumer)
                next_commit = now + config.commit_interval
            if config.stop_at_end and not self._end_notified and not state.stopping \
                    and self._assigned_once and state.reached_end():
                self._end_notified = True
                self._commit(consumer)
                self._to_trio(self._on_end_reached)

    _assigned_once = False

    def _hand_out(self, consumer: Any, records: list[Any]) -> None:
        messages: list[Message] = []
        append = messages.append
        new = tuple.__new__  # Message(...) without its Python-level __new__: one per record
        for record in records:
            err = record.error()
            if err is not None:
                self._record_error(consumer, record, err)
                continue
            headers = record.headers()  # None when the record has none: nothing to copy
            append(new(Message, (record.topic(), record.partition(), record.offset(),
                                 record.key(), record.value(),
                                 tuple(headers) if headers else (), record.timestamp()[1])))
        if self.config.stop_at_end and messages:
            self._note_ends(consumer, messages)
        if self._held:
            messages[:0] = self._held
        room = self.config.channel_size - self.state.outstanding
        self._held = messages[max(0, room):]
        self.state.held = len(self._held)
        if room > 0 and messages:
            envelopes = self.state.track(messages[:room] if self._held else messages)
            if envelopes:
                self._to_trio(self._deliver, envelopes)

    def _record_error(self, consumer: Any, record: Any, err: Any) -> None:
        from confluent_kafka import KafkaError

        if err.code() == KafkaError._PARTITION_EOF:
            tp = (record.topic(), record.partition())
            with self.state.lock:
                if tp in self.state.tracker and tp not in self.state.ends:
                    # The end observed at start: the fetch's high watermark (the offset
                    # of this EOF).  See _note_ends for why ListOffsets is not used.
                    self.state.ends[tp] = record.offset()
            return
        if err.fatal():
            hint = ""
            if err.code() in (KafkaError._FENCED, KafkaError.FENCED_INSTANCE_ID):
                hint = (f" (another consumer of group {self.config.group_id} joined with this "
                        f"process's group.instance.id {self.config.group_instance_id}: give "
                        "each process its own KAFKA_GROUP_INSTANCE_ID)")
            raise RuntimeError(f"fatal kafka consumer error: {err}{hint}")
        log.warning("kafka consumer error", error=str(err), topic=record.topic(),
                    partition=record.partition())

    def _note_ends(self, consumer: Any, messages: list[Message]) -> None:
        # stop_at_end needs each partition's end as it was at start.  The high watermark from
        # ListOffsets (get_watermark_offsets(cached=False)) is unreliable on tansu - it reported
        # 1 for partitions holding hundreds of records - while the watermark carried by fetch
        # responses is right.  So the end of a partition is the cached (fetch) high watermark
        # when its first record or EOF arrives.
        from confluent_kafka import TopicPartition as KafkaTopicPartition

        state = self.state
        firsts = {}
        for message in messages:
            tp = (message.topic, message.partition)
            if tp not in firsts:
                firsts[tp] = message.offset
        for tp, first in firsts.items():
            with state.lock:
                known = tp in state.ends or tp not in state.tracker
            if known:
                continue
            _low, high = consumer.get_watermark_offsets(KafkaTopicPartition(*tp), cached=True)
            end = max(high, first + 1) if high is not None and high >= 0 else first + 1
            with state.lock:
                state.ends.setdefault(tp, end)

    def _apply_back_pressure(self, consumer: Any) -> None:
        state, limit = self.state, self.config.channel_size
        # Hand out lists of a useful size: wait until there is room for one (or half the limit).
        wanted = max(1, min(self.config.poll_batch, limit // 2))
        with state.lock:
            if not self._paused and not state.stopping and state.outstanding > limit - wanted:
                # Full: wait for room without calling consume (librdkafka keeps prefetching
                # into its own bounded queue).  Pausing costs a fetch round trip on resume, so
                # it is kept for workers that stay busy longer than ``pause_after``.
                # (Woken only once there is room: see SharedState.wait_for_room.)
                deadline = time.monotonic() + self.config.pause_after
                while state.outstanding > limit - wanted and not state.stopping:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._close_requested.is_set():
                        break
                    state.wait_for_room(limit - wanted, min(remaining, 0.1))
            outstanding, stopping = state.outstanding, state.stopping
        if not self._paused and (stopping or outstanding > limit - wanted):
            assignment = consumer.assignment()
            if assignment:
                consumer.pause(assignment)
            self._paused = True
        elif self._paused and not stopping and outstanding <= min(limit // 2, limit - wanted):
            assignment = consumer.assignment()
            if assignment:
                consumer.resume(assignment)
            self._paused = False
        state.paused = self._paused

    def _observe_watermarks(self, consumer: Any) -> None:
        from confluent_kafka import TopicPartition as KafkaTopicPartition

        state = self.state
        for tp in state.tracker.partitions():
            try:
                _low, high = consumer.get_watermark_offsets(KafkaTopicPartition(*tp), cached=True)
            except Exception:
                continue
            if high is not None and high >= 0:
                with state.lock:
                    state.high_watermarks[tp] = high

    # -- commits ---------------------------------------------------------------------------------

    def _commit(self, consumer: Any, partitions: list[TopicPartition] | None = None) -> None:
        from confluent_kafka import KafkaException
        from confluent_kafka import TopicPartition as KafkaTopicPartition

        offsets = self.state.offsets_to_commit(partitions)
        if not offsets:
            return
        try:
            results = consumer.commit(
                offsets=[KafkaTopicPartition(t, p, o) for (t, p), o in offsets.items()],
                asynchronous=False,
            )
        except KafkaException as exc:
            log.warning("offset commit failed, will retry", error=str(exc))
            return
        done = {}
        for result in results or ():
            tp = (result.topic, result.partition)
            if result.error is not None:
                log.warning("offset commit failed for a partition", topic=tp[0],
                            partition=tp[1], error=str(result.error))
            elif tp in offsets:
                done[tp] = offsets[tp]
        self.state.committed(done)
        log.debug("committed", offsets={f"{t}/{p}": o for (t, p), o in done.items()})

    # -- rebalance callbacks (run inside consume(), on this thread) ------------------------------

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        from confluent_kafka import OFFSET_BEGINNING

        tps = [(p.topic, p.partition) for p in partitions]
        self.state.assign(tps)
        if self.config.from_earliest:
            # Only the first assignment of a partition in this run starts over: a later
            # rebalance must not replay the whole partition again.
            for p in partitions:
                if (p.topic, p.partition) not in self._seen:
                    p.offset = OFFSET_BEGINNING
        self._seen.update(tps)
        if "cooperative" in self.config.assignment_strategy:
            consumer.incremental_assign(partitions)  # cooperative-sticky (tested: rebalance)
        else:
            consumer.assign(partitions)
        if partitions:
            # librdkafka keeps a partition's pause across revoke and re-assignment, and
            # back-pressure may have stopped pausing while nothing was assigned (the workers
            # drained during an eager rebalance): set the state of these partitions here.
            if self._paused:
                consumer.pause(partitions)
            else:
                consumer.resume(partitions)
        log.info("partitions assigned", partitions=[f"{t}/{p}" for t, p in tps])
        self._assigned_once = True
        self._to_trio(self._on_assigned)

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        state = self.state
        self._drop_held(tps)
        state.begin_revoke(tps)
        if not state.wait_idle(tps, self.config.revoke_timeout):
            log.warning("revoke: in-flight messages did not finish in time; they will be "
                        "delivered again to the partitions' next owner",
                        timeout=self.config.revoke_timeout)
        self._commit(consumer, tps)
        state.end_revoke(tps)
        log.info("partitions revoked", partitions=[f"{t}/{p}" for t, p in tps])

    def _drop_held(self, tps: list[TopicPartition]) -> None:
        # Never tracked, so never committed past: the partitions' next owner reads them.
        gone = set(tps)
        self._held = [m for m in self._held if (m.topic, m.partition) not in gone]
        self.state.held = len(self._held)

    def _on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        # Lost, not revoked: the group has moved on, a commit would be rejected.
        self._drop_held(tps)
        self.state.begin_revoke(tps)
        self.state.end_revoke(tps)
        log.warning("partitions lost", partitions=[f"{t}/{p}" for t, p in tps])
