"""The outbox relay's pass on PostgreSQL (Trio thread, its own connection) against real
PostgreSQL and the Kafka-API broker: the stored bytes are published as they are, in id order,
and a connection lost between passes costs one failed pass, not the relay."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
import trio
from sqlalchemy import func, insert, select, text

from etrans.adapters.kafka_client import KafkaProducer
from etrans.adapters.outbox import OutboxRelay
from etrans.adapters.sql import migrations, usend_database
from etrans.adapters.sql.usend import EmailOutbox

OUTBOX = EmailOutbox.__table__


def _raw_records(bootstrap: str, topic: str, want: int, overrides: dict[str, Any]
                 ) -> list[tuple[bytes | None, bytes | None]]:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"raw-{topic}",
                         "enable.auto.commit": False, **overrides})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    records: list[tuple[bytes | None, bytes | None]] = []
    try:
        for _ in range(120):
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                records.append((message.key(), message.value()))
            if len(records) >= want:
                break
    finally:
        consumer.close()
    return records


async def test_trio_pass_publishes_the_stored_bytes_and_survives_a_lost_connection(
        fresh_database: Any, kafka_bootstrap: str, kafka_test_config: dict[str, Any],
        new_topic: Any) -> None:
    url = fresh_database("relay")
    migrations.upgrade(url)
    db = usend_database(url, pool_size=2)
    with db.engine.begin() as conn:  # not the default 'hex': the relay must not depend on it
        name = conn.execute(text("SELECT current_database()")).scalar()
        conn.execute(text(f'ALTER DATABASE "{name}" SET bytea_output = \'escape\''))
    topic = new_topic()
    payloads = [f'{{"n":{i},"s":"Grüße ✓ \\"q\\" \\\\"}}'.encode() for i in range(5)]
    payloads.append(b"\x00\xff not even UTF-8")
    now = datetime.now(UTC)
    with db.engine.begin() as conn:
        conn.execute(insert(OUTBOX), [{"topic": topic, "key": f"k{i}", "payload": p,
                                       "message_id": f"m{i}", "created_at": now}
                                      for i, p in enumerate(payloads)])
    producer = KafkaProducer({"bootstrap.servers": kafka_bootstrap})
    relay = OutboxRelay(db, producer)
    try:
        assert await relay.relay_once() == (6, 0)
        records = await trio.to_thread.run_sync(
            _raw_records, kafka_bootstrap, topic, 6, kafka_test_config)
        assert records == [(f"k{i}".encode(), p) for i, p in enumerate(payloads)]

        # The server ends the relay's session between passes: that pass fails (the relay's
        # loop logs it and backs off), the next one reconnects and publishes.
        with db.engine.begin() as conn:
            conn.execute(insert(OUTBOX).values(topic=topic, key="late", payload=b"{}",
                                               message_id="late", created_at=now))
        with db.engine.connect() as conn:
            ended = conn.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar()
        assert ended >= 1
        with pytest.raises(psycopg.OperationalError):
            await relay.relay_once()
        assert await relay.relay_once() == (1, 0)
        with db.engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(OUTBOX).where(
                OUTBOX.c.published_at.is_(None))).scalar() == 0
    finally:
        await relay.aclose()
        producer.close(5.0)
        db.dispose()
