"""Plain records of the sending use cases (emails, logs) and of what their ports answer (no
behaviour, no I/O); the account records are in :mod:`etrans.app.account_records`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from etrans.domain.quota import QuotaLimits
from etrans.domain.status import RAW_QUEUED, RAW_SUPPRESSED

if TYPE_CHECKING:
    from datetime import datetime

    from etrans.domain.api_keys import Permission
    from etrans.domain.status import Stat

# What an API key cache holds for a hash with no usable key (see ApiKeyCache).
MISSING = "missing"
REVOKED = "revoked"


@dataclass(frozen=True)
class ApiKeyRecord:
    """What authentication needs of an ``api_keys`` row (a live one: active, not deleted)."""

    id: int
    user_id: int
    permission: Permission
    expires_at: datetime | None


@dataclass(frozen=True)
class SendingDomain:
    """A domain of the user, with the sending limits of its ``mkt_domain`` row (if any)."""

    id: int
    user_id: int
    name: str
    verified: bool
    limits: QuotaLimits = field(default_factory=QuotaLimits)


@dataclass(frozen=True)
class SuppressedRecipient:
    """A recipient an email is not sent to: on the sender's suppression list for ``reason``
    (a :class:`~etrans.domain.suppressions.SuppressionReason` value).  ``email`` is the bare
    address as the request gave it."""

    email: str
    reason: str


@dataclass(frozen=True)
class NewEmail:
    """An accepted email: its ``email_messages`` row and the Kafka record announcing it.

    ``to``/``cc``/``bcc`` are the addresses as requested; the record (``kafka_value``) leaves out
    the ``suppressed`` ones, which the store writes as recipient outcomes ``suppressed``.  An
    email whose every recipient is suppressed has the status ``suppressed`` and no record: it
    is stored, never published (``published`` is False).  A scheduled email (``scheduled_at``)
    has the status ``scheduled``: its record waits in the outbox until then."""

    message_id: str
    user_id: int
    domain_id: int | None
    from_address: str
    to: list[str]
    cc: list[str]
    bcc: list[str]
    reply_to: str | None
    subject: str
    html: str | None
    text: str | None
    headers: dict[str, str] | None
    tags: list[dict[str, str]] | None
    attachments: list[dict[str, Any]] | None  # metadata only: filename, content_type, size
    template_id: str | None
    template_data: dict[str, Any] | None
    created_at: datetime
    topic: str
    kafka_key: bytes
    kafka_value: bytes
    suppressed: tuple[SuppressedRecipient, ...] = ()
    status: str = RAW_QUEUED  # or RAW_SUPPRESSED, RAW_SCHEDULED
    # Outbox records (topic, key, value) written with the row: the email.suppressed events of
    # the suppressed recipients (none for an email without).
    events: tuple[tuple[str, bytes, bytes], ...] = ()
    scheduled_at: datetime | None = None  # when to send (None: at once)
    # W3C traceparent of the request that sent it (its span: the parent of the relay's and
    # sendmail's); kept with the email and its outbox records.
    traceparent: str | None = None
    # Not looked up yet (EmailDeps.guarded_saves): the normalised recipients the store checks
    # against the user's suppression list as it saves (EmailStore.save); None: checked already.
    guard: tuple[str, ...] | None = None
    # Rendered from a template the store must still find unchanged as it saves (its id and
    # ``updated_at``; EmailStore.save); None: no template, or read in this request.
    template_version: tuple[int, datetime] | None = None

    @property
    def published(self) -> bool:
        return self.status != RAW_SUPPRESSED


@dataclass(frozen=True)
class EmailFilter:
    user_id: int
    raw_statuses: tuple[str, ...] | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    page: int = 1
    per_page: int = 20


@dataclass(frozen=True)
class EmailPage:
    rows: list[dict[str, Any]]
    status_counts: dict[str, int]  # raw status -> count, over the whole filtered set


@dataclass(frozen=True)
class LogFilter:
    """The delivery-log documents a user may see, narrowed by the GET /logs filters.

    Visible: the events of the user's own messages (documents whose ``user_id`` is ``owner``,
    recorded by fetchlog at ingestion) and the events of the domains the user holds verified,
    from the moment each was verified (``domains``: (name, verified since)).  ``source`` is
    "API", "SMTP" or None (both).
    """

    owner: int | None
    domains: tuple[tuple[str, datetime], ...] = ()
    before: datetime | None = None
    after: datetime | None = None
    actions: tuple[str, ...] | None = None
    sender: str | None = None
    recipient: str | None = None
    message_id: str | None = None
    source: str | None = None
    sorts: tuple[tuple[str, int], ...] = (("timestamp", -1),)

    @property
    def empty(self) -> bool:
        return self.owner is None and not self.domains


@dataclass(frozen=True)
class LogGroup:
    """Documents of the filtered set sharing (action, event, source): for the stats.
    ``source`` is None for a document stored before fetchlog recorded it (not yet backfilled)."""

    action: str | None
    event: str | None
    source: str | None
    count: int


# -- what the email and log use cases answer (api/emails.py and api/logs.py shape the JSON) -----

@dataclass(frozen=True)
class RejectedEmail:
    """An item of POST /emails/batch that was not sent: its index in the request and why."""

    index: int
    error: str


@dataclass(frozen=True)
class BatchOutcome:
    """POST /emails/batch: the emails committed (in the order of the request; those whose every
    recipient is suppressed included) and the items refused (by index).  All of ``sent`` was
    committed in one transaction."""

    sent: list[NewEmail]
    rejected: list[RejectedEmail]


@dataclass(frozen=True)
class EmailSummary:
    """A row of GET /emails; ``status`` is the display label."""

    message_id: str
    from_address: str
    to: list[str]
    subject: str
    status: str
    created_at: datetime


@dataclass(frozen=True)
class EmailList:
    """GET /emails: a page, the size of the whole filtered set and its stats by status."""

    emails: list[EmailSummary]
    total: int
    page: int
    per_page: int
    stats: list[Stat]


@dataclass(frozen=True)
class EmailDetail:
    """GET /emails/{id}: an email as it was sent, with its display status and, when it Failed,
    why it was never handed to the delivery queue (``failure_reason``, else None)."""

    message_id: str
    from_address: str
    to: list[str]
    cc: list[str]
    bcc: list[str]
    reply_to: str | None
    subject: str
    html: str | None
    text: str | None
    headers: dict[str, str] | None
    tags: list[dict[str, str]] | None
    attachments: list[dict[str, Any]]  # metadata only: filename, content_type, size
    template_id: str | None
    template_data: dict[str, Any] | None
    status: str
    created_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None
    failure_reason: str | None
    # Each recipient the delivery log reported on, as fetchlog recorded it (addition, issue 15).
    recipients: tuple[RecipientState, ...] = ()
    # Opens and clicks recorded by fetchlog from the tracking events (addition, issue 16).
    opens: int = 0
    clicks: int = 0
    first_opened_at: datetime | None = None
    first_clicked_at: datetime | None = None
    scheduled_at: datetime | None = None  # when a scheduled email is (or was) to be sent


@dataclass(frozen=True)
class RecipientState:
    """One recipient of an email: its ``outcome`` (the display label of a status: Sent,
    Delayed, Delivered, Bounced), the ``bounce_class`` of a bounce (``docs/bounces.md``), the
    SMTP ``response`` and the time of the event that proved it."""

    email: str
    outcome: str
    bounce_class: str | None
    response: str | None
    at: datetime


@dataclass(frozen=True)
class LogEntry:
    """A delivery-log document as GET /logs shows it.  ``timestamp`` is an aware datetime (a
    naive one as stored is UTC); a document holding something else keeps it as stored.
    ``status`` is the display label, ``action`` the SMTP code of ``action_detail`` (the
    server's response) when it has one, else the raw action."""

    event: str | None
    timestamp: datetime | object
    status: str
    action: str
    action_detail: str
    sender: str | None
    recipient: str | None
    from_domain: str | None
    to_domain: str | None
    message_id: str | None
    source: str  # "API" | "SMTP"


@dataclass(frozen=True)
class LogList:
    """GET /logs: a page, the size of the whole visible set and its stats (by status, then by
    source)."""

    logs: list[LogEntry]
    total: int
    page: int
    per_page: int
    stats: list[Stat]


# -- suppression list ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Suppression:
    """One address on a user's suppression list (``suppressions``): the normalised address
    (:func:`etrans.domain.suppressions.normalise_address`), why, and the message and reply that
    caused it (None for a manual entry)."""

    user_id: int
    address: str
    reason: str  # a SuppressionReason value
    message_id: str | None = None
    response: str | None = None
    created_at: datetime | None = None  # set by the store


@dataclass(frozen=True)
class SuppressionFilter:
    """GET /suppressions: one user's entries, newest first, optionally narrowed."""

    user_id: int
    reason: str | None = None
    address: str | None = None  # a substring of the normalised address
    created_from: datetime | None = None
    created_to: datetime | None = None
    page: int = 1
    per_page: int = 20


@dataclass(frozen=True)
class SuppressionPage:
    rows: list[Suppression]
    total: int  # over the whole filtered set


@dataclass(frozen=True)
class ScheduleChange:
    """What cancelling or moving an email's schedule found: its raw status and ``scheduled_at``
    afterwards, and whether it changed (False: the email was not, or no longer, scheduled)."""

    message_id: str
    status: str
    scheduled_at: datetime | None
    changed: bool
