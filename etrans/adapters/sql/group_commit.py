"""Group commit: concurrent writes share one statement (one transaction).

The hot path of POST /emails ends in a write (the ``email_messages`` row and its ``email_outbox``
row, all or nothing).  One statement per request costs a round trip to PostgreSQL and a commit
per email.  :class:`GroupCommit` lets the requests that arrive while a write is in flight wait for
it, then writes all of them with one call of ``write_group``: the cost per email falls as the load
rises, and an idle server writes each request at once (no timer, no added latency).

Guarantees, unchanged from one transaction per request:

- :meth:`GroupCommit.write` returns only after the caller's items are committed, and raises when
  they are not; each caller's items are all-or-nothing.
- When the shared write fails with an error that belongs to the data (``split_on``, e.g. an
  integrity error), the round is split in halves and each half written again, down to single
  callers, so one bad request fails alone and cannot fail the others.  Halving, not one
  statement per caller: a round of 50 good callers and 1 bad one took 52 statements one by
  one, 13 by halving (``tests/integration/test_group_commit.py``); the good callers stay grouped.
  Other errors (database down) fail every caller not yet committed at once, without retrying.
- A caller cancelled while waiting behaves like a cancelled uncancellable thread call: its items
  are committed or not as if it had not been cancelled (waiters park with
  ``wait_task_rescheduled`` refusing to abort, the leader's round runs in a shielded scope; the
  cancellation is delivered at the caller's next checkpoint), so a group is never left
  half-handled.  A waiter parks without a cancel scope of its own: entering and leaving one per
  request showed in profiles.

No background task: the first caller that finds no write in flight leads one round (takes the
queue, up to ``max_items``), then hands the lead to the oldest waiter, so every caller's latency
is bounded by the round in flight plus its own.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import trio

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

T = TypeVar("T")


@dataclass
class GroupCommitStatistics:
    rounds: int = 0
    items: int = 0
    split_rounds: int = 0  # shared transaction failed on the data: the round was halved
    statements: int = 0  # calls of write_group (one per round, more when a round is split)
    largest_round: int = 0


@dataclass(eq=False)
class _Job(Generic[T]):
    items: list[T]
    parked: trio.lowlevel.Task | None = None  # set while the caller waits
    lead: bool = False
    finished: bool = False
    error: BaseException | None = None

    def wake(self) -> None:
        if self.parked is not None:
            task, self.parked = self.parked, None
            trio.lowlevel.reschedule(task)


def _refuse_abort(_raise_cancel: Any) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.FAILED  # uncancellable wait: see the module docstring


class GroupCommit(Generic[T]):
    """``write(items)`` batches concurrent callers into ``await write_group(list of all items)``,
    which writes ``items`` in one transaction (all or nothing) or raises."""

    def __init__(self, write_group: Callable[[list[T]], Awaitable[None]], *,
                 split_on: tuple[type[BaseException], ...] = (), max_items: int = 256,
                 weight: Callable[[T], int] | None = None, max_weight: int | None = None) -> None:
        self._write_group = write_group
        self._split_on = split_on
        self._max_items = max(1, max_items)
        # A round also stops before the total ``weight`` of its items passes ``max_weight``
        # (e.g. bytes: one statement must stay far below the server's limits); it always takes
        # at least one caller, whatever its weight.
        self._weight = weight
        self._max_weight = max_weight
        self._queue: deque[_Job[T]] = deque()
        self._leading = False
        self.stats = GroupCommitStatistics()

    def statistics(self) -> GroupCommitStatistics:
        return self.stats

    async def write(self, items: list[T]) -> None:
        """Commit ``items`` (together, possibly with other callers' items); raise if not."""
        job: _Job[T] = _Job(items)
        self._queue.append(job)
        if not self._leading:
            # Invariant: nobody leads only when the queue was empty, so this job is first.
            self._leading = True
            job.lead = True
        while not job.finished:
            if job.lead:
                with trio.CancelScope(shield=True):
                    await self._lead_one_round()
            else:
                # Woken once: to lead the next round, or with the outcome of its round.
                job.parked = trio.lowlevel.current_task()
                await trio.lowlevel.wait_task_rescheduled(_refuse_abort)
        if job.error is not None:
            raise job.error

    async def _lead_one_round(self) -> None:
        batch: list[_Job[T]] = []
        count = weight = 0
        weigh, max_weight = self._weight, self._max_weight
        while self._queue:
            queued = self._queue[0]
            job_weight = (sum(weigh(item) for item in queued.items)
                          if weigh is not None and max_weight is not None else 0)
            if batch and (count + len(queued.items) > self._max_items or (
                    max_weight is not None and weight + job_weight > max_weight)):
                break
            self._queue.popleft()
            batch.append(queued)
            count += len(queued.items)
            weight += job_weight
        try:
            errors = await self._write_batch(batch)  # an outcome per job, never raises
        finally:
            # Hand the lead to the oldest waiter (its items go in the next round), or stop.
            if self._queue:
                successor = self._queue[0]
                successor.lead = True
                successor.wake()
            else:
                self._leading = False
        self.stats.rounds += 1
        self.stats.items += count
        self.stats.largest_round = max(self.stats.largest_round, count)
        for queued, error in zip(batch, errors, strict=True):
            queued.error = error
            queued.finished = True
            queued.wake()

    async def _write_batch(self, batch: list[_Job[T]]) -> list[BaseException | None]:
        """One transaction for the whole batch; on a data error, halves of it, recursively."""
        errors: list[BaseException | None] = [None] * len(batch)
        ranges = [(0, len(batch))]  # a stack: the first half is written first
        while ranges:
            start, end = ranges.pop()
            self.stats.statements += 1
            try:
                await self._write_group([item for job in batch[start:end] for item in job.items])
            except self._split_on as exc:
                if end - start == 1:
                    errors[start] = exc
                    continue
                if end - start == len(batch):
                    self.stats.split_rounds += 1
                middle = (start + end) // 2
                ranges += [(middle, end), (start, middle)]
            except BaseException as exc:
                # Not the data: every caller not yet written fails with it, none is retried.
                for first, last in [(start, end), *ranges]:
                    errors[first:last] = [exc] * (last - first)
                return errors
        return errors
