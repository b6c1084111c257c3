"""The pack catalogue (``email_transaction_pack``, USEND DB): port ``PackCatalogue``.

Read only here; operators and migrations fill it.  The blocking work runs in ``Database.run``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from etrans.adapters.sql import usend as own
from etrans.app.account_records import Pack

if TYPE_CHECKING:
    from etrans.adapters.sql import Database


def _pack(row: own.EmailTransactionPack) -> Pack:
    return Pack(
        pack_code=row.pack_code, pack_name=row.pack_name, pack_type=row.pack_type,
        daily_email_limit=row.daily_email_limit, hourly_email_limit=row.hourly_email_limit,
        monthly_email_limit=row.monthly_email_limit, domain_limit=row.domain_limit,
        price=float(row.price), is_active=row.is_active, is_payg=row.is_payg,
        pricing=row.pricing,
    )


class SqlPackCatalogue:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def packs(self) -> list[Pack]:
        return await self.db.run(self._packs)

    async def pack(self, pack_code: str) -> Pack | None:
        return await self.db.run(self._pack, pack_code)

    async def payg_pack(self) -> Pack | None:
        return await self.db.run(self._payg_pack)

    def _packs(self) -> list[Pack]:
        p = own.EmailTransactionPack
        with Session(self.db.engine) as session:
            query = select(p).where(p.is_active.is_(True)).order_by(p.price, p.pack_code)
            return [_pack(r) for r in session.scalars(query)]

    def _pack(self, pack_code: str) -> Pack | None:
        p = own.EmailTransactionPack
        with Session(self.db.engine) as session:
            row = session.scalars(select(p).where(p.pack_code == pack_code)).first()
            return _pack(row) if row else None

    def _payg_pack(self) -> Pack | None:
        p = own.EmailTransactionPack
        with Session(self.db.engine) as session:
            row = session.scalars(
                select(p).where(p.is_payg.is_(True), p.is_active.is_(True)).order_by(p.id)
            ).first()
            return _pack(row) if row else None
