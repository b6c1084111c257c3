"""State shared by the consumer thread and the Trio workers, behind one lock.

The consumer thread *tracks* offsets as it hands messages out; workers *start* and *finish* them.
Every operation holds the lock for a few dictionary operations only, so Trio never blocks on it
for long.  A revoke on the consumer thread waits on :attr:`SharedState.changed` (a Condition on
the same lock) for the partition's started messages to finish.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import TYPE_CHECKING

from etrans.pipeline.offsets import OffsetTracker, TopicPartition
from etrans.pipeline.stats import PartitionStats

if TYPE_CHECKING:
    from collections.abc import Iterable

    from etrans.pipeline.message import Message

# What crosses the channel: the message and the assignment epoch it was handed out under.
# A message whose epoch is no longer its partition's (revoked, reassigned) is skipped.
Envelope = tuple["Message", int]


class SharedState:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.tracker = OffsetTracker()
        self._epochs: dict[TopicPartition, int] = {}
        self._next_epoch = 0
        self._revoking: set[TopicPartition] = set()
        self._started: Counter[TopicPartition] = Counter()
        self.stopping = False
        # Threads blocked in wait_changed(): notifications are only sent when there are some.
        self._waiters = 0
        # Handed to Trio and not yet finished or skipped: what back-pressure bounds.
        self.outstanding = 0
        # stop_at_end: per partition, the end offset observed at its first fetch.
        self.ends: dict[TopicPartition, int] = {}
        self.high_watermarks: dict[TopicPartition, int] = {}
        self.processed = 0
        self.failed = 0
        self.poisoned = 0
        self.dead_lettered = 0
        self.commits = 0
        # Repeats dropped because the fetch position went backwards (see track()).
        self.rewound = 0
        self.rebalances = 0
        self.paused = False
        self.committed_offsets: dict[TopicPartition, int] = {}

    # -- consumer thread -------------------------------------------------------------------------

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        with self.lock:
            self.rebalances += 1
            for tp in partitions:
                self._next_epoch += 1
                self._epochs[tp] = self._next_epoch
                self.tracker.assign(tp)
                self.ends.pop(tp, None)

    def begin_revoke(self, partitions: Iterable[TopicPartition]) -> None:
        with self.lock:
            self._revoking.update(partitions)
            self.changed.notify_all()

    def wait_changed(self, timeout: float) -> None:
        """Wait (lock held) until a worker finishes or skips a message, or ``timeout``."""
        self._waiters += 1
        try:
            self.changed.wait(timeout)
        finally:
            self._waiters -= 1

    def wait_idle(self, partitions: Iterable[TopicPartition], timeout: float) -> bool:
        """Wait until no started message of ``partitions`` is unfinished; False on timeout."""
        tps = list(partitions)
        deadline = time.monotonic() + timeout
        with self.lock:
            while any(self._started[tp] for tp in tps):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.wait_changed(remaining)
            return True

    def end_revoke(self, partitions: Iterable[TopicPartition]) -> None:
        with self.lock:
            for tp in partitions:
                self._revoking.discard(tp)
                self._epochs.pop(tp, None)
                self.tracker.revoke(tp)
                self.ends.pop(tp, None)
                self.high_watermarks.pop(tp, None)

    def track(self, messages: list[Message]) -> list[Envelope]:
        """Track offsets of messages about to be handed out; returns those to hand out."""
        envelopes: list[Envelope] = []
        with self.lock:
            if self.stopping:
                return envelopes
            epochs, tracker, ends = self._epochs, self.tracker, self.ends
            for message in messages:
                tp = (message.topic, message.partition)
                epoch = epochs.get(tp)
                if epoch is None:
                    continue  # not (or no longer) assigned: it will be fetched again
                end = ends.get(tp)
                if end is not None and message.offset >= end:
                    continue  # stop_at_end: beyond the end observed at start; left for later
                last = tracker.last_tracked(tp)
                if last is not None and message.offset <= last:
                    # The fetch position went backwards within one assignment (an offset
                    # reset after the broker answered OFFSET_OUT_OF_RANGE, seen with tansu).
                    # Everything up to ``last`` was already handed out in this assignment,
                    # so dropping the repeat loses nothing and keeps the tracker ordered.
                    self.rewound += 1
                    continue
                tracker.track(tp, message.offset)
                envelopes.append((message, epoch))
            self.outstanding += len(envelopes)
        return envelopes

    def offsets_to_commit(self, partitions: Iterable[TopicPartition] | None = None
                          ) -> dict[TopicPartition, int]:
        with self.lock:
            offsets = self.tracker.to_commit()
        if partitions is not None:
            wanted = set(partitions)
            offsets = {tp: o for tp, o in offsets.items() if tp in wanted}
        return offsets

    def committed(self, offsets: dict[TopicPartition, int]) -> None:
        with self.lock:
            self.commits += 1
            for tp, offset in offsets.items():
                self.tracker.committed(tp, offset)
                self.committed_offsets[tp] = offset

    def reached_end(self) -> bool:
        """stop_at_end: every assigned partition is done up to the end it observed.

        False while nothing is assigned: with the eager protocol a rebalance revokes everything
        before assigning again, and an empty assignment is not "the end".
        """
        with self.lock:
            partitions = self.tracker.partitions()
            if not partitions:
                return False
            for tp in partitions:
                end = self.ends.get(tp)
                if end is None:
                    return False
                position = self.tracker.committable(tp)
                if self.tracker.in_flight(tp) or (position is not None and position < end):
                    return False
            return True

    # -- Trio workers ---------------------------------------------------------------------------

    def try_start(self, message: Message, epoch: int) -> bool:
        """Claim a message for processing; False (and released) when it must be skipped."""
        tp = (message.topic, message.partition)
        with self.lock:
            if self.stopping or self._epochs.get(tp) != epoch or tp in self._revoking:
                self.outstanding -= 1
                if self._waiters:
                    self.changed.notify_all()
                return False
            self._started[tp] += 1
            return True

    def finish(self, message: Message, epoch: int, *, done: bool, processed: int = 0) -> None:
        """A started message is over: ``done`` (may be committed past) or abandoned."""
        tp = (message.topic, message.partition)
        with self.lock:
            self.outstanding -= 1
            self._started[tp] -= 1
            if self._started[tp] <= 0:
                del self._started[tp]
            if done:
                self.processed += processed
                if self._epochs.get(tp) == epoch:
                    self.tracker.mark_done(tp, message.offset)
            if self._waiters:
                self.changed.notify_all()

    def still_owned(self, message: Message, epoch: int) -> bool:
        tp = (message.topic, message.partition)
        with self.lock:
            return not self.stopping and self._epochs.get(tp) == epoch and tp not in self._revoking

    def count(self, *, processed: int = 0, failed: int = 0, poisoned: int = 0,
              dead_lettered: int = 0) -> None:
        with self.lock:
            self.processed += processed
            self.failed += failed
            self.poisoned += poisoned
            self.dead_lettered += dead_lettered

    def request_stop(self) -> None:
        with self.lock:
            self.stopping = True
            self.changed.notify_all()

    def partition_stats(self) -> tuple[PartitionStats, ...]:
        with self.lock:
            return tuple(
                PartitionStats(
                    topic=tp[0],
                    partition=tp[1],
                    committed=self.tracker.last_committed(tp),
                    high_watermark=self.high_watermarks.get(tp),
                    in_flight=self.tracker.in_flight(tp),
                )
                for tp in sorted(self.tracker.partitions())
            )
