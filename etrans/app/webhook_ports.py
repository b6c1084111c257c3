"""Ports of the webhooks: what the API's use cases (:mod:`etrans.app.webhooks`) and the
``etrans webhooks`` delivery worker need from the outside.  Adapters: the USEND DB
(:mod:`etrans.adapters.sql.webhook_directory`, PostgreSQL or ``etrans dev``'s SQLite) and the
sealing of secrets (:mod:`etrans.adapters.crypto.webhook_secrets`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from etrans.app.webhook_records import (
        DeliveryAttempt,
        Webhook,
        WebhookChanges,
        WebhookEndpoint,
    )


class WebhookSecretSealer(Protocol):
    """Seals a signing secret for storage, bound to its user, and unseals it."""

    def seal(self, user_id: int, secret: str) -> str: ...

    def unseal(self, user_id: int, sealed: str) -> str:
        """Raises ValueError when ``sealed`` does not unseal (wrong key, other user, corrupt)."""
        ...


class WebhookDirectory(Protocol):
    """Read by the delivery worker.  Raises :class:`etrans.errors.RetryLater` when the database
    does not answer."""

    async def subscribers(self, user_id: int, event_type: str) -> list[WebhookEndpoint]:
        """The user's enabled endpoints subscribed to ``event_type`` (an empty subscription list
        = every type), oldest first, each with its secret unsealed.  An endpoint whose secret
        does not unseal is left out (and logged)."""
        ...


class HostResolver(Protocol):
    async def addresses(self, host: str) -> list[str]:
        """Every IPv4 and IPv6 address of ``host`` (A and AAAA); raises
        :class:`etrans.domain.webhook_urls.UnresolvableHost` (with the reason) when it has none
        or DNS does not answer."""
        ...


class WebhookStore(Protocol):
    """The ``webhooks`` table as the API uses it, always within one user's endpoints (another
    user's id is "not found").  Raises :class:`etrans.errors.UpstreamUnavailable` when the
    database does not answer."""

    async def create(self, user_id: int, *, url: str, description: str | None,
                     event_types: tuple[str, ...], secret_sealed: str,
                     max_per_user: int) -> Webhook | None:
        """The new endpoint; None when the user has ``max_per_user`` already (checked and
        inserted atomically: concurrent creations never exceed it)."""
        ...

    async def page(self, user_id: int, *, page: int, per_page: int
                   ) -> tuple[list[Webhook], int]:
        """Newest first, and the user's total."""
        ...

    async def get(self, user_id: int, webhook_id: int) -> Webhook | None: ...

    async def update(self, user_id: int, webhook_id: int, changes: WebhookChanges
                     ) -> Webhook | None:
        """Apply the changes (``enabled=True`` also clears ``failing_since`` and
        ``disabled_reason``); None when not found."""
        ...

    async def delete(self, user_id: int, webhook_id: int) -> bool:
        """With its deliveries and retries; False when not found."""
        ...

    async def deliveries(self, user_id: int, webhook_id: int, *, page: int, per_page: int
                         ) -> tuple[list[DeliveryAttempt], int] | None:
        """The endpoint's attempts, newest first, and their total; None when not found."""
        ...
