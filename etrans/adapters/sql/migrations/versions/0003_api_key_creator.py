"""api_keys.created_by_key_id: the key that created a key through the API (issue 13.4).

NULL for keys created with a session or a Bearer token (and for every key that existed before).
A key created by a key is deleted with it (soft delete by the API, ``ON DELETE CASCADE`` for a
row removed by hand), so a minted key cannot outlive the key that minted it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("created_by_key_id", sa.BigInteger(), nullable=True))
    op.create_foreign_key(
        op.f("fk_api_keys_created_by_key_id_api_keys"), "api_keys", "api_keys",
        ["created_by_key_id"], ["id"], ondelete="CASCADE",
    )
    op.create_index(op.f("ix_api_keys_created_by_key_id"), "api_keys", ["created_by_key_id"],
                    unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_api_keys_created_by_key_id"), table_name="api_keys")
    op.drop_constraint(op.f("fk_api_keys_created_by_key_id_api_keys"), "api_keys",
                       type_="foreignkey")
    op.drop_column("api_keys", "created_by_key_id")
