"""The sending domains in the billing-shaped tables (``domain``, ``dkim``, ``mkt_domain``).

Two table sets hold them (:class:`BillingTables`):

- ``external`` billing (BILLING_V4_URI set): the Billing DB, read through a READ ONLY engine;
  writes go through the billing API (:mod:`etrans.adapters.http.billing_gateway`);
- ``local`` billing: etrans's own ``local_*`` tables in the USEND DB, written by
  :mod:`etrans.adapters.sql.billing_local`.

:class:`SqlDomains` implements the account port ``DomainRepository`` and the two lookups of the
send path (:meth:`SqlDomains.find_for_sending`, :meth:`SqlDomains.verified_since`, used by
:mod:`etrans.adapters.sql.sending_domains`).  Every query filters on ``user_id``: tenant
isolation is in the SQL.  The blocking work runs in ``Database.run`` (a worker thread under the
pool's limiter).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from etrans.adapters.sql import billing as ext
from etrans.adapters.sql import usend as own
from etrans.app.account_records import DomainRow
from etrans.domain.quota import MktLimits

if TYPE_CHECKING:
    from etrans.adapters.sql import Database


@dataclass(frozen=True)
class BillingTables:
    """The ORM classes of one table set (the same columns in both)."""

    domain: Any
    dkim: Any
    mkt_domain: Any

    @classmethod
    def external(cls) -> BillingTables:
        return cls(ext.Domain, ext.Dkim, ext.MktDomain)

    @classmethod
    def local(cls) -> BillingTables:
        return cls(own.LocalDomain, own.LocalDkim, own.LocalMktDomain)


class SqlDomains:
    def __init__(self, db: Database, tables: BillingTables) -> None:
        self.db = db
        self.t = tables

    # -- DomainRepository (the account use cases) ----------------------------------------------

    async def get(self, user_id: int, domain_id: int) -> DomainRow | None:
        return await self.db.run(self._get, user_id, domain_id)

    async def find_live_by_name(self, name: str) -> DomainRow | None:
        return await self.db.run(self._find_live_by_name, name)

    async def verified_by_another(self, user_id: int, name: str) -> bool:
        return await self.db.run(self._verified_by_another, user_id, name)

    async def count(self, user_id: int) -> int:
        return await self.db.run(self._count, user_id)

    async def page(self, user_id: int, *, page: int, per_page: int, search: str
                   ) -> tuple[list[DomainRow], int, int]:
        return await self.db.run(self._page, user_id, page, per_page, search)

    async def all_for_user(self, user_id: int) -> list[DomainRow]:
        return await self.db.run(self._all_for_user, user_id)

    async def mkt_limits(self, domain_id: int) -> MktLimits | None:
        return await self.db.run(self._mkt_limits, domain_id)

    # -- the send path ------------------------------------------------------------------------

    async def find_for_sending(self, user_id: int, name: str
                               ) -> tuple[DomainRow, MktLimits | None] | None:
        """The user's live domain of that name with its ``mkt_domain`` limits (None: no row),
        in one indexed statement (POST /emails' hot path)."""
        return await self.db.run(self._find_for_sending, user_id, name)

    async def verified_since(self, user_id: int) -> dict[str, datetime]:
        """The user's live verified domains: name -> since when (``verified_at``; the domain's
        creation when the billing system left it empty)."""
        return await self.db.run(self._verified_since, user_id)

    # -- blocking ------------------------------------------------------------------------------

    def _row(self, session: Session, domain: Any) -> DomainRow:
        dkim = session.scalars(
            select(self.t.dkim).where(self.t.dkim.domain_id == domain.id)
            .order_by(self.t.dkim.id.desc()).limit(1)
        ).first()
        return DomainRow(
            id=domain.id, user_id=domain.user_id, name=domain.name, status=domain.status,
            created_at=domain.created_at, verified_at=domain.verified_at,
            dkim_selector=dkim.selector if dkim else None,
            dkim_public_key=dkim.public_key if dkim else None,
        )

    def _live(self) -> Any:
        return self.t.domain.deleted_at.is_(None)

    def _get(self, user_id: int, domain_id: int) -> DomainRow | None:
        with Session(self.db.engine) as session:
            domain = session.scalars(
                select(self.t.domain).where(
                    self.t.domain.id == domain_id, self.t.domain.user_id == user_id, self._live())
            ).first()
            return self._row(session, domain) if domain else None

    def _find_live_by_name(self, name: str) -> DomainRow | None:
        with Session(self.db.engine) as session:
            domain = session.scalars(
                select(self.t.domain).where(self.t.domain.name == name, self._live())
            ).first()
            return self._row(session, domain) if domain else None

    def _verified_by_another(self, user_id: int, name: str) -> bool:
        d = self.t.domain
        with Session(self.db.engine) as session:
            return session.scalars(
                select(d.id).where(d.name == name, d.user_id != user_id, d.status == "verified",
                                   self._live()).limit(1)
            ).first() is not None

    def _count(self, user_id: int) -> int:
        with Session(self.db.engine) as session:
            return session.scalar(
                select(func.count()).select_from(self.t.domain)
                .where(self.t.domain.user_id == user_id, self._live())
            ) or 0

    def _page(self, user_id: int, page: int, per_page: int, search: str
              ) -> tuple[list[DomainRow], int, int]:
        d = self.t.domain
        where = [d.user_id == user_id, self._live()]
        if search:
            escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append(d.name.ilike(f"%{escaped}%", escape="\\"))
        with Session(self.db.engine) as session:
            total = session.scalar(select(func.count()).select_from(d).where(*where)) or 0
            verified = session.scalar(
                select(func.count()).select_from(d).where(*where, d.status == "verified")) or 0
            rows = session.scalars(
                select(d).where(*where).order_by(d.created_at.desc(), d.id.desc())
                .offset((page - 1) * per_page).limit(per_page)
            ).all()
            return [self._row(session, r) for r in rows], total, verified

    def _all_for_user(self, user_id: int) -> list[DomainRow]:
        with Session(self.db.engine) as session:
            rows = session.scalars(
                select(self.t.domain).where(self.t.domain.user_id == user_id, self._live())
                .order_by(self.t.domain.id)
            ).all()
            return [self._row(session, r) for r in rows]

    def _mkt_limits(self, domain_id: int) -> MktLimits | None:
        with Session(self.db.engine) as session:
            row = session.get(self.t.mkt_domain, domain_id)
            if row is None:
                return None
            return MktLimits(pack_code=row.pack_code, pack_name=row.pack_name,
                             daily=row.daily_limit, hourly=row.hourly_limit,
                             monthly=row.monthly_limit)

    def _find_for_sending(self, user_id: int, name: str
                          ) -> tuple[DomainRow, MktLimits | None] | None:
        d, m = self.t.domain.__table__, self.t.mkt_domain.__table__
        query = (
            select(d.c.id, d.c.user_id, d.c.name, d.c.status, d.c.created_at, d.c.verified_at,
                   m.c.pack_code, m.c.daily_limit, m.c.hourly_limit, m.c.monthly_limit,
                   m.c.domain_id.label("mkt_id"))
            .select_from(d.outerjoin(m, m.c.domain_id == d.c.id))
            .where(d.c.user_id == user_id, d.c.name == name.lower(), d.c.deleted_at.is_(None))
            .order_by(d.c.id.desc()).limit(1)
        )
        with self.db.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            return None
        domain = DomainRow(id=row.id, user_id=row.user_id, name=row.name, status=row.status,
                           created_at=row.created_at, verified_at=row.verified_at)
        mkt = None
        if row.mkt_id is not None:
            mkt = MktLimits(pack_code=row.pack_code, pack_name=None, daily=row.daily_limit,
                            hourly=row.hourly_limit, monthly=row.monthly_limit)
        return domain, mkt

    def _verified_since(self, user_id: int) -> dict[str, datetime]:
        d = self.t.domain.__table__
        query = select(d.c.name, d.c.verified_at, d.c.created_at).where(
            d.c.user_id == user_id, d.c.status == "verified", d.c.deleted_at.is_(None))
        since: dict[str, datetime] = {}
        with self.db.engine.connect() as conn:
            for name, verified_at, created_at in conn.execute(query):
                # A verified row without verified_at (written by another billing system): never
                # earlier than the row itself, so never the time of a previous holder.
                moment = verified_at or created_at or datetime.now(UTC)
                if moment.tzinfo is None:
                    moment = moment.replace(tzinfo=UTC)
                since[name] = max(moment, since.get(name, moment))
        return since
