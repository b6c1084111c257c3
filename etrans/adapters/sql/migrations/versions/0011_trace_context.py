"""Trace context (issue 17 item 2): ``email_outbox.traceparent``, the W3C ``traceparent`` the
relay puts in the record's Kafka header (the relay publishes later, a scheduled email much
later), and ``email_messages.traceparent``, which fetchlog reads with a message's owner so
that the delivery-log events of the SMTP server (which carry no header) join the email's
trace.  Both nullable, without a default: adding them rewrites nothing.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def upgrade() -> None:
    op.add_column("email_outbox", sa.Column("traceparent", sa.String(length=55), nullable=True))
    op.add_column("email_messages", sa.Column("traceparent", sa.String(length=55), nullable=True))


def downgrade() -> None:
    op.drop_column("email_messages", "traceparent")
    op.drop_column("email_outbox", "traceparent")
