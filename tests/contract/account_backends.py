"""The implementations of the account ports the contract suite runs on: the SQL adapters on
PostgreSQL (``serve``) and on the ``etrans dev`` SQLite file, and the fakes of the unit tests.

The SQL adapters are the same classes in both databases (``etrans/adapters/sql/*_repo.py``, the
local billing tables); only the database differs.  A backend also offers what only an operator,
the billing gateway or the catalogue's migration writes (``add_domain``, ``delete_domain``,
``set_mkt``, ``add_pack``), through SQLAlchemy Core for the databases and on the fakes' state
for the fakes.  The PostgreSQL database is the session's migrated USEND DB, shared by every
test: tests keep apart by fresh user ids, domain names and pack codes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, update

from etrans.app.account_records import Pack

if TYPE_CHECKING:
    from pathlib import Path

    from etrans.adapters.sql import Database
    from etrans.domain.quota import MktLimits

T0 = datetime(2026, 3, 10, 14, 30, 15, 123456, tzinfo=UTC)


def fresh_name() -> str:
    return f"c{uuid.uuid4().hex[:12]}.example"


def fresh_code() -> str:
    return f"P{uuid.uuid4().hex[:10].upper()}"


@dataclass
class AccountBackend:
    name: str
    domains: Any  # DomainRepository
    packs: Any  # PackCatalogue
    subscriptions: Any  # SubscriptionRepository
    settings: Any  # DomainSettings
    api_keys: Any  # ApiKeyRepository
    senders: Any  # SenderRepository

    def add_domain(self, user_id: int, name: str, *, status: str = "pending",
                   created_at: datetime = T0, verified_at: datetime | None = None,
                   dkim_public_key: str | None = "PUB") -> int:
        raise NotImplementedError

    def delete_domain(self, domain_id: int) -> None:
        raise NotImplementedError

    def set_mkt(self, domain_id: int, mkt: MktLimits) -> None:
        raise NotImplementedError

    def add_pack(self, pack: Pack) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        pass


class SqlAccountBackend(AccountBackend):
    db: Database

    @classmethod
    def build(cls, name: str, db: Database) -> SqlAccountBackend:
        from etrans.adapters.sql.api_keys_repo import SqlApiKeys
        from etrans.adapters.sql.domain_settings_repo import SqlDomainSettings
        from etrans.adapters.sql.domains_repo import BillingTables, SqlDomains
        from etrans.adapters.sql.packs_repo import SqlPackCatalogue
        from etrans.adapters.sql.senders_repo import SqlSenders
        from etrans.adapters.sql.subscriptions_repo import SqlSubscriptions

        backend = cls(name, SqlDomains(db, BillingTables.local()), SqlPackCatalogue(db),
                      SqlSubscriptions(db), SqlDomainSettings(db), SqlApiKeys(db),
                      SqlSenders(db))
        backend.db = db
        return backend

    def _insert(self, table: Any, row: dict[str, Any]) -> Any:
        with self.db.engine.begin() as conn:
            return conn.execute(insert(table).returning(*table.primary_key.columns), row
                                ).scalar_one()

    def add_domain(self, user_id: int, name: str, *, status: str = "pending",
                   created_at: datetime = T0, verified_at: datetime | None = None,
                   dkim_public_key: str | None = "PUB") -> int:
        from etrans.adapters.sql.usend import LocalDkim, LocalDomain

        domain_id = self._insert(LocalDomain.__table__, {
            "user_id": user_id, "name": name, "status": status, "created_at": created_at,
            "verified_at": verified_at})
        if dkim_public_key is not None:
            self._insert(LocalDkim.__table__, {"domain_id": domain_id, "selector": "dkim",
                                               "public_key": dkim_public_key,
                                               "private_key_encrypted": "v1:sealed"})
        return int(domain_id)

    def delete_domain(self, domain_id: int) -> None:
        from etrans.adapters.sql.usend import LocalDomain

        table = LocalDomain.__table__
        with self.db.engine.begin() as conn:
            conn.execute(update(table).where(table.c.id == domain_id)
                         .values(deleted_at=datetime.now(UTC)))

    def set_mkt(self, domain_id: int, mkt: MktLimits) -> None:
        from etrans.adapters.sql.usend import LocalMktDomain

        self._insert(LocalMktDomain.__table__, {
            "domain_id": domain_id, "pack_code": mkt.pack_code, "pack_name": mkt.pack_name,
            "daily_limit": mkt.daily, "hourly_limit": mkt.hourly, "monthly_limit": mkt.monthly})

    def add_pack(self, pack: Pack) -> None:
        from etrans.adapters.sql.usend import EmailTransactionPack

        self._insert(EmailTransactionPack.__table__, {
            "pack_code": pack.pack_code, "pack_name": pack.pack_name,
            "pack_type": pack.pack_type, "daily_email_limit": pack.daily_email_limit,
            "hourly_email_limit": pack.hourly_email_limit,
            "monthly_email_limit": pack.monthly_email_limit,
            "domain_limit": pack.domain_limit, "price": Decimal(str(pack.price)),
            "is_active": pack.is_active, "is_payg": pack.is_payg, "pricing": pack.pricing})

    async def close(self) -> None:
        self.db.dispose()


class FakeAccountBackend(AccountBackend):
    world: Any

    @classmethod
    def build(cls) -> FakeAccountBackend:
        from tests.unit.fakes_accounts import AccountWorld

        world = AccountWorld(packs=())
        backend = cls("fake", world.domains, world.packs, world.subscriptions, world.settings,
                      world.api_keys, world.senders)
        backend.world = world
        return backend

    def add_domain(self, user_id: int, name: str, *, status: str = "pending",
                   created_at: datetime = T0, verified_at: datetime | None = None,
                   dkim_public_key: str | None = "PUB") -> int:
        self.world.now = created_at
        return int(self.domains.add(user_id, name, status=status, verified_at=verified_at,
                                    dkim_public_key=dkim_public_key).id)

    def delete_domain(self, domain_id: int) -> None:
        self.domains.deleted.add(domain_id)

    def set_mkt(self, domain_id: int, mkt: MktLimits) -> None:
        self.domains.mkt[domain_id] = mkt

    def add_pack(self, pack: Pack) -> None:
        self.packs.by_code[pack.pack_code] = pack


def postgres_accounts(url: str) -> AccountBackend:
    from etrans.adapters.sql import usend_database

    return SqlAccountBackend.build("postgres", usend_database(url, pool_size=4))


def sqlite_accounts(path: Path) -> AccountBackend:
    from etrans.dev.sqlite_db import create_schema, sqlite_database

    db = sqlite_database(path)
    create_schema(db)
    return SqlAccountBackend.build("sqlite", db)


def catalogue_pack(code: str, *, domain_limit: int = 1, daily: int = 100, price: float = 0.0,
                   payg: bool = False, active: bool = True, hourly: int | None = None) -> Pack:
    return Pack(pack_code=code, pack_name=f"{code} pack", pack_type="payg" if payg else "monthly",
                daily_email_limit=daily, hourly_email_limit=hourly, monthly_email_limit=None,
                domain_limit=domain_limit, price=price, is_active=active, is_payg=payg,
                pricing={"per_email": 0.001} if payg else None)
