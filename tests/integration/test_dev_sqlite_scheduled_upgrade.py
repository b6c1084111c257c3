"""``etrans dev``'s SQLite: a data directory made before migration 0010 (no scheduled sending:
no ``scheduled_at``/``due_at``, statuses without ``scheduled``/``cancelled``, the pending-rows
index without ``due_at``) is brought up to date at start, rows kept, and then stores a scheduled
email whose outbox row waits (no servers needed: the SQLite file alone)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from tests.contract.usend_backends import fresh_user, new_email

if TYPE_CHECKING:
    from pathlib import Path

SINCE_0010 = "'failed', 'suppressed', 'scheduled', 'cancelled'))"
BEFORE_0010 = "'failed', 'suppressed'))"


def _make_it_older(path: Path) -> None:
    import sqlite3

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP INDEX ix_email_outbox_due_at")
    conn.execute("DROP INDEX ix_email_outbox_unpublished")
    conn.execute("ALTER TABLE email_outbox DROP COLUMN due_at")
    conn.execute("ALTER TABLE email_messages DROP COLUMN scheduled_at")
    conn.execute("CREATE INDEX ix_email_outbox_unpublished ON email_outbox (attempts, id) "
                 "WHERE published_at IS NULL AND failed_at IS NULL")
    version = conn.execute("PRAGMA schema_version").fetchone()[0]
    conn.execute("PRAGMA writable_schema = ON")
    conn.execute("UPDATE sqlite_master SET sql = replace(sql, ?, ?) WHERE type = 'table' AND "
                 "name = 'email_messages'", (SINCE_0010, BEFORE_0010))
    conn.execute(f"PRAGMA schema_version = {version + 1}")
    conn.execute("PRAGMA writable_schema = OFF")
    conn.close()


async def test_a_data_dir_made_before_0010_takes_scheduled_emails(tmp_path: Path) -> None:
    from etrans.dev import sqlite_db
    from etrans.dev.sqlite_outbox import SqliteOutboxStore

    path = tmp_path / "usend.sqlite3"
    db = sqlite_db.sqlite_database(path)
    sqlite_db.create_schema(db)
    user = fresh_user()
    kept = new_email(user)
    await sqlite_db.SqliteUsendRepository(db).save([kept])
    db.dispose()
    _make_it_older(path)
    db = sqlite_db.sqlite_database(path)
    with db.engine.connect() as conn:
        ddl = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = "
                                   "'email_messages'").scalar()
    assert BEFORE_0010 in ddl
    assert "scheduled_at" not in ddl
    sqlite_db.create_schema(db)  # what `etrans dev` does at start
    sqlite_db.create_schema(db)  # and again: idempotent
    repo = sqlite_db.SqliteUsendRepository(db)
    at = datetime.now(UTC) + timedelta(hours=1)
    scheduled = new_email(user, status="scheduled", scheduled_at=at)
    await repo.save([scheduled])
    row = await repo.get(user, scheduled.message_id)
    assert row is not None
    assert (row["status"], row["scheduled_at"]) == ("scheduled", at)
    assert await repo.get(user, kept.message_id) is not None
    with db.engine.connect() as conn:
        index = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = "
                                     "'ix_email_outbox_unpublished'").scalar()
        assert "due_at IS NULL" in index
        assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
    seen: list[int] = []

    def choose(pending: list[tuple[int, int]]) -> list[int]:
        seen.extend(row_id for row_id, _ in pending)
        return []

    async def decide(rows: object) -> object:
        raise AssertionError("nothing chosen")

    await SqliteOutboxStore(db).relay_pass(10, choose, decide)  # type: ignore[arg-type]
    assert len(seen) == 1  # kept's row; the scheduled one waits
    db.dispose()
