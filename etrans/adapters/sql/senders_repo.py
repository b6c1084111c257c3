"""SMTP senders (``transport``, USEND DB): port ``SenderRepository`` of the account use cases.

An account is unique across users (a unique constraint: the loser of a race gets None).  The
row holds the credential-cache value, never the password in clear.  The send path reads the
active sender of a domain through :class:`~etrans.adapters.sql.usend_repo.UsendRepository`.
The blocking work runs in ``Database.run``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from etrans.adapters.sql import usend as own
from etrans.app.account_records import Sender

if TYPE_CHECKING:
    from etrans.adapters.sql import Database


class SqlSenders:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def exists(self, account: str) -> bool:
        return await self.db.run(self._exists, account)

    async def create(self, *, user_id: int, domain_id: int, domain: str, account: str,
                     password_encrypted: str, daily_limit: int, hourly_limit: int
                     ) -> Sender | None:
        row = own.Transport(user_id=user_id, domain_id=domain_id, domain=domain, account=account,
                            password_encrypted=password_encrypted, active=True,
                            daily_limit=daily_limit, hourly_limit=hourly_limit)
        return await self.db.run(self._insert, row)

    def _exists(self, account: str) -> bool:
        t = own.Transport
        with Session(self.db.engine) as session:
            count = session.scalar(select(func.count()).select_from(t).where(t.account == account))
            return bool(count)

    def _insert(self, row: own.Transport) -> Sender | None:
        try:
            with Session(self.db.engine, expire_on_commit=False) as session, session.begin():
                session.add(row)
                session.flush()
                session.refresh(row)
        except IntegrityError:
            return None
        return Sender(id=row.id, user_id=row.user_id, account=row.account, domain=row.domain,
                      active=row.active, daily_limit=row.daily_limit,
                      hourly_limit=row.hourly_limit, created_at=row.created_at)
