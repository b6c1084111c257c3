"""``email_engagement_events`` of the USEND DB (issue 16; ``docs/database.md``): one row per open
or click of an API email, written by fetchlog from the ``email.opened`` / ``email.clicked``
events (:mod:`etrans.adapters.sql.engagement`), counted by GET /emails/{id}.  In the same metadata
as :mod:`etrans.adapters.sql.usend` (which imports this module)."""

from __future__ import annotations

# Mapped[...] annotations are resolved at runtime by SQLAlchemy.
from datetime import datetime  # noqa: TC003

from sqlalchemy import CheckConstraint, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from etrans.adapters.sql.usend_base import UsendBase, one_of

ENGAGEMENT_KINDS = ("open", "click")


class EmailEngagementEvent(UsendBase):
    """An open or click: ``event_id`` is the event's id (a replayed event inserts nothing),
    ``url`` the link of a click (NULL for an open), ``at`` the time of the hit."""

    __tablename__ = "email_engagement_events"
    __table_args__ = (CheckConstraint(one_of("kind", ENGAGEMENT_KINDS), name="kind"),
                      Index(None, "message_id", "kind", "at"))

    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    message_id: Mapped[str] = mapped_column(
        String(255), ForeignKey("email_messages.message_id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(8))
    url: Mapped[str | None]
    user_agent: Mapped[str | None]
    at: Mapped[datetime]
