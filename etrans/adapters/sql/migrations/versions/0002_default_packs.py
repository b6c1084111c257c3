"""Default pack catalogue (email_transaction_pack), so a fresh install has packs to offer.

FREE is the pack of a user without any subscription (100 emails a day: the sender defaults of the
spec, 100/day and 4/hour, are its limits).  DEDICATED_100K and PAYG_SHARED are the spec's examples.
Existing rows with the same pack_code are left alone (operators may have edited them).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None

DEFAULT_PACKS = [
    # pack_code, pack_name, pack_type, daily_email_limit, domain_limit, price, is_payg
    ("FREE", "Free", "shared_ip", 100, 1, "0", False),
    ("PAYG_SHARED", "Pay As You Go", "shared_ip", 10000, 5, "0", True),
    ("DEDICATED_100K", "Dedicated 100K", "dedicated_ip", 100000, 5, "500000", False),
]


def upgrade() -> None:
    insert = sa.text(
        "INSERT INTO email_transaction_pack"
        " (pack_code, pack_name, pack_type, daily_email_limit, domain_limit, price, is_payg,"
        "  pricing)"
        " VALUES (:code, :name, :type, :daily, :domains, CAST(:price AS numeric), :payg,"
        "  CASE WHEN :payg THEN CAST('{}' AS jsonb) END)"
        " ON CONFLICT (pack_code) DO NOTHING"
    )
    for code, name, type_, daily, domains, price, payg in DEFAULT_PACKS:
        op.execute(
            insert.bindparams(
                code=code, name=name, type=type_, daily=daily, domains=domains, price=price,
                payg=payg,
            )
        )


def downgrade() -> None:
    op.execute(
        sa.text("DELETE FROM email_transaction_pack WHERE pack_code IN :codes").bindparams(
            sa.bindparam("codes", [p[0] for p in DEFAULT_PACKS], expanding=True)
        )
    )
