"""Opens and clicks (issue 16): ``email_engagement_events``, written by fetchlog from the
``email.opened`` / ``email.clicked`` events, counted by GET /emails/{id} (``opens``, ``clicks``,
``first_opened_at``, ``first_clicked_at``).  The event id is the key, so a replayed event is
recorded once; deleting an email deletes its rows.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def upgrade() -> None:
    op.create_table(
        "email_engagement_events",
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("message_id", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("user_agent", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('open', 'click')",
                           name=op.f("ck_email_engagement_events_kind")),
        sa.ForeignKeyConstraint(
            ["message_id"], ["email_messages.message_id"],
            name=op.f("fk_email_engagement_events_message_id_email_messages"),
            ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_email_engagement_events")),
    )
    op.create_index(op.f("ix_email_engagement_events_message_id_kind_at"),
                    "email_engagement_events", ["message_id", "kind", "at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_email_engagement_events_message_id_kind_at"),
                  table_name="email_engagement_events")
    op.drop_table("email_engagement_events")
