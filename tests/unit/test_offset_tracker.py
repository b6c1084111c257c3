"""OffsetTracker: commits never pass an unfinished message, and reach the end when all are done."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etrans.pipeline.offsets import OffsetTracker, PartitionOffsets

TP = ("topic", 0)


@st.composite
def offsets_and_completion_order(draw: st.DrawFn) -> tuple[list[int], list[int]]:
    """Increasing offsets with gaps (compaction, transaction markers) and a completion order."""
    start = draw(st.integers(min_value=0, max_value=10_000))
    gaps = draw(st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=200))
    offsets = []
    current = start
    for gap in gaps:
        offsets.append(current)
        current += gap
    order = draw(st.permutations(offsets))
    return offsets, list(order)


@given(offsets_and_completion_order())
def test_committable_never_passes_the_first_unfinished_message(
    case: tuple[list[int], list[int]],
) -> None:
    offsets, order = case
    tracker = OffsetTracker()
    tracker.assign(TP)
    for offset in offsets:
        tracker.track(TP, offset)
    done: set[int] = set()
    previous = tracker.committable(TP)
    assert previous == offsets[0]
    for offset in order:
        tracker.mark_done(TP, offset)
        done.add(offset)
        committable = tracker.committable(TP)
        assert committable is not None
        unfinished = [o for o in offsets if o not in done]
        if unfinished:
            # Exactly the first unfinished message: never past it, never short of it.
            assert committable == unfinished[0]
        else:
            assert committable == offsets[-1] + 1
        assert committable >= previous  # commits only move forward
        assert tracker.in_flight(TP) == len(unfinished)
        previous = committable
    assert tracker.committable(TP) == offsets[-1] + 1
    assert tracker.in_flight(TP) == 0


@given(offsets_and_completion_order(), st.data())
def test_interleaved_tracking_and_completion(case: tuple[list[int], list[int]],
                                            data: st.DataObject) -> None:
    """Messages handed out while others finish: the same invariant holds at every step."""
    offsets, _ = case
    partition = PartitionOffsets()
    assert partition.committable() is None
    tracked: list[int] = []
    done: set[int] = set()
    remaining = list(offsets)
    while remaining or len(done) < len(tracked):
        can_finish = [o for o in tracked if o not in done]
        if remaining and (not can_finish or data.draw(st.booleans())):
            offset = remaining.pop(0)
            partition.track(offset)
            tracked.append(offset)
        else:
            offset = data.draw(st.sampled_from(can_finish))
            partition.mark_done(offset)
            done.add(offset)
        unfinished = [o for o in tracked if o not in done]
        expected = unfinished[0] if unfinished else tracked[-1] + 1
        assert partition.committable() == expected
    assert partition.committable() == offsets[-1] + 1


def test_to_commit_reports_only_progress() -> None:
    tracker = OffsetTracker()
    tracker.assign(TP)
    tracker.assign(("topic", 1))
    assert tracker.to_commit() == {}
    for offset in (5, 6, 7):
        tracker.track(TP, offset)
    assert tracker.to_commit() == {TP: 5}
    tracker.committed(TP, 5)
    assert tracker.to_commit() == {}
    tracker.mark_done(TP, 7)
    assert tracker.to_commit() == {}  # 5 and 6 still in flight
    tracker.mark_done(TP, 5)
    tracker.mark_done(TP, 6)
    assert tracker.to_commit() == {TP: 8}


def test_revoked_partition_ignores_late_completions() -> None:
    tracker = OffsetTracker()
    tracker.assign(TP)
    tracker.track(TP, 0)
    tracker.revoke(TP)
    tracker.mark_done(TP, 0)  # a worker finishing after the revoke: ignored, no error
    assert TP not in tracker
    assert tracker.committable(TP) is None


def test_tracking_out_of_order_is_refused() -> None:
    partition = PartitionOffsets()
    partition.track(3)
    with pytest.raises(ValueError, match="out of order"):
        partition.track(3)


def test_shared_state_drops_a_rewound_fetch_instead_of_failing() -> None:
    """A fetch position that goes backwards (an offset reset) must not crash the consumer
    thread: the repeats were already handed out in this assignment, so they are dropped."""
    from etrans.pipeline.message import Message
    from etrans.pipeline.state import SharedState

    state = SharedState()
    state.assign([("t", 0)])

    def batch(offsets: range) -> list[Message]:
        return [Message(topic="t", partition=0, offset=o, key=None, value=b"x", headers=(),
                        timestamp_ms=0) for o in offsets]

    first = state.track(batch(range(0, 5)))
    assert [m.offset for m, _ in first] == [0, 1, 2, 3, 4]
    again = state.track(batch(range(0, 8)))  # reset to the beginning, then new messages
    assert [m.offset for m, _ in again] == [5, 6, 7]
    assert state.rewound == 5


def test_done_behind_counts_what_waits_for_an_unfinished_offset() -> None:
    tracker = OffsetTracker()
    tracker.assign(TP)
    tracker.assign(("topic", 1))
    for offset in range(10):
        tracker.track(TP, offset)
        tracker.track(("topic", 1), offset)
    for offset in range(1, 10):
        tracker.mark_done(TP, offset)
    tracker.mark_done(TP, 5)  # twice: counted once
    for offset in (3, 4):
        tracker.mark_done(("topic", 1), offset)
    assert tracker.done_behind == 9 + 2
    tracker.mark_done(TP, 0)  # the head: everything behind it becomes committable
    assert tracker.done_behind == 2
    assert tracker.committable(TP) == 10
    tracker.revoke(("topic", 1))
    assert tracker.done_behind == 0


def test_shared_state_counts_done_offsets_past_the_cap_as_outstanding() -> None:
    from etrans.pipeline.message import Message
    from etrans.pipeline.state import PROCESSED, SharedState

    state = SharedState(max_done_behind=10)
    state.assign([("t", 0)])
    messages = [Message(topic="t", partition=0, offset=o, key=None, value=b"x", headers=(),
                        timestamp_ms=0) for o in range(30)]
    envelopes = state.track(messages)
    for message, epoch in envelopes:
        assert state.try_start(message, epoch)
    state.finish_many([(m, e, PROCESSED) for m, e in envelopes[1:]])  # all but offset 0
    # 1 in flight, 29 done behind it: 19 over the cap count as outstanding.
    assert state.outstanding == 1 + 19
    state.finish_many([(envelopes[0][0], envelopes[0][1], PROCESSED)])
    assert state.outstanding == 0
    assert state.offsets_to_commit() == {("t", 0): 30}


def test_stop_at_end_is_not_reached_while_an_eager_rebalance_has_nothing_assigned() -> None:
    """The rebalance integration test no longer runs with stop_at_end: this covers its case."""
    from etrans.pipeline.message import Message
    from etrans.pipeline.state import PROCESSED, SharedState

    state = SharedState()
    state.assign([("t", 0)])
    state.ends[("t", 0)] = 1
    [(message, epoch)] = state.track([Message(topic="t", partition=0, offset=0, key=None,
                                              value=b"x", headers=(), timestamp_ms=0)])
    assert state.try_start(message, epoch)
    state.finish_many([(message, epoch, PROCESSED)])
    assert state.reached_end()
    state.begin_revoke([("t", 0)])
    state.end_revoke([("t", 0)])  # eager: everything revoked, the new assignment not yet given
    assert not state.reached_end()
