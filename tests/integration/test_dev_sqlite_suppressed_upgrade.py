"""``etrans dev``'s SQLite: a data directory made before migration 0006 (statuses without
``suppressed``) is brought up to date at start, rows kept, and then stores an email whose every
recipient is suppressed (no servers needed: the SQLite file alone)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from etrans.app.records import SuppressedRecipient
from tests.contract.usend_backends import fresh_user, new_email

if TYPE_CHECKING:
    from pathlib import Path

OLD, NEW = "'bounced', 'failed'))", "'bounced', 'failed', 'suppressed'))"
SINCE_0010 = "'bounced', 'failed', 'suppressed', 'scheduled', 'cancelled'))"  # email_messages


async def test_a_data_dir_made_before_0006_takes_suppressed_emails(tmp_path: Path) -> None:
    from etrans.dev import sqlite_db

    db = sqlite_db.sqlite_database(tmp_path / "usend.sqlite3")
    sqlite_db.create_schema(db)
    repo = sqlite_db.SqliteUsendRepository(db)
    user = fresh_user()
    kept = new_email(user)
    await repo.save([kept])
    with db.engine.begin() as conn:  # back to the CHECK constraints of an older etrans
        conn.exec_driver_sql("PRAGMA writable_schema = ON")
        for since in (SINCE_0010, NEW):
            conn.exec_driver_sql(f"UPDATE sqlite_master SET sql = replace(sql, \"{since}\", "
                                 f"\"{OLD}\") WHERE type = 'table'")
        version = conn.exec_driver_sql("PRAGMA schema_version").scalar()
        conn.exec_driver_sql(f"PRAGMA schema_version = {version + 1}")
        conn.exec_driver_sql("PRAGMA writable_schema = OFF")
    db.dispose()
    db = sqlite_db.sqlite_database(tmp_path / "usend.sqlite3")
    with db.engine.connect() as conn:
        ddls = [row[0] for row in conn.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE name IN "
            "('email_messages', 'email_recipient_outcomes')")]
    assert len(ddls) == 2
    assert all(OLD in ddl for ddl in ddls)
    sqlite_db.create_schema(db)  # what `etrans dev` does at start
    sqlite_db.create_schema(db)  # and again: idempotent
    repo = sqlite_db.SqliteUsendRepository(db)
    suppressed = new_email(user, status="suppressed", kafka_key=b"", kafka_value=b"",
                           suppressed=(SuppressedRecipient("bob@x.org", "hard_bounce"),))
    await repo.save([suppressed])
    row = await repo.get(user, suppressed.message_id)
    assert row is not None
    assert row["status"] == "suppressed"
    assert [r["outcome"] for r in row["recipients"]] == ["suppressed"]
    assert await repo.get(user, kept.message_id) is not None
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
    db.dispose()
