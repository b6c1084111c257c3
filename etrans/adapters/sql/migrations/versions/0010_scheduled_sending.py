"""Scheduled sending (issue 18): ``email_messages.scheduled_at`` and the ``scheduled`` and
``cancelled`` statuses; ``email_outbox.due_at``, the time a scheduled email's row waits for.

The relay's pending-rows index now leaves the waiting rows out (``due_at IS NULL``), so a
million scheduled emails cost the relay's pass nothing; a second partial index holds only the
waiting rows, by ``due_at``: finding the due ones reads the index from its start and stops at
the first row not yet due (``docs/database.md``, "Scheduled sending").

Rebuilding ``ix_email_outbox_unpublished`` reads the whole outbox (published rows are kept for
``ETRANS_OUTBOX_RETENTION_HOURS``) and holds off writes to it meanwhile: run the upgrade at a
quiet moment on a large outbox.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None

_STATUSES = "'queued', 'sent', 'deferred', 'delivered', 'bounced', 'failed', 'suppressed'"
_PENDING_BEFORE = "published_at IS NULL AND failed_at IS NULL"
_PENDING = f"{_PENDING_BEFORE} AND due_at IS NULL"
_WAITING = f"{_PENDING_BEFORE} AND due_at IS NOT NULL"


def upgrade() -> None:
    op.add_column("email_messages",
                  sa.Column("scheduled_at", sa.DateTime(timezone=True), nullable=True))
    op.drop_constraint(op.f("ck_email_messages_status"), "email_messages", type_="check")
    op.create_check_constraint(op.f("ck_email_messages_status"), "email_messages",
                               f"status IN ({_STATUSES}, 'scheduled', 'cancelled')")
    op.add_column("email_outbox", sa.Column("due_at", sa.DateTime(timezone=True), nullable=True))
    op.drop_index("ix_email_outbox_unpublished", table_name="email_outbox",
                  postgresql_where=sa.text(_PENDING_BEFORE))
    op.create_index("ix_email_outbox_unpublished", "email_outbox", ["attempts", "id"],
                    unique=False, postgresql_where=sa.text(_PENDING))
    op.create_index("ix_email_outbox_due_at", "email_outbox", ["due_at"], unique=False,
                    postgresql_where=sa.text(_WAITING))


def downgrade() -> None:
    # Waiting emails are sent at once rather than lost; cancelled ones stay unsent (failed).
    op.execute("UPDATE email_messages SET status = 'queued' WHERE status = 'scheduled'")
    op.execute("UPDATE email_messages SET status = 'failed' WHERE status = 'cancelled'")
    op.drop_index("ix_email_outbox_due_at", table_name="email_outbox",
                  postgresql_where=sa.text(_WAITING))
    op.drop_index("ix_email_outbox_unpublished", table_name="email_outbox",
                  postgresql_where=sa.text(_PENDING))
    op.create_index("ix_email_outbox_unpublished", "email_outbox", ["attempts", "id"],
                    unique=False, postgresql_where=sa.text(_PENDING_BEFORE))
    op.drop_column("email_outbox", "due_at")
    op.drop_constraint(op.f("ck_email_messages_status"), "email_messages", type_="check")
    op.create_check_constraint(op.f("ck_email_messages_status"), "email_messages",
                               f"status IN ({_STATUSES})")
    op.drop_column("email_messages", "scheduled_at")
