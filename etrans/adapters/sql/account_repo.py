"""SQL for domains, packs, subscriptions, API keys and senders (the account use cases).

Two table sets hold the billing shapes (users, domain, dkim, mkt_domain):

- ``external`` billing (BILLING_V4_URI set): the Billing DB, read through a READ ONLY engine;
  writes go through the billing API (:mod:`etrans.adapters.http.billing_gateway`);
- ``local`` billing: etrans's own ``local_*`` tables in the USEND DB, written by
  :mod:`etrans.adapters.sql.billing_local`.

Everything else (packs, subscriptions, user packs, tracking, API keys, transport) lives in the
USEND DB in both modes.  Every query filters on ``user_id``: tenant isolation is in the SQL.
All methods are blocking and run in ``Database.run`` (a worker thread under the pool's limiter).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from etrans.adapters.sql import billing as ext
from etrans.adapters.sql import usend as own
from etrans.adapters.sql.billing_events import BillingEventOutbox
from etrans.domain.quota import MktLimits, PackLimits, QuotaFacts

if TYPE_CHECKING:
    from etrans.adapters.sql import Database


@dataclass(frozen=True)
class BillingTables:
    users: Any
    domain: Any
    dkim: Any
    mkt_domain: Any

    @classmethod
    def external(cls) -> BillingTables:
        return cls(ext.User, ext.Domain, ext.Dkim, ext.MktDomain)

    @classmethod
    def local(cls) -> BillingTables:
        return cls(own.LocalUser, own.LocalDomain, own.LocalDkim, own.LocalMktDomain)


@dataclass(frozen=True)
class DomainRow:
    id: int
    user_id: int
    name: str
    status: str
    created_at: datetime | None
    verified_at: datetime | None
    dkim_selector: str | None = None
    dkim_public_key: str | None = None


@dataclass(frozen=True)
class PackRow:
    pack_code: str
    pack_name: str
    pack_type: str
    daily_email_limit: int
    hourly_email_limit: int | None
    monthly_email_limit: int | None
    domain_limit: int
    price: float
    is_active: bool
    is_payg: bool
    pricing: dict[str, Any] | None


def utcnow() -> datetime:
    return datetime.now(UTC)


def _pack(row: own.EmailTransactionPack) -> PackRow:
    return PackRow(
        pack_code=row.pack_code, pack_name=row.pack_name, pack_type=row.pack_type,
        daily_email_limit=row.daily_email_limit, hourly_email_limit=row.hourly_email_limit,
        monthly_email_limit=row.monthly_email_limit, domain_limit=row.domain_limit,
        price=float(row.price), is_active=row.is_active, is_payg=row.is_payg,
        pricing=row.pricing,
    )


class DomainReader:
    """Reads the billing-shaped tables (Billing DB, or the local tables) for one user."""

    def __init__(self, db: Database, tables: BillingTables) -> None:
        self.db = db
        self.t = tables

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

    def get(self, user_id: int, domain_id: int) -> DomainRow | None:
        with Session(self.db.engine) as session:
            domain = session.scalars(
                select(self.t.domain).where(
                    self.t.domain.id == domain_id, self.t.domain.user_id == user_id, self._live())
            ).first()
            return self._row(session, domain) if domain else None

    def find_live_by_name(self, name: str) -> DomainRow | None:
        """Any user's live domain of that name (a name is unique across users)."""
        with Session(self.db.engine) as session:
            domain = session.scalars(
                select(self.t.domain).where(self.t.domain.name == name, self._live())
            ).first()
            return self._row(session, domain) if domain else None

    def verified_by_another(self, user_id: int, name: str) -> bool:
        """Whether another user holds a live, verified domain of that name: GET /logs shows a
        verified domain's events, so one name is verified by one user at a time."""
        d = self.t.domain
        with Session(self.db.engine) as session:
            return session.scalars(
                select(d.id).where(d.name == name, d.user_id != user_id, d.status == "verified",
                                   self._live()).limit(1)
            ).first() is not None

    def count(self, user_id: int) -> int:
        with Session(self.db.engine) as session:
            return session.scalar(
                select(func.count()).select_from(self.t.domain)
                .where(self.t.domain.user_id == user_id, self._live())
            ) or 0

    def list(self, user_id: int, *, page: int, per_page: int, search: str
             ) -> tuple[list[DomainRow], int, int]:
        """(page of rows, total matching, total verified matching)."""
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

    def all_for_user(self, user_id: int) -> list[DomainRow]:
        with Session(self.db.engine) as session:
            rows = session.scalars(
                select(self.t.domain).where(self.t.domain.user_id == user_id, self._live())
                .order_by(self.t.domain.id)
            ).all()
            return [self._row(session, r) for r in rows]

    def mkt_domain(self, domain_id: int) -> MktLimits | None:
        with Session(self.db.engine) as session:
            row = session.get(self.t.mkt_domain, domain_id)
            if row is None:
                return None
            return MktLimits(pack_code=row.pack_code, pack_name=row.pack_name,
                             daily=row.daily_limit, hourly=row.hourly_limit,
                             monthly=row.monthly_limit)

    def user_account(self, user_id: int) -> tuple[float, bool] | None:
        """(balance, is_owner) or None when the user has no row."""
        with Session(self.db.engine) as session:
            row = session.get(self.t.users, user_id)
            return (float(row.balance), bool(row.is_owner)) if row else None


class AccountRepo:
    """The USEND DB tables of the account use cases.  Subscription changes write their
    KAFKA_BILLING_TOPIC event into the outbox in the same transaction (``events``)."""

    def __init__(self, db: Database, events: BillingEventOutbox | None = None) -> None:
        self.db = db
        self.events = events or BillingEventOutbox()

    # -- packs -------------------------------------------------------------------------------

    def packs(self, *, active_only: bool = True) -> list[PackRow]:
        p = own.EmailTransactionPack
        with Session(self.db.engine) as session:
            query = select(p).order_by(p.price, p.pack_code)
            if active_only:
                query = query.where(p.is_active.is_(True))
            return [_pack(r) for r in session.scalars(query)]

    def pack(self, pack_code: str) -> PackRow | None:
        p = own.EmailTransactionPack
        with Session(self.db.engine) as session:
            row = session.scalars(select(p).where(p.pack_code == pack_code)).first()
            return _pack(row) if row else None

    def payg_pack(self) -> PackRow | None:
        p = own.EmailTransactionPack
        with Session(self.db.engine) as session:
            row = session.scalars(
                select(p).where(p.is_payg.is_(True), p.is_active.is_(True)).order_by(p.id)
            ).first()
            return _pack(row) if row else None

    # -- subscriptions and user packs -----------------------------------------------------

    def active_subscription(self, user_id: int, domain_id: int,
                            kind: str | None = None) -> own.DomainSubscriptionStatus | None:
        s = own.DomainSubscriptionStatus
        with Session(self.db.engine, expire_on_commit=False) as session:
            query = select(s).where(s.user_id == user_id, s.domain_id == domain_id,
                                    s.status == "active")
            if kind is not None:
                query = query.where(s.kind == kind)
            return session.scalars(query).first()

    def subscription_pack_codes(self, user_id: int) -> list[str]:
        s = own.DomainSubscriptionStatus
        with Session(self.db.engine) as session:
            return list(session.scalars(
                select(s.pack_code).where(s.user_id == user_id, s.status == "active")))

    def quota_facts(self, user_id: int, domain_id: int, mkt: MktLimits | None,
                    default_pack_code: str) -> QuotaFacts:
        """The USEND DB half of the quota rule (:func:`etrans.domain.quota.domain_quota`): the
        domain's active subscription, the user-level pack and the catalogue rows of every
        candidate pack code, in one statement.  ``mkt`` is the Billing DB half."""
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

    def user_pack_code(self, user_id: int) -> str | None:
        with Session(self.db.engine) as session:
            row = session.get(own.UserPack, user_id)
            return row.pack_code if row else None

    def replace_subscription(self, *, user_id: int, domain_id: int, pack_code: str, kind: str,
                             external_id: str | None = None,
                             details: dict[str, Any] | None = None,
                             event: str | None = None) -> str | None:
        """Cancel the domain's active subscription (if any) and start a new one, atomically,
        with the billing ``event`` (when given) queued in the outbox in the same transaction.

        Returns the previous pack code."""
        s = own.DomainSubscriptionStatus
        now = utcnow()
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

    def cancel_subscription(self, user_id: int, domain_id: int, kind: str,
                            event: str | None = None) -> bool:
        """Ends the domain's active subscription of ``kind``, with the billing ``event`` (when
        given) queued in the outbox in the same transaction; False when there was none."""
        s = own.DomainSubscriptionStatus
        now = utcnow()
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

    def set_pack_for_testing(self, user_id: int, domain_ids: list[int], pack_code: str) -> int:
        """Testing route: every given domain and the user-level pack get ``pack_code``."""
        with Session(self.db.engine) as session, session.begin():
            up = session.get(own.UserPack, user_id, with_for_update=True)
            if up is None:
                session.add(own.UserPack(user_id=user_id, pack_code=pack_code))
            else:
                up.pack_code, up.updated_at = pack_code, utcnow()
        for domain_id in domain_ids:
            self.replace_subscription(user_id=user_id, domain_id=domain_id, pack_code=pack_code,
                                      kind="subscription", details={"source": "testing"})
        return len(domain_ids)

    # -- tracking ------------------------------------------------------------------------------

    def tracking(self, user_id: int, domain_id: int) -> tuple[bool, bool]:
        with Session(self.db.engine) as session:
            row = session.get(own.DomainTrackingSettings, domain_id)
            if row is None or row.user_id != user_id:
                return False, False
            return row.click_tracking, row.open_tracking

    def set_tracking(self, user_id: int, domain_id: int, click: bool | None,
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
            row.updated_at = utcnow()
            return row.click_tracking, row.open_tracking

    def forget_domain(self, user_id: int, domain_id: int, name: str) -> list[str]:
        """After a domain is deleted: its tracking settings go, its subscriptions end, its
        senders (``transport``) are deactivated.  Returns the deactivated senders' encrypted
        credentials (to drop from the credential cache)."""
        now = utcnow()
        t = own.Transport
        with Session(self.db.engine) as session, session.begin():
            senders = session.execute(
                update(t).where(t.user_id == user_id, t.active.is_(True),
                                or_(t.domain_id == domain_id, t.domain == name))
                .values(active=False, updated_at=now).returning(t.password_encrypted)
            ).scalars().all()
            session.execute(own.DomainTrackingSettings.__table__.delete().where(
                own.DomainTrackingSettings.domain_id == domain_id,
                own.DomainTrackingSettings.user_id == user_id))
            s = own.DomainSubscriptionStatus
            session.execute(update(s).where(s.domain_id == domain_id, s.user_id == user_id,
                                            s.status == "active")
                            .values(status="cancelled", cancelled_at=now, updated_at=now))
            return list(senders)

    # -- API keys ----------------------------------------------------------------------------

    def create_api_key(self, *, user_id: int, name: str, key_hash: str, key_prefix: str,
                       permission: str, expires_at: datetime | None,
                       created_by_key_id: int | None = None) -> own.ApiKey | None:
        """The new row; None when ``created_by_key_id`` is no live key of the user.  The creator
        is locked (shared) until the commit: a deletion of it waits, then deletes this key too."""
        k = own.ApiKey
        with Session(self.db.engine, expire_on_commit=False) as session, session.begin():
            if created_by_key_id is not None and session.scalars(
                    select(k.id).where(k.id == created_by_key_id, k.user_id == user_id,
                                       k.deleted_at.is_(None)).with_for_update(read=True)
            ).first() is None:
                return None
            row = own.ApiKey(user_id=user_id, name=name, key_hash=key_hash,
                             key_prefix=key_prefix, permission=permission, expires_at=expires_at,
                             active=True, created_by_key_id=created_by_key_id)
            session.add(row)
            session.flush()
            session.refresh(row)
            return row

    def list_api_keys(self, user_id: int, *, page: int, per_page: int
                      ) -> tuple[list[own.ApiKey], int]:
        k = own.ApiKey
        where = [k.user_id == user_id, k.deleted_at.is_(None)]
        with Session(self.db.engine, expire_on_commit=False) as session:
            total = session.scalar(select(func.count()).select_from(k).where(*where)) or 0
            rows = session.scalars(
                select(k).where(*where).order_by(k.created_at.desc(), k.id.desc())
                .offset((page - 1) * per_page).limit(per_page)).all()
            return list(rows), total

    def get_api_key(self, user_id: int, key_id: int) -> own.ApiKey | None:
        k = own.ApiKey
        with Session(self.db.engine, expire_on_commit=False) as session:
            return session.scalars(select(k).where(k.id == key_id, k.user_id == user_id,
                                                   k.deleted_at.is_(None))).first()

    def delete_api_key(self, user_id: int, key_id: int) -> list[str] | None:
        """Soft-deletes the key and every live key it created, recursively; returns their hashes
        (the key's first, to evict caches) or None when the key is not found."""
        k = own.ApiKey
        now = utcnow()
        with Session(self.db.engine) as session, session.begin():
            row = session.scalars(select(k).where(k.id == key_id, k.user_id == user_id,
                                                  k.deleted_at.is_(None)).with_for_update()
                                  ).first()
            if row is None:
                return None
            row.active, row.deleted_at, row.updated_at = False, now, now
            tree = select(k.id).where(k.created_by_key_id == key_id).cte("created", recursive=True)
            tree = tree.union(select(k.id).where(k.created_by_key_id == tree.c.id))
            minted = session.scalars(select(k).where(k.id.in_(select(tree.c.id)),
                                                     k.user_id == user_id,
                                                     k.deleted_at.is_(None)).with_for_update()
                                     ).all()
            for child in minted:
                child.active, child.deleted_at, child.updated_at = False, now, now
            return [row.key_hash] + [child.key_hash for child in minted]

    # -- senders (transport) ----------------------------------------------------------------

    def sender_exists(self, account: str) -> bool:
        t = own.Transport
        with Session(self.db.engine) as session:
            return session.scalar(select(func.count()).select_from(t)
                                  .where(or_(t.account == account))) > 0

    def create_sender(self, *, user_id: int, domain_id: int, domain: str, account: str,
                      password_encrypted: str, daily_limit: int, hourly_limit: int
                      ) -> own.Transport | None:
        """None when the account exists already (unique constraint)."""
        from sqlalchemy.exc import IntegrityError

        row = own.Transport(user_id=user_id, domain_id=domain_id, domain=domain, account=account,
                            password_encrypted=password_encrypted, active=True,
                            daily_limit=daily_limit, hourly_limit=hourly_limit)
        try:
            with Session(self.db.engine, expire_on_commit=False) as session, session.begin():
                session.add(row)
                session.flush()
                session.refresh(row)
        except IntegrityError:
            return None
        return row
