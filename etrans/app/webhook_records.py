"""Records of the webhooks use cases (:mod:`etrans.app.webhooks`) and of the directory the
``etrans webhooks`` worker reads (:class:`etrans.app.webhook_ports.WebhookDirectory`)."""

from __future__ import annotations

from dataclasses import dataclass


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
