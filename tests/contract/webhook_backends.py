"""The USEND DB the webhook contracts run on: the session's migrated PostgreSQL database and
the ``etrans dev`` SQLite file, with the webhook adapters (the same classes on both) and a way to
write rows only an operator or ``etrans webhooks`` writes, through SQLAlchemy Core."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert

from etrans.adapters.crypto.webhook_secrets import WebhookSecretCipher

if TYPE_CHECKING:
    from pathlib import Path

    from etrans.adapters.sql import Database

TOKEN_SECRET = "0123456789abcdef0123456789abcdef"


@dataclass
class WebhookBackend:
    name: str
    db: Database
    sealer: WebhookSecretCipher
    directory: Any  # WebhookDirectory
    store: Any  # WebhookStore

    def add_webhook(self, user_id: int, url: str, secret: str, event_types: list[str],
                    **fields: Any) -> int:
        from etrans.adapters.sql.usend_webhooks import Webhook

        table = Webhook.__table__
        row = {"user_id": user_id, "url": url, "event_types": event_types,
               "secret_sealed": fields.pop("secret_sealed", None)
               or self.sealer.seal(user_id, secret), **fields}
        with self.db.engine.begin() as conn:
            return int(conn.execute(insert(table).returning(table.c.id), row).scalar_one())

    def add_deliveries(self, rows: list[dict[str, Any]]) -> None:
        from etrans.adapters.sql.usend_webhooks import WebhookDelivery

        with self.db.engine.begin() as conn:
            conn.execute(insert(WebhookDelivery.__table__), rows)

    def count(self, model: Any, webhook_id: int) -> int:
        from sqlalchemy import func, select

        with self.db.engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(model.__table__)
                                   .where(model.webhook_id == webhook_id)) or 0)

    def close(self) -> None:
        self.db.dispose()


def _backend(name: str, db: Database) -> WebhookBackend:
    from etrans.adapters.sql.webhook_directory import SqlWebhookDirectory
    from etrans.adapters.sql.webhooks_repo import SqlWebhooks

    sealer = WebhookSecretCipher(TOKEN_SECRET)
    return WebhookBackend(name, db, sealer, SqlWebhookDirectory(db, sealer), SqlWebhooks(db))


def postgres_webhooks(url: str) -> WebhookBackend:
    from etrans.adapters.sql import usend_database

    return _backend("postgres", usend_database(url, pool_size=2))


def sqlite_webhooks(path: Path) -> WebhookBackend:
    from etrans.dev.sqlite_db import create_schema, sqlite_database

    db = sqlite_database(path)
    create_schema(db)
    return _backend("sqlite", db)


def unreachable_webhooks(name: str, tmp_path: Path) -> WebhookBackend:
    from etrans.adapters.sql import usend_database
    from etrans.dev.sqlite_db import sqlite_database
    from tests.harness.servers import free_port

    if name == "postgres":
        return _backend(name, usend_database(
            f"postgresql://postgres@127.0.0.1:{free_port()}/usend", pool_size=1))
    return _backend(name, sqlite_database(tmp_path / "no-such-dir" / "usend.sqlite3"))
