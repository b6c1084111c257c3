"""Read-only queries of the API on the Billing DB: the user's domains, their sending limits
(``mkt_domain``) and the SMTP credentials the billing system issued (``temporary_password``).

The Billing DB is never written.  In the ``local`` billing mode the same shapes live in the USEND
DB (``local_domain``, ``local_mkt_domain``; no ``temporary_password``): pass ``local=True`` and the
USEND database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import or_, select

from etrans.adapters.sql.billing import Domain, MktDomain, TemporaryPassword
from etrans.adapters.sql.usend import LocalDomain, LocalMktDomain

if TYPE_CHECKING:
    from etrans.adapters.sql import Database


@dataclass(frozen=True)
class DomainRow:
    id: int
    user_id: int
    name: str
    status: str
    pack_code: str | None
    daily_limit: int | None
    hourly_limit: int | None
    monthly_limit: int | None
    has_mkt_row: bool


@dataclass(frozen=True)
class IssuedCredentials:
    username: str
    password: str


class BillingRepository:
    def __init__(self, db: Database, *, local: bool = False) -> None:
        self._db = db
        self.local = local
        self._domain = (LocalDomain if local else Domain).__table__
        self._mkt = (LocalMktDomain if local else MktDomain).__table__

    async def domain(self, user_id: int, name: str) -> DomainRow | None:
        return await self._db.run(self._find_domain, user_id, name)

    def _find_domain(self, user_id: int, name: str) -> DomainRow | None:
        d, m = self._domain, self._mkt
        query = (
            select(d.c.id, d.c.user_id, d.c.name, d.c.status, m.c.pack_code, m.c.daily_limit,
                   m.c.hourly_limit, m.c.monthly_limit, m.c.domain_id.label("mkt_id"))
            .select_from(d.outerjoin(m, m.c.domain_id == d.c.id))
            .where(d.c.user_id == user_id, d.c.name == name.lower(), d.c.deleted_at.is_(None))
            .order_by(d.c.id.desc()).limit(1)
        )
        with self._db.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            return None
        return DomainRow(id=row.id, user_id=row.user_id, name=row.name, status=row.status,
                         pack_code=row.pack_code, daily_limit=row.daily_limit,
                         hourly_limit=row.hourly_limit, monthly_limit=row.monthly_limit,
                         has_mkt_row=row.mkt_id is not None)

    async def verified_since(self, user_id: int) -> dict[str, datetime]:
        return await self._db.run(self._verified_since, user_id)

    def _verified_since(self, user_id: int) -> dict[str, datetime]:
        d = self._domain
        query = select(d.c.name, d.c.verified_at, d.c.created_at).where(
            d.c.user_id == user_id, d.c.status == "verified", d.c.deleted_at.is_(None))
        since: dict[str, datetime] = {}
        with self._db.engine.connect() as conn:
            for name, verified_at, created_at in conn.execute(query):
                # A verified row without verified_at (written by another billing system): never
                # earlier than the row itself, so never the time of a previous holder.
                moment = verified_at or created_at or datetime.now(UTC)
                if moment.tzinfo is None:
                    moment = moment.replace(tzinfo=UTC)
                since[name] = max(moment, since.get(name, moment))
        return since

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
