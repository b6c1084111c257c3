"""Migration 0010 (scheduled sending) on an ``etrans dev`` data directory made before it.

:func:`etrans.dev.sqlite_db.create_schema` has already added the new nullable columns
(``email_messages.scheduled_at``, ``email_outbox.due_at``) and the new index
(``ix_email_outbox_due_at``); what is left is what SQLite cannot add: the pending-rows index
with its new predicate (dropped and created again) and the CHECK of ``email_messages.status``
that also allows ``scheduled`` and ``cancelled`` (edited in place, as
:func:`etrans.dev.sqlite_db._allow_suppressed` does and for the same reasons: it only allows
more, and a rebuild of ``email_messages`` would cascade into the tables referencing it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import MetaData

_BEFORE, _SINCE = "'failed', 'suppressed'))", "'failed', 'suppressed', 'scheduled', 'cancelled'))"


def upgrade_for_scheduling(conn: Any, metadata: MetaData) -> None:
    unpublished = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'index' AND "
                                       "name = 'ix_email_outbox_unpublished'").scalar()
    if unpublished and "due_at" not in unpublished:
        conn.exec_driver_sql("DROP INDEX ix_email_outbox_unpublished")
        for index in metadata.tables["email_outbox"].indexes:
            index.create(conn, checkfirst=True)
    ddl = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND "
                               "name = 'email_messages'").scalar()
    if not ddl or "'scheduled'" in ddl or _BEFORE not in ddl:
        return
    version = int(conn.exec_driver_sql("PRAGMA schema_version").scalar())
    conn.exec_driver_sql("PRAGMA writable_schema = ON")
    conn.exec_driver_sql("UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND "
                         "name = 'email_messages'", (ddl.replace(_BEFORE, _SINCE),))
    conn.exec_driver_sql(f"PRAGMA schema_version = {version + 1}")
    conn.exec_driver_sql("PRAGMA writable_schema = OFF")
