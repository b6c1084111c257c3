"""``etrans outbox retry-failed``: a row the relay gave up on (the producer refused it: its
``message.max.bytes`` too small, as after lowering it by hand) goes back in the relay's queue
once the cause is fixed, and is published exactly once; its email is queued again.  Real
PostgreSQL and the Kafka-API broker."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select

from etrans.adapters.kafka.client import KafkaProducer
from etrans.adapters.sql import migrations, usend_database
from etrans.adapters.sql.outbox import OutboxRelay
from etrans.adapters.sql.outbox_store import PgOutboxStore
from etrans.adapters.sql.usend import EmailMessage, EmailOutbox
from tests.integration.test_dlq_redrive import count_records, etrans_async

OUTBOX, EMAILS = EmailOutbox.__table__, EmailMessage.__table__


async def test_a_failed_row_retried_after_the_fix_is_published_once(
        fresh_database: Any, kafka_bootstrap: str, new_topic: Any, etrans_env: Any) -> None:
    url = fresh_database("outbox_retry")
    migrations.upgrade(url)
    db = usend_database(url, pool_size=2)
    topic = new_topic(prefix="sendmail")
    message_id = "msg_retry@example.test"
    request = {"payload": {"message_id": message_id, "body": "x" * 5000}}
    now = datetime.now(UTC)
    with db.engine.begin() as conn:
        conn.execute(insert(EMAILS).values(
            message_id=message_id, user_id=7, from_address="S <s@example.test>",
            to_addresses=["r@example.org"], subject="Hi", html="<p>Hi</p>", created_at=now))
        conn.execute(insert(OUTBOX).values(topic=topic, key=message_id,
                                           payload=json.dumps(request).encode(),
                                           message_id=message_id, created_at=now))
    env = {**etrans_env(), "USEND_DB_URI": url}
    small = KafkaProducer({"bootstrap.servers": kafka_bootstrap, "message.max.bytes": 1000})
    fixed = KafkaProducer({"bootstrap.servers": kafka_bootstrap})
    try:
        refusing = OutboxRelay(PgOutboxStore.of(db), small)
        assert await refusing.relay_once() == (0, 1)
        await refusing.aclose()
        with db.engine.connect() as conn:
            assert conn.execute(select(EMAILS.c.status)).scalar() == "failed"
            row_id = conn.execute(select(OUTBOX.c.id)).scalar()

        dry = await etrans_async(env, "outbox", "retry-failed", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert dry.stdout.splitlines()[-1] == "would retry 1 of 1 failed outbox rows"
        assert dry.stdout.startswith(f"{row_id}  ")
        unknown = await etrans_async(env, "outbox", "retry-failed", "--id", str(row_id + 100))
        assert unknown.returncode == 2
        assert f"not failed outbox rows (unknown, published or not failed): {row_id + 100}" in (
            unknown.stderr)

        retried = await etrans_async(env, "outbox", "retry-failed")
        assert retried.returncode == 0, retried.stderr
        assert retried.stdout.splitlines()[-1].startswith("retried 1 of 1 failed outbox rows")
        with db.engine.connect() as conn:
            row = conn.execute(select(OUTBOX)).one()
            assert (row.failed_at, row.attempts, row.last_error) == (None, 0, None)
            assert conn.execute(select(EMAILS.c.status)).scalar() == "queued"

        relay = OutboxRelay(PgOutboxStore.of(db), fixed)
        assert await relay.relay_once() == (1, 0)
        assert await relay.relay_once() == (0, 0)
        await relay.aclose()
        again = await etrans_async(env, "outbox", "retry-failed")
        assert again.stdout.splitlines()[-1] == "retried 0 of 0 failed outbox rows"
        assert count_records(kafka_bootstrap, topic) == 1
    finally:
        small.close(1.0)
        fixed.close(1.0)
        db.dispose()
