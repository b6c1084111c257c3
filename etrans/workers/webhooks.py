"""The webhooks worker: events from KAFKA_EVENTS_TOPIC -> signed POSTs to the subscribed
endpoints (:class:`etrans.app.webhook_delivery.WebhookDelivery`), plus the retry loop.

:class:`WebhooksTask` is the pipeline's :class:`~etrans.pipeline.Task`
(:mod:`etrans.pipeline.task`):

- a record that is not an event (``etrans/domain/events.py``): :class:`PoisonMessage`
  (dead-lettered when KAFKA_DEAD_LETTER_TOPIC is set, committed past);
- each subscribed endpoint attempted: returns once every attempt is recorded - delivered, or
  failed with its retry written to ``webhook_retries`` - so the offset is committed only after
  that (a restart loses no retry, and repeats at most the events not yet recorded);
- the USEND DB unavailable: :class:`~etrans.errors.RetryLater` from the store; the pipeline
  tries the event again (endpoints already delivered to get it twice, with the same
  ``webhook-id``).

:func:`run_retries` claims the due retries every WEBHOOKS_RETRY_POLL_SECONDS and attempts them
(two processes never claim the same row: ``claim_due``); :func:`run_webhooks` runs both.

Trace context (docs/operations.md, "Tracing"): an event whose record carries a ``traceparent``
header (the ``email.*`` events of the relay, sendmail and fetchlog) is delivered in a span of that
trace (``webhook deliver``, a consumer span, the header's child), and its ``trace_id`` and
``message_id`` are bound to every log line of its delivery.  An event without one is delivered
as before, outside any trace.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio
from structlog.contextvars import bind_contextvars, unbind_contextvars

from etrans.app.tracing import ContextOnlyTracer
from etrans.domain.events import InvalidEmailEvent, decode_event
from etrans.domain.trace_context import HEADER, parse_traceparent
from etrans.errors import PoisonMessage
from etrans.observability import get_logger

if TYPE_CHECKING:
    from etrans.app.tracing import Tracer
    from etrans.app.webhook_delivery import WebhookDelivery
    from etrans.pipeline import Message, Pipeline, PipelineConfig, PipelineStats
    from etrans.pipeline.source import MessageSourceFactory
    from etrans.runtime import Shutdown

log = get_logger(__name__)


class WebhooksTask:
    """The pipeline task of ``etrans webhooks``."""

    def __init__(self, delivery: WebhookDelivery, tracer: Tracer | None = None) -> None:
        self.delivery = delivery
        self.tracer = tracer or ContextOnlyTracer()

    async def __call__(self, message: Message) -> None:
        parent = parse_traceparent(message.header(HEADER)) if message.headers else None
        try:
            event = decode_event(message.value)
        except InvalidEmailEvent as exc:
            raise PoisonMessage(f"not an email event: {exc}") from None
        # Each pipeline worker runs in its own context (Trio copies it per task): what the
        # previous event bound and this one has not must go.
        message_id = event.message_id
        if message_id is None:
            unbind_contextvars("message_id")
        if parent is None:
            unbind_contextvars("trace_id")
            bind_contextvars(event_id=event.id, **(
                {"message_id": message_id} if message_id is not None else {}))
            await self.delivery.deliver(event, message.value or b"")
            return
        span = self.tracer.start("webhook deliver", parent, kind="consumer", attributes={
            "messaging.message.id": event.id, "etrans.event": event.type.value})
        bind_contextvars(event_id=event.id, trace_id=span.context.trace_id, **(
            {"message_id": message_id} if message_id is not None else {}))
        try:
            await self.delivery.deliver(event, message.value or b"")
        except BaseException as exc:
            span.end(type(exc).__name__)
            raise
        span.end()


async def run_retries(delivery: WebhookDelivery, shutdown: Shutdown,
                      poll_seconds: float) -> None:
    """Attempt the due retries until shutdown is requested (the attempts under way finish).
    Attempts run in a nursery of their own, so a retry of an endpoint that hangs does not hold
    up the next claims (at most ``claim_batch`` retries are in flight)."""
    delay = poll_seconds
    async with trio.open_nursery() as attempts:
        while not shutdown.requested.is_set():
            try:
                claimed = await delivery.deliver_due(attempts)
                delay = poll_seconds
            except Exception as exc:  # a task boundary: the database is down, try again later
                log.warning("webhook retries failed, trying again", error=str(exc),
                            retry_in=delay)
                claimed = 0
                delay = min(delay * 2, 30.0)
            if claimed < delivery.policy.claim_batch:
                with trio.move_on_after(delay):
                    await shutdown.wait_requested()


async def run_webhooks(config: PipelineConfig, delivery: WebhookDelivery, shutdown: Shutdown,
                       *, poll_seconds: float, source: MessageSourceFactory | None = None,
                       tracer: Tracer | None = None,
                       task_status: trio.TaskStatus[Pipeline] = trio.TASK_STATUS_IGNORED,
                       ) -> PipelineStats:
    """The pipeline and the retry loop until shutdown (both drain: the attempts under way
    finish); ``task_status.started(pipeline)`` once the consumer has subscribed."""
    from etrans.pipeline import Pipeline

    pipeline = Pipeline(config, WebhooksTask(delivery, tracer), source=source)
    log.info("consuming", topics=list(config.topics), group_id=config.group_id,
             workers=config.workers)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_retries, delivery, shutdown, poll_seconds)
        stats = await pipeline.run(shutdown, task_status=task_status)
        if not shutdown.requested.is_set():  # the consumer stopped on its own: so do retries
            nursery.cancel_scope.cancel()
    log.info("webhooks stopped", pipeline=repr(stats), delivery=delivery.statistics())
    return stats
