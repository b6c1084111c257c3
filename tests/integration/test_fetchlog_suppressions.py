"""fetchlog puts hard-bounced recipients of API emails on their sender's suppression list: the
BatchTask against the real MongoDB-wire server and the migrated USEND DB (as
``test_fetchlog_task.py``), with the store ``fetchlog`` wires (:func:`etrans.bootstrap.stores.
suppression_store`).
"""

from __future__ import annotations

import json
import secrets
from typing import TYPE_CHECKING, Any

import pytest
from pymongo import MongoClient
from sqlalchemy import text

from etrans.adapters.mongo.log_writer import MongoLogWriter
from etrans.adapters.sql import Database, make_engine, usend_database
from etrans.adapters.sql.email_status import EmailStatusUpdater
from etrans.bootstrap.stores import suppression_store
from etrans.domain.delivery_log import EventFilter
from etrans.errors import RetryLater
from etrans.pipeline import Message
from etrans.settings import MongoSettings, Secret
from etrans.workers.fetchlog import FetchlogTask
from tests.harness.servers import free_port, unique_name

if TYPE_CHECKING:
    from collections.abc import Iterator

HARD = "host mx.mail.example said: 550 5.1.1 <gone@mail.example>: Recipient address rejected"


def _event(event_id: str, message_id: str, recipient: str, response: str,
           kind: str = "Sender", action: str = "bounced", **extra: Any) -> dict[str, Any]:
    return {
        "Event": kind, "@timestamp": "2026-03-10T04:16:58Z", "SMTP_Action": action,
        "from": "hello@shop.example", "recipient": recipient, "response": response,
        "from_domain": "shop.example", "Event_ID": event_id, "message_id": message_id,
        "to_domain": recipient.rpartition("@")[2], **extra,
    }


def _messages(events: list[dict[str, Any]], start: int = 0) -> list[Message]:
    return [Message("email-logs", 0, start + i, None, json.dumps(e).encode())
            for i, e in enumerate(events)]


@pytest.fixture
def mongo_settings(mongo_uri: str) -> Iterator[MongoSettings]:
    settings = MongoSettings(uri=Secret(mongo_uri), dbname=unique_name("fls").replace("-", "_"),
                             collection="email_logs")
    yield settings
    client: MongoClient[Any] = MongoClient(mongo_uri)
    client.drop_database(settings.dbname)
    client.close()


@pytest.fixture
def usend(usend_db_url: str) -> Iterator[Database]:
    database = Database(make_engine(usend_db_url, pool_size=4), name="usend_db")
    yield database
    database.dispose()


def _user() -> int:
    return 2_000_000 + secrets.randbelow(2**40)


def _insert_email(database: Database, user_id: int) -> str:
    message_id = f"{unique_name('sup')}@shop.example"
    with database.engine.begin() as conn:
        conn.execute(
            text("INSERT INTO email_messages (message_id, user_id, from_address, to_addresses,"
                 " subject, status) VALUES (:m, :u, 'hello@shop.example', '[\"u@x\"]', 's',"
                 " 'queued')"), {"m": message_id, "u": user_id})
    return message_id


def _listed(database: Database, user_id: int) -> dict[str, tuple[str, str | None, str | None]]:
    with database.engine.connect() as conn:
        rows = conn.execute(text("SELECT address, reason, message_id, response FROM suppressions"
                                 " WHERE user_id = :u"), {"u": user_id})
        return {r.address: (r.reason, r.message_id, r.response) for r in rows}


async def test_hard_bounces_of_api_emails_suppress_the_recipient_for_its_sender(
        mongo_settings: MongoSettings, usend: Database) -> None:
    alice, bob = _user(), _user()
    to_alice, to_bob = _insert_email(usend, alice), _insert_email(usend, bob)
    smtp_only = f"{unique_name('smtp')}@shop.example"  # SMTP-submitted: no email row
    given = "550 5.7.1 relay refused"  # sendmail's Reject carries its class: stored as given
    batch = [
        _event("e1", to_alice, "Gone@Mail.example", HARD),
        _event("e2", to_alice, "full@mail.example", "552 5.2.2 Mailbox full"),
        _event("e3", to_alice, "spam@mail.example", "550 5.7.1 blocked using Spamhaus",
               kind="Reject", action="rejected"),
        _event("e4", to_alice, "ok@mail.example", "250 2.0.0 OK", action="delivered"),
        _event("e5", to_alice, "later@mail.example", "451 4.7.1 try again later",
               kind="Deferred", action="deferred"),
        _event("e6", to_bob, "gone@mail.example", given, kind="Reject", action="rejected",
               bounce_class="hard"),
        _event("e7", smtp_only, "smtp@mail.example", HARD),
    ]
    writer = MongoLogWriter(mongo_settings)
    task = FetchlogTask(EventFilter(), writer, EmailStatusUpdater(usend),
                        suppressions=suppression_store(usend))
    try:
        await writer.ensure_indexes()
        await task(_messages(batch))
        assert task.statistics().suppressed == 2
        # A replay (the same events, or a retried batch) changes nothing.
        await task(_messages(batch))
        await task(_messages(batch[:1], start=100))
    finally:
        writer.close()

    assert task.statistics().suppressed == 2
    assert _listed(usend, alice) == {"gone@mail.example": ("hard_bounce", to_alice, HARD)}
    assert _listed(usend, bob) == {"gone@mail.example": ("hard_bounce", to_bob, given)}
    with usend.engine.connect() as conn:
        smtp = conn.execute(text("SELECT count(*) FROM suppressions WHERE address ="
                                 " 'smtp@mail.example' OR message_id = :m"), {"m": smtp_only})
        assert smtp.scalar_one() == 0


async def test_a_suppression_list_that_does_not_answer_is_retry_later(
        mongo_settings: MongoSettings, usend: Database) -> None:
    alice = _user()
    to_alice = _insert_email(usend, alice)
    batch = _messages([_event("r1", to_alice, "gone@mail.example", HARD)])
    down = usend_database(f"postgresql://postgres@127.0.0.1:{free_port()}/usend", pool_size=1)
    writer = MongoLogWriter(mongo_settings)
    try:
        await writer.ensure_indexes()
        failing = FetchlogTask(EventFilter(), writer, EmailStatusUpdater(usend),
                               suppressions=suppression_store(down))
        # The pipeline commits nothing past a batch that raised: it retries it.
        with pytest.raises(RetryLater):
            await failing(batch)
        assert _listed(usend, alice) == {}
        assert failing.statistics().batches == 0
        retried = FetchlogTask(EventFilter(), writer, EmailStatusUpdater(usend),
                               suppressions=suppression_store(usend))
        await retried(batch)
        assert (retried.statistics().duplicates, retried.statistics().suppressed) == (1, 1)
    finally:
        writer.close()
        down.dispose()
    assert list(_listed(usend, alice)) == ["gone@mail.example"]
