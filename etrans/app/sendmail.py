"""Use case: deliver one email over SMTP, exactly once as far as the worker can tell.

:class:`EmailDelivery` is what the sendmail worker runs for each decoded request:

1. a message already recorded as done (:class:`~etrans.app.ports.DeliveryMarks`) is skipped:
   a redelivery after a crash or a rebalance never sends it twice;
2. the user's SMTP credentials are fetched; none, or undecryptable: a permanent failure;
   the message is built (:mod:`etrans.app.message_build`; a builder defect: ditto, never
   retried) and DKIM-signed (:mod:`etrans.app.signing`; refused unsigned: ditto);
3. the message is sent; transient failures (a session that broke, timeouts, 4xx) are retried
   ``attempts`` times after ``base``, ``2*base``, ``4*base``... seconds (1, 2, 4, 8, 16 by
   default), everything within ``email_timeout`` (5 minutes); 5xx is permanent at once; a 452
   beyond the server's recipient limit goes on at once in another transaction;
4. accepted: recorded as delivered before returning (so before the offset can be committed);
   accepted for some recipients while others wait for a retry: recorded as ``partial:`` first,
   so a redelivery after a crash sends to the waiting recipients only;
5. permanent failure or retries exhausted: one Filebeat-format ``Reject`` event per recipient is
   published to LOG_TOPIC (see :func:`reject_event`), then the message is recorded as rejected.
   The task then returns: the email shows as Bounced, it is never retried forever.

Outages are not bounces.  The SMTP server unreachable (:class:`SmtpUnavailable`: connection
refused, reset, timed out or 421 before the session was set up) and infrastructure failures (Redis,
Kafka) raise :class:`~etrans.errors.RetryLater`: the pipeline retries the whole message after
its capped back-off, for as long as the outage lasts, and its workers waiting on those retries
are the back-pressure (no new message is started meanwhile).  Step 1 keeps that safe.  Only a
5xx reply, retries of 4xx replies exhausted, and credentials that do not exist (or cannot be
decrypted) reject an email.  Once the SMTP server accepted an email, recording that is retried
for up to ``record_patience`` seconds rather than handed back to the pipeline, whose retry would
send the email again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import trio

from etrans.app.email_events import CoalescedEvents
from etrans.app.message_build import Unbuildable, build_message
from etrans.app.metrics import SmtpMetrics
from etrans.app.reject_log import AGENT_TYPE as AGENT_TYPE
from etrans.app.reject_log import EVENT_ID_NAMESPACE as EVENT_ID_NAMESPACE
from etrans.app.reject_log import Agent, reject_event
from etrans.app.reject_log import reject_event_id as reject_event_id
from etrans.app.signing import MessageSigning, SigningRefused
from etrans.domain.status_events import sent_event
from etrans.errors import RetryLater
from etrans.observability import get_logger

if TYPE_CHECKING:
    from etrans.app.ports import CredentialSource, DeliveryMarks, EventPublisher, MailTransport
    from etrans.app.tracking import MessageTracking
    from etrans.domain.mime import OutgoingEmail

log = get_logger(__name__)

DELIVERED = "delivered"
REJECTED = "rejected"
# Recorded while Reject events of some recipients are being published after the others were
# accepted: a redelivery publishes them again (same Event_ID) instead of sending the mail again.
REJECTING_PREFIX = "rejecting:"
# Recorded before waiting to retry some recipients after others were accepted:
# {"pending": [recipient, ...], "rejected": {recipient: response}}.  A redelivery (after a crash
# during the wait) sends to the pending recipients only and keeps the rejected ones' replies.
PARTIAL_PREFIX = "partial:"


class SmtpFailure(Exception):
    """The SMTP server refused, or could not be reached.  ``reply`` goes to the log event."""

    def __init__(self, reply: str, *, transient: bool, code: int | None = None) -> None:
        super().__init__(reply)
        self.reply = reply
        self.transient = transient
        self.code = code


class SmtpUnavailable(SmtpFailure):
    """The SMTP server could not be reached, or dropped the connection before the session was
    set up: an outage, retried later (:class:`~etrans.errors.RetryLater`), never a bounce."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply, transient=True)


class CredentialsUnavailable(Exception):
    """No usable SMTP credentials for the user: permanent for this email."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


@dataclass(slots=True)
class SendResult:
    """One SMTP transaction.  ``refused``: recipient -> (code, reply) for refused recipients."""

    accepted: list[str]
    refused: dict[str, tuple[int, str]] = field(default_factory=dict)
    tls: bool = False
    reused_connection: bool = False
    response: str = ""  # the reply to the message's data ("250 2.0.0 Ok: queued as ...")


@dataclass(frozen=True)
class DeliveryPolicy:
    attempts: int = 5  # retries after the first try
    base_seconds: float = 1.0
    email_timeout: float = 300.0
    # How long recording an outcome is retried while Redis is unavailable.  Giving up would
    # hand an email the SMTP server accepted back to the pipeline, which would send it again.
    # The pipeline's per-message timeout must leave this much beyond ``email_timeout``
    # (``etrans.bootstrap.configs`` gives it ``email_timeout + record_patience + 10``).
    record_patience: float = 110.0

    def backoff(self, retry: int) -> float:
        """Seconds before retry number ``retry`` (0-based): base * 2**retry."""
        return self.base_seconds * 2.0**retry


@dataclass(slots=True)
class DeliveryOutcome:
    accepted: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)  # recipient -> response
    attempts: int = 0
    accepted_before: bool = False  # resumed: some recipients were accepted by an earlier run
    response: str = ""  # the relay's reply to the data of the last accepted transaction


@dataclass
class DeliveryCounters:
    delivered: int = 0
    rejected: int = 0
    skipped: int = 0
    retries: int = 0
    deferred: int = 0  # handed back to the pipeline: the SMTP server was unreachable

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class EmailDelivery:
    """Delivers decoded emails; one instance is shared by every worker task."""

    def __init__(self, *, credentials: CredentialSource, marks: DeliveryMarks,
                 transport: MailTransport, events: EventPublisher, log_topic: str,
                 policy: DeliveryPolicy, agent: Agent | None = None,
                 signing: MessageSigning | None = None,
                 tracking: MessageTracking | None = None,
                 events_topic: str | None = None,
                 metrics: SmtpMetrics | None = None) -> None:
        self.credentials = credentials
        self.metrics = metrics or SmtpMetrics()  # SMTP replies by class, delivery latency
        self.events_topic = events_topic  # email.sent events (None: none published)
        self.tracking = tracking  # open/click tracking of the HTML, before signing
        self.signing = signing or MessageSigning()
        self.marks = marks
        self.transport = transport
        self.events = events
        self.log_topic = log_topic
        self.policy = policy
        self.agent = agent or Agent.for_this_process()
        self.counters = DeliveryCounters()

    @property
    def events(self) -> EventPublisher:
        return self._events

    @events.setter
    def events(self, publisher: EventPublisher) -> None:
        self._events = publisher
        # email.sent of concurrent deliveries: one produce and acknowledgement wait for several.
        self._sent_events = CoalescedEvents(publisher)

    def statistics(self) -> dict[str, int]:
        return self.counters.as_dict()

    def sent_event_statistics(self) -> dict[str, int]:
        """email.sent batches published and the events in them."""
        return self._sent_events.statistics()

    async def deliver(self, outgoing: OutgoingEmail, *, invalid_reason: str | None = None) -> str:
        """Deliver (or reject) one email; returns ``delivered``/``rejected``/``skipped``.

        ``invalid_reason``: the request could be decoded only far enough to know who it was for;
        it is rejected with that reason.
        """
        done = await self.marks.outcome(outgoing.message_id)
        resumed: dict[str, Any] | None = None
        if done is not None and done.startswith(REJECTING_PREFIX):
            # Accepted for some recipients before a crash; finish publishing the others' rejects.
            pending = json.loads(done[len(REJECTING_PREFIX):])
            await self._publish_rejects(outgoing, pending)
            await self._record(outgoing.message_id, DELIVERED)
            return DELIVERED
        if done is not None and done.startswith(PARTIAL_PREFIX):
            # Accepted for some recipients, the others were waiting for a retry: go on with those.
            resumed = json.loads(done[len(PARTIAL_PREFIX):])
            log.info("resuming a partly delivered email", pending=resumed["pending"])
        elif done is not None:
            self.counters.skipped += 1
            log.info("already done, skipped", outcome=done)
            return "skipped"

        recipients = (outgoing.envelope_recipients() if resumed is None
                      else list(resumed["pending"]))
        earlier = resumed["rejected"] if resumed is not None else {}
        if invalid_reason is not None:
            return await self._reject_all(
                outgoing, recipients, f"554 5.6.0 etrans: invalid request: {invalid_reason}",
                earlier)
        try:
            credentials = await self.credentials.fetch(outgoing.user_id)
        except CredentialsUnavailable as exc:
            return await self._reject_all(outgoing, recipients, exc.reply, earlier)

        shown = outgoing if self.tracking is None else await self.tracking.instrument(outgoing)
        try:
            data = await self.signing.sign(outgoing, build_message(shown))
        except (Unbuildable, SigningRefused) as exc:
            return await self._reject_all(outgoing, recipients, exc.reply, earlier)
        outcome = DeliveryOutcome(rejected=dict(earlier), accepted_before=resumed is not None)
        await self._send_with_retries(outgoing, credentials, recipients, data, outcome)
        await self._publish_sent(outgoing, outcome)
        if (outcome.accepted or outcome.accepted_before) and outcome.rejected:
            await self._record(outgoing.message_id,
                               REJECTING_PREFIX + json.dumps(outcome.rejected))
            await self._publish_rejects(outgoing, outcome.rejected)
        elif outcome.rejected:
            await self._publish_rejects(outgoing, outcome.rejected)
            await self._record(outgoing.message_id, REJECTED)
            self.counters.rejected += 1
            return REJECTED
        await self._record(outgoing.message_id, DELIVERED)
        # No log line per delivered email but at DEBUG (the hot path: ~5% of its CPU; a
        # filtered level costs a call); see statistics().
        log.debug("delivered", recipients=len(recipients))
        self.counters.delivered += 1
        return DELIVERED

    async def _reject_all(self, outgoing: OutgoingEmail, recipients: list[str],
                          response: str, earlier: dict[str, str]) -> str:
        """Reject ``recipients`` with ``response`` (and publish the ``earlier`` rejections of a
        resumed email)."""
        log.warning("rejected without sending", response=response)
        await self._publish_rejects(outgoing, {**earlier, **dict.fromkeys(recipients, response)})
        await self._record(outgoing.message_id, REJECTED)
        self.counters.rejected += 1
        return REJECTED

    async def _record(self, message_id: str, outcome: str) -> None:
        """Record ``outcome``, retrying while Redis is unavailable (up to ``record_patience``
        seconds, then :class:`RetryLater`): after the SMTP server accepted an email, the
        pipeline's retry would send it again."""
        await self._patiently("record the outcome", self.marks.record, message_id, outcome)

    async def _publish_sent(self, outgoing: OutgoingEmail, outcome: DeliveryOutcome) -> None:
        """``email.sent`` (KAFKA_EVENTS_TOPIC) once the relay accepted the email, before it is
        recorded (a crash in between: the redelivery sends and publishes again, same id); with
        the delivery's ``traceparent`` header, as the Reject events."""
        if self.events_topic is None or not outcome.accepted or not outgoing.user_id.isdigit():
            return
        event = sent_event(outgoing.message_id, int(outgoing.user_id), outcome.accepted,
                           outcome.response)
        await self._patiently("publish email.sent", self._sent_events.publish,
                              self.events_topic, [event], [outgoing.traceparent])

    async def _patiently(self, what: str, fn: Any, *args: Any) -> None:
        """``fn(*args)``, retried on RetryLater for up to ``record_patience`` seconds."""
        give_up_at = trio.current_time() + self.policy.record_patience
        delay = 0.1
        while True:
            try:
                await fn(*args)
            except RetryLater as exc:
                if trio.current_time() + delay > give_up_at:
                    raise
                log.warning("could not " + what + ", will retry", retry_in=delay,
                            error=str(exc))
                await trio.sleep(delay)
                delay = min(2 * delay, 5.0)
            else:
                return

    async def _publish_rejects(self, outgoing: OutgoingEmail, rejected: dict[str, str]) -> None:
        now = datetime.now(UTC)
        try:
            for recipient, response in rejected.items():
                event = reject_event(outgoing, recipient, response, agent=self.agent, now=now)
                await self.events.publish(
                    self.log_topic, json.dumps(event, ensure_ascii=False).encode(),
                    key=outgoing.message_id.encode(),
                    headers=([("traceparent", outgoing.traceparent)]
                             if outgoing.traceparent is not None else None),
                )
        except Exception as exc:
            raise RetryLater(f"could not publish Reject event to {self.log_topic}: {exc}") from exc
        log.info("reject published", recipients=list(rejected), response=next(
            iter(rejected.values()), ""))

    async def _send_with_retries(self, outgoing: OutgoingEmail, credentials: Any,
                                 recipients: list[str], data: bytes,
                                 outcome: DeliveryOutcome) -> None:
        # The email's cap (email_timeout) covers every attempt and every wait.  The first attempt
        # runs without a cancel scope (the hot path): the transport enforces the deadline it is
        # given.  Retries, rare, run in a scope that also covers the backoff sleeps.
        deadline = trio.current_time() + self.policy.email_timeout
        state = _Attempts(recipients)
        await self._attempt(outgoing, credentials, data, deadline, outcome, state)
        if not state.pending:
            return
        with trio.CancelScope(deadline=deadline) as scope:
            while state.pending and state.retry < self.policy.attempts:
                delay = self.policy.backoff(state.retry)
                state.retry += 1
                self.counters.retries += 1
                log.info("transient smtp failure, will retry", retry=state.retry, delay=delay,
                         reply=state.last_reply)
                if outcome.accepted or outcome.accepted_before:
                    # A crash during the wait must not send the email again to those who have
                    # it: the redelivery goes on with the pending recipients only.
                    await self._record(outgoing.message_id, PARTIAL_PREFIX + json.dumps(
                        {"pending": state.pending, "rejected": outcome.rejected}))
                await trio.sleep(delay)
                await self._attempt(outgoing, credentials, data, deadline, outcome, state)
        if state.pending and (scope.cancelled_caught or trio.current_time() >= deadline):
            state.last_reply = (f"{state.last_reply} (etrans: gave up after "
                                f"{self.policy.email_timeout:g} s)")
        if state.pending:
            log.warning("giving up", attempts=outcome.attempts, reply=state.last_reply)
            outcome.rejected.update(dict.fromkeys(state.pending, state.last_reply))

    async def _attempt(self, outgoing: OutgoingEmail, credentials: Any, data: bytes,
                       deadline: float, outcome: DeliveryOutcome, state: _Attempts) -> None:
        """One SMTP transaction for the pending recipients; updates ``outcome`` and ``state``."""
        outcome.attempts += 1
        pending = state.pending
        try:
            result = await self.transport.send(credentials, outgoing.sender.email, pending,
                                               data, deadline=deadline)
        except SmtpFailure as failure:
            self.metrics.reply(None if isinstance(failure, SmtpUnavailable)
                               else failure.code or _reply_code(failure.reply))
            if isinstance(failure, SmtpUnavailable):
                # An outage, not this email's fault: no attempt is used up, nothing is rejected.
                # Recipients accepted by an earlier attempt were recorded (partial:) before
                # the wait that preceded this one.
                self.counters.deferred += 1
                raise RetryLater(f"smtp server unavailable: {failure.reply}") from failure
            if not failure.transient:
                outcome.rejected.update(dict.fromkeys(pending, failure.reply))
                state.pending = []
            else:
                state.last_reply = failure.reply
            return
        outcome.accepted.extend(result.accepted)
        outcome.response = getattr(result, "response", "") or outcome.response
        if result.accepted:
            self.metrics.reply(250)
        if not result.refused:
            state.pending = []
            return
        still: list[str] = []
        for recipient, (code, reply) in result.refused.items():
            self.metrics.reply(code)
            if 500 <= code < 600:
                outcome.rejected[recipient] = reply
            else:
                still.append(recipient)
                state.last_reply = reply
        state.pending = [r for r in pending if r in still]
        if state.pending and result.accepted and all(
                result.refused[r][0] == 452 for r in state.pending):
            # RFC 5321 4.5.3.1.10: the server's limit of recipients per transaction (452 after
            # others were accepted): the rest go on at once in another one, not a retry.
            await self._record(outgoing.message_id, PARTIAL_PREFIX + json.dumps(
                {"pending": state.pending, "rejected": outcome.rejected}))
            await self._attempt(outgoing, credentials, data, deadline, outcome, state)


def _reply_code(reply: str) -> int | None:
    """The code a reply starts with (``"421 4.7.0 ..."`` -> 421), None without one."""
    head = reply[:3]
    return int(head) if head.isdigit() else None


class _Attempts:
    """Where the retries of one email stand."""

    __slots__ = ("last_reply", "pending", "retry")

    def __init__(self, recipients: list[str]) -> None:
        self.pending = recipients
        self.last_reply = "451 4.4.7 etrans: not attempted"
        self.retry = 0
