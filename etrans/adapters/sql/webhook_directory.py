"""The endpoints an event goes to: port :class:`etrans.app.webhook_ports.WebhookDirectory`,
read by ``etrans webhooks`` from the USEND DB's ``webhooks`` table.

One portable query (the user's enabled endpoints, by the ``(user_id, created_at)`` index), so the
same class serves PostgreSQL and ``etrans dev``'s SQLite file: a user has at most
:data:`etrans.domain.webhooks.MAX_WEBHOOKS_PER_USER` endpoints, so their subscription lists are
matched here rather than with a JSONB operator SQLite lacks.  Secrets are unsealed with the
:class:`~etrans.app.webhook_ports.WebhookSecretSealer`; an endpoint whose secret does not unseal
(TOKEN_SECRET changed) is left out and logged, so it cannot hold up the others' events.

It is also :class:`~etrans.app.webhook_delivery_ports.EmailTraces`: an email's
``traceparent``, by its unique ``message_id`` (a retry's trace).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from etrans.adapters.sql.usend import EmailMessage
from etrans.adapters.sql.usend_webhooks import Webhook
from etrans.app.webhook_records import WebhookEndpoint
from etrans.errors import RetryLater
from etrans.observability import get_logger

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.engine import Row

    from etrans.adapters.sql import Database
    from etrans.app.webhook_ports import WebhookSecretSealer

log = get_logger(__name__)
_WEBHOOKS = Webhook.__table__
_EMAILS = EmailMessage.__table__


class SqlWebhookDirectory:
    def __init__(self, db: Database, sealer: WebhookSecretSealer) -> None:
        self._db = db
        self._sealer = sealer

    async def subscribers(self, user_id: int, event_type: str) -> list[WebhookEndpoint]:
        try:
            rows = await self._db.run(self._enabled, user_id)
        except SQLAlchemyError as exc:
            raise RetryLater(f"USEND DB webhook lookup failed: {exc.__class__.__name__}"
                             ) from exc
        found = []
        for row in rows:
            types = tuple(str(t) for t in row.event_types or ())
            if types and event_type not in types:
                continue
            try:
                secret = self._sealer.unseal(user_id, row.secret_sealed)
            except ValueError as exc:
                log.error("webhook secret does not unseal: endpoint skipped (TOKEN_SECRET "
                          "changed?)", webhook_id=row.id, user_id=user_id, error=str(exc))
                continue
            found.append(WebhookEndpoint(id=int(row.id), user_id=user_id, url=row.url,
                                         secret=secret, event_types=types))
        return found

    def _enabled(self, user_id: int) -> Sequence[Row[Any, Any, Any, Any]]:
        w = _WEBHOOKS.c
        query = (select(w.id, w.url, w.event_types, w.secret_sealed)
                 .where(w.user_id == user_id, w.enabled.is_(True))
                 .order_by(w.created_at, w.id))
        with self._db.engine.connect() as conn:
            return conn.execute(query).all()

    async def traceparent(self, user_id: int, message_id: str) -> str | None:
        try:
            return await self._db.run(self._traceparent, user_id, message_id)
        except SQLAlchemyError as exc:
            raise RetryLater(f"USEND DB email lookup failed: {exc.__class__.__name__}"
                             ) from exc

    def _traceparent(self, user_id: int, message_id: str) -> str | None:
        e = _EMAILS.c
        query = select(e.traceparent).where(e.message_id == message_id, e.user_id == user_id)
        with self._db.engine.connect() as conn:
            value = conn.execute(query).scalar()
        return value if isinstance(value, str) else None
