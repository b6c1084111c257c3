"""The outbox relay's email events against real PostgreSQL and the Kafka-API broker: each send
request it publishes goes with its ``email.queued`` (the request's from, to, cc, bcc, subject,
tags; id derived from the message id), a row it fails for good queues its ``email.failed``,
published by the next pass."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import trio
from sqlalchemy import insert

from etrans.adapters.kafka.client import KafkaProducer
from etrans.adapters.sql.outbox import OutboxRelay
from etrans.adapters.sql.outbox_store import PgOutboxStore
from etrans.adapters.sql.usend import EmailMessage
from etrans.domain.events import EventType, decode_event, derived_event_id
from tests.harness.servers import create_topic, unique_name
from tests.integration.test_outbox_relay import (
    OUTBOX,
    _migrated,
    _raw_records,
    _ValidatingTansu,
)


def _request(message_id: str, topic: str) -> dict[str, Any]:
    return {"topic": topic, "key": message_id, "message_id": message_id,
            "created_at": datetime.now(UTC), "payload": json.dumps({"payload": {
                "sender": {"name": "S", "email": "s@example.test"},
                "recipients": ["r@example.org"], "cc": ["c@example.org"],
                "bcc": ["b@example.org"], "subject": "Hi", "body": "<p>Hi</p>",
                "message_id": message_id, "attachments": [], "user_id": "7",
                "tags": [{"name": "kind", "value": "welcome"}]}}).encode()}


def _insert_email(db: Any, message_id: str) -> None:
    with db.engine.begin() as conn:
        conn.execute(insert(EmailMessage.__table__).values(
            message_id=message_id, user_id=7, from_address="S <s@example.test>",
            to_addresses=["r@example.org"], subject="Hi", html="<p>Hi</p>",
            created_at=datetime.now(UTC)))


async def test_each_published_send_request_goes_with_its_email_queued_event(
        fresh_database: Any, kafka_bootstrap: str, kafka_test_config: dict[str, Any],
        new_topic: Any) -> None:
    db = _migrated(fresh_database, "relay_events")
    topic, events_topic = new_topic(), new_topic(prefix="events")
    message_id = "msg_queued@example.test"
    _insert_email(db, message_id)
    with db.engine.begin() as conn:
        conn.execute(insert(OUTBOX), [_request(message_id, topic)])
        # Not a send request (no message_id: a Reject or billing record): no event.
        conn.execute(insert(OUTBOX).values(topic=topic, key="other", payload=b"{}",
                                           created_at=datetime.now(UTC)))
    producer = KafkaProducer({"bootstrap.servers": kafka_bootstrap})
    relay = OutboxRelay(PgOutboxStore.of(db), producer, events_topic=events_topic)
    try:
        with trio.fail_after(30):
            assert await relay.relay_once() == (2, 0)
        records = await trio.to_thread.run_sync(
            _raw_records, kafka_bootstrap, events_topic, 1, kafka_test_config)
    finally:
        await relay.aclose()
        producer.close(1.0)
        db.dispose()
    [(key, value)] = records
    event = decode_event(value)
    assert key == message_id.encode()
    assert event.type is EventType.QUEUED
    assert event.id == derived_event_id(message_id, "email.queued")
    assert event.user_id == 7
    assert event.data == {"message_id": message_id, "from": "s@example.test",
                          "to": ["r@example.org"], "cc": ["c@example.org"],
                          "bcc": ["b@example.org"], "subject": "Hi",
                          "tags": [{"name": "kind", "value": "welcome"}]}


async def test_a_row_failed_for_good_queues_its_email_failed_event(
        fresh_database: Any, kafka_test_config: dict[str, Any]) -> None:
    db = _migrated(fresh_database, "relay_failed_event")
    broker = _ValidatingTansu().start()
    try:
        create_topic(broker.bootstrap, "strict")
        events_topic = create_topic(broker.bootstrap, unique_name("events"))
        message_id = "msg_failed@example.test"
        _insert_email(db, message_id)
        with db.engine.begin() as conn:
            conn.execute(insert(OUTBOX), [_request(message_id, "strict")])
        # Not idempotent: tansu fences an idempotent producer after it refused a batch.
        producer = KafkaProducer({"bootstrap.servers": broker.bootstrap,
                                  "enable.idempotence": False})
        relay = OutboxRelay(PgOutboxStore.of(db), producer, max_attempts=1,
                            events_topic=events_topic)
        try:
            with trio.fail_after(60):
                assert await relay.relay_once() == (0, 1)
                assert relay.stats.given_up == 1
                # The event row is published by the next pass.
                assert await relay.relay_once() == (1, 0)
            records = await trio.to_thread.run_sync(
                _raw_records, broker.bootstrap, events_topic, 1, kafka_test_config)
        finally:
            await relay.aclose()
            producer.close(1.0)
    finally:
        broker.cleanup()
        db.dispose()
    [(key, value)] = records
    event = decode_event(value)
    assert key == message_id.encode()
    assert (event.type, event.user_id) == (EventType.FAILED, 7)
    assert event.id == derived_event_id(message_id, "email.failed")
    assert event.data["response"].startswith(
        "554 5.3.4 etrans: not queued for delivery: the Kafka broker refused the record 1 times")


class _CountingProducer(KafkaProducer):
    waits = 0

    async def publish_many(self, *args: Any, **kwargs: Any) -> Any:
        self.waits += 1
        return await super().publish_many(*args, **kwargs)

    async def publish_chained(self, *args: Any, **kwargs: Any) -> Any:
        self.waits += 1
        return await super().publish_chained(*args, **kwargs)


async def test_a_pass_waits_once_for_the_requests_and_their_events(
        fresh_database: Any, kafka_bootstrap: str, kafka_test_config: dict[str, Any],
        new_topic: Any) -> None:
    """Each email.queued event is produced as soon as its request is acknowledged, in the same
    wait (under load each wait of the relay is a scheduling delay: docs/performance.md)."""
    db = _migrated(fresh_database, "relay_one_wait")
    topic, events_topic = new_topic(), new_topic(prefix="events")
    for n in range(3):
        _insert_email(db, f"msg_{n}@example.test")
    with db.engine.begin() as conn:
        conn.execute(insert(OUTBOX), [_request(f"msg_{n}@example.test", topic) for n in range(3)])
    producer = _CountingProducer({"bootstrap.servers": kafka_bootstrap})
    relay = OutboxRelay(PgOutboxStore.of(db), producer, events_topic=events_topic)
    try:
        with trio.fail_after(30):
            assert await relay.relay_once() == (3, 0)
        assert producer.waits == 1
        records = await trio.to_thread.run_sync(
            _raw_records, kafka_bootstrap, events_topic, 3, kafka_test_config)
    finally:
        await relay.aclose()
        producer.close(1.0)
        db.dispose()
    assert sorted(key for key, _ in records) == [f"msg_{n}@example.test".encode()
                                                for n in range(3)]
    assert {decode_event(value).type for _, value in records} == {EventType.QUEUED}
