"""OffsetTracker: which offset of each partition may be committed.

Per partition, offsets are *tracked* in the order the consumer hands them out (increasing, not
necessarily contiguous: compaction and transaction markers leave gaps) and *marked done* in any
order.  The committable offset is the first tracked offset not yet done - or, when everything
tracked is done, the last tracked offset + 1 - so a commit never passes a message in flight.

Pure data structure, no locking: the pipeline guards it with its own lock.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

TopicPartition = tuple[str, int]


class PartitionOffsets:
    """Offsets of one partition handed out since it was assigned."""

    __slots__ = ("_done", "_pending", "next_offset")

    def __init__(self, start: int | None = None) -> None:
        self._pending: deque[int] = deque()  # tracked, not all done; oldest first
        self._done: set[int] = set()  # done offsets still behind an unfinished one
        # The committable offset when nothing is pending (None: nothing tracked yet).
        self.next_offset: int | None = start

    def track(self, offset: int) -> None:
        if self._pending:
            last = self._pending[-1]
        elif self.next_offset is not None:
            last = self.next_offset - 1
        else:
            last = -1
        if offset <= last:
            raise ValueError(f"offset {offset} tracked out of order (last {last})")
        self._pending.append(offset)

    def appender(self) -> Callable[[int], None]:
        """A fast ``track`` for a caller that checked the order itself (against last_tracked)."""
        return self._pending.append

    def mark_done(self, offset: int) -> int:
        """Returns how many more done offsets wait behind an unfinished one (negative: fewer)."""
        pending = self._pending
        if not pending or offset < pending[0]:
            return 0  # already committable (or never tracked): nothing to do
        done = self._done
        if offset == pending[0]:
            before = len(done)
            pending.popleft()
            self.next_offset = offset + 1
            while pending and pending[0] in done:
                head = pending.popleft()
                done.discard(head)
                self.next_offset = head + 1
            return len(done) - before
        if offset in done:
            return 0
        done.add(offset)
        return 1

    @property
    def done_behind(self) -> int:
        """Done offsets that cannot be committed yet: an earlier one is unfinished."""
        return len(self._done)

    def committable(self) -> int | None:
        """The offset to commit (the next one to read), or None when nothing was tracked."""
        if self._pending:
            return self._pending[0]
        return self.next_offset

    @property
    def in_flight(self) -> int:
        return len(self._pending) - len(self._done)

    @property
    def last_tracked(self) -> int | None:
        if self._pending:
            return self._pending[-1]
        return None if self.next_offset is None else self.next_offset - 1


class OffsetTracker:
    """Per-partition :class:`PartitionOffsets` and the offsets last committed."""

    def __init__(self) -> None:
        self._partitions: dict[TopicPartition, PartitionOffsets] = {}
        self._committed: dict[TopicPartition, int] = {}
        # Done offsets waiting behind an unfinished one, over every partition (the memory the
        # tracker holds beyond the messages in flight).
        self.done_behind = 0

    def assign(self, tp: TopicPartition, start: int | None = None) -> None:
        self.revoke(tp)
        self._partitions[tp] = PartitionOffsets(start)

    def revoke(self, tp: TopicPartition) -> None:
        partition = self._partitions.pop(tp, None)
        if partition is not None:
            self.done_behind -= partition.done_behind
        self._committed.pop(tp, None)

    def __contains__(self, tp: object) -> bool:
        return tp in self._partitions

    def partitions(self) -> list[TopicPartition]:
        return list(self._partitions)

    def track(self, tp: TopicPartition, offset: int) -> None:
        self._partitions[tp].track(offset)

    def partition(self, tp: TopicPartition) -> PartitionOffsets:
        """The offsets of an assigned partition (KeyError when not assigned)."""
        return self._partitions[tp]

    def last_tracked(self, tp: TopicPartition) -> int | None:
        partition = self._partitions.get(tp)
        return None if partition is None else partition.last_tracked

    def mark_done(self, tp: TopicPartition, offset: int) -> None:
        partition = self._partitions.get(tp)
        if partition is not None:  # a revoked partition's late completion is ignored
            self.done_behind += partition.mark_done(offset)

    def committable(self, tp: TopicPartition) -> int | None:
        partition = self._partitions.get(tp)
        return None if partition is None else partition.committable()

    def in_flight(self, tp: TopicPartition) -> int:
        partition = self._partitions.get(tp)
        return 0 if partition is None else partition.in_flight

    def to_commit(self) -> dict[TopicPartition, int]:
        """Partitions whose committable offset moved past what was last committed."""
        result: dict[TopicPartition, int] = {}
        for tp, partition in self._partitions.items():
            offset = partition.committable()
            if offset is not None and offset != self._committed.get(tp):
                result[tp] = offset
        return result

    def committed(self, tp: TopicPartition, offset: int) -> None:
        """Record that ``offset`` was committed for ``tp``."""
        if tp in self._partitions:
            self._committed[tp] = offset

    def last_committed(self, tp: TopicPartition) -> int | None:
        return self._committed.get(tp)
