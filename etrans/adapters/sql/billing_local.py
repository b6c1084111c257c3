"""The ``local`` billing gateway: etrans owns the billing tables (``local_*``) in its USEND DB.

For self-hosted installs with no external billing system (the default when BILLING_V4_URI is
unset).  Implements :class:`etrans.app.ports.BillingGateway`:

- domains, their DKIM keys (private key encrypted at rest, :mod:`etrans.adapters.crypto.dkim_keys`)
  and verification state are rows of ``local_domain`` / ``local_dkim``; creating one counts the
  user's live domains and inserts in one transaction serialized per user (PostgreSQL
  ``pg_advisory_xact_lock``; a process-wide lock on SQLite, whose ``etrans dev`` is one process),
  so concurrent POST /domains never exceed the pack's domain limit;
- a subscription checks ``local_users`` (``is_owner``, ``balance`` >= the pack's price), debits
  the price and writes the pack into ``local_mkt_domain`` (limits NULL = derived from the pack),
  in one transaction.  A user without a ``local_users`` row is an owner with balance 0: free
  packs work out of the box, paid ones once an operator credits the balance.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from sqlalchemy import func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from etrans.adapters.sql import usend as own
from etrans.domain.domains import domain_limit_message
from etrans.errors import Forbidden, InvalidInput, NotFound

# One lock key per user, namespaced so that it cannot meet another advisory lock of ours.
_USER_DOMAINS_LOCK = text(
    "SELECT pg_advisory_xact_lock(hashtextextended('etrans:domains:' || :user_id, 0))")

if TYPE_CHECKING:
    from etrans.adapters.crypto.dkim_keys import DkimKeyCipher
    from etrans.adapters.sql import Database


def utcnow() -> datetime:
    return datetime.now(UTC)


class LocalBillingGateway:
    mode = "local"

    def __init__(self, db: Database, dkim_cipher: DkimKeyCipher) -> None:
        self._db = db
        self._cipher = dkim_cipher
        self._sqlite_lock = threading.Lock()

    # -- domains ---------------------------------------------------------------------------

    def _create_domain(self, user_id: int, name: str, selector: str, public_key: str,
                       private_encrypted: str, max_domains: int | None) -> int:
        if self._db.engine.dialect.name == "sqlite":
            with self._sqlite_lock:
                return self._insert_domain(user_id, name, selector, public_key,
                                           private_encrypted, max_domains)
        return self._insert_domain(user_id, name, selector, public_key, private_encrypted,
                                   max_domains)

    def _check_domain_limit(self, session: Session, user_id: int,
                            max_domains: int | None) -> None:
        if max_domains is None:
            return
        if self._db.engine.dialect.name == "postgresql":
            session.execute(_USER_DOMAINS_LOCK, {"user_id": str(user_id)})
        d = own.LocalDomain
        live = session.scalar(select(func.count()).select_from(d)
                              .where(d.user_id == user_id, d.deleted_at.is_(None))) or 0
        if live >= max_domains:
            raise InvalidInput(domain_limit_message(max_domains))

    def _insert_domain(self, user_id: int, name: str, selector: str, public_key: str,
                       private_encrypted: str, max_domains: int | None) -> int:
        try:
            with Session(self._db.engine) as session, session.begin():
                self._check_domain_limit(session, user_id, max_domains)
                domain = own.LocalDomain(user_id=user_id, name=name, status="pending")
                session.add(domain)
                session.flush()
                session.add(own.LocalDkim(domain_id=domain.id, selector=selector,
                                          public_key=public_key,
                                          private_key_encrypted=private_encrypted))
                return int(domain.id)
        except IntegrityError:
            raise InvalidInput(f"Domain {name} already exists") from None

    async def create_domain(self, *, user_id: int, name: str, dkim_selector: str,
                            dkim_public_key: str, dkim_private_key_pem: bytes,
                            max_domains: int | None = None) -> int:
        sealed = self._cipher.encrypt(dkim_private_key_pem, domain=name)
        return await self._db.run(self._create_domain, user_id, name, dkim_selector,
                                  dkim_public_key, sealed, max_domains)

    def _delete_domain(self, user_id: int, domain_id: int) -> None:
        d = own.LocalDomain
        with Session(self._db.engine) as session, session.begin():
            deleted = session.execute(
                update(d).where(d.id == domain_id, d.user_id == user_id, d.deleted_at.is_(None))
                .values(deleted_at=utcnow(), updated_at=utcnow()).returning(d.id)).first()
            if deleted is None:
                raise NotFound("Domain not found")

    async def delete_domain(self, *, user_id: int, domain_id: int) -> None:
        await self._db.run(self._delete_domain, user_id, domain_id)

    def _mark_verified(self, user_id: int, domain_id: int, verified_at: datetime) -> None:
        d = own.LocalDomain
        with Session(self._db.engine) as session, session.begin():
            session.execute(update(d).where(d.id == domain_id, d.user_id == user_id)
                            .values(status="verified", verified_at=verified_at,
                                    updated_at=utcnow()))

    async def mark_domain_verified(self, *, user_id: int, domain_id: int,
                                   verified_at: datetime) -> None:
        await self._db.run(self._mark_verified, user_id, domain_id, verified_at)

    # -- subscriptions -----------------------------------------------------------------------

    def _charge_and_assign(self, user_id: int, domain_id: int, pack_code: str, pack_name: str,
                           price: Decimal) -> None:
        with Session(self._db.engine) as session, session.begin():
            user = session.get(own.LocalUser, user_id, with_for_update=True)
            if user is None:
                user = own.LocalUser(id=user_id, email="", balance=Decimal(0), is_owner=True)
                session.add(user)
                session.flush()
            if not user.is_owner:
                raise Forbidden("Only the account owner can change subscriptions")
            if Decimal(user.balance) < price:
                raise Forbidden(f"Insufficient balance: the pack costs {price}, "
                                f"the balance is {user.balance}")
            user.balance = Decimal(user.balance) - price
            mkt = session.get(own.LocalMktDomain, domain_id, with_for_update=True)
            if mkt is None:
                session.add(own.LocalMktDomain(domain_id=domain_id, pack_code=pack_code,
                                               pack_name=pack_name))
            else:
                mkt.pack_code, mkt.pack_name, mkt.updated_at = pack_code, pack_name, utcnow()
                # limits follow the new pack
                mkt.daily_limit = mkt.hourly_limit = mkt.monthly_limit = None

    async def create_subscription(self, *, user_id: int, domain_id: int, pack_code: str,
                                  pack_name: str, price: float) -> str | None:
        await self._db.run(self._charge_and_assign, user_id, domain_id, pack_code, pack_name,
                           Decimal(str(price)))
        return None

    async def create_payg_subscription(self, *, user_id: int, domain_id: int, pack_code: str,
                                       pack_name: str) -> str | None:
        # Pay as you go costs nothing up front; usage is billed by whoever reads the counters.
        await self._db.run(self._charge_and_assign, user_id, domain_id, pack_code, pack_name,
                           Decimal(0))
        return None

    def _clear_pack(self, domain_id: int) -> None:
        with Session(self._db.engine) as session, session.begin():
            mkt = session.scalars(select(own.LocalMktDomain)
                                  .where(own.LocalMktDomain.domain_id == domain_id)).first()
            if mkt is not None:
                session.delete(mkt)

    async def cancel_payg_subscription(self, *, user_id: int, domain_id: int) -> None:
        await self._db.run(self._clear_pack, domain_id)
