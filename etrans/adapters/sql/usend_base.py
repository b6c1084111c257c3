"""The declarative base of the USEND DB's models (:mod:`etrans.adapters.sql.usend`): the naming
convention the migrations share, the allowed values of its CHECK constraints, and the column
helpers."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

from sqlalchemy import Boolean, LargeBinary, MetaData, Numeric, Table, Text, func
from sqlalchemy.orm import DeclarativeBase, mapped_column

from etrans.adapters.sql.portable import BIGINT, JSONB_OR_JSON, TIMESTAMPTZ
from etrans.domain.suppressions import SuppressionReason

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Raw outcomes of a recipient (email_recipient_outcomes.outcome), in the order a message can
# advance through them (fetchlog owns the transition rules; the database only refuses unknown
# values).
OUTCOME_STATUSES = ("queued", "sent", "deferred", "delivered", "bounced", "failed", "suppressed")
# Raw statuses of email_messages.status: the outcomes, and those of a scheduled email (migration
# 0010) that no recipient can have.
EMAIL_STATUSES = (*OUTCOME_STATUSES, "scheduled", "cancelled")
# The predicates of the outbox's partial indexes (migration 0010): rows to publish now, and rows
# of scheduled emails waiting for their time.
PENDING = "published_at IS NULL AND failed_at IS NULL AND due_at IS NULL"
WAITING = "published_at IS NULL AND failed_at IS NULL AND due_at IS NOT NULL"
SUPPRESSION_REASONS = tuple(reason.value for reason in SuppressionReason)
PERMISSIONS = ("read_only", "sending_access", "full_access")
SUBSCRIPTION_KINDS = ("subscription", "payg")
SUBSCRIPTION_STATES = ("active", "cancelled")


def one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def now_column() -> Any:
    return mapped_column(TIMESTAMPTZ, server_default=func.now())


class UsendBase(DeclarativeBase):
    """Declarative base of the USEND DB; its metadata is what the migrations must produce."""

    # Every mapped class here is a plain table: typed so, Core statements accept it
    # (DeclarativeBase types it as any FromClause).
    __table__: ClassVar[Table]

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        # PostgreSQL types with SQLite variants (etrans dev): etrans.adapters.sql.portable.
        datetime: TIMESTAMPTZ,
        Decimal: Numeric(14, 2),
        int: BIGINT,
        bool: Boolean(),
        str: Text(),
        dict[str, Any]: JSONB_OR_JSON,
        list[Any]: JSONB_OR_JSON,
        list[str]: JSONB_OR_JSON,
        bytes: LargeBinary(),
    }
