"""The USEND DB on SQLite (``etrans dev``): engine, schema, and the two queries that are written
in PostgreSQL's dialect.

- :func:`sqlite_database` - a :class:`~etrans.adapters.sql.Database` on a SQLite file in WAL mode;
  every transaction starts with ``BEGIN IMMEDIATE`` (writers queue on the busy timeout instead of
  failing on a lock upgrade), which serialises writes - plenty for one developer's machine.
- :func:`create_schema` - the models' tables (``metadata.create_all`` on a copy adapted to SQLite:
  PostgreSQL casts in server defaults and the regex CHECK are left out), idempotent; columns and
  indexes a later migration added to an existing table are added to a data directory made before
  it; then the default packs of migration 0002.
- :class:`SqliteUsendRepository` - :class:`~etrans.adapters.sql.usend_repo.UsendRepository` whose
  ``save`` writes the email and outbox rows with portable INSERTs (same transaction), and refuses
  texts longer than their ``VARCHAR(n)`` as PostgreSQL does (SQLite does not enforce lengths);
  its ``suppressed`` is the SQLite suppression list's lookup.
- :class:`SqliteEmailStatusUpdater` - the :class:`~etrans.app.ports.EmailStatusStore` of fetchlog
  with the same monotonic rule as the PostgreSQL ``UPDATE ... FROM unnest``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import DefaultClause, MetaData, event, insert, select, text
from sqlalchemy.exc import DataError, IntegrityError

from etrans.adapters.sql import Database
from etrans.adapters.sql.email_status import OUTCOME_UPSERT, RECIPIENT_LENGTH
from etrans.adapters.sql.usend_repo import SaveCall, UsendRepository, suppressed_outcomes
from etrans.dev.sqlite_schedule_upgrade import upgrade_for_scheduling
from etrans.dev.sqlite_send_checks import listed, template_changed
from etrans.domain.delivery_log import DELIVERED, STATUS_RANK
from etrans.errors import InvalidInput, RetryLater

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from sqlalchemy.engine import Engine

    from etrans.app.records import NewEmail, Suppression
    from etrans.app.template_records import Template
    from etrans.domain.delivery_log import RecipientOutcome, StatusChange


def sqlite_engine(path: Path) -> Engine:
    from sqlalchemy import create_engine

    engine = create_engine(f"sqlite:///{path}", pool_size=5, max_overflow=0,
                           connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # pysqlite's own transaction handling is turned off: SQLAlchemy's "begin" emits BEGIN.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def sqlite_database(path: Path, *, name: str = "usend_db") -> Database:
    return Database(sqlite_engine(path), name=name)


def _sqlite_metadata() -> MetaData:
    """A copy of the USEND models' metadata that SQLite accepts."""
    from sqlalchemy import CheckConstraint

    from etrans.adapters.sql.usend import UsendBase

    copy = MetaData(naming_convention=UsendBase.metadata.naming_convention)
    for table in UsendBase.metadata.sorted_tables:
        table.to_metadata(copy)
    for table in copy.tables.values():
        for column in table.columns:
            default = column.server_default
            sql = str(getattr(default, "arg", "")) if default is not None else ""
            if "::" in sql:  # '[]'::jsonb -> '[]'
                column.server_default = DefaultClause(text(sql.split("::", 1)[0]))
        for constraint in list(table.constraints):
            if isinstance(constraint, CheckConstraint) and " ~ " in str(constraint.sqltext):
                table.constraints.discard(constraint)
    return copy


def create_schema(db: Database) -> None:
    """Create the tables (a no-op for those that exist) and the default pack catalogue."""
    from etrans.adapters.sql.usend import EmailTransactionPack

    metadata = _sqlite_metadata()
    metadata.create_all(db.engine)
    _add_missing_columns(db.engine, metadata)
    with db.engine.begin() as conn:
        _upgrade(conn, metadata)
    packs = EmailTransactionPack.__table__
    with db.engine.begin() as conn:
        if conn.execute(select(packs.c.id).limit(1)).first() is None:
            conn.execute(insert(packs), _default_packs())


def _add_missing_columns(engine: Engine, metadata: MetaData) -> None:
    """``create_all`` skips tables that exist: add the nullable columns (with their single-column
    foreign key) and the indexes of newer models to them, as the migrations did on PostgreSQL."""
    from sqlalchemy import inspect
    from sqlalchemy.schema import CreateColumn

    with engine.begin() as conn:
        existing = inspect(conn)
        for table in metadata.sorted_tables:
            present = {c["name"] for c in existing.get_columns(table.name)}
            for column in table.columns:
                if column.name in present:
                    continue
                if not column.nullable and column.server_default is None:
                    raise RuntimeError(f"cannot add {table.name}.{column.name} to an existing "
                                       "etrans dev database: it is NOT NULL without a default")
                ddl = str(CreateColumn(column).compile(dialect=engine.dialect))
                for fk in column.foreign_keys:
                    ddl += (f" REFERENCES {fk.column.table.name} ({fk.column.name})"
                            + (f" ON DELETE {fk.ondelete}" if fk.ondelete else ""))
                conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {ddl}")
            for index in table.indexes:
                index.create(conn, checkfirst=True)


def _upgrade(conn: Any, metadata: MetaData) -> None:
    """What :func:`_add_missing_columns` cannot do for a data directory made by an older etrans:
    the changed index and CHECK constraint of the outbox failures (migration 0004 on PostgreSQL),
    the ``suppressed`` status (0006), the scheduled sending's statuses and index (0010)."""
    outbox = metadata.tables["email_outbox"]
    unpublished = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'index' AND "
                                       "name = 'ix_email_outbox_unpublished'").scalar()
    if unpublished and "failed_at" not in unpublished:
        conn.exec_driver_sql("DROP INDEX ix_email_outbox_unpublished")
        for index in outbox.indexes:
            index.create(conn, checkfirst=True)
    ddl = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND "
                               "name = 'email_messages'").scalar()
    if ddl and "'failed'" not in ddl:
        # SQLite cannot change a CHECK constraint: rebuild the table with the new one.
        emails = metadata.tables["email_messages"]
        for (name,) in conn.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND "
                "tbl_name = 'email_messages' AND sql IS NOT NULL").all():
            conn.exec_driver_sql(f'DROP INDEX "{name}"')
        conn.exec_driver_sql("ALTER TABLE email_messages RENAME TO email_messages_before_0004")
        emails.create(conn)
        names = ", ".join(f'"{column.name}"' for column in emails.columns)
        conn.exec_driver_sql(f"INSERT INTO email_messages ({names}) SELECT {names} "
                             "FROM email_messages_before_0004")
        conn.exec_driver_sql("DROP TABLE email_messages_before_0004")
    _allow_suppressed(conn)
    upgrade_for_scheduling(conn, metadata)


# The CHECK constraints of statuses before migration 0006 and after it.
_BEFORE_0006, _SINCE_0006 = "'bounced', 'failed'))", "'bounced', 'failed', 'suppressed'))"


def _allow_suppressed(conn: Any) -> None:
    """Migration 0006 on a data directory made before it: the CHECK of ``email_messages.status``
    and ``email_recipient_outcomes.outcome`` also allows ``suppressed``.  Only the constraint's
    text changes, and it only allows more (no row can break it), so the table definitions are
    edited in place - the procedure SQLite documents for such changes (writable_schema, then a
    new schema_version) - rather than rebuilt: a rebuild of ``email_messages`` would cascade
    into the tables that reference it."""
    old = [(name, ddl) for name, ddl in conn.exec_driver_sql(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name IN "
        "('email_messages', 'email_recipient_outcomes')").all() if _BEFORE_0006 in ddl]
    if not old:
        return
    version = int(conn.exec_driver_sql("PRAGMA schema_version").scalar())
    conn.exec_driver_sql("PRAGMA writable_schema = ON")
    for name, ddl in old:
        conn.exec_driver_sql("UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = ?",
                             (ddl.replace(_BEFORE_0006, _SINCE_0006), name))
    conn.exec_driver_sql(f"PRAGMA schema_version = {version + 1}")
    conn.exec_driver_sql("PRAGMA writable_schema = OFF")


def _default_packs() -> list[dict[str, Any]]:
    """The rows migration 0002 inserts into ``email_transaction_pack``."""
    import importlib
    from decimal import Decimal

    migration = importlib.import_module(
        "etrans.adapters.sql.migrations.versions.0002_default_packs")
    return [{"pack_code": code, "pack_name": name, "pack_type": type_, "daily_email_limit": daily,
             "domain_limit": domains, "price": Decimal(price), "is_payg": payg,
             "pricing": {} if payg else None}
            for code, name, type_, daily, domains, price, payg in migration.DEFAULT_PACKS]


class SqliteUsendRepository(UsendRepository):
    """The API's USEND queries; ``save`` without PostgreSQL's data-modifying CTE.

    SQLite does not enforce ``VARCHAR(n)``: ``save`` checks the lengths itself and refuses what
    PostgreSQL would refuse, with the same InvalidInput (22001), before the rows join a group
    commit (so the emails of other requests are not held up by them)."""

    data_errors = (IntegrityError, DataError)

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self._database = db

    async def save(self, emails: Sequence[NewEmail]) -> None:
        for table, row in _rows(emails):
            _check_lengths(table, row)
        await super().save(emails)

    async def suppressed(self, user_id: int, addresses: Sequence[str]) -> dict[str, Suppression]:
        """The lookup of the SQLite suppression list (one query, in a worker thread)."""
        from etrans.dev.sqlite_suppressions import SqliteSuppressionStore

        return await SqliteSuppressionStore(self._database).suppressed(user_id, addresses)

    async def template(self, user_id: int, template_id: int) -> Template | None:
        """The read of a template by a send: the template store's (in a worker thread)."""
        from etrans.adapters.sql.templates_repo import SqlTemplates

        return await SqlTemplates(self._database).get(user_id, template_id)

    async def _save(self, items: list[tuple[SaveCall, NewEmail]]) -> None:
        if items:
            await self._database.run(self._insert, items)

    def _insert(self, items: list[tuple[SaveCall, NewEmail]]) -> None:
        from etrans.adapters.sql.usend import EmailMessage, EmailOutbox, EmailRecipientOutcome

        with self._database.engine.begin() as conn:
            # A call with a guarded email one of whose recipients is listed: none of its rows.
            refused = {call for call, e in items
                       if (e.guard and listed(conn, e.user_id, e.guard)) or (
                           e.template_version
                           and template_changed(conn, e.user_id, e.template_version))}
            for call, _ in items:
                call.refused = call in refused
            rows = _rows([e for call, e in items if call not in refused])
            for each in (EmailMessage, EmailRecipientOutcome, EmailOutbox):
                table = each.__table__
                chosen = [row for of, row in rows if of is table]
                if chosen:
                    conn.execute(insert(table), chosen)


def _rows(emails: Sequence[NewEmail]) -> list[tuple[Any, dict[str, Any]]]:
    """(table, row) of the ``email_messages`` rows, the outcomes of their suppressed recipients
    and the ``email_outbox`` records of those that are published."""
    from etrans.adapters.sql.usend import EmailMessage, EmailOutbox, EmailRecipientOutcome

    emails_table, outbox_table = EmailMessage.__table__, EmailOutbox.__table__
    outcomes_table = EmailRecipientOutcome.__table__
    rows: list[tuple[Any, dict[str, Any]]] = [(emails_table, {
        "message_id": e.message_id, "user_id": e.user_id, "domain_id": e.domain_id,
        "from_address": e.from_address, "to_addresses": e.to, "cc_addresses": e.cc,
        "bcc_addresses": e.bcc, "reply_to": e.reply_to, "subject": e.subject,
        "html": e.html, "text": e.text, "headers": e.headers, "tags": e.tags,
        "attachments": e.attachments, "template_id": e.template_id,
        "template_data": e.template_data, "status": e.status, "created_at": e.created_at,
        "updated_at": e.created_at, "scheduled_at": e.scheduled_at,
        "traceparent": e.traceparent,
    }) for e in emails]
    rows += [(outcomes_table, {"message_id": e.message_id, "recipient": s["recipient"],
                               "outcome": "suppressed", "response": s["reason"],
                               "event_at": e.created_at, "updated_at": e.created_at})
             for e in emails for s in suppressed_outcomes(e)]
    rows += [(outbox_table, {"topic": e.topic, "key": e.kafka_key.decode(),
                             "payload": e.kafka_value, "message_id": e.message_id,
                             "created_at": e.created_at, "due_at": e.scheduled_at,
                             "traceparent": e.traceparent})
             for e in emails if e.published]
    rows += [(outbox_table, {"topic": topic, "key": key.decode(), "payload": value,
                             "message_id": None, "created_at": e.created_at, "due_at": None,
                             "traceparent": e.traceparent})
             for e in emails for topic, key, value in e.events]
    return rows


def _check_lengths(table: Any, row: dict[str, Any]) -> None:
    """InvalidInput, as PostgreSQL's StringDataRightTruncation, for a text over its column's
    ``VARCHAR(n)``."""
    for name, value in row.items():
        length = getattr(table.c[name].type, "length", None)
        if isinstance(value, str) and length is not None and len(value) > length:
            raise InvalidInput("The email could not be stored: 22001 StringDataRightTruncation")


_RANK_OF_STORED = "CASE status " + " ".join(
    f"WHEN '{status}' THEN {rank}" for status, rank in STATUS_RANK.items()
) + " ELSE -1 END"

_UPDATE_ONE = f"""
UPDATE email_messages
SET status = :status, last_event = :event, response = :response,
    sent_at = COALESCE(sent_at, :at),
    delivered_at = CASE WHEN :status = '{DELIVERED}' THEN :at ELSE delivered_at END,
    updated_at = :now
WHERE message_id = :message_id AND ({_RANK_OF_STORED}) < :rank
"""


_RECORD_OUTCOME = f"""
INSERT INTO email_recipient_outcomes
    (message_id, recipient, outcome, bounce_class, response, event_at, updated_at)
SELECT :message_id, :recipient, :outcome, :bounce_class, :response, :at, :now
WHERE EXISTS (SELECT 1 FROM email_messages WHERE message_id = :message_id)
{OUTCOME_UPSERT}
"""


class SqliteEmailStatusUpdater:
    """Advances ``email_messages.status`` monotonically (one UPDATE per change, one transaction:
    the writer lock of SQLite makes the rank check and the write atomic)."""

    name = "usend_db"

    def __init__(self, database: Database) -> None:
        self.database = database

    def _apply(self, changes: Sequence[StatusChange]) -> int:
        from datetime import UTC, datetime

        from sqlalchemy import bindparam
        from sqlalchemy.exc import SQLAlchemyError

        from etrans.adapters.sql.portable import TIMESTAMPTZ

        statement = text(_UPDATE_ONE).bindparams(
            bindparam("at", type_=TIMESTAMPTZ), bindparam("now", type_=TIMESTAMPTZ))
        now = datetime.now(UTC)
        changed = 0
        try:
            with self.database.engine.begin() as conn:
                for c in sorted(changes, key=lambda c: c.message_id):
                    result = conn.execute(statement, {
                        "status": c.status, "event": c.event[:32], "response": c.response,
                        "at": c.at, "now": now, "message_id": c.message_id, "rank": c.rank})
                    changed += int(result.rowcount or 0)
        except SQLAlchemyError as exc:
            raise RetryLater(f"USEND DB status update failed: {exc.__class__.__name__}") from exc
        return changed

    async def apply(self, changes: Sequence[StatusChange]) -> int:
        if not changes:
            return 0
        return await self.database.run(self._apply, changes)

    def _record_outcomes(self, outcomes: Sequence[RecipientOutcome]) -> int:
        from datetime import UTC, datetime

        from sqlalchemy import bindparam
        from sqlalchemy.exc import SQLAlchemyError

        from etrans.adapters.sql.portable import TIMESTAMPTZ

        statement = text(_RECORD_OUTCOME).bindparams(
            bindparam("at", type_=TIMESTAMPTZ), bindparam("now", type_=TIMESTAMPTZ))
        now = datetime.now(UTC)
        written = 0
        try:
            with self.database.engine.begin() as conn:
                for o in sorted(outcomes, key=lambda o: (o.message_id, o.recipient)):
                    result = conn.execute(statement, {
                        "message_id": o.message_id, "recipient": o.recipient[:RECIPIENT_LENGTH],
                        "outcome": o.outcome, "bounce_class": o.bounce_class,
                        "response": o.response, "at": o.at, "now": now})
                    written += int(result.rowcount or 0)
        except SQLAlchemyError as exc:
            raise RetryLater(
                f"USEND DB recipient outcomes failed: {exc.__class__.__name__}") from exc
        return written

    async def record_outcomes(self, outcomes: Sequence[RecipientOutcome]) -> int:
        if not outcomes:
            return 0
        return await self.database.run(self._record_outcomes, outcomes)

    async def check(self) -> None:
        await self.database.check()
