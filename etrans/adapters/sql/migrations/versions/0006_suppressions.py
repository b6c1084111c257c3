"""The suppression list (issue 15): ``suppressions``, one row per user and recipient address
that must not be mailed again (a hard bounce, a complaint, or added by hand), and the
``suppressed`` status of an email (every recipient suppressed: nothing sent) and of a recipient.

The primary key (user_id, address) is the one indexed lookup of the send path; ``address`` is
stored normalised (:func:`etrans.domain.suppressions.normalise_address`).  The second index pages
GET /suppressions newest first.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None

_STATUSES = "'queued', 'sent', 'deferred', 'delivered', 'bounced', 'failed'"
_REASONS = "'hard_bounce', 'complaint', 'manual'"


def upgrade() -> None:
    op.create_table(
        "suppressions",
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("message_id", sa.String(length=255), nullable=True),
        sa.Column("response", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.CheckConstraint(f"reason IN ({_REASONS})", name=op.f("ck_suppressions_reason")),
        sa.PrimaryKeyConstraint("user_id", "address", name=op.f("pk_suppressions")),
    )
    op.create_index(op.f("ix_suppressions_user_id_created_at"), "suppressions",
                    ["user_id", "created_at"], unique=False)
    op.drop_constraint(op.f("ck_email_messages_status"), "email_messages", type_="check")
    op.create_check_constraint(op.f("ck_email_messages_status"), "email_messages",
                               f"status IN ({_STATUSES}, 'suppressed')")
    op.drop_constraint(op.f("ck_email_recipient_outcomes_outcome"), "email_recipient_outcomes",
                       type_="check")
    op.create_check_constraint(op.f("ck_email_recipient_outcomes_outcome"),
                               "email_recipient_outcomes",
                               f"outcome IN ({_STATUSES}, 'suppressed')")


def downgrade() -> None:
    op.execute("DELETE FROM email_recipient_outcomes WHERE outcome = 'suppressed'")
    op.drop_constraint(op.f("ck_email_recipient_outcomes_outcome"), "email_recipient_outcomes",
                       type_="check")
    op.create_check_constraint(op.f("ck_email_recipient_outcomes_outcome"),
                               "email_recipient_outcomes", f"outcome IN ({_STATUSES})")
    op.execute("UPDATE email_messages SET status = 'failed' WHERE status = 'suppressed'")
    op.drop_constraint(op.f("ck_email_messages_status"), "email_messages", type_="check")
    op.create_check_constraint(op.f("ck_email_messages_status"), "email_messages",
                               f"status IN ({_STATUSES})")
    op.drop_index(op.f("ix_suppressions_user_id_created_at"), table_name="suppressions")
    op.drop_table("suppressions")
