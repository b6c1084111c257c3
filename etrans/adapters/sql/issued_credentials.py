"""The SMTP credentials the billing system issued (``temporary_password`` of the Billing DB,
read only): the send path's fallback when the user has no sender of their own.

The ``local`` billing mode has no such table (``local=True``: there are none).  The domains and
their limits are read by :class:`etrans.adapters.sql.domains_repo.SqlDomains`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import or_, select

from etrans.adapters.sql.billing import TemporaryPassword

if TYPE_CHECKING:
    from etrans.adapters.sql import Database


@dataclass(frozen=True)
class IssuedCredentials:
    username: str
    password: str


class IssuedCredentialReader:
    def __init__(self, db: Database, *, local: bool = False) -> None:
        self._db = db
        self.local = local

    async def issued_credentials(self, user_id: int) -> IssuedCredentials | None:
        if self.local:
            return None
        return await self._db.run(self._issued, user_id)

    def _issued(self, user_id: int) -> IssuedCredentials | None:
        t = TemporaryPassword.__table__
        now = datetime.now(UTC)
        query = (
            select(t.c.username, t.c.password)
            .where(t.c.user_id == user_id, or_(t.c.expires_at.is_(None), t.c.expires_at > now))
            .order_by(t.c.created_at.desc().nulls_last(), t.c.id.desc()).limit(1)
        )
        with self._db.engine.connect() as conn:
            row = conn.execute(query).first()
        return IssuedCredentials(row.username, row.password) if row is not None else None
