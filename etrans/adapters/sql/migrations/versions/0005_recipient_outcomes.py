"""Per-recipient outcomes: ``email_recipient_outcomes`` (issue 15: bounce classes), written by
fetchlog from the delivery-log events it stores, shown by GET /emails/{id} as ``recipients``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None

_OUTCOMES = "'queued', 'sent', 'deferred', 'delivered', 'bounced', 'failed'"


def upgrade() -> None:
    op.create_table(
        "email_recipient_outcomes",
        sa.Column("message_id", sa.String(length=255), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("bounce_class", sa.String(length=16), nullable=True),
        sa.Column("response", sa.Text(), nullable=True),
        sa.Column("event_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.CheckConstraint(f"outcome IN ({_OUTCOMES})",
                           name=op.f("ck_email_recipient_outcomes_outcome")),
        sa.ForeignKeyConstraint(
            ["message_id"], ["email_messages.message_id"],
            name=op.f("fk_email_recipient_outcomes_message_id_email_messages"),
            ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("message_id", "recipient",
                                name=op.f("pk_email_recipient_outcomes")),
    )


def downgrade() -> None:
    op.drop_table("email_recipient_outcomes")
