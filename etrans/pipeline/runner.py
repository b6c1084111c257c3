"""Pipeline: wires the consumer thread, the worker nursery and the offset tracker together.

Lifecycle of :meth:`Pipeline.run`:

1. start the consumer thread (it subscribes; ``task_status.started(pipeline)`` follows);
2. run the dispatcher and ``config.workers`` workers until ``shutdown.requested`` is set, the
   consumer thread reaches the end (``stop_at_end``) or fails;
3. stop: no new message is started (those waiting in the channel are skipped and stay
   uncommitted), the started ones finish - until the caller's drain deadline cancels them;
4. the consumer thread commits, closes the consumer (which revokes and commits again) and exits;
   Trio waits for it at most ``config.close_timeout``, shielded from the drain deadline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from etrans.errors import ConfigError
from etrans.observability import get_logger
from etrans.pipeline.consumer_thread import ConsumerThread
from etrans.pipeline.state import Envelope, SharedState
from etrans.pipeline.stats import PipelineStats
from etrans.pipeline.workers import Inbox, Processor, channel_fill, dispatch

if TYPE_CHECKING:
    from etrans.adapters.kafka.client import KafkaProducer
    from etrans.app.ports import EventPublisher
    from etrans.pipeline.config import PipelineConfig
    from etrans.pipeline.source import MessageSourceFactory
    from etrans.pipeline.task import BatchTask, Task
    from etrans.runtime import Shutdown

log = get_logger(__name__)


class Pipeline:
    """One consumer (one thread) feeding ``config.workers`` Trio tasks.

    Give exactly one of ``task`` (one message per call) or ``batch_task`` (up to
    ``config.batch_size`` messages per call).  ``producer`` is used for the dead-letter topic;
    when a dead-letter topic is configured and no producer is given, the pipeline makes (and
    closes) its own from ``config.kafka``.
    """

    def __init__(
        self,
        config: PipelineConfig,
        task: Task | None = None,
        *,
        batch_task: BatchTask | None = None,
        producer: EventPublisher | None = None,
        source: MessageSourceFactory | None = None,
    ) -> None:
        if (task is None) == (batch_task is None):
            raise ValueError("give exactly one of task or batch_task")
        self.config = config
        self._task = task
        self._batch_task = batch_task
        self._producer = producer
        self._own_producer: KafkaProducer | None = None  # made (and closed) by this pipeline
        # Where messages come from (etrans.pipeline.source): a Kafka consumer thread by default.
        self._source: MessageSourceFactory = source or ConsumerThread
        self._state = SharedState(max_done_behind=config.max_done_behind)
        self._inbox = Inbox()
        self._send: trio.MemorySendChannel[Envelope] | None = None
        self._assigned = trio.Event()
        self._stop = trio.Event()
        self._thread_exited = trio.Event()
        self._thread_error: BaseException | None = None
        self._ran = False

    async def wait_assigned(self) -> None:
        """Wait until the consumer has received its first (possibly empty) assignment."""
        await self._assigned.wait()

    def statistics(self) -> PipelineStats:
        state = self._state
        fill = channel_fill(self._send, self._inbox) if self._send is not None else 0
        with state.lock:
            committed = dict(state.committed_offsets)
            counters = (state.processed, state.failed, state.poisoned, state.dead_lettered,
                        state.outstanding, state.paused, state.commits, state.rebalances,
                        state.held)
        (processed, failed, poisoned, dead_lettered, outstanding, paused, commits, rebalances,
         held) = counters
        return PipelineStats(
            processed=processed,
            failed=failed,
            poisoned=poisoned,
            dead_lettered=dead_lettered,
            in_flight=max(0, outstanding),
            channel_fill=fill,
            channel_size=self.config.channel_size,
            paused=paused,
            commits=commits,
            rebalances=rebalances,
            partitions=state.partition_stats(),
            committed=committed,
            held=held,
        )

    def stop(self) -> None:
        """Stop intake and drain, as on shutdown (callable from Trio only)."""
        self._stop.set()

    async def run(
        self,
        shutdown: Shutdown,
        *,
        task_status: trio.TaskStatus[Pipeline] = trio.TASK_STATUS_IGNORED,
    ) -> PipelineStats:
        """Consume until ``shutdown.requested`` (or the end, with ``stop_at_end``); drain; commit.

        ``task_status.started(self)`` is called once the consumer thread has subscribed;
        ``await pipeline.wait_assigned()`` waits for the first partition assignment.
        """
        if self._ran:
            raise RuntimeError("a Pipeline runs once")
        self._ran = True
        config = self.config
        self._make_producer()
        processor = Processor(config, self._state, task=self._task, batch_task=self._batch_task,
                              producer=self._producer)
        subscribed = trio.Event()
        thread = self._source(
            config,
            self._state,
            trio.lowlevel.current_trio_token(),
            deliver=self._inbox.put,
            on_subscribed=subscribed.set,
            on_assigned=self._assigned.set,
            on_end_reached=self._on_end_reached,
            on_exit=self._on_thread_exit,
        )
        send, receive = trio.open_memory_channel[Envelope](config.channel_size)
        self._send = send
        thread.start()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_stop, shutdown)
                await _first_of(subscribed.wait, self._thread_exited.wait)
                self._raise_thread_error()
                task_status.started(self)
                await self._run_workers(processor, send, receive)
                nursery.cancel_scope.cancel()
        finally:
            self._state.request_stop()
            thread.request_close()
            with trio.move_on_after(config.close_timeout) as waited:
                waited.shield = True
                await self._thread_exited.wait()
            if waited.cancelled_caught:
                log.error("kafka consumer thread did not close in time; abandoning it",
                          close_timeout=config.close_timeout)
            if self._own_producer is not None:
                self._own_producer.close(timeout=config.close_timeout)
        self._raise_thread_error()
        stats = self.statistics()
        log.info("pipeline stopped", processed=stats.processed, failed=stats.failed,
                 poisoned=stats.poisoned, commits=stats.commits)
        return stats

    def _make_producer(self) -> None:
        """Make the dead-letter producer when a topic is configured and none was given (the
        pipeline then closes it)."""
        if not self.config.dead_letter_topic or self._producer is not None:
            return
        from etrans.adapters.kafka.client import KafkaProducer

        kafka = self.config.kafka
        self._own_producer = KafkaProducer({k: v for k, v in kafka.items()
                                            if not _consumer_only(k)})
        self._producer = self._own_producer

    async def _run_workers(
        self,
        processor: Processor,
        send: trio.MemorySendChannel[Envelope],
        receive: trio.MemoryReceiveChannel[Envelope],
    ) -> None:
        async with trio.open_nursery() as reporting:
            reporting.start_soon(processor.report_periodically)
            async with trio.open_nursery() as workers:
                dispatch_scope = trio.CancelScope()

                async def dispatcher() -> None:
                    with dispatch_scope:
                        await dispatch(self._inbox, send)
                    # Cancelled: close the channel so that workers end after what is buffered.
                    await send.aclose()

                workers.start_soon(dispatcher)
                async with receive:
                    for _ in range(self.config.workers):
                        workers.start_soon(processor.work, receive.clone())
                await self._stop.wait()
                # Stop intake: waiting messages are skipped (uncommitted); started ones finish.
                self._state.request_stop()
                dispatch_scope.cancel()
            reporting.cancel_scope.cancel()
        processor.report()

    async def _watch_stop(self, shutdown: Shutdown) -> None:
        await _first_of(shutdown.wait_requested, self._thread_exited.wait)
        self._stop.set()

    def _on_end_reached(self) -> None:
        log.info("every assigned partition reached its end; stopping")
        self._stop.set()

    def _on_thread_exit(self, error: BaseException | None) -> None:
        self._thread_error = error
        self._thread_exited.set()
        self._stop.set()

    def _raise_thread_error(self) -> None:
        if isinstance(self._thread_error, ConfigError):
            raise self._thread_error  # the process exits 2 with its message (runtime.run)
        if self._thread_error is not None:
            raise RuntimeError("kafka consumer thread failed") from self._thread_error


def _consumer_only(key: str) -> bool:
    # Consumer properties a producer would warn about; the rest (bootstrap, security) is shared.
    return key.startswith(("session.", "heartbeat.", "group.", "max.poll.", "auto.offset.",
                           "enable.auto.", "queued.", "fetch.", "partition.assignment.",
                           "enable.partition.eof"))


async def _first_of(*waits: object) -> None:
    """Return as soon as one of the given async callables returns."""
    async with trio.open_nursery() as nursery:
        for wait in waits:

            async def run(fn: object = wait) -> None:
                await fn()  # type: ignore[operator]
                nursery.cancel_scope.cancel()

            nursery.start_soon(run)


async def run_pipeline(
    config: PipelineConfig,
    task: Task,
    shutdown: Shutdown,
    *,
    batch: bool = False,
    producer: EventPublisher | None = None,
    source: MessageSourceFactory | None = None,
    task_status: trio.TaskStatus[Pipeline] = trio.TASK_STATUS_IGNORED,
) -> PipelineStats:
    """Run a pipeline; with ``batch=True``, ``task`` is a :class:`BatchTask`."""
    if batch:
        pipeline = Pipeline(config, batch_task=task, producer=producer,  # type: ignore[arg-type]
                            source=source)
    else:
        pipeline = Pipeline(config, task, producer=producer, source=source)
    return await pipeline.run(shutdown, task_status=task_status)
