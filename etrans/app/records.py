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
    domains: tuple[str, ...]
    before: datetime | None = None
    after: datetime | None = None
    actions: tuple[str, ...] | None = None
    sender: str | None = None
    recipient: str | None = None
    message_id: str | None = None
    sorts: tuple[tuple[str, int], ...] = (("timestamp", -1),)


@dataclass(frozen=True)
class LogGroup:
    """Documents of the filtered set sharing (message_id, action, event): for the stats."""

    message_id: str | None
    action: str | None
    event: str | None
    count: int
