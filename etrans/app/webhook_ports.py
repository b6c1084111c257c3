"""Ports of the webhooks: what the API's use cases (:mod:`etrans.app.webhooks`) and the
``etrans webhooks`` delivery worker need from the outside.  Adapters: the USEND DB
(:mod:`etrans.adapters.sql.webhook_directory`, PostgreSQL or ``etrans dev``'s SQLite) and the
sealing of secrets (:mod:`etrans.adapters.crypto.webhook_secrets`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from etrans.app.webhook_records import WebhookEndpoint


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
