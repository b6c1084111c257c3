"""The webhook tables of the USEND DB (issue 16; ``docs/database.md``), in the same metadata as
:mod:`etrans.adapters.sql.usend` (which imports this module, so ``USEND_TABLES`` and the drift
check see them).

- ``webhooks``: a user's endpoints (POST /webhooks).  The signing secret is stored sealed only
  (:mod:`etrans.adapters.crypto.webhook_secrets`, a key derived from TOKEN_SECRET).
- ``webhook_deliveries``: one row per delivery attempt of an event to an endpoint (written by
  ``etrans webhooks``, read by GET /webhooks/{id}/deliveries).
- ``webhook_retries``: the deliveries waiting for their next attempt, persisted so a restart of
  ``etrans webhooks`` loses none.
"""

from __future__ import annotations

# Mapped[...] annotations are resolved at runtime by SQLAlchemy.
from datetime import datetime  # noqa: TC003

from sqlalchemy import ForeignKey, Identity, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from etrans.adapters.sql.portable import BIGINT
from etrans.adapters.sql.usend_base import UsendBase, now_column


class Webhook(UsendBase):
    """An endpoint that receives a user's email events.  ``event_types`` is a JSON array of
    event type strings (:class:`etrans.domain.events.EventType`); ``[]`` means every type.
    ``secret_sealed`` is the ``whsec_...`` signing secret sealed with the user id as associated
    data.  ``etrans webhooks`` sets ``failing_since`` at the first failure of a run of failures
    and disables the endpoint (``enabled`` false, ``disabled_reason``) after days of them;
    enabling it through the API clears both."""

    __tablename__ = "webhooks"
    __table_args__ = (Index(None, "user_id", "created_at"),)

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    user_id: Mapped[int]
    url: Mapped[str]
    description: Mapped[str | None] = mapped_column(String(255))
    event_types: Mapped[list[str]]
    secret_sealed: Mapped[str]
    enabled: Mapped[bool] = mapped_column(server_default=text("true"))
    disabled_reason: Mapped[str | None]
    failing_since: Mapped[datetime | None]
    created_at: Mapped[datetime] = now_column()
    updated_at: Mapped[datetime] = now_column()


class WebhookDelivery(UsendBase):
    """One attempt to deliver an event to an endpoint: the HTTP status (NULL when no answer),
    the error (timeout, refused address ...) and how long it took."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index(None, "webhook_id", "attempted_at"),)

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(String(36))
    event_type: Mapped[str] = mapped_column(String(32))
    attempt: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None]
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    attempted_at: Mapped[datetime] = now_column()


class WebhookRetry(UsendBase):
    """A delivery due again at ``due_at``: ``event`` is the event record's value as consumed from
    the events topic, ``attempt`` the number of the next attempt."""

    __tablename__ = "webhook_retries"

    webhook_id: Mapped[int] = mapped_column(
        BIGINT, ForeignKey("webhooks.id", ondelete="CASCADE"), primary_key=True,
        autoincrement=False)
    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    event: Mapped[bytes]
    attempt: Mapped[int] = mapped_column(Integer)
    due_at: Mapped[datetime] = mapped_column(index=True)
    last_error: Mapped[str | None]
