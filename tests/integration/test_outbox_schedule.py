"""Scheduled emails in the outbox relay, on real PostgreSQL and the Kafka-API broker: the relay
of ``etrans serve`` publishes a waiting row once its ``due_at`` has come and never before, makes
its email ``queued`` in the same transaction, and leaves the rows not yet due alone; and the
two queries stay on their partial indexes however many rows wait (the plans PostgreSQL chooses,
read with EXPLAIN over 50,000 waiting rows: ``docs/database.md`` shows them over a million)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import trio
from sqlalchemy import insert, select, text

from etrans.adapters.kafka.client import KafkaProducer
from etrans.adapters.sql import migrations, usend_database
from etrans.adapters.sql.outbox import OutboxRelay
from etrans.adapters.sql.outbox_store import _CLAIM_ROWS, _RELEASE_DUE, PgOutboxStore
from etrans.adapters.sql.usend import EmailMessage, EmailOutbox

OUTBOX = EmailOutbox.__table__
EMAILS = EmailMessage.__table__


def _email(message_id: str, status: str, at: datetime | None) -> dict[str, Any]:
    return {"message_id": message_id, "user_id": 7, "from_address": "s@example.test",
            "to_addresses": ["r@example.org"], "subject": "Hi", "html": "x", "status": status,
            "created_at": datetime.now(UTC), "scheduled_at": at}


async def test_the_relay_publishes_a_scheduled_row_when_due_and_not_before(
        fresh_database: Any, kafka_bootstrap: str, new_topic: Any) -> None:
    url = fresh_database("relay_schedule")
    migrations.upgrade(url)
    db = usend_database(url, pool_size=2)
    topic = new_topic()
    now = datetime.now(UTC)
    due = {"m-soon": now + timedelta(seconds=1), "m-later": now + timedelta(seconds=2),
           "m-next-hour": now + timedelta(hours=1), "m-now": None}
    with db.engine.begin() as conn:
        for message_id, at in due.items():
            conn.execute(insert(EMAILS).values(
                _email(message_id, "scheduled" if at else "queued", at)))
            conn.execute(insert(OUTBOX).values(
                topic=topic, key=message_id, payload=b"{}", message_id=message_id,
                created_at=now, due_at=at))
    producer = KafkaProducer({"bootstrap.servers": kafka_bootstrap})
    relay = OutboxRelay(PgOutboxStore.of(db), producer)

    def published() -> dict[str, Any]:
        with db.engine.connect() as conn:
            return {r.message_id: r.published_at for r in conn.execute(
                select(OUTBOX.c.message_id, OUTBOX.c.published_at)
                .where(OUTBOX.c.published_at.is_not(None)))}

    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(relay.run)
                for _ in range(600):  # polls the table (fail_after ends a relay that never does)
                    if set(published()) == {"m-now", "m-soon", "m-later"}:
                        break
                    await trio.sleep(0.1)
                nursery.cancel_scope.cancel()
        sent = published()
        assert sent["m-soon"] >= due["m-soon"]
        assert sent["m-later"] >= due["m-later"]
        assert relay.stats.released == 2
        with db.engine.connect() as conn:
            statuses = dict(conn.execute(select(EMAILS.c.message_id, EMAILS.c.status)).all())
            waiting = conn.execute(select(OUTBOX.c.due_at).where(
                OUTBOX.c.message_id == "m-next-hour")).scalar()
        assert statuses == {"m-soon": "queued", "m-later": "queued", "m-now": "queued",
                            "m-next-hour": "scheduled"}
        assert waiting == due["m-next-hour"]
    finally:
        producer.close(5.0)
        db.dispose()


async def test_the_due_rows_and_the_pending_rows_are_found_by_their_partial_indexes(
        fresh_database: Any) -> None:
    url = fresh_database("outbox_plans")
    migrations.upgrade(url)
    db = usend_database(url, pool_size=1)
    try:
        with db.engine.begin() as conn:
            # 50,000 waiting rows over the next 30 days, 10 pending ones, 1,000 published.
            conn.execute(text(
                "INSERT INTO email_outbox (topic, key, payload, message_id, created_at, due_at) "
                "SELECT 't', 'k' || n, '\\x7b7d', 'm' || n, now(), "
                "now() + n * interval '50 seconds' FROM generate_series(1, 50000) AS n"))
            conn.execute(text(
                "INSERT INTO email_outbox (topic, key, payload, created_at, published_at) "
                "SELECT 't', 'p' || n, '\\x7b7d', now(), now() FROM generate_series(1, 1000) n"))
            conn.execute(text(
                "INSERT INTO email_outbox (topic, key, payload, created_at) "
                "SELECT 't', 'q' || n, '\\x7b7d', now() FROM generate_series(1, 10) AS n"))
            conn.execute(text("ANALYZE email_outbox"))
        with db.engine.begin() as conn:
            conn.exec_driver_sql(f"PREPARE due(int) AS {_RELEASE_DUE.decode()}")
            plans = {"due": "\n".join(row[0] for row in conn.exec_driver_sql(
                "EXPLAIN EXECUTE due(200)"))}
            plans["pending"] = "\n".join(row[0] for row in conn.exec_driver_sql(
                "EXPLAIN " + _CLAIM_ROWS.format(limit=1000, max_bytes=64 * 1024 * 1024)))
        assert "ix_email_outbox_due_at" in plans["due"], plans["due"]
        assert "Seq Scan on email_outbox" not in plans["due"], plans["due"]
        assert "ix_email_outbox_unpublished" in plans["pending"], plans["pending"]
        assert "Seq Scan on email_outbox" not in plans["pending"], plans["pending"]
    finally:
        db.dispose()
