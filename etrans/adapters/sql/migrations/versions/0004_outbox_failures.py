"""Outbox rows that can never be published: ``email_outbox.failed_at``, the pending-rows index
in the relay's order (attempts, id) without failed rows, an index for deleting published rows
after their retention, and the ``failed`` email status.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None

_STATUSES = "'queued', 'sent', 'deferred', 'delivered', 'bounced'"


def upgrade() -> None:
    op.add_column("email_outbox",
                  sa.Column("failed_at", sa.DateTime(timezone=True), nullable=True))
    op.drop_index("ix_email_outbox_unpublished", table_name="email_outbox",
                  postgresql_where=sa.text("published_at IS NULL"))
    op.create_index("ix_email_outbox_unpublished", "email_outbox", ["attempts", "id"],
                    unique=False,
                    postgresql_where=sa.text("published_at IS NULL AND failed_at IS NULL"))
    op.create_index("ix_email_outbox_published_at", "email_outbox", ["published_at"],
                    unique=False, postgresql_where=sa.text("published_at IS NOT NULL"))
    op.drop_constraint(op.f("ck_email_messages_status"), "email_messages", type_="check")
    op.create_check_constraint(op.f("ck_email_messages_status"), "email_messages",
                               f"status IN ({_STATUSES}, 'failed')")


def downgrade() -> None:
    op.execute("UPDATE email_messages SET status = 'bounced' WHERE status = 'failed'")
    op.drop_constraint(op.f("ck_email_messages_status"), "email_messages", type_="check")
    op.create_check_constraint(op.f("ck_email_messages_status"), "email_messages",
                               f"status IN ({_STATUSES})")
    op.drop_index("ix_email_outbox_published_at", table_name="email_outbox",
                  postgresql_where=sa.text("published_at IS NOT NULL"))
    op.drop_index("ix_email_outbox_unpublished", table_name="email_outbox",
                  postgresql_where=sa.text("published_at IS NULL AND failed_at IS NULL"))
    op.create_index("ix_email_outbox_unpublished", "email_outbox", ["id"], unique=False,
                    postgresql_where=sa.text("published_at IS NULL"))
    op.drop_column("email_outbox", "failed_at")
