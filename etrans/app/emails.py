"""Use cases of emails: send one, send a batch, list, get.

Sending one email (``SendEmail``), in order: cross-field rules and templates (400;
:func:`etrans.app.templates.rendered_email`: Kafka gets the rendered email), the ``from``
domain must be the user's and verified (400 "Domain not verified"), the user must have SMTP
credentials (400), ONE lookup of every recipient (to, cc, bcc) on the user's suppression list,
quota reserved atomically (400 when exceeded), credentials cached in Redis ``auth``, then the row
and its outbox record committed in one transaction.  With ``guarded_saves`` (serve, dev) there is
no lookup first, and a stored template may be one sends used lately: the store checks the
recipients (``NewEmail.guard``) and the template's version in its insert; when one is listed or
the template changed it saves nothing (``SendCheckNeeded``), the quota is given back and the
request done again, lookup and template read first (so too after a quota or size refusal, which
listed recipients might change): the same results, one round trip less per send.  Suppressed
recipients are left out of the Kafka record (each field keeps its role) and stored as recipient
outcomes ``suppressed`` with the row (and, for each, an ``email.suppressed`` event as an outbox
record of KAFKA_EVENTS_TOPIC: only emails with suppressed recipients get such records); an email
whose every recipient is suppressed is stored with the status ``suppressed``, without an outbox
record and without taking quota: it is never sent.  If the commit fails the quota is given back
and the request fails (503): nothing half-done.  The outbox relay publishes.  Whatever stops a
request after its quota was reserved (a failed commit, a dependency down on a later batch item,
a cancelled request), every uncommitted email's quota is given back.

Each use case is a command on the :class:`~etrans.app.bus.MessageBus` whose handler takes
:class:`EmailDeps` (ports only) and answers records (:mod:`etrans.app.records`);
:mod:`etrans.api.emails` shapes the JSON (and handles ``Idempotency-Key``).  ``scheduled_at``:
:mod:`etrans.app.schedules` (the email is stored ``scheduled``, its outbox record waits).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from etrans.app.ports import SendCheckNeeded
from etrans.app.records import (
    BatchOutcome,
    EmailDetail,
    EmailFilter,
    EmailList,
    EmailSummary,
    NewEmail,
    RecipientState,
    RejectedEmail,
)
from etrans.app.schedules import scheduled_time, stored_status
from etrans.app.send_suppressions import (
    guard_addresses,
    suppressed_events,
    suppressed_recipients,
    without,
)
from etrans.app.templates import rendered_email
from etrans.domain import status as status_rules
from etrans.domain.addresses import parse_address
from etrans.domain.emails import (
    EmailRuleError,
    check_email,
    decoded_size,
    new_message_id,
    sendmail_message,
)
from etrans.domain.quota import exceeded_message
from etrans.domain.templates import TemplateProblem
from etrans.domain.timestamps import parse_timestamp_field
from etrans.errors import AppError, InvalidInput, NotFound, UpstreamUnavailable
from etrans.observability import get_logger

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from etrans.app.bus import MessageBus
    from etrans.app.ports import (
        CredentialCache,
        EmailStore,
        OutboxNotifier,
        QuotaCounter,
        SenderCredentials,
        SendingDomains,
        SuppressionLookup,
    )
    from etrans.app.records import SendingDomain
    from etrans.app.template_records import Template
    from etrans.app.templates import TemplateDeps

log = get_logger(__name__)
T = TypeVar("T")

DOMAIN_NOT_VERIFIED = "Domain not verified"
GIVE_BACK_SECONDS = 5.0
NO_CREDENTIALS = ("No SMTP credentials for this account: create a sender with POST /senders "
                  "(or have the billing system issue one)")


@dataclass(frozen=True)
class SendEmail:
    user_id: int
    email: dict[str, Any]  # validated by the request schema
    traceparent: str | None = None  # the request span's: the parent of the email's next steps


@dataclass(frozen=True)
class SendBatch:
    user_id: int
    # Index -> validated email, or index -> schema error message for items that failed it.
    emails: list[tuple[int, dict[str, Any]]]
    invalid: list[tuple[int, str]] = field(default_factory=list)
    traceparent: str | None = None  # the request span's, shared by the batch's emails


@dataclass(frozen=True)
class ListEmails:
    user_id: int
    page: int = 1
    per_page: int = 20
    status: str | None = None
    created_at_from: str | None = None
    created_at_to: str | None = None


@dataclass(frozen=True)
class GetEmail:
    user_id: int
    message_id: str


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class EmailDeps:
    """Built by :mod:`etrans.bootstrap`: the ports of the send path and the settings it obeys."""

    domains: SendingDomains
    credentials: SenderCredentials
    credential_cache: CredentialCache
    quota: QuotaCounter
    store: EmailStore
    suppressions: SuppressionLookup
    outbox: OutboxNotifier | None
    topic: str
    clock: Callable[[], datetime] = field(default=_utcnow)
    # KAFKA_MAX_RECORD_BYTES: an email whose Kafka record (key + value) is larger is refused.
    max_record_bytes: int | None = None
    # KAFKA_EVENTS_TOPIC: where the email.suppressed events go (None: none written).
    events_topic: str | None = None
    templates: TemplateDeps | None = None  # template_id / template_data (None: refused)
    # The store checks each email's recipients against the suppression list in its insert
    # (``NewEmail.guard``): no lookup before it; see the module docstring.
    guarded_saves: bool = False


# -- sending ---------------------------------------------------------------------------------------

async def send_email(deps: EmailDeps, cmd: SendEmail) -> NewEmail:
    """The accepted email (status queued), committed with its outbox record."""
    return await _guarded_first(deps, _send_one, cmd)


async def _guarded_first(deps: EmailDeps, send: Callable[..., Awaitable[T]], cmd: Any) -> T:
    now = deps.clock()
    if deps.guarded_saves:
        try:
            return await send(deps, cmd, now, guarded=True)
        except SendCheckNeeded:
            pass  # nothing committed, the quota given back: again, looking the list up first
    return await send(deps, cmd, now, guarded=False)


async def _send_one(deps: EmailDeps, cmd: SendEmail, now: datetime, *, guarded: bool
                    ) -> NewEmail:
    new, domain = await _prepare(deps, cmd.user_id, cmd.email, now, cmd.traceparent,
                                 guarded=guarded)
    reserved = [domain] if new.published else []
    for each in reserved:
        await _reserve(deps, each, now, guarded)
    try:
        await _commit(deps, [new])
    except BaseException:
        await _give_back(deps, reserved, now)
        raise
    return new


async def send_batch(deps: EmailDeps, cmd: SendBatch) -> BatchOutcome:
    """What passes is committed in one transaction; the rest is listed by index."""
    return await _guarded_first(deps, _send_batch, cmd)


async def _send_batch(deps: EmailDeps, cmd: SendBatch, now: datetime, *, guarded: bool
                      ) -> BatchOutcome:
    rejected = [RejectedEmail(i, msg) for i, msg in cmd.invalid]
    accepted: list[NewEmail] = []
    reserved: list[SendingDomain] = []  # of the published emails (never the suppressed ones)
    try:
        for index, email in cmd.emails:
            try:
                new, domain = await _prepare(deps, cmd.user_id, email, now, cmd.traceparent,
                                             guarded=guarded)
                if new.published:
                    await _reserve(deps, domain, now, guarded)
                    reserved.append(domain)
            except (InvalidInput, NotFound) as exc:
                rejected.append(RejectedEmail(index, _text(exc)))
                continue
            accepted.append(new)
        await _commit(deps, accepted)
    except BaseException:
        # Any failure after some reservations (a dependency down on a later item, the
        # commit, a cancelled request): none of the batch is sent, all of it is given back.
        await _give_back(deps, reserved, now)
        raise
    rejected.sort(key=lambda r: r.index)
    return BatchOutcome(sent=accepted, rejected=rejected)


async def _prepare(deps: EmailDeps, user_id: int, email: dict[str, Any], now: datetime,
                   traceparent: str | None = None, *, guarded: bool = False
                   ) -> tuple[NewEmail, SendingDomain]:
    scheduled_at = scheduled_time(email, now)  # 400 before any lookup
    used: list[Template] = []  # the stored template rendered, if any
    try:
        rendered = await rendered_email(deps.templates, user_id, email, used, cached=guarded)
        check_email(rendered)  # the rules hold for the email as it is sent
    except (EmailRuleError, TemplateProblem) as exc:
        raise InvalidInput(str(exc)) from None
    sender = parse_address(rendered["from"])
    domain = await deps.domains.find(user_id, sender.domain)
    if domain is None or not domain.verified:
        raise InvalidInput(DOMAIN_NOT_VERIFIED)
    credentials = await deps.credentials.cache_value(user_id, domain.name)
    if credentials is None:
        raise InvalidInput(NO_CREDENTIALS)
    suppressed = (() if guarded  # guarded: the store checks them in the insert
                  else await suppressed_recipients(deps.suppressions, user_id, rendered))
    message_id = new_message_id(domain.name)
    kafka_key, kafka_value = _record(deps, without(rendered, suppressed), message_id, user_id,
                                     guarded)
    new = NewEmail(
        message_id=message_id, user_id=user_id, domain_id=domain.id,
        from_address=rendered["from"], to=list(rendered["to"]),
        cc=list(rendered.get("cc") or []), bcc=list(rendered.get("bcc") or []),
        reply_to=rendered.get("reply_to"), subject=rendered["subject"],
        html=rendered.get("html"), text=rendered.get("text"),
        headers=rendered.get("headers"), tags=rendered.get("tags"),
        attachments=[{"filename": a["filename"], "content_type": a["content_type"],
                      "size": decoded_size(a["content"])}
                     for a in rendered.get("attachments") or []] or None,
        template_id=rendered.get("template_id"), template_data=email.get("template_data"),
        created_at=now, topic=deps.topic, kafka_key=kafka_key, kafka_value=kafka_value,
        suppressed=suppressed, status=stored_status(kafka_value, scheduled_at),
        events=suppressed_events(deps.events_topic, message_id, user_id, suppressed, now),
        guard=guard_addresses(rendered) if guarded else None,
        template_version=(used[0].id, used[0].updated_at) if guarded and used else None,
        traceparent=traceparent, scheduled_at=scheduled_at)
    if new.published:
        await deps.credential_cache.store(user_id, credentials)
    return new, domain


def _record(deps: EmailDeps, email: dict[str, Any] | None, message_id: str, user_id: int,
            guarded: bool = False) -> tuple[bytes, bytes]:
    """The Kafka key and value of the send request; empty when nothing is to be sent."""
    if email is None:
        return b"", b""
    message = sendmail_message(email, message_id=message_id, user_id=user_id)
    kafka_key = message_id.encode()
    kafka_value = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()
    _check_record_size(deps, len(kafka_key) + len(kafka_value), guarded)
    return kafka_key, kafka_value


def _check_record_size(deps: EmailDeps, size: int, guarded: bool) -> None:
    """The record must fit what the producer and the topic take, else it could never be
    published: refuse it now (400) rather than queue an email that stays Queued."""
    limit = deps.max_record_bytes
    if limit is not None and size > limit:
        if guarded:  # without its listed recipients, if any, the record may fit
            raise SendCheckNeeded
        raise InvalidInput(
            f"Email too large to queue: its message would be {size} bytes and this server "
            f"takes at most {limit} (attachments count 4/3 of their size once base64-encoded,"
            " and the text of a text-only email is carried twice, also as HTML)")


async def _reserve(deps: EmailDeps, domain: SendingDomain, now: datetime,
                   guarded: bool = False) -> None:
    refused = await deps.quota.reserve(domain.id, domain.limits, 1, now)
    if refused is not None:
        if guarded:  # an email whose every recipient is listed takes no quota: look first
            raise SendCheckNeeded
        limit = getattr(domain.limits, refused)
        raise InvalidInput(exceeded_message(refused, limit))


async def _commit(deps: EmailDeps, emails: list[NewEmail]) -> None:
    """Commit the emails or raise (nothing committed then; the caller gives the quota back).
    A store never raises Cancelled once it has committed (the group commit's guarantee)."""
    try:
        await deps.store.save(emails)
    except (InvalidInput, SendCheckNeeded):
        raise  # the database refused the data itself / a guarded email has listed recipients
    except Exception as exc:
        log.error("saving emails failed", error=repr(exc), count=len(emails))
        raise UpstreamUnavailable("Could not queue the email, please retry",
                                  retry_after_seconds=5) from None
    if deps.outbox is not None and any(e.published or e.events for e in emails):
        deps.outbox.notify()


async def _give_back(deps: EmailDeps, domains: list[SendingDomain], now: datetime) -> None:
    """Release the quota reserved for emails that were not committed.  It runs even when
    the request is being cancelled (shielded, at most 5 s), and a failure is logged, not
    raised: the request already fails for its own reason."""
    counts: dict[int, int] = {}
    for domain in domains:
        counts[domain.id] = counts.get(domain.id, 0) + 1
    with trio.CancelScope(shield=True), trio.move_on_after(GIVE_BACK_SECONDS):
        for domain_id, count in counts.items():
            try:
                await deps.quota.release(domain_id, count, now)
            except Exception as exc:
                log.error("giving quota back failed", domain_id=domain_id, count=count,
                          error=repr(exc))


# -- reading ---------------------------------------------------------------------------------------

async def list_emails(deps: EmailDeps, cmd: ListEmails) -> EmailList:
    labels = None
    if cmd.status is not None and cmd.status.strip():
        try:
            labels = status_rules.parse_status_filter(cmd.status)
        except status_rules.StatusFilterError as exc:
            raise InvalidInput(str(exc)) from None
    start = (parse_timestamp_field(cmd.created_at_from, "created_at_from")
             if cmd.created_at_from else None)
    end = parse_timestamp_field(cmd.created_at_to, "created_at_to") if cmd.created_at_to else None
    if start and end and start > end:
        raise InvalidInput("created_at_from must not be after created_at_to")
    page = await deps.store.list(EmailFilter(
        user_id=cmd.user_id,
        raw_statuses=status_rules.raw_statuses(labels) if labels else None,
        created_from=start, created_to=end, page=cmd.page, per_page=cmd.per_page,
    ))
    by_label: dict[str, int] = {}
    for raw, count in page.status_counts.items():
        label = status_rules.display_label(raw)
        by_label[label] = by_label.get(label, 0) + count
    return EmailList(
        emails=[EmailSummary(
            message_id=row["message_id"], from_address=row["from_address"],
            to=row["to_addresses"], subject=row["subject"],
            status=status_rules.display_label(row["status"]), created_at=row["created_at"],
        ) for row in page.rows],
        total=sum(by_label.values()), page=cmd.page, per_page=cmd.per_page,
        stats=status_rules.percentages(by_label),
    )


async def get_email(deps: EmailDeps, cmd: GetEmail) -> EmailDetail:
    row = await deps.store.get(cmd.user_id, cmd.message_id)
    if row is None:
        raise NotFound("Email not found")
    return EmailDetail(
        message_id=row["message_id"], from_address=row["from_address"], to=row["to_addresses"],
        cc=row["cc_addresses"] or [], bcc=row["bcc_addresses"] or [],
        reply_to=row["reply_to"], subject=row["subject"], html=row["html"], text=row["text"],
        headers=row["headers"], tags=row["tags"], attachments=row["attachments"] or [],
        template_id=row["template_id"], template_data=row["template_data"],
        status=status_rules.display_label(row["status"]), created_at=row["created_at"],
        sent_at=row["sent_at"], delivered_at=row["delivered_at"],
        scheduled_at=row.get("scheduled_at"),
        # Why a Failed email was never handed to the delivery queue (else None).
        failure_reason=(row["response"] if row["status"] == status_rules.FAILED.lower()
                        else None),
        recipients=tuple(
            RecipientState(email=r["recipient"], outcome=status_rules.display_label(r["outcome"]),
                           bounce_class=r["bounce_class"], response=r["response"],
                           at=r["event_at"])
            for r in row.get("recipients", ())),
        opens=int(row.get("opens") or 0), clicks=int(row.get("clicks") or 0),
        first_opened_at=row.get("first_opened_at"), first_clicked_at=row.get("first_clicked_at"),
    )


def _text(exc: AppError) -> str:
    return exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)


def register(bus: MessageBus, deps: EmailDeps) -> None:
    bus.register(SendEmail, partial(send_email, deps))
    bus.register(SendBatch, partial(send_batch, deps))
    bus.register(ListEmails, partial(list_emails, deps))
    bus.register(GetEmail, partial(get_email, deps))
