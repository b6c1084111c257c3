"""The Trio side: the dispatcher and the worker tasks.

The dispatcher moves lists handed over by the consumer thread into the bounded memory channel;
each worker receives from its own clone, claims the message in the :class:`SharedState` (skipping
it if its partition was revoked or the pipeline is stopping), runs the task under the retry
policy (and a per-message cancel scope when ``message_timeout`` is set), and reports the outcome.
What returning or raising means is the contract of :mod:`etrans.pipeline.task`.

Outcomes are reported in batches: the workers append to one list (they all run in the Trio
thread) that is handed to :meth:`SharedState.finish_many` - one lock acquisition - when it holds
``_REPORT_EVERY`` outcomes, when a worker is about to wait for a message, when a revoke or stop
is in progress, and otherwise within ``_REPORT_AFTER`` seconds.  Until reported, a finished
message still counts as outstanding (it holds no memory of its own: the list only refers to it).
"""

from __future__ import annotations

import contextlib
from collections import deque
from typing import TYPE_CHECKING, Any

import trio

from etrans.errors import PoisonMessage
from etrans.observability import get_logger
from etrans.pipeline.dead_letter import publish_dead_letter
from etrans.pipeline.state import ABANDONED, PROCESSED, SKIPPED

if TYPE_CHECKING:
    from etrans.app.ports import EventPublisher
    from etrans.pipeline.config import PipelineConfig
    from etrans.pipeline.state import Envelope, Finished, SharedState
    from etrans.pipeline.task import BatchTask, Task

log = get_logger(__name__)

# A worker that keeps finding messages ready yields to the scheduler every this many messages.
_YIELD_EVERY = 64
# Outcomes are reported to the SharedState once this many are waiting ...
_REPORT_EVERY = 32
# ... or at the latest this long after the first one (seconds).
_REPORT_AFTER = 0.01


class Inbox:
    """Lists of envelopes delivered by the consumer thread, waiting for the dispatcher."""

    def __init__(self) -> None:
        self.batches: deque[list[Envelope]] = deque()
        self.size = 0
        self._ready = trio.Event()

    def put(self, envelopes: list[Envelope]) -> None:  # called via run_sync_soon
        self.batches.append(envelopes)
        self.size += len(envelopes)
        self._ready.set()

    async def wait_ready(self) -> None:
        while not self.batches:
            await self._ready.wait()
            self._ready = trio.Event()


async def dispatch(inbox: Inbox, send: trio.MemorySendChannel[Envelope]) -> None:
    """Feed the channel from the inbox, in order, until cancelled (then close the channel)."""
    async with send:
        while True:
            await inbox.wait_ready()
            batch = inbox.batches.popleft()
            for envelope in batch:
                inbox.size -= 1
                try:
                    send.send_nowait(envelope)
                except trio.WouldBlock:
                    await send.send(envelope)
            await trio.lowlevel.checkpoint()


class Processor:
    """Runs tasks on messages: timeout, retries, poison handling, outcome reporting."""

    def __init__(
        self,
        config: PipelineConfig,
        state: SharedState,
        *,
        task: Task | None,
        batch_task: BatchTask | None,
        producer: EventPublisher | None,
    ) -> None:
        self.config = config
        self.state = state
        self._task = task
        self._batch_task = batch_task
        self._producer = producer
        self._timeout = config.message_timeout or None
        # Outcomes not yet reported to the state (shared by the workers: all in the Trio thread).
        self._finished: list[Finished] = []
        self._skipped = 0
        self._pending = trio.Event()  # set when _finished/_skipped become non-empty

    def report(self) -> None:
        """Hand the outcomes gathered so far to the SharedState (one lock acquisition)."""
        finished, skipped = self._finished, self._skipped
        if finished or skipped:
            self._finished, self._skipped = [], 0
            self.state.finish_many(finished, skipped)

    async def report_periodically(self) -> None:
        """Report outcomes at most ``_REPORT_AFTER`` seconds after they were gathered."""
        while True:
            await self._pending.wait()
            await trio.sleep(_REPORT_AFTER)
            self._pending = trio.Event()
            self.report()

    def _finish(self, message: Any, epoch: int, outcome: int) -> None:
        finished = self._finished
        if not finished and not self._skipped:
            self._pending.set()
        finished.append((message, epoch, outcome))
        state = self.state
        if len(finished) >= _REPORT_EVERY or state.stopping or state.revoking:
            self.report()

    async def work(self, receive: trio.MemoryReceiveChannel[Envelope]) -> None:
        """One worker: process messages until the channel is closed and empty."""
        async with receive:
            try:
                if self._batch_task is not None:
                    await self._work_batches(receive)
                else:
                    await self._work(receive)
            finally:
                self.report()

    async def _work(self, receive: trio.MemoryReceiveChannel[Envelope]) -> None:
        state, task, finish = self.state, self._task, self._finish
        assert task is not None
        timed = self._timeout is not None
        since_yield = 0
        while True:
            try:
                message, epoch = receive.receive_nowait()
                since_yield += 1
            except trio.WouldBlock:
                self.report()  # nothing to do: let the consumer thread see the room now
                try:
                    message, epoch = await receive.receive()
                except trio.EndOfChannel:
                    return
                since_yield = 0
            except trio.EndOfChannel:
                return
            if not state.try_start(message, epoch):
                if not self._finished and not self._skipped:
                    self._pending.set()
                self._skipped += 1
                continue
            outcome = ABANDONED
            try:
                if timed:
                    outcome = (await self._settle([(message, epoch)]))[0]
                else:
                    # No timeout: call the task directly; the retry machinery (and its
                    # coroutine frames) only when it raises.
                    try:
                        await task(message)
                        outcome = PROCESSED
                    except Exception as exc:
                        outcome = (await self._settle([(message, epoch)], exc))[0]
            finally:
                finish(message, epoch, outcome)
            if since_yield >= _YIELD_EVERY:
                since_yield = 0
                await trio.lowlevel.checkpoint()

    async def _work_batches(self, receive: trio.MemoryReceiveChannel[Envelope]) -> None:
        size, linger = self.config.batch_size, self.config.batch_linger
        while True:
            try:
                first = receive.receive_nowait()
            except trio.WouldBlock:
                self.report()
                try:
                    first = await receive.receive()
                except trio.EndOfChannel:
                    return
            except trio.EndOfChannel:
                return
            batch = [first]
            deadline = trio.current_time() + linger
            closed = False
            while len(batch) < size:
                try:
                    batch.append(receive.receive_nowait())
                    continue
                except trio.WouldBlock:
                    pass
                except trio.EndOfChannel:
                    closed = True
                    break
                if linger <= 0:
                    break
                with trio.move_on_at(deadline):
                    try:
                        batch.append(await receive.receive())
                        continue
                    except trio.EndOfChannel:
                        closed = True
                break
            started = [e for e in batch if self.state.try_start(*e)]
            self._skipped += len(batch) - len(started)
            outcomes = [ABANDONED] * len(started)
            try:
                if started:
                    outcomes = await self._settle(started)
            finally:
                self._finished.extend((message, epoch, outcome) for (message, epoch), outcome
                                      in zip(started, outcomes, strict=True))
                self.report()
            if closed:
                return

    async def _call(self, envelopes: list[Envelope]) -> None:
        if self._batch_task is not None:
            await self._batch_task([m for m, _ in envelopes])
        else:
            assert self._task is not None
            await self._task(envelopes[0][0])

    async def _settle(self, envelopes: list[Envelope],
                      failed: Exception | None = None) -> list[int]:
        """Run the task until each message is PROCESSED, SKIPPED (poison) or ABANDONED.

        ``failed``: the error of a first attempt already made by the caller.
        """
        retry = self.config.retry
        attempt = 0
        while True:
            attempt += 1
            try:
                if failed is not None:
                    error, failed = failed, None
                    raise error
                if self._timeout is None:
                    await self._call(envelopes)
                else:
                    with trio.CancelScope(deadline=trio.current_time() + self._timeout) as scope:
                        await self._call(envelopes)
                    if scope.cancelled_caught:
                        raise trio.TooSlowError(f"task took longer than {self._timeout} s")
            except PoisonMessage as exc:
                if len(envelopes) > 1:
                    # Which one is bad?  Ask again, one message at a time.
                    outcomes: list[int] = []
                    for envelope in envelopes:
                        outcomes += await self._settle([envelope])
                    return outcomes
                return [await self._poison(envelopes[0], exc)]
            except Exception as exc:  # transient: RetryLater, timeout, anything unexpected
                self.state.count(failed=len(envelopes))
                delay = retry.backoff(attempt)
                first = envelopes[0][0]
                if retry.max_attempts is not None and attempt >= retry.max_attempts:
                    log.warning("giving up after transient failures", attempts=attempt,
                                error=repr(exc), **first.where())
                    return [await self._poison(e, exc) for e in envelopes]
                log.warning("task failed, will retry", attempt=attempt, retry_in=delay,
                            error=repr(exc), error_type=type(exc).__name__,
                            batch=len(envelopes), **first.where())
                if not await self._wait_retry(envelopes, delay):
                    log.info("retry abandoned (stopping or partition revoked); the message "
                             "stays uncommitted", **first.where())
                    return [ABANDONED] * len(envelopes)
            else:
                return [PROCESSED] * len(envelopes)

    async def _wait_retry(self, envelopes: list[Envelope], delay: float) -> bool:
        """Sleep ``delay``; False as soon as one of the messages is no longer ours to process."""
        deadline = trio.current_time() + delay
        while True:
            if not all(self.state.still_owned(m, e) for m, e in envelopes):
                return False
            remaining = deadline - trio.current_time()
            if remaining <= 0:
                return True
            await trio.sleep(min(0.1, remaining))

    async def _poison(self, envelope: Envelope, error: BaseException) -> int:
        """Log (and dead-letter) a poison message: SKIPPED once it may be committed past."""
        message = envelope[0]
        self.state.count(poisoned=1)
        log.error("poison message, skipped", error=str(error), error_type=type(error).__name__,
                  **message.where())
        topic = self.config.dead_letter_topic
        if topic is None or self._producer is None:
            return SKIPPED
        attempt = 0
        while True:
            attempt += 1
            try:
                await publish_dead_letter(self._producer, topic, message, error)
            except Exception as exc:
                # Not dead-lettered yet: the offset must not be committed past it.
                delay = self.config.retry.backoff(attempt)
                log.warning("dead-letter publish failed, will retry", error=repr(exc),
                            retry_in=delay, **message.where())
                if not await self._wait_retry([envelope], delay):
                    return ABANDONED
            else:
                self.state.count(dead_lettered=1)
                return SKIPPED


def channel_fill(send: Any, inbox: Inbox) -> int:
    with contextlib.suppress(Exception):
        return int(send.statistics().current_buffer_used) + inbox.size
    return inbox.size
