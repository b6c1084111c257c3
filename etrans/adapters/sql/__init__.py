"""SQLAlchemy 2.0 (sync engine, psycopg 3) used from Trio through worker threads.

SQLAlchemy's async layer is asyncio-only, so every statement runs in ``trio.to_thread`` behind a
CapacityLimiter sized to the connection pool: Trio never waits for a pool slot on a thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import trio

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

P = ParamSpec("P")
T = TypeVar("T")


def sqlalchemy_url(uri: str) -> str:
    """Pin PostgreSQL URIs to the psycopg 3 driver; leave other dialects as given."""
    for prefix in ("postgresql://", "postgres://"):
        if uri.startswith(prefix):
            return "postgresql+psycopg://" + uri[len(prefix) :]
    return uri


def make_engine(uri: str, *, pool_size: int = 10, application_name: str = "etrans") -> Engine:
    from sqlalchemy import create_engine

    url = sqlalchemy_url(uri)
    if url.startswith("sqlite"):
        return create_engine(url)
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        pool_pre_ping=True,
        pool_timeout=10,
        connect_args={"connect_timeout": 5, "application_name": application_name},
    )


class Database:
    """An engine plus the limiter that keeps Trio's threads within its pool."""

    def __init__(self, engine: Engine, *, name: str) -> None:
        self.engine = engine
        self.name = name
        pool_size = getattr(engine.pool, "size", lambda: 5)()
        self.limiter = trio.CapacityLimiter(max(1, pool_size))

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run blocking ``fn(*args)`` in a worker thread, at most pool-size at a time."""
        return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs), limiter=self.limiter)

    def _ping(self) -> None:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    async def check(self) -> None:
        await self.run(self._ping)

    def dispose(self) -> None:
        self.engine.dispose()
