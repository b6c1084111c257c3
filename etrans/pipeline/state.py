"""State shared by the consumer thread and the Trio workers, behind one lock.

The consumer thread *tracks* offsets as it hands messages out; workers *start* and *finish* them.
Every operation holds the lock for a few dictionary operations only, so Trio never blocks on it
for long.  A revoke on the consumer thread waits on :attr:`SharedState.changed` (a Condition on
the same lock) for the partition's started messages to finish.

The per-message path is kept cheap: workers claim a message without the lock
(:meth:`SharedState.try_start`, safe because only the Trio thread writes the started counts and
the claim re-checks the revoke *after* counting itself in - see there), and report finished
messages in batches (:meth:`SharedState.finish_many`, one lock acquisition per batch).  The
number of messages held (``outstanding``) is ``handed_out - released``: each counter has a single
writer (the source thread, the Trio thread), so neither needs the lock to stay exact.  Finished
messages whose offsets wait behind an unfinished one count too, past ``max_done_behind``: a
message that runs or retries for long cannot make the tracker's memory grow without bound.  Threads
waiting for room are woken only when there is room (:meth:`SharedState.wait_for_room`), not at
every finished message, which would make the two threads fight for the GIL.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from etrans.pipeline.offsets import OffsetTracker, TopicPartition
from etrans.pipeline.stats import PartitionStats

if TYPE_CHECKING:
    from collections.abc import Iterable

    from etrans.pipeline.message import Message

# What crosses the channel: the message and the assignment epoch it was handed out under.
# A message whose epoch is no longer its partition's (revoked, reassigned) is skipped.
Envelope = tuple["Message", int]

# How a worker reports a claimed message in finish_many(): (message, epoch, outcome), outcome
# one of these.
ABANDONED = 0  # not done: stays uncommitted (stopping, revoked, cancelled)
PROCESSED = 1  # the task returned
SKIPPED = 2  # poison: logged (and dead-lettered), may be committed past
Finished = tuple["Message", int, int]


class SharedState:
    def __init__(self, *, max_done_behind: int | None = None) -> None:
        # Past this many done offsets waiting behind an unfinished message, the excess counts as
        # outstanding: the source stops handing out messages until that message finishes.
        self.max_done_behind = max_done_behind
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.tracker = OffsetTracker()
        self._epochs: dict[TopicPartition, int] = {}
        self._next_epoch = 0
        self._revoking: set[TopicPartition] = set()
        self.revoking = self._revoking  # read by the workers (truthy while a revoke waits)
        # Claimed by a worker and not yet reported finished, per partition.  Written by the
        # Trio thread only (the consumer thread reads it while revoking).
        self._started: dict[TopicPartition, int] = {}
        self.stopping = False
        # Threads blocked in wait_changed(): every change is notified while there are some.
        self._waiters = 0
        # Threads blocked in wait_for_room(), and the ``outstanding`` they wait for.
        self._room_waiters = 0
        self._room_threshold = -1
        # Messages handed to Trio (written by the source thread, under the lock) and released
        # by Trio: finished or skipped (written by the Trio thread).  The difference,
        # ``outstanding``, is what back-pressure bounds.
        self.handed_out = 0
        self.released = 0
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
        # Records the source thread consumed but holds back for lack of room (not tracked).
        self.held = 0
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

    @property
    def outstanding(self) -> int:
        """Messages handed to Trio and not yet released (waiting, in flight, retrying), plus
        the done offsets over ``max_done_behind`` that wait behind an unfinished message."""
        held = self.handed_out - self.released
        if self.max_done_behind is not None:
            held += max(0, self.tracker.done_behind - self.max_done_behind)
        return held

    def wait_changed(self, timeout: float) -> None:
        """Wait (lock held) until a worker finishes or skips a message, or ``timeout``."""
        self._waiters += 1
        try:
            self.changed.wait(timeout)
        finally:
            self._waiters -= 1

    def wait_for_room(self, threshold: int, timeout: float) -> bool:
        """Wait (lock held) until ``outstanding <= threshold`` or stopping; False on timeout.

        Unlike :meth:`wait_changed`, the Trio thread wakes this waiter only once the threshold
        is reached.
        """
        deadline = time.monotonic() + timeout
        while self.outstanding > threshold and not self.stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._room_waiters += 1
            self._room_threshold = threshold
            try:
                self.changed.wait(remaining)
            finally:
                self._room_waiters -= 1
        return True

    def wait_idle(self, partitions: Iterable[TopicPartition], timeout: float) -> bool:
        """Wait until no started message of ``partitions`` is unfinished; False on timeout."""
        tps = list(partitions)
        deadline = time.monotonic() + timeout
        started = self._started
        with self.lock:
            while any(started.get(tp, 0) for tp in tps):
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
        append = envelopes.append
        with self.lock:
            if self.stopping:
                return envelopes
            epochs, tracker, ends = self._epochs, self.tracker, self.ends
            current: TopicPartition | None = None
            epoch: int | None = None
            end: int | None = None
            last = -1
            track = None
            for message in messages:
                tp = (message.topic, message.partition)
                if tp != current:
                    # A fetch returns runs of one partition: look the partition up per run.
                    current = tp
                    epoch = epochs.get(tp)
                    if epoch is None:
                        track = None
                    else:
                        end = ends.get(tp)
                        partition = tracker.partition(tp)
                        tracked = partition.last_tracked
                        last = -1 if tracked is None else tracked
                        track = partition.appender()
                if track is None:
                    continue  # not (or no longer) assigned: it will be fetched again
                offset = message.offset
                if end is not None and offset >= end:
                    continue  # stop_at_end: beyond the end observed at start; left for later
                if offset <= last:
                    # The fetch position went backwards within one assignment (an offset
                    # reset after the broker answered OFFSET_OUT_OF_RANGE, seen with tansu).
                    # Everything up to ``last`` was already handed out in this assignment,
                    # so dropping the repeat loses nothing and keeps the tracker ordered.
                    self.rewound += 1
                    continue
                track(offset)
                last = offset
                append((message, epoch))  # type: ignore[arg-type]
            self.handed_out += len(envelopes)
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
        """Claim a message for processing (Trio thread); False when it must be skipped.

        No lock: only the Trio thread writes ``_started``, and the claim counts itself in
        *before* looking at ``_revoking``, while a revoke adds to ``_revoking`` before looking
        at ``_started`` - so either the revoke waits for this message or the claim sees the
        revoke.  A skipped message must still be released through :meth:`finish_many`.
        """
        tp = (message.topic, message.partition)
        started = self._started
        started[tp] = started.get(tp, 0) + 1
        if self.stopping or self._epochs.get(tp) != epoch or tp in self._revoking:
            started[tp] -= 1
            return False
        return True

    def finish_many(self, finished: list[Finished], skipped: int = 0) -> None:
        """Release claimed messages (and ``skipped`` unclaimed ones) in one lock acquisition.

        A message whose outcome is not ABANDONED is marked done (may be committed past).
        """
        started, epochs, tracker = self._started, self._epochs, self.tracker
        processed = 0
        with self.lock:
            for message, epoch, outcome in finished:
                tp = (message.topic, message.partition)
                started[tp] -= 1
                if outcome:
                    if outcome == PROCESSED:
                        processed += 1
                    if epochs.get(tp) == epoch:
                        tracker.mark_done(tp, message.offset)
            self.processed += processed
            self.released += len(finished) + skipped
            if self._waiters or (self._room_waiters
                                 and self.outstanding <= self._room_threshold):
                self.changed.notify_all()

    def finish(self, message: Message, epoch: int, *, done: bool, processed: int = 0) -> None:
        """A started message is over: ``done`` (may be committed past) or abandoned."""
        outcome = (PROCESSED if processed else SKIPPED) if done else ABANDONED
        self.finish_many([(message, epoch, outcome)])

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
