"""SQLAlchemy 2.0 (sync engine, psycopg 3) used from Trio through worker threads.

SQLAlchemy's async layer is asyncio-only, so every statement runs in ``trio.to_thread`` behind a
CapacityLimiter sized to the connection pool: Trio never waits for a pool slot on a thread.

Two databases: the USEND DB (``USEND_DB_URI``, ours: models in :mod:`.usend`, migrations in
:mod:`.migrations`) and the Billing DB (``DB_URI``, external: read-only mapping in :mod:`.billing`).
Build the Billing DB's engine with ``make_engine(uri, read_only=True)`` (or
:func:`billing_database`): every session it opens is READ ONLY, on top of the SELECT-only role.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import trio

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import Session, sessionmaker

P = ParamSpec("P")
T = TypeVar("T")

# Connecting and answering SELECT 1 for a /readyz probe.
PROBE_TIMEOUT_SECONDS = 2.0


def sqlalchemy_url(uri: str) -> str:
    """Pin PostgreSQL URIs to the psycopg 3 driver; leave other dialects as given."""
    for prefix in ("postgresql://", "postgres://"):
        if uri.startswith(prefix):
            return "postgresql+psycopg://" + uri[len(prefix) :]
    return uri


def make_engine(
    uri: str, *, pool_size: int = 10, application_name: str = "etrans", read_only: bool = False,
    statement_timeout: float = 0.0,
) -> Engine:
    """A pooled engine.  ``read_only=True`` makes every PostgreSQL session it opens
    ``READ ONLY`` (any INSERT/UPDATE/DELETE/DDL then fails with ``ReadOnlySqlTransaction``).
    ``statement_timeout`` (seconds, 0: none) sets PostgreSQL's ``statement_timeout`` and
    ``lock_timeout`` on every session it opens: a statement running or waiting for a lock longer
    is cancelled (``QueryCanceled`` / ``LockNotAvailable``, both OperationalError) and the
    connection stays usable.  SQLite engines take neither option."""
    from sqlalchemy import create_engine, event

    url = sqlalchemy_url(uri)
    if url.startswith("sqlite"):
        return create_engine(url)
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        pool_pre_ping=True,
        pool_timeout=10,
        connect_args={"connect_timeout": 5, "application_name": application_name},
    )
    statements = []
    if read_only:
        statements.append("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
    if statement_timeout > 0:
        milliseconds = max(1, round(statement_timeout * 1000))
        statements += [f"SET statement_timeout = {milliseconds}",
                       f"SET lock_timeout = {milliseconds}"]
    if statements:
        event.listen(engine, "connect", partial(_set_session, statements))
    return engine


def _set_session(statements: list[str], dbapi_connection: Any, _record: Any) -> None:
    # Session-level, so it covers every later transaction of this pooled connection; plain SQL
    # statements rather than libpq startup options, so they also work through pgbouncer.
    autocommit = dbapi_connection.autocommit
    dbapi_connection.autocommit = True
    try:
        with dbapi_connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
    finally:
        dbapi_connection.autocommit = autocommit


def billing_database(uri: str, *, pool_size: int = 10,
                     statement_timeout: float = 0.0) -> Database:
    """The Billing DB (``DB_URI``): read-only sessions, named ``billing_db`` for /readyz;
    ``statement_timeout``: see :func:`make_engine` (``serve``: DB_STATEMENT_TIMEOUT_SECONDS)."""
    return Database(
        make_engine(uri, pool_size=pool_size, application_name="etrans-billing", read_only=True,
                    statement_timeout=statement_timeout),
        name="billing_db",
    )


def usend_database(uri: str, *, pool_size: int = 10, statement_timeout: float = 0.0) -> Database:
    """The USEND DB (``USEND_DB_URI``), named ``usend_db`` for /readyz; ``statement_timeout``:
    see :func:`make_engine` (``serve``: DB_STATEMENT_TIMEOUT_SECONDS)."""
    return Database(make_engine(uri, pool_size=pool_size, statement_timeout=statement_timeout),
                    name="usend_db")


class Database:
    """An engine plus the limiter that keeps Trio's threads within its pool."""

    def __init__(self, engine: Engine, *, name: str) -> None:
        from sqlalchemy.orm import sessionmaker

        self.engine = engine
        self.name = name
        pool_size = getattr(engine.pool, "size", lambda: 5)()
        self.limiter = trio.CapacityLimiter(max(1, pool_size))
        # expire_on_commit=False: rows returned from a thread stay readable after the commit.
        self.sessions: sessionmaker[Session] = sessionmaker(engine, expire_on_commit=False)
        # /readyz probes (check) use a connection and a thread of their own: they never wait
        # behind requests for a pool slot nor take one from them.
        self._probe_engine: Engine | None = None
        self._probe_limiter = trio.CapacityLimiter(1)

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run blocking ``fn(*args)`` in a worker thread, at most pool-size at a time."""
        return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs), limiter=self.limiter)

    def _ping(self) -> None:
        from sqlalchemy import create_engine, text

        if self._probe_engine is None:
            url = self.engine.url
            self._probe_engine = self.engine if url.get_backend_name() == "sqlite" else \
                create_engine(url, pool_size=1, max_overflow=0, pool_pre_ping=True,
                              pool_timeout=PROBE_TIMEOUT_SECONDS,
                              connect_args={"connect_timeout": int(PROBE_TIMEOUT_SECONDS),
                                            "application_name": "etrans-readyz"})
        with self._probe_engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    async def check(self) -> None:
        """One ``SELECT 1`` on the probe's own connection (not from the request pool)."""
        await trio.to_thread.run_sync(self._ping, limiter=self._probe_limiter,
                                      abandon_on_cancel=True)

    def dispose(self) -> None:
        self.engine.dispose()
        if self._probe_engine is not None:
            self._probe_engine.dispose()
