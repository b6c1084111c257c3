"""The checks of a guarded save (``NewEmail.guard``, ``NewEmail.template_version``) on
``etrans dev``'s SQLite, made in the insert's transaction by
:class:`etrans.dev.sqlite_db.SqliteUsendRepository` (PostgreSQL makes them in its statement,
:mod:`etrans.adapters.sql.usend_repo`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime


def listed(conn: Any, user_id: int, addresses: Sequence[str]) -> bool:
    """Whether one of ``addresses`` is on the user's suppression list."""
    from etrans.adapters.sql.usend import Suppression as SuppressionRow

    table = SuppressionRow.__table__
    return conn.execute(select(table.c.address).where(
        table.c.user_id == user_id, table.c.address.in_(list(addresses))).limit(1)).first(
        ) is not None


def template_changed(conn: Any, user_id: int, version: tuple[int, datetime]) -> bool:
    """Whether the user's template ``version[0]`` is gone or no longer at ``version[1]``."""
    from datetime import UTC

    from etrans.adapters.sql.usend_templates import EmailTemplate

    table = EmailTemplate.__table__
    found = conn.execute(select(table.c.updated_at).where(
        table.c.id == version[0], table.c.user_id == user_id)).scalar()
    if found is None:
        return True
    aware = [at if at.tzinfo is not None else at.replace(tzinfo=UTC)  # SQLite keeps no offset
             for at in (found, version[1])]
    return bool(aware[0] != aware[1])
