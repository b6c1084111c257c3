"""Database fixtures (a pytest plugin loaded by ``tests/conftest.py``).

``usend_db_url``   URL of a fresh USEND DB brought to head by the real migrations
                   (``etrans.adapters.sql.migrations.upgrade``), once per session.
``billing_db``     a fresh Billing DB: the tests create its schema (``billing_schema.sql``) as the
                   owner, then a role ``etrans_ro_<hex>`` with LOGIN and SELECT only.
                   ``.owner_url`` seeds rows; ``.readonly_url`` is what etrans gets as DB_URI, so
                   any write etrans attempted would fail the test.  Role and DB are dropped at
                   session end.
``billing_seed``   per test: a :class:`BillingSeeder` writing rows through ``.owner_url``
                   (users, domain, dkim, mkt_domain, temporary_password) with fresh ids and names.

The helpers are plain functions too (:func:`create_billing_database`, :func:`drop_billing_role`),
for benchmarks that need a billing schema outside pytest.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

BILLING_SCHEMA = Path(__file__).with_name("billing_schema.sql")


@dataclass(frozen=True)
class BillingDatabase:
    """A Billing DB for tests: ``owner_url`` may write; ``readonly_url`` (``role``) only reads."""

    name: str
    owner_url: str
    readonly_url: str
    role: str


def _with_credentials(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def create_billing_database(owner_url: str, name: str) -> BillingDatabase:
    """Load the billing schema into the (empty) database at ``owner_url`` and create a
    SELECT-only login role for it."""
    import psycopg
    from psycopg import sql

    role = f"etrans_ro_{uuid.uuid4().hex[:12]}"
    password = secrets.token_urlsafe(18)
    with psycopg.connect(owner_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(BILLING_SCHEMA.read_text())  # type: ignore[arg-type]  # our own file
        statements = [
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            ),
            # Nobody but the owner creates anything here, not even temporary tables.
            sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(name)),
            sql.SQL("REVOKE CREATE ON SCHEMA public FROM PUBLIC"),
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                sql.Identifier(name), sql.Identifier(role)
            ),
            sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(sql.Identifier(role)),
            sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(
                sql.Identifier(role)
            ),
        ]
        for statement in statements:
            conn.execute(statement)
    return BillingDatabase(
        name=name,
        owner_url=owner_url,
        readonly_url=_with_credentials(owner_url, role, password),
        role=role,
    )


def drop_billing_role(admin_url: str, billing: BillingDatabase) -> None:
    """Disconnect and drop the read-only role (its privileges first, so DROP ROLE succeeds)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
            (billing.role,),
        )
    with psycopg.connect(billing.owner_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(billing.role)))
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(billing.role)))


@dataclass
class BillingSeeder:
    """Writes Billing DB rows as the billing system would (through the owner URL).

    Every method returns the new row's id; names default to unique values so tests running in
    the same session never collide.
    """

    owner_url: str
    created: dict[str, list[int]] = field(default_factory=dict)

    def _insert(self, table: str, values: dict[str, Any]) -> int:
        import psycopg
        from psycopg import sql

        columns = list(values)
        statement = sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING {}").format(
            sql.Identifier(table),
            sql.SQL(", ").join(map(sql.Identifier, columns)),
            sql.SQL(", ").join(sql.Placeholder() * len(columns)),
            sql.Identifier("domain_id" if table == "mkt_domain" else "id"),
        )
        with psycopg.connect(self.owner_url, autocommit=True, connect_timeout=5) as conn:
            row = conn.execute(statement, [values[c] for c in columns]).fetchone()
        assert row is not None
        self.created.setdefault(table, []).append(int(row[0]))
        return int(row[0])

    def user(
        self, *, email: str | None = None, balance: Decimal | int = 0, is_owner: bool = True
    ) -> int:
        email = email or f"user-{uuid.uuid4().hex[:12]}@example.test"
        return self._insert(
            "users", {"email": email, "balance": Decimal(balance), "is_owner": is_owner}
        )

    def domain(
        self, user_id: int, name: str | None = None, *, status: str = "verified",
        verified_at: datetime | None = None,
    ) -> int:
        name = name or f"d{uuid.uuid4().hex[:12]}.example.test"
        if status == "verified" and verified_at is None:
            verified_at = datetime.now(UTC)
        return self._insert(
            "domain",
            {"user_id": user_id, "name": name, "status": status, "verified_at": verified_at},
        )

    def dkim(self, domain_id: int, public_key: str, *, selector: str = "dkim") -> int:
        return self._insert(
            "dkim", {"domain_id": domain_id, "selector": selector, "public_key": public_key}
        )

    def mkt_domain(
        self, domain_id: int, *, pack_code: str | None = "DEDICATED_100K",
        pack_name: str | None = "Dedicated 100K", daily_limit: int | None = None,
        hourly_limit: int | None = None, monthly_limit: int | None = None,
    ) -> int:
        return self._insert(
            "mkt_domain",
            {
                "domain_id": domain_id, "pack_code": pack_code, "pack_name": pack_name,
                "daily_limit": daily_limit, "hourly_limit": hourly_limit,
                "monthly_limit": monthly_limit,
            },
        )

    def temporary_password(
        self, user_id: int, username: str, password: str, *, expires_at: datetime | None = None
    ) -> int:
        return self._insert(
            "temporary_password",
            {"user_id": user_id, "username": username, "password": password,
             "expires_at": expires_at},
        )

    def sending_domain(
        self, *, daily_limit: int | None = 500, hourly_limit: int | None = 50,
        status: str = "verified", **user: Any,
    ) -> tuple[int, int, str]:
        """A user owning one domain with limits: ``(user_id, domain_id, domain_name)``."""
        user_id = self.user(**user)
        name = f"d{uuid.uuid4().hex[:12]}.example.test"
        domain_id = self.domain(user_id, name, status=status)
        self.mkt_domain(domain_id, daily_limit=daily_limit, hourly_limit=hourly_limit)
        return user_id, domain_id, name


@pytest.fixture(scope="session")
def usend_db_url(fresh_database: Callable[..., str]) -> str:
    from etrans.adapters.sql import migrations

    url = fresh_database("usend")
    migrations.upgrade(url)
    return url


@pytest.fixture(scope="session")
def billing_db(
    postgres_admin_url: str, fresh_database: Callable[..., str]
) -> Iterator[BillingDatabase]:
    owner_url = fresh_database("billing")
    billing = create_billing_database(owner_url, urlsplit(owner_url).path.lstrip("/"))
    try:
        yield billing
    finally:
        drop_billing_role(postgres_admin_url, billing)


@pytest.fixture
def billing_seed(billing_db: BillingDatabase) -> BillingSeeder:
    return BillingSeeder(billing_db.owner_url)
