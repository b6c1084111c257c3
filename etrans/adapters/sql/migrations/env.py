"""Alembic environment of the USEND DB.  Run by :func:`etrans.adapters.sql.migrations.upgrade`
with an open connection in ``config.attributes["connection"]``; the ``alembic`` command line also
works (``alembic -x url=postgresql://... upgrade head`` with a config naming this directory)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from etrans.adapters.sql import sqlalchemy_url
from etrans.adapters.sql.migrations.compare import comparison_options

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

config = context.config


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise SystemExit("no database: pass -x url=postgresql://... or sqlalchemy.url")
    return sqlalchemy_url(url)


def run_offline() -> None:
    context.configure(url=_url(), literal_binds=True, **comparison_options())
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        engine = create_engine(_url(), poolclass=NullPool)
        with engine.connect() as connection:
            _run(connection)
            connection.commit()
    else:
        _run(connection)


def _run(connection: Connection) -> None:
    context.configure(connection=connection, **comparison_options())
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
