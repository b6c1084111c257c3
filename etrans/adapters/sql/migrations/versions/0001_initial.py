"""Initial USEND DB schema: the spec's tables, the email outbox and the local billing mode tables.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("key_prefix", sa.String(length=32), nullable=False),
        sa.Column("permission", sa.String(length=16), server_default="full_access", nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("key_hash ~ '^[0-9a-f]{64}$'", name=op.f("ck_api_keys_key_hash_hex")),
        sa.CheckConstraint(
            "permission IN ('read_only', 'sending_access', 'full_access')",
            name=op.f("ck_api_keys_permission"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_index(
        op.f("ix_api_keys_user_id_created_at"), "api_keys", ["user_id", "created_at"], unique=False
    )
    op.create_table(
        "domain_subscription_status",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("domain_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("pack_code", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), server_default="subscription", nullable=False),
        sa.Column("status", sa.String(length=16), server_default="active", nullable=False),
        sa.Column("previous_pack_code", sa.String(length=64), nullable=True),
        sa.Column("external_id", sa.String(length=255), nullable=True),
        sa.Column("details", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column(
            "started_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "kind IN ('subscription', 'payg')", name=op.f("ck_domain_subscription_status_kind")
        ),
        sa.CheckConstraint(
            "status IN ('active', 'cancelled')", name=op.f("ck_domain_subscription_status_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_domain_subscription_status")),
    )
    op.create_index(
        op.f("ix_domain_subscription_status_user_id"),
        "domain_subscription_status",
        ["user_id"],
        unique=False,
    )
    op.create_index(
        "uq_domain_subscription_status_active_domain",
        "domain_subscription_status",
        ["domain_id"],
        unique=True,
        postgresql_where=sa.text("status = 'active'"),
    )
    op.create_table(
        "domain_tracking_settings",
        sa.Column("domain_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("click_tracking", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("open_tracking", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("domain_id", name=op.f("pk_domain_tracking_settings")),
    )
    op.create_index(
        op.f("ix_domain_tracking_settings_user_id"),
        "domain_tracking_settings",
        ["user_id"],
        unique=False,
    )
    op.create_table(
        "email_messages",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("message_id", sa.String(length=255), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("domain_id", sa.BigInteger(), nullable=True),
        sa.Column("from_address", sa.String(length=640), nullable=False),
        sa.Column("to_addresses", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "cc_addresses",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "bcc_addresses",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column("reply_to", sa.String(length=640), nullable=True),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("html", sa.Text(), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("headers", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("tags", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("attachments", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("template_id", sa.String(length=255), nullable=True),
        sa.Column("template_data", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("status", sa.String(length=16), server_default="queued", nullable=False),
        sa.Column("last_event", sa.String(length=32), nullable=True),
        sa.Column("response", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('queued', 'sent', 'deferred', 'delivered', 'bounced')",
            name=op.f("ck_email_messages_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_messages")),
        sa.UniqueConstraint("message_id", name=op.f("uq_email_messages_message_id")),
    )
    op.create_index(
        op.f("ix_email_messages_user_id_created_at"),
        "email_messages",
        ["user_id", "created_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_email_messages_user_id_status"),
        "email_messages",
        ["user_id", "status"],
        unique=False,
    )
    op.create_table(
        "email_outbox",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("topic", sa.String(length=249), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=True),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("message_id", sa.String(length=255), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_outbox")),
    )
    op.create_index(
        op.f("ix_email_outbox_message_id"), "email_outbox", ["message_id"], unique=False
    )
    op.create_index(
        "ix_email_outbox_unpublished",
        "email_outbox",
        ["id"],
        unique=False,
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.create_table(
        "email_transaction_pack",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("pack_code", sa.String(length=64), nullable=False),
        sa.Column("pack_name", sa.String(length=255), nullable=False),
        sa.Column("pack_type", sa.String(length=32), nullable=False),
        sa.Column("daily_email_limit", sa.BigInteger(), nullable=False),
        sa.Column("hourly_email_limit", sa.BigInteger(), nullable=True),
        sa.Column("monthly_email_limit", sa.BigInteger(), nullable=True),
        sa.Column("domain_limit", sa.Integer(), nullable=False),
        sa.Column(
            "price", sa.Numeric(precision=14, scale=2), server_default=sa.text("0"), nullable=False
        ),
        sa.Column("is_active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("is_payg", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("pricing", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_transaction_pack")),
        sa.UniqueConstraint("pack_code", name=op.f("uq_email_transaction_pack_pack_code")),
    )
    op.create_table(
        "local_domain",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=True
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=True
        ),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_local_domain")),
    )
    op.create_index(op.f("ix_local_domain_user_id"), "local_domain", ["user_id"], unique=False)
    op.create_index(
        "uq_local_domain_name_live",
        "local_domain",
        ["name"],
        unique=True,
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_table(
        "local_users",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column(
            "balance",
            sa.Numeric(precision=14, scale=2),
            server_default=sa.text("0"),
            nullable=False,
        ),
        sa.Column("is_owner", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=True
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_local_users")),
    )
    op.create_table(
        "transport",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("domain_id", sa.BigInteger(), nullable=True),
        sa.Column("domain", sa.String(length=253), nullable=False),
        sa.Column("account", sa.String(length=320), nullable=False),
        sa.Column("password_encrypted", sa.Text(), nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("daily_limit", sa.Integer(), server_default=sa.text("100"), nullable=False),
        sa.Column("hourly_limit", sa.Integer(), server_default=sa.text("4"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transport")),
        sa.UniqueConstraint("account", name=op.f("uq_transport_account")),
    )
    op.create_index(op.f("ix_transport_user_id"), "transport", ["user_id"], unique=False)
    op.create_table(
        "user_pack",
        sa.Column("user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("pack_code", sa.String(length=64), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_user_pack")),
    )
    op.create_table(
        "local_dkim",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("domain_id", sa.BigInteger(), nullable=False),
        sa.Column("private_key_encrypted", sa.Text(), nullable=False),
        sa.Column("selector", sa.String(length=63), server_default="dkim", nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=True
        ),
        sa.ForeignKeyConstraint(
            ["domain_id"],
            ["local_domain.id"],
            name=op.f("fk_local_dkim_domain_id_local_domain"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_local_dkim")),
    )
    op.create_index(op.f("ix_local_dkim_domain_id"), "local_dkim", ["domain_id"], unique=False)
    op.create_table(
        "local_mkt_domain",
        sa.Column("domain_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("pack_code", sa.String(length=64), nullable=True),
        sa.Column("pack_name", sa.String(length=255), nullable=True),
        sa.Column("daily_limit", sa.BigInteger(), nullable=True),
        sa.Column("hourly_limit", sa.BigInteger(), nullable=True),
        sa.Column("monthly_limit", sa.BigInteger(), nullable=True),
        sa.Column("daily_tracking", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("hourly_tracking", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=True
        ),
        sa.ForeignKeyConstraint(
            ["domain_id"],
            ["local_domain.id"],
            name=op.f("fk_local_mkt_domain_domain_id_local_domain"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("domain_id", name=op.f("pk_local_mkt_domain")),
    )


def downgrade() -> None:
    op.drop_table("local_mkt_domain")
    op.drop_index(op.f("ix_local_dkim_domain_id"), table_name="local_dkim")
    op.drop_table("local_dkim")
    op.drop_table("user_pack")
    op.drop_index(op.f("ix_transport_user_id"), table_name="transport")
    op.drop_table("transport")
    op.drop_table("local_users")
    op.drop_index(
        "uq_local_domain_name_live",
        table_name="local_domain",
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.drop_index(op.f("ix_local_domain_user_id"), table_name="local_domain")
    op.drop_table("local_domain")
    op.drop_table("email_transaction_pack")
    op.drop_index(
        "ix_email_outbox_unpublished",
        table_name="email_outbox",
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.drop_index(op.f("ix_email_outbox_message_id"), table_name="email_outbox")
    op.drop_table("email_outbox")
    op.drop_index(op.f("ix_email_messages_user_id_status"), table_name="email_messages")
    op.drop_index(op.f("ix_email_messages_user_id_created_at"), table_name="email_messages")
    op.drop_table("email_messages")
    op.drop_index(
        op.f("ix_domain_tracking_settings_user_id"), table_name="domain_tracking_settings"
    )
    op.drop_table("domain_tracking_settings")
    op.drop_index(
        "uq_domain_subscription_status_active_domain",
        table_name="domain_subscription_status",
        postgresql_where=sa.text("status = 'active'"),
    )
    op.drop_index(
        op.f("ix_domain_subscription_status_user_id"), table_name="domain_subscription_status"
    )
    op.drop_table("domain_subscription_status")
    op.drop_index(op.f("ix_api_keys_user_id_created_at"), table_name="api_keys")
    op.drop_table("api_keys")
