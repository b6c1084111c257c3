"""The sendmail worker's task: Kafka send request -> :class:`OutgoingEmail` -> EmailDelivery.

Decoding (and refusing unsafe requests) is :mod:`etrans.workers.send_request`.  What the pipeline
sees (:mod:`etrans.pipeline.task`):

- not JSON, or no message_id / recipient to report against: :class:`PoisonMessage`
  (dead-lettered, committed past; there is no email to mark as bounced);
- refused (CR, LF or NUL in the envelope or a header, an unreadable address): rejected with a
  Reject event per recipient, never sent, *and* :class:`PoisonMessage` (dead-lettered);
- known message, invalid detail (bad attachment base64, ...): rejected with a Reject event;
- delivered, rejected or skipped: returns;
- Redis/Kafka unavailable, SMTP server unreachable: :class:`RetryLater` (retried by the pipeline).

Trace context: the record's ``traceparent`` header (the outbox relay's, from the API request;
absent: a new trace) is the parent of the delivery's span; its trace id is bound to every log
line about the message (``trace_id``) and its context is put on the Reject events.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from structlog.contextvars import bind_contextvars, unbind_contextvars

from etrans.app.tracing import ContextOnlyTracer
from etrans.domain.trace_context import HEADER, parse_traceparent
from etrans.errors import PoisonMessage
from etrans.workers.send_request import InvalidRequest, decode_request

if TYPE_CHECKING:
    from etrans.app.sendmail import EmailDelivery
    from etrans.app.tracing import Tracer
    from etrans.pipeline.message import Message

__all__ = ["InvalidRequest", "SendmailTask", "decode_request"]


class SendmailTask:
    """The pipeline task (:class:`etrans.pipeline.Task`) of ``etrans sendmail``."""

    def __init__(self, delivery: EmailDelivery, tracer: Tracer | None = None) -> None:
        self.delivery = delivery
        self.tracer = tracer or ContextOnlyTracer()

    async def __call__(self, message: Message) -> None:
        span = self.tracer.start("sendmail deliver", parse_traceparent(message.header(HEADER)),
                                 kind="consumer")
        try:
            await self._deliver(message, span.context.trace_id, span.context.traceparent)
        except BaseException as exc:
            span.end(type(exc).__name__)
            raise
        span.end()

    async def _deliver(self, message: Message, trace_id: str, traceparent: str) -> None:
        invalid_reason: str | None = None
        refused = False
        try:
            outgoing = decode_request(message.value, traceparent)
        except InvalidRequest as exc:
            if exc.email is None:
                unbind_contextvars("message_id")  # not the previous message's any more
                bind_contextvars(trace_id=trace_id)
                raise PoisonMessage(f"undeliverable send request: {exc.reason}") from None
            outgoing, invalid_reason, refused = exc.email, exc.reason, exc.refused
        # Each pipeline worker runs in its own context (Trio copies it per task): binding
        # without unbinding is enough (the next message rebinds), and cheaper than
        # bound_contextvars, a generator context manager.
        bind_contextvars(message_id=outgoing.message_id, trace_id=trace_id)
        outcome = await self.delivery.deliver(outgoing, invalid_reason=invalid_reason)
        if outcome == "delivered" and message.timestamp_ms:
            # From the record's creation (the outbox relay's publish, right after the API
            # accepted the email) to the 250 recorded.
            self.delivery.metrics.delivery_seconds.observe(
                max(0.0, time.time() - message.timestamp_ms / 1000))
        if refused:
            # Rejected (the email shows as Bounced) and kept for an operator to look at.
            raise PoisonMessage(f"refused send request: {invalid_reason}")

    def statistics(self) -> dict[str, int]:
        return self.delivery.statistics()
