"""Column types that keep the PostgreSQL schema exactly as it is and also work on SQLite.

``etrans dev`` runs the USEND DB (and the local billing tables) on SQLite.  Each type here is the
PostgreSQL type with a SQLite *variant* (``with_variant``): the DDL, the migrations and the drift
check (which compiles types for PostgreSQL) see no difference, while SQLite gets

- :data:`TIMESTAMPTZ`: ``DateTime(timezone=True)``; on SQLite stored as UTC text and read back as
  an aware UTC datetime (SQLite has no time zones: the plain type would return naive values);
- :data:`JSONB_OR_JSON`: ``JSONB``; on SQLite the generic ``JSON`` (text);
- :data:`BIGINT`: ``BigInteger``; on SQLite ``INTEGER``, so an ``Identity()`` primary key becomes
  the rowid alias and numbers itself.

What SQLite cannot express at all (casts in server defaults, regex CHECKs) is adapted when the
SQLite schema is created: :func:`etrans.dev.sqlite_db.create_schema`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Integer
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator


class _SqliteUtcDateTime(TypeDecorator[datetime]):
    """SQLite: aware datetimes are stored converted to UTC and read back with ``tzinfo=UTC``."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


TIMESTAMPTZ = DateTime(timezone=True).with_variant(_SqliteUtcDateTime(), "sqlite")
JSONB_OR_JSON = JSONB().with_variant(JSON(), "sqlite")
BIGINT = BigInteger().with_variant(Integer(), "sqlite")

__all__ = ["BIGINT", "JSONB_OR_JSON", "TIMESTAMPTZ"]
