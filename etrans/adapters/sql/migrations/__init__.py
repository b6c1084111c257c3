"""Alembic migrations of the USEND DB (never the Billing DB), shipped inside the package.

Alembic is configured here, in code: no ``alembic.ini`` is needed at runtime.  ``etrans db
upgrade`` calls :func:`upgrade`, which holds a PostgreSQL advisory lock for the whole run, so that
several processes upgrading the same database at once (replicas starting together) apply each
revision exactly once; running it again at head is a no-op.

The revision history lives in ``versions/``; its version table is ``etrans_alembic_version`` so it
cannot collide with another application's ``alembic_version`` in a shared database.
:func:`drift` compares the models (:mod:`etrans.adapters.sql.usend`) with a migrated database.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from etrans.errors import EtransError
from etrans.observability import get_logger

if TYPE_CHECKING:
    from collections.abc import Iterator

    from alembic.config import Config
    from sqlalchemy.engine import Connection

SCRIPT_LOCATION = Path(__file__).resolve().parent
VERSION_TABLE = "etrans_alembic_version"
# pg_advisory_lock key: an arbitrary constant of ours (the ASCII of "etrnsmig" as an int64).
ADVISORY_LOCK_KEY = int.from_bytes(b"etrnsmig", "big") - 2**63

log = get_logger(__name__)


class MigrationError(EtransError):
    """The USEND DB could not be migrated (unreachable, refused, a revision failed)."""


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic ``Config`` for our script directory; ``connection`` is handed to ``env.py``."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.set_main_option("version_table", VERSION_TABLE)
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head() -> str:
    """The newest revision shipped with this version of etrans."""
    from alembic.script import ScriptDirectory

    revision = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert revision is not None
    return revision


def current(uri: str) -> str | None:
    """The revision the database at ``uri`` is at (``None``: never migrated)."""
    from alembic.runtime.migration import MigrationContext

    with _connect(uri) as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


def upgrade(uri: str, revision: str = "head") -> None:
    """Bring the USEND DB at ``uri`` to ``revision``; safe to run concurrently and repeatedly.

    Raises :class:`MigrationError` with a one-line reason (never the password of ``uri``)."""
    from alembic.util import CommandError
    from sqlalchemy.exc import DBAPIError, SQLAlchemyError

    from etrans.settings import redact_uri

    try:
        _upgrade(uri, revision)
    except DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
        raise MigrationError(f"USEND DB {redact_uri(uri)}: {reason}") from exc
    except (SQLAlchemyError, CommandError) as exc:
        raise MigrationError(f"USEND DB {redact_uri(uri)}: {exc}") from exc


def _upgrade(uri: str, revision: str) -> None:
    from alembic import command
    from sqlalchemy import text

    with _connect(uri) as conn:
        postgres = conn.dialect.name == "postgresql"
        if postgres:
            # Session-level lock: it survives the commits Alembic makes, and is released below
            # (or by PostgreSQL if this process dies).  Waiters see the finished work.
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
            conn.commit()
        try:
            before = _current_on(conn)
            command.upgrade(alembic_config(conn), revision)
            conn.commit()
            after = _current_on(conn)
        finally:
            if postgres:
                conn.rollback()
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY})
                conn.commit()
    if before == after:
        log.info("usend db already at revision", revision=after)
    else:
        log.info("usend db upgraded", from_revision=before, to_revision=after)


def drift(uri: str) -> list[Any]:
    """Differences between the models and the database at ``uri`` (Alembic's autogenerate
    comparison, types and server defaults included); ``[]`` means the migrations match the
    models."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from etrans.adapters.sql.migrations.compare import comparison_options
    from etrans.adapters.sql.usend import UsendBase

    with _connect(uri) as conn:
        context = MigrationContext.configure(conn, opts=comparison_options())
        return list(compare_metadata(context, UsendBase.metadata))


def _current_on(conn: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    revision = context.get_current_revision()
    conn.commit()
    return revision


@contextmanager
def _connect(uri: str) -> Iterator[Connection]:
    """One unpooled connection to ``uri``, closed (and its engine disposed) afterwards."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    from etrans.adapters.sql import sqlalchemy_url

    url = sqlalchemy_url(uri)
    connect_args: dict[str, Any] = (
        {"application_name": "etrans-migrations", "connect_timeout": 10}
        if url.startswith("postgresql") else {}
    )
    engine = create_engine(url, poolclass=NullPool, connect_args=connect_args)
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()
