"""Records of the webhooks use cases (:mod:`etrans.app.webhooks`) and of the directory the
``etrans webhooks`` worker reads (:class:`etrans.app.webhook_ports.WebhookDirectory`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datetime import datetime


@dataclass(frozen=True)
class WebhookEndpoint:
    """An enabled endpoint as the delivery worker needs it: where to POST, and the signing
    secret in clear (``whsec_<base64>``, Standard Webhooks' form).  ``event_types`` empty =
    every type."""

    id: int
    user_id: int
    url: str
    secret: str
    event_types: tuple[str, ...]

    def __repr__(self) -> str:
        return (f"WebhookEndpoint(id={self.id}, user_id={self.user_id}, url={self.url!r}, "
                f"secret='**********', event_types={self.event_types!r})")

    def subscribes_to(self, event_type: str) -> bool:
        return not self.event_types or event_type in self.event_types


@dataclass(frozen=True)
class Webhook:
    """A user's endpoint as the API shows it (never with its secret)."""

    id: int
    user_id: int
    url: str
    description: str | None
    event_types: tuple[str, ...]  # empty = every type
    enabled: bool
    disabled_reason: str | None
    failing_since: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class NewWebhook:
    """A created endpoint and its signing secret, shown this once."""

    record: Webhook
    secret: str

    def __repr__(self) -> str:
        return f"NewWebhook(record={self.record!r}, secret='**********')"


@dataclass(frozen=True)
class WebhookChanges:
    """PATCH /webhooks/{id}: None = unchanged.  Enabling clears ``failing_since`` and
    ``disabled_reason``."""

    url: str | None = None
    event_types: tuple[str, ...] | None = None
    enabled: bool | None = None
    description: str | None = None


@dataclass(frozen=True)
class WebhookPage:
    rows: list[Webhook]
    total: int
    page: int
    per_page: int


@dataclass(frozen=True)
class DeliveryAttempt:
    """One attempt of ``etrans webhooks`` to deliver an event (``webhook_deliveries``)."""

    event_id: str
    event_type: str
    attempt: int
    status_code: int | None
    error: str | None
    latency_ms: int | None
    attempted_at: datetime


@dataclass(frozen=True)
class DeliveryPage:
    rows: list[DeliveryAttempt]
    total: int
    page: int
    per_page: int
