"""Delivering events to webhook endpoints: the first attempt of each event (from the events
topic) and the retries (from the retry queue), both through :meth:`WebhookDelivery._attempt`.

An attempt is one signed POST (:mod:`etrans.domain.webhook_signing`): a 2xx answer delivers the
event; anything else (another status, a timeout, a refused connection or address) is a failed
attempt, recorded with a retry due per :class:`~etrans.domain.webhook_retries.RetrySchedule`
in the same write - before the caller returns, so before the pipeline commits the offset: a
restart loses no retry.  An endpoint failing for longer than the schedule's ``disable_after`` is
disabled, and a ``webhook.disabled`` event says so on the events topic.

The subscribers of a (user, event type) are remembered for ``subscribers_ttl`` seconds (1 s):
a webhook created, changed or deleted takes effect within that time, and a burst of one user's
events costs one directory read.  Disabling forgets the user's entries at once.

No endpoint can slow the others: each has a ``trio.CapacityLimiter`` (``endpoint_concurrency``
attempts at once).  When it is full an event waits ``busy_wait`` seconds (0.25) at most for a
slot - enough for a healthy endpoint's answers to free one - and otherwise is scheduled as a
retry due ``busy_delay`` seconds later (without counting an attempt): the worker moves on, so an
endpoint that hangs holds at most ``endpoint_concurrency`` workers.

Trace context (docs/operations.md, "Tracing"): the first attempts run in the span the worker
started from the record's header (:mod:`etrans.workers.webhooks`).  A retry has no header (the
queue keeps the event's value): when its email's ``traceparent`` is known (:class:`EmailTraces`)
it is attempted in a ``webhook retry`` span of that trace, with ``trace_id`` and ``message_id``
bound to its lines.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import trio
from structlog.contextvars import bind_contextvars

from etrans.app.metrics import WebhookMetrics
from etrans.app.tracing import ContextOnlyTracer
from etrans.app.webhook_delivery_ports import DeliveryAttempt, PendingRetry
from etrans.domain.events import (
    EmailEvent,
    EventType,
    InvalidEmailEvent,
    decode_event,
    derived_event_id,
    encode_event,
    webhook_payload,
)
from etrans.domain.trace_context import parse_traceparent
from etrans.domain.webhook_retries import RetrySchedule
from etrans.domain.webhook_signing import InvalidWebhookSecret, secret_key, signed_headers
from etrans.observability import get_logger

if TYPE_CHECKING:
    from collections.abc import Callable

    from etrans.app.ports import EventPublisher
    from etrans.app.tracing import Tracer
    from etrans.app.webhook_delivery_ports import (
        EmailTraces,
        PostResult,
        WebhookDeliveryStore,
        WebhookTransport,
    )
    from etrans.app.webhook_ports import WebhookDirectory
    from etrans.app.webhook_records import WebhookEndpoint
    from etrans.domain.trace_context import TraceContext

log = get_logger(__name__)

ERROR_LENGTH = 500  # of webhook_deliveries.error / webhook_retries.last_error
BUSY = "endpoint busy: too many attempts in flight"


def webhook_body(event: EmailEvent) -> bytes:
    """The POST body: the Standard Webhooks payload as compact UTF-8 JSON."""
    return json.dumps(webhook_payload(event), ensure_ascii=False,
                      separators=(",", ":")).encode()


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class DeliveryPolicy:
    schedule: RetrySchedule = field(default_factory=RetrySchedule)
    endpoint_concurrency: int = 4
    busy_wait: float = 0.25  # seconds an event waits for a busy endpoint's slot
    busy_delay: float = 1.0  # seconds before an event refused by a busy endpoint is tried again
    claim_lease: float = 60.0  # more than an attempt can take (the transport's timeouts)
    claim_batch: int = 100
    subscribers_ttl: float = 1.0


@dataclass
class DeliveryCounters:
    delivered: int = 0
    failed: int = 0  # failed attempts (each is retried or given up)
    given_up: int = 0
    postponed: int = 0  # endpoint busy
    disabled: int = 0
    retried: int = 0  # attempts after a failed one (from the retry queue)


@dataclass(frozen=True)
class _Job:
    """One event for one endpoint: ``attempt`` is the number this attempt will have."""

    endpoint: WebhookEndpoint
    event: EmailEvent
    record: bytes
    attempt: int


class WebhookDelivery:
    """Delivers events to their subscribers (see the module docstring)."""

    def __init__(self, directory: WebhookDirectory, store: WebhookDeliveryStore,
                 transport: WebhookTransport, publisher: EventPublisher, events_topic: str,
                 policy: DeliveryPolicy | None = None,
                 clock: Callable[[], datetime] = _utc_now,
                 metrics: WebhookMetrics | None = None, tracer: Tracer | None = None,
                 traces: EmailTraces | None = None) -> None:
        self.directory = directory
        self.store = store
        self.transport = transport
        self.publisher = publisher
        self.events_topic = events_topic
        self.policy = policy or DeliveryPolicy()
        self.clock = clock
        self.counters = DeliveryCounters()
        self.metrics = metrics or WebhookMetrics()  # the time of each POST
        self.tracer = tracer or ContextOnlyTracer()
        self.traces = traces  # the emails' traceparents (None: retries are not traced)
        self._limiters: dict[int, trio.CapacityLimiter] = {}
        self._subscribers: dict[tuple[int, str], tuple[datetime, list[WebhookEndpoint]]] = {}
        self._retries_in_flight = 0

    def statistics(self) -> DeliveryCounters:
        return DeliveryCounters(**vars(self.counters))

    async def aclose(self) -> None:
        await self.store.aclose()

    async def deliver(self, event: EmailEvent, record: bytes) -> None:
        """Attempt ``event`` at every endpoint subscribed to it, at once; returns when each
        attempt is recorded (delivered, scheduled for a retry, or given up)."""
        endpoints = await self._subscribers_of(event)
        if len(endpoints) == 1:  # the usual case: no nursery (a task and a scope per event)
            await self._attempt(_Job(endpoints[0], event, record, 1))
            return
        async with trio.open_nursery() as nursery:
            for endpoint in endpoints:
                nursery.start_soon(self._attempt, _Job(endpoint, event, record, 1))

    async def deliver_due(self, nursery: trio.Nursery | None = None) -> int:
        """Claim the retries that are due and attempt them, at once; how many were claimed.

        With ``nursery`` the attempts run there and this returns at once (the retry loop: an
        endpoint that hangs must not hold up the next claims); at most ``claim_batch`` retries
        are in flight.  Without, it returns when they are all recorded."""
        policy = self.policy
        room = policy.claim_batch - self._retries_in_flight
        if room <= 0:
            return 0
        due = await self.store.claim_due(self.clock(), room, policy.claim_lease)
        if nursery is not None:
            for retry in due:
                nursery.start_soon(self._retry, retry)
            return len(due)
        async with trio.open_nursery() as own:
            for retry in due:
                own.start_soon(self._retry, retry)
        return len(due)

    async def _retry(self, retry: PendingRetry) -> None:
        self._retries_in_flight += 1
        try:
            await self._retry_once(retry)
        except Exception as exc:  # a task boundary: the claim's lease brings the retry back
            log.warning("webhook retry failed, it comes back after its lease",
                        webhook_id=retry.webhook_id, event_id=retry.event_id, error=str(exc))
        finally:
            self._retries_in_flight -= 1

    async def _retry_once(self, retry: PendingRetry) -> None:
        try:
            event = decode_event(retry.event)
        except InvalidEmailEvent as exc:  # only what decoded once is ever scheduled
            log.error("unreadable webhook retry dropped", webhook_id=retry.webhook_id,
                      event_id=retry.event_id, error=str(exc))
            await self.store.drop_retry(retry.webhook_id, retry.event_id)
            return
        endpoints = await self._subscribers_of(event)
        endpoint = next((e for e in endpoints if e.id == retry.webhook_id), None)
        if endpoint is None:  # deleted, disabled or unsubscribed since
            await self.store.drop_retry(retry.webhook_id, retry.event_id)
            return
        job = _Job(endpoint, event, retry.event, retry.attempt + 1)
        parent = await self._email_trace(event)
        if parent is None:
            await self._attempt(job)
            return
        span = self.tracer.start("webhook retry", parent, kind="consumer", attributes={
            "messaging.message.id": event.id, "etrans.event": event.type.value,
            "attempt": job.attempt})
        # This retry's own task: what is bound here stays with its lines.
        bind_contextvars(trace_id=span.context.trace_id, message_id=event.message_id)
        try:
            await self._attempt(job)
        except BaseException as exc:
            span.end(type(exc).__name__)
            raise
        span.end()

    async def _email_trace(self, event: EmailEvent) -> TraceContext | None:
        """The trace of the email ``event`` is about, when known (a lookup that fails costs the
        retry its trace, not its attempt)."""
        if self.traces is None or event.message_id is None:
            return None
        try:
            return parse_traceparent(await self.traces.traceparent(event.user_id,
                                                                   event.message_id))
        except Exception as exc:
            log.warning("the email's trace could not be read", event_id=event.id,
                        error=str(exc))
            return None

    async def _subscribers_of(self, event: EmailEvent) -> list[WebhookEndpoint]:
        key, now = (event.user_id, event.type.value), self.clock()
        cached = self._subscribers.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        found = await self.directory.subscribers(*key)
        if len(self._subscribers) >= 10_000:  # bounded: forget everything, refill on demand
            self._subscribers.clear()
        self._subscribers[key] = (now + timedelta(seconds=self.policy.subscribers_ttl), found)
        return found

    async def _attempt(self, job: _Job) -> None:
        limiter = self._limiter(job.endpoint.id)
        try:
            limiter.acquire_nowait()
        except trio.WouldBlock:
            with trio.move_on_after(self.policy.busy_wait) as waited:
                await limiter.acquire()
            if waited.cancelled_caught:
                self._forget_limiter(job.endpoint.id, limiter)
                await self._postpone(job)
                return
        try:
            attempted_at = self.clock()
            result = await self._post(job, attempted_at)
        finally:
            limiter.release()
            self._forget_limiter(job.endpoint.id, limiter)
        await self._record(job, attempted_at, result)

    def _limiter(self, webhook_id: int) -> trio.CapacityLimiter:
        limiter = self._limiters.get(webhook_id)
        if limiter is None:
            limiter = self._limiters[webhook_id] = trio.CapacityLimiter(
                self.policy.endpoint_concurrency)
        return limiter

    def _forget_limiter(self, webhook_id: int, limiter: trio.CapacityLimiter) -> None:
        """Drop an idle endpoint's limiter (the dict holds only endpoints in use)."""
        if limiter.borrowed_tokens == 0 and limiter.statistics().tasks_waiting == 0:
            self._limiters.pop(webhook_id, None)

    async def _post(self, job: _Job, attempted_at: datetime) -> PostResult:
        from etrans.app.webhook_delivery_ports import PostResult

        body = webhook_body(job.event)
        try:
            key = secret_key(job.endpoint.secret)
        except InvalidWebhookSecret as exc:
            return PostResult(None, f"unusable signing secret: {exc}", 0)
        headers = signed_headers(key, job.event.id, int(attempted_at.timestamp()), body)
        headers["content-type"] = "application/json"
        started = time.monotonic()
        result = await self.transport.post(job.endpoint.url, body, headers)
        seconds = time.monotonic() - started
        self.metrics.post_seconds.observe(seconds)
        log.debug("webhook attempt", webhook_id=job.endpoint.id, event_id=job.event.id,
                  attempt=job.attempt, status_code=result.status_code, error=result.error,
                  seconds=round(seconds, 3))
        return result

    async def _postpone(self, job: _Job) -> None:
        due = self.clock() + timedelta(seconds=self.policy.busy_delay)
        await self.store.postpone(PendingRetry(job.endpoint.id, job.event.id, job.record,
                                               job.attempt - 1, due, BUSY))
        self.counters.postponed += 1

    async def _record(self, job: _Job, attempted_at: datetime, result: PostResult) -> None:
        error = result.error
        if error is None and not result.delivered:
            error = f"HTTP {result.status_code}"
        attempt = DeliveryAttempt(job.endpoint.id, job.event.id, job.event.type.value,
                                  job.attempt, result.status_code,
                                  error[:ERROR_LENGTH] if error else None, result.latency_ms,
                                  attempted_at)
        if job.attempt > 1:
            self.counters.retried += 1
        if result.delivered:
            await self.store.record_delivered(attempt)
            self.counters.delivered += 1
            return
        schedule = self.policy.schedule
        delay = schedule.delay_after(job.attempt)
        retry = None
        if delay is not None:
            retry = PendingRetry(job.endpoint.id, job.event.id, job.record, job.attempt,
                                 self.clock() + timedelta(seconds=delay), attempt.error)
        failing_since = await self.store.record_failed(attempt, retry)
        self.counters.failed += 1
        if retry is None:
            self.counters.given_up += 1
            log.warning("webhook event given up", webhook_id=job.endpoint.id,
                        event_id=job.event.id, attempts=job.attempt, error=attempt.error)
        if failing_since is not None and schedule.should_disable(failing_since, self.clock()):
            await self._disable(job.endpoint, failing_since, attempt.error or "")

    async def _disable(self, endpoint: WebhookEndpoint, failing_since: datetime,
                       last_error: str) -> None:
        days = (self.clock() - failing_since).total_seconds() / 86400
        reason = f"every attempt failed for {days:.1f} days (last: {last_error})"[:ERROR_LENGTH]
        if not await self.store.disable(endpoint.id, reason):
            return  # another worker (or process) did it, and published the event
        self.counters.disabled += 1
        for cached in [k for k in self._subscribers if k[0] == endpoint.user_id]:
            del self._subscribers[cached]
        log.warning("webhook disabled", webhook_id=endpoint.id, reason=reason)
        event = EmailEvent(
            id=derived_event_id(str(endpoint.id), EventType.WEBHOOK_DISABLED.value,
                                failing_since.isoformat()),
            type=EventType.WEBHOOK_DISABLED, timestamp=self.clock(), user_id=endpoint.user_id,
            data={"webhook_id": str(endpoint.id), "url": endpoint.url,
                  "last_error": last_error})
        key, value = encode_event(event)
        await self.publisher.publish(self.events_topic, value, key)
