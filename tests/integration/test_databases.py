"""The database layer against a real PostgreSQL: USEND DB migrations (``etrans db upgrade``, run
twice and concurrently, models == migrations) and the Billing DB's read-only guarantee."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from etrans.adapters.sql import billing_database, make_engine, migrations, usend_database
from etrans.adapters.sql.billing import BILLING_TABLES, BillingBase, Domain, MktDomain, User
from etrans.adapters.sql.usend import USEND_TABLES, EmailMessage, EmailOutbox, UsendBase

ROOT = Path(__file__).resolve().parents[2]
SPEC_USEND_TABLES = {
    "api_keys", "email_messages", "email_transaction_pack", "domain_subscription_status",
    "user_pack", "domain_tracking_settings", "transport",
}


def _db_upgrade(usend_url: str) -> subprocess.CompletedProcess[str]:
    """``etrans db upgrade`` as an operator runs it: a separate process, only USEND_DB_URI set."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "USEND_DB_URI": usend_url,
           "LANG": "C.UTF-8"}
    return subprocess.run(
        [sys.executable, "-m", "etrans", "db", "upgrade"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )


def _tables(url: str) -> set[str]:
    with psycopg.connect(url, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
    return {r[0] for r in rows}


def _version_rows(url: str) -> list[str]:
    with psycopg.connect(url, connect_timeout=5) as conn:
        rows = conn.execute(f"SELECT version_num FROM {migrations.VERSION_TABLE}").fetchall()
    return [r[0] for r in rows]


# --- USEND DB: migrations ------------------------------------------------------------------------


def test_etrans_db_upgrade_creates_the_tables_and_a_second_run_is_a_no_op(fresh_database):
    url = fresh_database("upgrade")

    first = _db_upgrade(url)
    assert first.returncode == 0, first.stderr
    tables = _tables(url)
    assert tables >= SPEC_USEND_TABLES
    assert set(USEND_TABLES) | {migrations.VERSION_TABLE} == tables
    assert _version_rows(url) == [migrations.head()]
    assert "upgraded" in first.stdout + first.stderr

    with psycopg.connect(url, connect_timeout=5) as conn:
        packs_before = conn.execute("SELECT count(*) FROM email_transaction_pack").fetchone()

    second = _db_upgrade(url)
    assert second.returncode == 0, second.stderr
    assert "already at revision" in second.stdout + second.stderr
    assert _tables(url) == tables
    assert _version_rows(url) == [migrations.head()]
    with psycopg.connect(url, connect_timeout=5) as conn:
        packs_after = conn.execute("SELECT count(*) FROM email_transaction_pack").fetchone()
    assert packs_after == packs_before


def test_concurrent_upgrades_apply_each_revision_once(fresh_database):
    url = fresh_database("upgrade_concurrent")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "USEND_DB_URI": url}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "etrans", "db", "upgrade"], env=env, cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=180)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0, 0], outputs
    # Exactly one process did the work; the others waited on the lock and found the head.
    assert sum("usend db upgraded" in out for out in outputs) == 1, outputs
    assert _version_rows(url) == [migrations.head()]
    assert migrations.drift(url) == []


def test_db_upgrade_against_an_unreachable_database_fails_in_one_clear_line():
    from tests.harness.servers import free_port

    password = "not-to-be-printed"
    url = f"postgresql://etrans:{password}@127.0.0.1:{free_port()}/usend"
    result = _db_upgrade(url)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert password not in result.stdout + result.stderr
    assert result.stderr.startswith("etrans db upgrade: USEND DB postgresql://etrans:***@127.0.0.1:")


def test_models_match_the_migrations(usend_db_url):
    assert migrations.current(usend_db_url) == migrations.head()
    assert migrations.drift(usend_db_url) == []


def test_the_drift_check_sees_a_schema_that_differs_from_the_models(fresh_database):
    url = fresh_database("drift")
    migrations.upgrade(url)
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        conn.execute("ALTER TABLE email_messages DROP COLUMN last_event")
        conn.execute("DROP INDEX ix_email_messages_user_id_status")
        conn.execute("ALTER TABLE transport ALTER COLUMN daily_limit SET DEFAULT 7")
        conn.execute("ALTER TABLE api_keys ALTER COLUMN name TYPE text")
    found = " ".join(repr(d) for d in migrations.drift(url))
    assert "('add_column', None, 'email_messages', Column('last_event'" in found
    assert "('add_index', Index('ix_email_messages_user_id_status'" in found
    assert "('modify_default', None, 'transport', 'daily_limit'" in found
    assert "('modify_type', None, 'api_keys', 'name'" in found


def test_downgrade_to_base_removes_everything_and_upgrade_restores_it(fresh_database):
    from alembic import command

    url = fresh_database("downgrade")
    migrations.upgrade(url)
    engine = make_engine(url, pool_size=1)
    try:
        with engine.connect() as conn:
            command.downgrade(migrations.alembic_config(conn), "base")
            conn.commit()
    finally:
        engine.dispose()
    assert _tables(url) == {migrations.VERSION_TABLE}
    migrations.upgrade(url)
    assert migrations.drift(url) == []


def test_every_migration_file_is_shipped_in_the_wheel():
    # versions/ is not a Python package: its files reach the wheel only through package-data.
    import fnmatch
    import tomllib

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["etrans"]
    package_root = ROOT / "etrans"
    for path in (package_root / "adapters/sql/migrations").rglob("*"):
        if path.is_dir() or "__pycache__" in path.parts:
            continue
        if path.suffix == ".py" and (path.parent / "__init__.py").exists():
            continue  # a module of a package: shipped as code
        relative = path.relative_to(package_root).as_posix()
        assert any(fnmatch.fnmatch(relative, p) for p in patterns), f"{relative} not shipped"


def test_migrations_never_touch_billing_tables():
    # USEND metadata (what Alembic creates) shares no table name with the Billing DB, so even a
    # misconfigured `etrans db upgrade` pointed at DB_URI could not create or alter billing tables.
    assert not set(UsendBase.metadata.tables) & set(BILLING_TABLES)
    assert set(BillingBase.metadata.tables) == set(BILLING_TABLES)
    env_py = (Path(migrations.__file__).parent / "env.py").read_text()
    assert "billing" not in env_py.lower()


async def in_transaction(db, fn, *args):
    """``fn(session, *args)`` in a worker thread (``Database.run``), in one transaction."""

    def run():
        with db.sessions.begin() as session:
            return fn(session, *args)

    return await db.run(run)


async def test_usend_database_round_trip_through_trio_threads(usend_db_url):
    db = usend_database(usend_db_url, pool_size=2)
    try:
        def add(session, message_id: str) -> int:
            message = EmailMessage(
                message_id=message_id, user_id=42, from_address="A <a@example.test>",
                to_addresses=["b@example.test"], subject="hi", html="<p>hi</p>",
                headers={"X-Test": "1"}, tags=[{"name": "k", "value": "v"}],
            )
            session.add(message)
            session.add(EmailOutbox(topic="sendmail", key="42", payload=b'{"payload": {}}',
                                    message_id=message_id))
            session.flush()
            return message.id

        def get(session, message_id: str) -> EmailMessage:
            return session.scalars(
                sa.select(EmailMessage).where(EmailMessage.message_id == message_id)
            ).one()

        message_id = f"msg_{os.urandom(6).hex()}"
        row_id = await in_transaction(db, add, message_id)
        stored = await in_transaction(db, get, message_id)
        assert stored.id == row_id
        assert stored.status == "queued"
        assert stored.to_addresses == ["b@example.test"]
        assert stored.cc_addresses == []
        assert stored.created_at.tzinfo is not None

        def bad_status(session) -> None:
            session.execute(sa.update(EmailMessage).where(EmailMessage.id == row_id)
                            .values(status="lost"))

        with pytest.raises(DBAPIError):
            await in_transaction(db, bad_status)
        assert (await in_transaction(db, get, message_id)).status == "queued"
    finally:
        db.dispose()


# --- Billing DB: read-only ----------------------------------------------------------------------


def _write_attempts() -> list[tuple[str, str]]:
    return [
        ("insert", "INSERT INTO users (email) VALUES ('intruder@example.test')"),
        ("update", "UPDATE mkt_domain SET daily_limit = 999999"),
        ("delete", "DELETE FROM temporary_password"),
        ("create table", "CREATE TABLE etrans_was_here (id int)"),
        ("alter table", "ALTER TABLE domain ADD COLUMN etrans_was_here int"),
        ("create temp table", "CREATE TEMP TABLE etrans_was_here (id int)"),
    ]


async def test_etrans_cannot_write_to_the_billing_db(billing_db, billing_seed):
    user_id, domain_id, name = billing_seed.sending_domain(daily_limit=500, hourly_limit=50)
    billing = billing_database(billing_db.readonly_url, pool_size=2)
    try:
        def read(session) -> tuple[str, int | None, str]:
            domain = session.get(Domain, domain_id)
            limits = session.get(MktDomain, domain_id)
            user = session.get(User, user_id)
            return domain.name, limits.hourly_limit, user.email

        got_name, hourly, _email = await in_transaction(billing, read)
        assert (got_name, hourly) == (name, 50)

        for what, statement in _write_attempts():
            def attempt(session, statement: str = statement) -> None:
                session.execute(sa.text(statement))

            with pytest.raises(DBAPIError) as caught:
                await in_transaction(billing, attempt)
            assert isinstance(
                caught.value.orig,
                psycopg.errors.ReadOnlySqlTransaction | psycopg.errors.InsufficientPrivilege,
            ), what

        def orm_write(session) -> None:
            session.add(User(id=10**12, email="orm-intruder@example.test"))
            session.get(MktDomain, domain_id).daily_limit = 1

        with pytest.raises(DBAPIError):
            await in_transaction(billing, orm_write)
    finally:
        billing.dispose()

    with psycopg.connect(billing_db.owner_url, connect_timeout=5) as conn:
        assert conn.execute(
            "SELECT daily_limit, hourly_limit FROM mkt_domain WHERE domain_id = %s", (domain_id,)
        ).fetchone() == (500, 50)
        assert conn.execute(
            "SELECT count(*) FROM users WHERE email LIKE '%%intruder@example.test'"
        ).fetchone() == (0,)
        assert conn.execute(
            "SELECT count(*) FROM information_schema.columns WHERE column_name = 'etrans_was_here'"
        ).fetchone() == (0,)
        assert "etrans_was_here" not in _tables(billing_db.owner_url)


def test_the_read_only_role_alone_refuses_writes(billing_db):
    # Layer 1: the role the tests (and operators) give etrans has SELECT only.
    engine = make_engine(billing_db.readonly_url, pool_size=1)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SHOW transaction_read_only")).scalar() == "off"
            for what, statement in _write_attempts():
                with pytest.raises(DBAPIError) as caught:
                    conn.execute(sa.text(statement))
                assert isinstance(caught.value.orig, psycopg.errors.InsufficientPrivilege), what
                conn.rollback()
    finally:
        engine.dispose()


def test_the_read_only_session_alone_refuses_writes(billing_db):
    # Layer 2: even with the owner's credentials, etrans's billing engine opens READ ONLY sessions.
    billing = billing_database(billing_db.owner_url, pool_size=1)
    try:
        with billing.engine.connect() as conn:
            assert conn.execute(sa.text("SHOW transaction_read_only")).scalar() == "on"
            for what, statement in _write_attempts():
                with pytest.raises(DBAPIError) as caught:
                    conn.execute(sa.text(statement))
                assert isinstance(caught.value.orig, psycopg.errors.ReadOnlySqlTransaction), what
                conn.rollback()
            # PostgreSQL lets a session switch back to READ WRITE explicitly, so this layer stops
            # mistakes, not malice: the SELECT-only role (layer 1) is the guarantee.
    finally:
        billing.dispose()


def test_the_billing_mapping_matches_the_billing_schema(billing_db):
    engine = make_engine(billing_db.readonly_url, pool_size=1)
    try:
        inspector = sa.inspect(engine)
        for table in BillingBase.metadata.sorted_tables:
            columns = {c["name"]: c for c in inspector.get_columns(table.name)}
            for column in table.columns:
                assert column.name in columns, f"{table.name}.{column.name} missing"
                db_type = columns[column.name]["type"]
                assert db_type._type_affinity is column.type._type_affinity, (
                    f"{table.name}.{column.name}: database has {db_type}, mapping {column.type}"
                )
            primary_key = inspector.get_pk_constraint(table.name)["constrained_columns"]
            assert primary_key == [c.name for c in table.primary_key.columns], table.name
    finally:
        engine.dispose()


def test_etrans_issues_no_ddl_against_the_billing_db():
    # Static guard: the billing metadata never reaches create_all/drop_all anywhere in etrans.
    offenders = []
    for path in (ROOT / "etrans").rglob("*.py"):
        source = path.read_text()
        if re.search(r"BillingBase\.metadata\.(create_all|drop_all)|billing.*create_all", source):
            offenders.append(str(path))
    assert offenders == []
