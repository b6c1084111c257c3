"""Plain records exchanged between the API use cases and their adapters (no behaviour, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from etrans.domain.quota import QuotaLimits

if TYPE_CHECKING:
    from datetime import datetime

    from etrans.domain.api_keys import Permission

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
class NewEmail:
    """An accepted email: its ``email_messages`` row and the Kafka record announcing it."""

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
