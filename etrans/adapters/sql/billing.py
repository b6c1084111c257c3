"""The Billing DB (``DB_URI``), mapped read-only: only the columns etrans reads.

The Billing DB is managed by the external billing system.  etrans never creates, alters or writes
its tables: :data:`BillingBase.metadata` is never given to Alembic or ``create_all``, and the engine
built for ``DB_URI`` (``make_engine(..., read_only=True)``) opens every session READ ONLY on top of
the SELECT-only role operators are expected to grant.  ``docs/database.md`` lists the columns.

The column sets live in mixins because the ``local`` billing mode (self-hosted installs without an
external billing system) keeps the same shapes in etrans's own USEND DB, as ``local_users``,
``local_domain``, ``local_dkim`` and ``local_mkt_domain`` (see :mod:`etrans.adapters.sql.usend`).
Query code can then be written once against either set of classes.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import ClassVar

from sqlalchemy import Boolean, Numeric, String, Table, Text, func, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from etrans.adapters.sql.portable import BIGINT, TIMESTAMPTZ


class BillingBase(DeclarativeBase):
    """Declarative base of the external Billing DB.  Its metadata must never reach DDL."""

    # Every mapped class here is a plain table: typed so, Core statements accept it
    # (DeclarativeBase types it as any FromClause).
    __table__: ClassVar[Table]

    type_annotation_map = {
        datetime: TIMESTAMPTZ,
        Decimal: Numeric(14, 2),
        int: BIGINT,
        bool: Boolean(),
        str: Text(),
    }


class UserColumns:
    """An account: its balance and whether it is the owner (may buy packs) of its organisation."""

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    email: Mapped[str] = mapped_column(String(320))
    balance: Mapped[Decimal] = mapped_column(server_default=text("0"))
    is_owner: Mapped[bool] = mapped_column(server_default=text("true"))
    created_at: Mapped[datetime | None] = mapped_column(server_default=func.now())


class DomainColumns:
    """A sending domain owned by one user.  ``name`` is stored lower-case, without a final dot.

    status: ``pending`` | ``verified`` | ``failed``.  ``deleted_at`` set = deleted (soft delete).
    """

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(index=True)
    name: Mapped[str] = mapped_column(String(253))
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    verified_at: Mapped[datetime | None]
    created_at: Mapped[datetime | None] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime | None] = mapped_column(server_default=func.now())
    deleted_at: Mapped[datetime | None]


class DkimColumns:
    """The DKIM key of a domain: the DNS record is ``<selector>._domainkey`` TXT ``v=DKIM1; k=rsa;
    p=<public_key>`` where ``public_key`` is the base64 DER SubjectPublicKeyInfo, no PEM armour."""

    id: Mapped[int] = mapped_column(primary_key=True)
    domain_id: Mapped[int] = mapped_column(index=True)
    selector: Mapped[str] = mapped_column(String(63), server_default="dkim")
    public_key: Mapped[str]
    created_at: Mapped[datetime | None] = mapped_column(server_default=func.now())


class MktDomainColumns:
    """The pack and sending limits of a domain.  A NULL limit means "derive it from the pack"
    (hourly = daily / 24, monthly = daily x 31).  ``daily_tracking``/``hourly_tracking`` are the
    billing system's own counters: etrans reads them for information only and counts usage in
    Redis (it may not write here)."""

    domain_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    pack_code: Mapped[str | None] = mapped_column(String(64))
    pack_name: Mapped[str | None] = mapped_column(String(255))
    daily_limit: Mapped[int | None]
    hourly_limit: Mapped[int | None]
    monthly_limit: Mapped[int | None]
    daily_tracking: Mapped[int] = mapped_column(server_default=text("0"))
    hourly_tracking: Mapped[int] = mapped_column(server_default=text("0"))
    updated_at: Mapped[datetime | None] = mapped_column(server_default=func.now())


class User(UserColumns, BillingBase):
    __tablename__ = "users"


class Domain(DomainColumns, BillingBase):
    __tablename__ = "domain"


class Dkim(DkimColumns, BillingBase):
    __tablename__ = "dkim"


class MktDomain(MktDomainColumns, BillingBase):
    __tablename__ = "mkt_domain"


class TemporaryPassword(BillingBase):
    """SMTP credentials the billing system issued to a user.  ``password`` is the SMTP password in
    clear: the billing system's format, which etrans can only read."""

    __tablename__ = "temporary_password"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(index=True)
    username: Mapped[str] = mapped_column(String(320))
    password: Mapped[str]
    expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime | None] = mapped_column(server_default=func.now())


BILLING_TABLES = ("users", "domain", "dkim", "mkt_domain", "temporary_password")
"""The Billing DB tables etrans reads (and nothing else)."""

__all__ = [
    "BILLING_TABLES",
    "BillingBase",
    "Dkim",
    "DkimColumns",
    "Domain",
    "DomainColumns",
    "MktDomain",
    "MktDomainColumns",
    "TemporaryPassword",
    "User",
    "UserColumns",
]
