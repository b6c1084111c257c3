"""Big emails end to end: the producer takes the record of any email the API accepts
(KAFKA_MAX_RECORD_BYTES, applied as librdkafka's message.max.bytes), and an email whose record
could not fit is refused with 400 before anything is stored.  Real PostgreSQL, Redis, MongoDB and
the Kafka-API broker."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import trio
from sqlalchemy import func, select

from etrans.adapters.sql.usend import EmailMessage, EmailOutbox
from tests.e2e.send_support import read_topic
from tests.integration.sending_api import SendingApi, email, open_sending_api

EMAILS = EmailMessage.__table__
OUTBOX = EmailOutbox.__table__


@pytest.fixture
def own_usend(fresh_database: Any) -> str:
    """A USEND DB of the test's own: the relay's passes see only the test's rows."""
    from etrans.adapters.sql import migrations

    url = fresh_database("outbox")
    migrations.upgrade(url)
    return url


def _rows_of(api: SendingApi, user: int) -> int:
    with api.usend.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(EMAILS)
                                .where(EMAILS.c.user_id == user)).scalar())


def _attachment(size: int) -> dict[str, str]:
    return {"filename": "big.bin", "content": base64.b64encode(b"\x01" * size).decode(),
            "content_type": "application/octet-stream"}


async def test_an_email_over_librdkafkas_default_limit_is_published(
        etrans_env: Any, billing_db: Any, kafka_test_config: dict[str, Any],
        own_usend: str) -> None:
    # 1.1 MB of attachment: a 1.5 MB record, over librdkafka's default message.max.bytes
    # (1,000,000), which refused it at once and left the email Queued forever.
    async with open_sending_api(etrans_env, billing_db, with_relay=True,
                                USEND_DB_URI=own_usend) as api:
        user, _, domain = api.sender()
        status, sent = await api.call("POST", "/emails", api.bearer(user),
                                      json=email(domain, attachments=[_attachment(1_100_000)]))
        assert status == 200, sent
        assert await api.relay.relay_once() == (1, 0), api.relay.stats
        records = await trio.to_thread.run_sync(
            lambda: read_topic(api.env["KAFKA_BOOTSTRAP_SERVERS"], api.env["KAFKA_TOPIC"], want=1,
                               overrides=kafka_test_config))
        assert [r["value"]["payload"]["message_id"] for r in records] == [sent["id"]]


async def test_an_email_whose_record_cannot_fit_is_refused_before_it_is_stored(
        etrans_env: Any, billing_db: Any) -> None:
    limit = 65536
    async with open_sending_api(etrans_env, billing_db, KAFKA_MAX_RECORD_BYTES=str(limit)) as api:
        user, _, domain = api.sender(daily=1000, hourly=1000)
        # 48 KiB of attachment: 64 KiB of base64, plus the rest of the record: over the limit.
        status, answer = await api.call("POST", "/emails", api.bearer(user),
                                        json=email(domain, attachments=[_attachment(49152)]))
        assert status == 400, answer
        assert "too large to queue" in answer["detail"]
        assert str(limit) in answer["detail"]
        assert _rows_of(api, user) == 0

        # The check is on the record itself, not an estimate: 40,000 characters of text-only
        # body are carried twice (as HTML `body` and as `text`), 40,000 of HTML once.
        body = "x" * 40_000
        status, answer = await api.call("POST", "/emails", api.bearer(user),
                                        json=email(domain, html=None, text=body))
        assert status == 400, answer
        status, sent = await api.call("POST", "/emails", api.bearer(user),
                                      json=email(domain, html=body))
        assert status == 200, sent
        with api.usend.engine.connect() as conn:
            payload = conn.execute(select(OUTBOX.c.payload, OUTBOX.c.key)
                                   .where(OUTBOX.c.message_id == sent["id"])).one()
        assert len(payload.payload) + len(payload.key) <= limit
        assert json.loads(payload.payload)["payload"]["body"] == body

        # In a batch, only the item that cannot fit is refused.
        status, batch = await api.call("POST", "/emails/batch", api.bearer(user), json={
            "emails": [email(domain, attachments=[_attachment(49152)]), email(domain)]})
        assert status == 200, batch
        assert [e["index"] for e in batch["errors"]] == [0]
        assert "too large to queue" in batch["errors"][0]["error"]
        assert len(batch["data"]) == 1
        assert _rows_of(api, user) == 2


def test_the_record_limit_sets_the_producers_message_max_bytes() -> None:
    from etrans.errors import ConfigError
    from etrans.settings import DEFAULT_MAX_RECORD_BYTES, KafkaSettings, read_section
    from etrans.settings.reader import read_kafka

    def load(env: dict[str, str]) -> KafkaSettings:
        return read_section(env, lambda r: read_kafka(r, consumer_of=None))

    base = {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"}
    kafka = load(base)
    assert kafka is not None
    assert kafka.max_record_bytes == DEFAULT_MAX_RECORD_BYTES == 36_001_112
    assert kafka.librdkafka("producer")["message.max.bytes"] == DEFAULT_MAX_RECORD_BYTES + 1024
    assert "message.max.bytes" not in kafka.librdkafka("consumer")
    kafka = load({**base, "KAFKA_MAX_RECORD_BYTES": "2000000"})
    assert kafka is not None
    assert kafka.librdkafka("producer")["message.max.bytes"] == 2_001_024
    with pytest.raises(ConfigError, match="KAFKA_CONF_MESSAGE_MAX_BYTES"):
        load({**base, "KAFKA_CONF_MESSAGE_MAX_BYTES": "1000000"})
    with pytest.raises(ConfigError, match="KAFKA_MAX_RECORD_BYTES must be at least"):
        load({**base, "KAFKA_MAX_RECORD_BYTES": "10"})


async def test_an_email_kafka_refuses_fails_with_its_reason_and_reject_events(
        etrans_env: Any, billing_db: Any, kafka_test_config: dict[str, Any],
        own_usend: str) -> None:
    """A record the producer refuses at once (here: a producer whose message.max.bytes is
    smaller than the API's limit, as after lowering it by hand) fails its email in the first
    pass: GET /emails/{id} shows Failed and why, and one Reject event per recipient is queued
    for LOG_TOPIC in the format sendmail uses.  It is never tried again."""
    from etrans.adapters.kafka.client import KafkaProducer
    from etrans.adapters.sql.outbox_store import PgOutboxStore
    from etrans.app.sendmail import reject_event_id
    from etrans.bootstrap.api import outbox_relay

    async with open_sending_api(etrans_env, billing_db, USEND_DB_URI=own_usend) as api:
        producer = KafkaProducer.from_settings(api.settings.kafka, **{"message.max.bytes": 20000})
        relay = outbox_relay(api.settings.kafka, api.settings.outbox, PgOutboxStore.of(api.usend),
                             producer)
        try:
            user, _, domain = api.sender()
            status, sent = await api.call("POST", "/emails", api.bearer(user), json=email(
                domain, to=["One <one@example.org>"], cc=["two@example.org"],
                attachments=[_attachment(30000)]))
            assert status == 200, sent
            status, small = await api.call("POST", "/emails", api.bearer(user), json=email(domain))
            assert status == 200, small
            assert await relay.relay_once() == (1, 1)
            assert relay.stats.given_up == 1

            status, got = await api.call("GET", f"/emails/{sent['id']}", api.bearer(user))
            assert status == 200, got
            assert got["status"] == "Failed"
            assert "MSG_SIZE_TOO_LARGE" in got["failure_reason"]
            assert got["failure_reason"].startswith("etrans: not queued for delivery: the Kafka "
                                                    "producer refused the record")
            status, other = await api.call("GET", f"/emails/{small['id']}", api.bearer(user))
            assert (other["status"], other["failure_reason"]) == ("Queued", None)
            status, listed = await api.call("GET", "/emails?status=failed", api.bearer(user))
            assert [e["id"] for e in listed["data"]] == [sent["id"]]

            # The next pass publishes the two Reject events and the email.failed event
            # (KAFKA_EVENTS_TOPIC), and never the failed row again.
            assert await relay.relay_once() == (3, 0)
            assert await relay.relay_once() == (0, 0)
            records = await trio.to_thread.run_sync(
                lambda: read_topic(api.env["KAFKA_BOOTSTRAP_SERVERS"], api.env["LOG_TOPIC"], want=2,
                                   overrides=kafka_test_config))
            events = [r["value"] for r in records]
            assert [e["recipient"] for e in events] == ["one@example.org", "two@example.org"]
            for record, event in zip(records, events, strict=True):
                assert record["key"] == sent["id"].encode()
                assert event["Event"] == "Reject"
                assert event["SMTP_Action"] == "rejected"
                assert event["message_id"] == sent["id"]
                assert event["from"] == f"hello@{domain}"
                assert event["Event_ID"] == reject_event_id(sent["id"], event["recipient"])
                assert event["response"].startswith("554 5.3.4 etrans: not queued for delivery")
                assert event["agent"]["type"] == "etrans-outbox"
            assert events[0]["to_name"] == "One"
            with api.usend.engine.connect() as conn:
                row = conn.execute(select(OUTBOX.c.failed_at, OUTBOX.c.published_at)
                                   .where(OUTBOX.c.message_id == sent["id"])).one()
            assert row.failed_at is not None
            assert row.published_at is None
        finally:
            await relay.aclose()
            producer.close(1.0)


async def test_the_largest_record_goes_through_the_producer_and_the_sendmail_consumer(
        kafka_bootstrap: str, kafka_test_config: dict[str, Any], new_topic: Any) -> None:
    """A record of exactly KAFKA_MAX_RECORD_BYTES (36 MB) is taken by etrans's producer and
    read by the sendmail pipeline's consumer configuration as it is (librdkafka's consumer
    defaults need no change at this size; docs/configuration.md)."""
    from confluent_kafka import Consumer

    from etrans.adapters.kafka.client import KafkaProducer
    from etrans.pipeline.config import PipelineConfig
    from etrans.settings import KafkaSettings

    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    topic = new_topic(prefix="largest")
    key = b"msg_largest@example.test"
    value = b"x" * (settings.max_record_bytes - len(key))
    producer = KafkaProducer.from_settings(settings)
    try:
        with trio.fail_after(60):
            assert await producer.publish_many([(topic, value, key)]) == [None]
    finally:
        producer.close(5.0)
    config = PipelineConfig(topics=(topic,), group_id=f"{topic}-g",
                            kafka={**settings.librdkafka("consumer"), **kafka_test_config},
                            auto_offset_reset="earliest").consumer_config()

    def consume() -> tuple[bytes | None, int]:
        consumer = Consumer(config)
        consumer.subscribe([topic])
        try:
            for _ in range(60):
                message = consumer.poll(1.0)
                if message is not None and message.error() is None:
                    return message.key(), len(message.value() or b"")
        finally:
            consumer.close()
        return None, 0

    assert await trio.to_thread.run_sync(consume) == (key, len(value))
