"""kill -9 of the outbox relay at any point of its passes loses nothing: every row ends up
published, and its send request and its email.queued event are on their topics (at least once:
a pass killed between the broker's acknowledgements and its commit publishes its rows again)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

import trio
from sqlalchemy import func, insert, select

from etrans.adapters.kafka.client import KafkaProducer
from etrans.adapters.sql.outbox import OutboxRelay
from etrans.adapters.sql.outbox_store import PgOutboxStore
from tests.integration.test_outbox_relay import OUTBOX, _migrated


def _keys(bootstrap: str, topic: str, want: set[bytes], overrides: dict[str, Any]) -> set[bytes]:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"kill-{topic}",
                         "enable.auto.commit": False, **overrides})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    seen: set[bytes] = set()
    try:
        deadline = time.monotonic() + 60
        while not want <= seen and time.monotonic() < deadline:
            for message in consumer.consume(500, 0.5):
                if not message.error() and message.key() is not None:
                    seen.add(message.key())
    finally:
        consumer.close()
    return seen


def _rows(topic: str, first: int, count: int) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    rows = []
    for n in range(first, first + count):
        message_id = f"kill-{n}@example.test"
        rows.append({"topic": topic, "key": message_id, "message_id": message_id,
                     "created_at": now, "payload": json.dumps({"payload": {
                         "sender": {"email": "s@example.test"}, "recipients": ["r@example.org"],
                         "subject": "Hi", "body": "x" * 500, "message_id": message_id,
                         "attachments": [], "user_id": "7"}}).encode()})
    return rows


async def test_kill_9_at_any_point_of_the_relay_loses_nothing(
        fresh_database: Any, kafka_bootstrap: str, kafka_test_config: dict[str, Any],
        new_topic: Any) -> None:
    db = _migrated(fresh_database, "relay_kill")
    topic, events_topic = new_topic(), new_topic(prefix="events")
    url = db.engine.url.render_as_string(hide_password=False)
    chance = random.Random(17)
    total = 0
    try:
        for _ in range(5):  # rows arrive, a relay starts, is killed somewhere in its passes
            with db.engine.begin() as conn:
                conn.execute(insert(OUTBOX), _rows(topic, total, 1500))
            total += 1500
            child = subprocess.Popen(  # noqa: ASYNC220 - started and killed at once
                [sys.executable, "-m", "tests.integration.outbox_relay_child", url,
                 kafka_bootstrap, events_topic])
            await trio.sleep(chance.uniform(0.8, 2.0))
            child.kill()
            child.wait()
        with db.engine.connect() as conn:
            by_children = conn.execute(select(func.count()).select_from(OUTBOX).where(
                OUTBOX.c.published_at.is_not(None))).scalar()
        producer = KafkaProducer({"bootstrap.servers": kafka_bootstrap})
        relay = OutboxRelay(PgOutboxStore.of(db), producer, events_topic=events_topic)
        try:
            with trio.fail_after(60):
                while (await relay.relay_once())[0]:
                    pass
        finally:
            await relay.aclose()
            producer.close(1.0)
        with db.engine.connect() as conn:
            pending = conn.execute(select(func.count()).select_from(OUTBOX).where(
                OUTBOX.c.published_at.is_(None))).scalar()
    finally:
        db.dispose()
    # The kills came while the children were relaying (4,350 and 4,450 of 7,500 in two runs).
    assert by_children > 0, by_children
    assert pending == 0
    want = {f"kill-{n}@example.test".encode() for n in range(total)}
    for name in (topic, events_topic):
        seen = await trio.to_thread.run_sync(_keys, kafka_bootstrap, name, want,
                                             kafka_test_config)
        assert want <= seen, (name, len(want - seen))
