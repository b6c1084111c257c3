"""Use cases of emails: send one, send a batch, list, get.

Sending one email (``SendEmail``), in order: cross-field rules and templates (400;
:func:`etrans.app.templates.rendered_email`: Kafka gets the rendered email), the ``from``
domain must be the user's and verified (400 "Domain not verified"), the user must have SMTP
credentials (400), ONE lookup of every recipient (to, cc, bcc) on the user's suppression list,
quota reserved atomically (400 when exceeded), credentials cached in Redis ``auth``, then the row
and its outbox record committed in one transaction.  Suppressed recipients are left out of the
Kafka record (each field keeps its role) and stored as recipient outcomes ``suppressed`` with
the row (and, for each, an ``email.suppressed`` event as an outbox record of
KAFKA_EVENTS_TOPIC: only emails with suppressed recipients get such records); an email whose
every recipient is suppressed is stored with the status ``suppressed``, without an outbox
record and without taking quota: it is never sent.  If the commit fails the
quota is given back and the request fails (503): nothing half-done.  The outbox relay publishes.
Whatever stops a request after its quota was reserved (a failed commit, a dependency down on a
later batch item, a cancelled request), every uncommitted email's quota is given back.

Each use case is a command on the :class:`~etrans.app.bus.MessageBus` whose handler takes
:class:`EmailDeps` (ports only) and answers records (:mod:`etrans.app.records`): the accepted
:class:`~etrans.app.records.NewEmail`, a :class:`~etrans.app.records.BatchOutcome`, an
:class:`~etrans.app.records.EmailList`, an :class:`~etrans.app.records.EmailDetail`;
:mod:`etrans.api.emails` shapes the JSON (and handles ``Idempotency-Key``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from etrans.app.records import (
    BatchOutcome,
    EmailDetail,
    EmailFilter,
    EmailList,
    EmailSummary,
    NewEmail,
    RecipientState,
    RejectedEmail,
    SuppressedRecipient,
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
from etrans.domain.events import encode_event
from etrans.domain.quota import exceeded_message
from etrans.domain.status import RAW_QUEUED, RAW_SUPPRESSED
from etrans.domain.status_events import suppressed_event
from etrans.domain.suppressions import normalise_address
from etrans.domain.templates import TemplateProblem
from etrans.domain.timestamps import parse_timestamp_field
from etrans.errors import AppError, InvalidInput, NotFound, RetryLater, UpstreamUnavailable
from etrans.observability import get_logger

if TYPE_CHECKING:
    from collections.abc import Callable

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
    from etrans.app.templates import TemplateDeps

log = get_logger(__name__)

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


# -- sending ---------------------------------------------------------------------------------------

async def send_email(deps: EmailDeps, cmd: SendEmail) -> NewEmail:
    """The accepted email (status queued), committed with its outbox record."""
    now = deps.clock()
    new, domain = await _prepare(deps, cmd.user_id, cmd.email, now, cmd.traceparent)
    reserved = [domain] if new.published else []
    for each in reserved:
        await _reserve(deps, each, now)
    try:
        await _commit(deps, [new])
    except BaseException:
        await _give_back(deps, reserved, now)
        raise
    return new


async def send_batch(deps: EmailDeps, cmd: SendBatch) -> BatchOutcome:
    """What passes is committed in one transaction; the rest is listed by index."""
    now = deps.clock()
    rejected = [RejectedEmail(i, msg) for i, msg in cmd.invalid]
    accepted: list[NewEmail] = []
    reserved: list[SendingDomain] = []  # of the published emails (never the suppressed ones)
    try:
        for index, email in cmd.emails:
            try:
                new, domain = await _prepare(deps, cmd.user_id, email, now, cmd.traceparent)
                if new.published:
                    await _reserve(deps, domain, now)
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
                   traceparent: str | None = None) -> tuple[NewEmail, SendingDomain]:
    try:
        rendered = await rendered_email(deps.templates, user_id, email)
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
    suppressed = await _suppressed(deps, user_id, rendered)
    message_id = new_message_id(domain.name)
    kafka_key, kafka_value = _record(deps, _without(rendered, suppressed), message_id, user_id)
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
        suppressed=suppressed, status=RAW_QUEUED if kafka_value else RAW_SUPPRESSED,
        events=_suppressed_events(deps, message_id, user_id, suppressed, now),
        traceparent=traceparent,
    )
    if new.published:
        await deps.credential_cache.store(user_id, credentials)
    return new, domain


def _suppressed_events(deps: EmailDeps, message_id: str, user_id: int,
                       suppressed: tuple[SuppressedRecipient, ...], now: datetime
                       ) -> tuple[tuple[str, bytes, bytes], ...]:
    """The outbox records of the ``email.suppressed`` events (none in the common send)."""
    topic = deps.events_topic
    if topic is None or not suppressed:
        return ()
    return tuple((topic, *encode_event(suppressed_event(
        message_id, user_id, normalise_address(s.email), s.reason, now))) for s in suppressed)


async def _suppressed(deps: EmailDeps, user_id: int, email: dict[str, Any]
                      ) -> tuple[SuppressedRecipient, ...]:
    """The recipients (to, cc, bcc) on the user's suppression list: one lookup."""
    addresses: dict[str, str] = {}  # normalised -> the bare address as given (the first one)
    for text in (*email["to"], *(email.get("cc") or ()), *(email.get("bcc") or ())):
        bare = parse_address(text).email
        addresses.setdefault(normalise_address(bare), bare)
    try:
        listed = await deps.suppressions.suppressed(user_id, list(addresses))
    except RetryLater as exc:
        log.error("suppression lookup failed", error=str(exc))
        raise UpstreamUnavailable("Could not check the suppression list, please retry",
                                  retry_after_seconds=5) from None
    return tuple(SuppressedRecipient(bare, listed[key].reason)
                 for key, bare in addresses.items() if key in listed)


def _without(email: dict[str, Any], suppressed: tuple[SuppressedRecipient, ...]
             ) -> dict[str, Any] | None:
    """The email as it is sent: to, cc and bcc without the suppressed addresses (each field
    keeps its role: a cc is never promoted to to, so an email whose every to is suppressed
    goes out with an empty ``recipients``); None when no recipient is left."""
    if not suppressed:
        return email
    left_out = {normalise_address(s.email) for s in suppressed}
    kept = {name: [a for a in email.get(name) or ()
                   if normalise_address(parse_address(a).email) not in left_out]
            for name in ("to", "cc", "bcc")}
    if not any(kept.values()):
        return None
    return {**email, **kept}


def _record(deps: EmailDeps, email: dict[str, Any] | None, message_id: str, user_id: int
            ) -> tuple[bytes, bytes]:
    """The Kafka key and value of the send request; empty when nothing is to be sent."""
    if email is None:
        return b"", b""
    message = sendmail_message(email, message_id=message_id, user_id=user_id)
    kafka_key = message_id.encode()
    kafka_value = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()
    _check_record_size(deps, len(kafka_key) + len(kafka_value))
    return kafka_key, kafka_value


def _check_record_size(deps: EmailDeps, size: int) -> None:
    """The record must fit what the producer and the topic take, else it could never be
    published: refuse it now (400) rather than queue an email that stays Queued."""
    limit = deps.max_record_bytes
    if limit is not None and size > limit:
        raise InvalidInput(
            f"Email too large to queue: its message would be {size} bytes and this server "
            f"takes at most {limit} (attachments count 4/3 of their size once base64-encoded,"
            " and the text of a text-only email is carried twice, also as HTML)")


async def _reserve(deps: EmailDeps, domain: SendingDomain, now: datetime) -> None:
    refused = await deps.quota.reserve(domain.id, domain.limits, 1, now)
    if refused is not None:
        limit = getattr(domain.limits, refused)
        raise InvalidInput(exceeded_message(refused, limit))


async def _commit(deps: EmailDeps, emails: list[NewEmail]) -> None:
    """Commit the emails or raise (nothing committed then; the caller gives the quota back).
    A store never raises Cancelled once it has committed (the group commit's guarantee)."""
    try:
        await deps.store.save(emails)
    except InvalidInput:
        raise  # the database refused the data itself: retrying cannot help
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
