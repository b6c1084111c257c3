"""What the USEND DB holds per domain besides its subscriptions: port ``DomainSettings``.

Tracking settings (``domain_tracking_settings``), and the clean-up after a domain was deleted
through the billing gateway: its tracking settings go, its subscriptions end and its senders
(``transport``) are deactivated, in one transaction.  The blocking work runs in ``Database.run``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import delete, or_, update
from sqlalchemy.orm import Session

from etrans.adapters.sql import usend as own

if TYPE_CHECKING:
    from etrans.adapters.sql import Database


class SqlDomainSettings:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def tracking(self, user_id: int, domain_id: int) -> tuple[bool, bool]:
        return await self.db.run(self._tracking, user_id, domain_id)

    async def set_tracking(self, user_id: int, domain_id: int, click: bool | None,
                           open_: bool | None) -> tuple[bool, bool]:
        return await self.db.run(self._set_tracking, user_id, domain_id, click, open_)

    async def forget_domain(self, user_id: int, domain_id: int, name: str) -> list[str]:
        return await self.db.run(self._forget_domain, user_id, domain_id, name)

    def _tracking(self, user_id: int, domain_id: int) -> tuple[bool, bool]:
        with Session(self.db.engine) as session:
            row = session.get(own.DomainTrackingSettings, domain_id)
            if row is None or row.user_id != user_id:
                return False, False
            return row.click_tracking, row.open_tracking

    def _set_tracking(self, user_id: int, domain_id: int, click: bool | None,
                      open_: bool | None) -> tuple[bool, bool]:
        with Session(self.db.engine) as session, session.begin():
            row = session.get(own.DomainTrackingSettings, domain_id, with_for_update=True)
            if row is None:
                row = own.DomainTrackingSettings(domain_id=domain_id, user_id=user_id,
                                                 click_tracking=False, open_tracking=False)
                session.add(row)
            row.user_id = user_id
            if click is not None:
                row.click_tracking = click
            if open_ is not None:
                row.open_tracking = open_
            row.updated_at = datetime.now(UTC)
            return row.click_tracking, row.open_tracking

    def _forget_domain(self, user_id: int, domain_id: int, name: str) -> list[str]:
        now = datetime.now(UTC)
        t = own.Transport
        with Session(self.db.engine) as session, session.begin():
            senders = session.execute(
                update(t).where(t.user_id == user_id, t.active.is_(True),
                                or_(t.domain_id == domain_id, t.domain == name))
                .values(active=False, updated_at=now).returning(t.password_encrypted)
            ).scalars().all()
            tracking = own.DomainTrackingSettings
            session.execute(delete(tracking).where(tracking.domain_id == domain_id,
                                                   tracking.user_id == user_id))
            s = own.DomainSubscriptionStatus
            session.execute(update(s).where(s.domain_id == domain_id, s.user_id == user_id,
                                            s.status == "active")
                            .values(status="cancelled", cancelled_at=now, updated_at=now))
            return list(senders)
