"""The email templates of the USEND DB (issue 18; ``docs/database.md``), in the same metadata as
:mod:`etrans.adapters.sql.usend` (which imports this module, so ``USEND_TABLES`` and the drift
check see them).

- ``email_templates``: a user's stored templates (POST /templates): a name and three parts, each
  a Jinja template checked when saved.  POST /emails with ``template_id`` reads one by
  (id, user_id), the primary key; GET /templates pages by (user_id, created_at).
"""

from __future__ import annotations

# Mapped[...] annotations are resolved at runtime by SQLAlchemy.
from datetime import datetime  # noqa: TC003

from sqlalchemy import Identity, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from etrans.adapters.sql.usend_base import UsendBase, now_column


class EmailTemplate(UsendBase):
    """A stored template: ``subject`` (required), ``html`` and ``text`` (at least one), each the
    Jinja source as saved (checked, never rendered here)."""

    __tablename__ = "email_templates"
    __table_args__ = (Index(None, "user_id", "created_at"),)

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    user_id: Mapped[int]
    name: Mapped[str] = mapped_column(String(255))
    subject: Mapped[str]
    html: Mapped[str | None]
    text: Mapped[str | None]
    created_at: Mapped[datetime] = now_column()
    updated_at: Mapped[datetime] = now_column()
