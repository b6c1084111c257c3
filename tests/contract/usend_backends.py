"""The USEND DB the email contracts run on: PostgreSQL (``UsendRepository``,
``EmailStatusUpdater``) and the ``etrans dev`` SQLite file (``SqliteUsendRepository``,
``SqliteEmailStatusUpdater``), each adapter built by one function here.

The PostgreSQL database is the session's migrated USEND DB (``usend_db_url``), shared by every
test: tests keep apart by fresh user ids and message ids (:func:`fresh_user`, :func:`fresh_id`).
``seed`` writes rows the adapters only read (API keys, senders) through SQLAlchemy Core.
"""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select

from etrans.app.records import NewEmail

if TYPE_CHECKING:
    from pathlib import Path

    from etrans.adapters.sql import Database


@dataclass
class UsendBackend:
    name: str
    db: Database
    repo: Any  # EmailStore, ApiKeyStore, SenderCredentials
    statuses: Any  # EmailStatusStore

    def seed(self, table: Any, rows: list[dict[str, Any]]) -> list[int]:
        """Insert ``rows`` into ``table`` (a model's ``__table__``); their ids."""
        with self.db.engine.begin() as conn:
            return [conn.execute(insert(table).returning(table.c.id), row).scalar_one()
                    for row in rows]

    def outbox(self, message_ids: list[str]) -> list[tuple[str, str, bytes, str]]:
        """(topic, key, payload, message_id) of the outbox records of ``message_ids``."""
        from etrans.adapters.sql.usend import EmailOutbox

        table = EmailOutbox.__table__
        query = (select(table.c.topic, table.c.key, table.c.payload, table.c.message_id)
                 .where(table.c.message_id.in_(message_ids)).order_by(table.c.id))
        with self.db.engine.connect() as conn:
            return [(t, k, bytes(p), m) for t, k, p, m in conn.execute(query)]

    async def close(self) -> None:
        close = getattr(self.repo, "aclose", None)
        if close is not None:
            await close()
        self.db.dispose()


def postgres_backend(url: str) -> UsendBackend:
    from etrans.adapters.sql import usend_database
    from etrans.adapters.sql.email_status import EmailStatusUpdater
    from etrans.adapters.sql.usend_repo import UsendRepository

    db = usend_database(url, pool_size=4)
    return UsendBackend("postgres", db, UsendRepository(db), EmailStatusUpdater(db))


def sqlite_backend(path: Path) -> UsendBackend:
    from etrans.dev.sqlite_db import (
        SqliteEmailStatusUpdater,
        SqliteUsendRepository,
        create_schema,
        sqlite_database,
    )

    db = sqlite_database(path)
    create_schema(db)
    return UsendBackend("sqlite", db, SqliteUsendRepository(db), SqliteEmailStatusUpdater(db))


def fresh_user() -> int:
    return 1_000_000 + secrets.randbelow(2**40)


def fresh_id(domain: str = "a.example") -> str:
    return f"msg_{uuid.uuid4().hex}@{domain}"


def new_email(user_id: int, *, message_id: str | None = None,
              created_at: datetime | None = None, **fields: Any) -> NewEmail:
    message_id = message_id or fresh_id()
    values: dict[str, Any] = {
        "message_id": message_id, "user_id": user_id, "domain_id": 11,
        "from_address": "Alice <alice@a.example>", "to": ["bob@x.org", "Zoë <z@x.org>"],
        "cc": [], "bcc": ["hidden@x.org"], "reply_to": None, "subject": "Hello ✓",
        "html": "<p>Hi</p>", "text": "Hi", "headers": {"X-Campaign": "spring"},
        "tags": [{"name": "k", "value": "v"}],
        "attachments": [{"filename": "a.pdf", "content_type": "application/pdf", "size": 3}],
        "template_id": None, "template_data": {"name": "Zoë"},
        "created_at": created_at or datetime(2026, 3, 10, 14, 30, 15, 123456, tzinfo=UTC),
        "topic": "sendmail", "kafka_key": message_id.encode(),
        "kafka_value": json.dumps({"payload": {"message_id": message_id,
                                               "subject": "Hello ✓"}}).encode(),
    }
    values.update(fields)
    return NewEmail(**values)


def unreachable_backend(name: str, tmp_path: Path) -> UsendBackend:
    """The adapters on a database that does not answer: PostgreSQL on a port nothing listens
    on, SQLite in a directory that does not exist."""
    from etrans.adapters.sql import usend_database
    from etrans.adapters.sql.email_status import EmailStatusUpdater
    from etrans.adapters.sql.usend_repo import UsendRepository
    from etrans.dev.sqlite_db import (
        SqliteEmailStatusUpdater,
        SqliteUsendRepository,
        sqlite_database,
    )
    from tests.harness.servers import free_port

    if name == "postgres":
        db = usend_database(f"postgresql://postgres@127.0.0.1:{free_port()}/usend", pool_size=1)
        return UsendBackend(name, db, UsendRepository(db), EmailStatusUpdater(db))
    db = sqlite_database(tmp_path / "no-such-dir" / "usend.sqlite3")
    return UsendBackend(name, db, SqliteUsendRepository(db), SqliteEmailStatusUpdater(db))
