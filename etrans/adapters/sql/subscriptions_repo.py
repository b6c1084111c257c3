"""Subscriptions of domains and the user-level pack (USEND DB): port ``SubscriptionRepository``.

``domain_subscription_status`` holds at most one ``active`` row per domain; ``user_pack`` the
user-level pack.  A change writes its KAFKA_BILLING_TOPIC event into the outbox in the same
transaction (:class:`~etrans.adapters.sql.billing_events.BillingEventOutbox`), so a subscription
and its event are committed together or not at all.  :meth:`SqlSubscriptions.quota_facts` is the
USEND DB half of THE quota rule (:func:`etrans.domain.quota.domain_quota`), one statement.
The blocking work runs in ``Database.run``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from etrans.adapters.sql import usend as own
from etrans.adapters.sql.billing_events import BillingEventOutbox
from etrans.app.account_records import Subscription
from etrans.domain.quota import MktLimits, PackLimits, QuotaFacts

if TYPE_CHECKING:
    from etrans.adapters.sql import Database


def _subscription(row: own.DomainSubscriptionStatus) -> Subscription:
    return Subscription(id=row.id, domain_id=row.domain_id, pack_code=row.pack_code,
                        kind=row.kind, status=row.status,
                        previous_pack_code=row.previous_pack_code, started_at=row.started_at)


class SqlSubscriptions:
    def __init__(self, db: Database, events: BillingEventOutbox | None = None) -> None:
        self.db = db
        self.events = events or BillingEventOutbox()

    async def active(self, user_id: int, domain_id: int,
                     kind: str | None = None) -> Subscription | None:
        return await self.db.run(self._active, user_id, domain_id, kind)

    async def active_pack_codes(self, user_id: int) -> list[str]:
        return await self.db.run(self._active_pack_codes, user_id)

    async def user_pack_code(self, user_id: int) -> str | None:
        return await self.db.run(self._user_pack_code, user_id)

    async def quota_facts(self, user_id: int, domain_id: int | None, mkt: MktLimits | None,
                          default_pack_code: str) -> QuotaFacts:
        return await self.db.run(self._quota_facts, user_id, domain_id, mkt, default_pack_code)

    async def replace(self, *, user_id: int, domain_id: int, pack_code: str, kind: str,
                      external_id: str | None = None, event: str | None = None) -> str | None:
        return await self.db.run(lambda: self._replace(
            user_id=user_id, domain_id=domain_id, pack_code=pack_code, kind=kind,
            external_id=external_id, event=event))

    async def cancel(self, user_id: int, domain_id: int, kind: str,
                     event: str | None = None) -> bool:
        return await self.db.run(self._cancel, user_id, domain_id, kind, event)

    async def assign_for_testing(self, user_id: int, domain_ids: list[int],
                                 pack_code: str) -> int:
        return await self.db.run(self._assign_for_testing, user_id, domain_ids, pack_code)

    # -- blocking ------------------------------------------------------------------------------

    def _active(self, user_id: int, domain_id: int, kind: str | None) -> Subscription | None:
        s = own.DomainSubscriptionStatus
        with Session(self.db.engine) as session:
            query = select(s).where(s.user_id == user_id, s.domain_id == domain_id,
                                    s.status == "active")
            if kind is not None:
                query = query.where(s.kind == kind)
            row = session.scalars(query).first()
            return _subscription(row) if row else None

    def _active_pack_codes(self, user_id: int) -> list[str]:
        s = own.DomainSubscriptionStatus
        with Session(self.db.engine) as session:
            return list(session.scalars(
                select(s.pack_code).where(s.user_id == user_id, s.status == "active")))

    def _user_pack_code(self, user_id: int) -> str | None:
        with Session(self.db.engine) as session:
            row = session.get(own.UserPack, user_id)
            return row.pack_code if row else None

    def _quota_facts(self, user_id: int, domain_id: int | None, mkt: MktLimits | None,
                     default_pack_code: str) -> QuotaFacts:
        """The domain's active subscription, the user-level pack and the catalogue rows of
        every candidate pack code, in one statement.  ``mkt`` is the billing tables' half."""
        s, up, p = own.DomainSubscriptionStatus, own.UserPack, own.EmailTransactionPack
        sub_code = (select(s.pack_code).where(s.domain_id == domain_id, s.user_id == user_id,
                                              s.status == "active")
                    .order_by(s.id.desc()).limit(1).scalar_subquery())
        user_code = select(up.pack_code).where(up.user_id == user_id).scalar_subquery()
        fixed = [c for c in (default_pack_code, mkt.pack_code if mkt else None) if c]
        query = (select(sub_code.label("sub"), user_code.label("user"), p.pack_code,
                        p.pack_name, p.daily_email_limit, p.hourly_email_limit,
                        p.monthly_email_limit)
                 .select_from(p)
                 .where(or_(p.pack_code.in_(fixed), p.pack_code == sub_code,
                            p.pack_code == user_code)))
        with Session(self.db.engine) as session:
            rows = session.execute(query).all()
            if rows:
                sub, user = rows[0].sub, rows[0].user
            else:  # no candidate in the catalogue: the codes alone
                sub, user = session.execute(select(sub_code, user_code)).one()
        packs = {r.pack_code: PackLimits(pack_code=r.pack_code, pack_name=r.pack_name,
                                         daily=r.daily_email_limit, hourly=r.hourly_email_limit,
                                         monthly=r.monthly_email_limit) for r in rows}
        return QuotaFacts(mkt=mkt, subscription_pack=sub, user_pack=user, packs=packs)

    def _replace(self, *, user_id: int, domain_id: int, pack_code: str, kind: str,
                 external_id: str | None = None, details: dict[str, Any] | None = None,
                 event: str | None = None) -> str | None:
        """Cancel the domain's active subscription (if any) and start a new one, atomically,
        with the billing ``event`` (when given) queued in the outbox in the same transaction.

        Returns the previous pack code."""
        s = own.DomainSubscriptionStatus
        now = datetime.now(UTC)
        with Session(self.db.engine) as session, session.begin():
            current = session.scalars(
                select(s).where(s.domain_id == domain_id, s.status == "active")
                .with_for_update()
            ).first()
            previous = current.pack_code if current else None
            if current is not None:
                current.status, current.cancelled_at, current.updated_at = "cancelled", now, now
                session.flush()
            session.add(s(domain_id=domain_id, user_id=user_id, pack_code=pack_code, kind=kind,
                          status="active", previous_pack_code=previous, external_id=external_id,
                          details=details, started_at=now))
            if event is not None:
                self.events.add(session, event=event, user_id=user_id, domain_id=domain_id,
                                pack_code=pack_code, previous_pack_code=previous, kind=kind)
            return previous

    def _cancel(self, user_id: int, domain_id: int, kind: str, event: str | None) -> bool:
        s = own.DomainSubscriptionStatus
        now = datetime.now(UTC)
        with Session(self.db.engine) as session, session.begin():
            cancelled = session.execute(
                update(s).where(s.user_id == user_id, s.domain_id == domain_id,
                                s.status == "active", s.kind == kind)
                .values(status="cancelled", cancelled_at=now, updated_at=now)
                .returning(s.pack_code)
            ).scalars().all()
            if cancelled and event is not None:
                self.events.add(session, event=event, user_id=user_id, domain_id=domain_id,
                                pack_code=None, previous_pack_code=cancelled[0], kind=kind)
            return bool(cancelled)

    def _assign_for_testing(self, user_id: int, domain_ids: list[int], pack_code: str) -> int:
        with Session(self.db.engine) as session, session.begin():
            up = session.get(own.UserPack, user_id, with_for_update=True)
            if up is None:
                session.add(own.UserPack(user_id=user_id, pack_code=pack_code))
            else:
                up.pack_code, up.updated_at = pack_code, datetime.now(UTC)
        for domain_id in domain_ids:
            self._replace(user_id=user_id, domain_id=domain_id, pack_code=pack_code,
                          kind="subscription", details={"source": "testing"})
        return len(domain_ids)
