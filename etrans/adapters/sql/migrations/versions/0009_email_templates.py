"""Email templates (issue 18): ``email_templates``, a user's stored templates (POST /templates),
sent by id with POST /emails ``template_id``.  The primary key is the send path's lookup (with
the user id); the second index pages GET /templates newest first.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def upgrade() -> None:
    op.create_table(
        "email_templates",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("html", sa.Text(), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_templates")),
    )
    op.create_index(op.f("ix_email_templates_user_id_created_at"), "email_templates",
                    ["user_id", "created_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_email_templates_user_id_created_at"), table_name="email_templates")
    op.drop_table("email_templates")
