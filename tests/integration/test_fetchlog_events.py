"""fetchlog publishes ``email.delivered`` / ``email.delayed`` / ``email.bounced`` for the
delivery-log documents of API emails, to the real broker, before the batch may be committed;
a replay publishes the same ids; a broker that does not answer is RetryLater (nothing
committed) and the retried batch publishes them.  MongoDB-wire server and the migrated USEND DB
as ``test_fetchlog_suppressions.py``."""

from __future__ import annotations

import trio
from sqlalchemy import text

from etrans.adapters.kafka.client import KafkaProducer
from etrans.adapters.mongo.log_writer import MongoLogWriter
from etrans.adapters.sql import Database
from etrans.adapters.sql.email_status import EmailStatusUpdater
from etrans.adapters.sql.message_owners import MessageOwnerLookup
from etrans.domain.delivery_log import EventFilter
from etrans.domain.events import EventType, decode_event, derived_event_id
from etrans.errors import RetryLater
from etrans.settings import MongoSettings
from etrans.workers.fetchlog import FetchlogTask
from tests.harness.servers import free_port
from tests.integration.test_fetchlog_suppressions import (
    HARD,
    _event,
    _insert_email,
    _messages,
    _user,
    mongo_settings,  # noqa: F401  (fixture)
    usend,  # noqa: F401  (fixture)
)
from tests.integration.test_kafka_producer import _read_all


def _task(writer: MongoLogWriter, db: Database, producer: KafkaProducer,
          topic: str) -> FetchlogTask:
    return FetchlogTask(EventFilter(), writer, EmailStatusUpdater(db),
                        owners=MessageOwnerLookup(db), events=producer, events_topic=topic)


async def test_delivery_log_events_of_api_emails_become_email_events(
        mongo_settings: MongoSettings, usend: Database, kafka_bootstrap: str,  # noqa: F811
        kafka_test_config: dict, new_topic) -> None:
    topic = new_topic(1, prefix="events")
    alice = _user()
    message_id = _insert_email(usend, alice)
    smtp_only = "smtp-only@shop.example"  # no email row: not an API email, no event
    batch = [
        _event("d1", message_id, "Ok@Mail.example", "250 2.0.0 OK", action="delivered"),
        _event("d2", message_id, "later@mail.example", "451 4.7.1 try later",
               kind="Deferred", action="deferred"),
        _event("d3", message_id, "gone@mail.example", HARD),
        _event("d4", message_id, "ok@mail.example", "queued", kind="Queue", action="queued"),
        _event("d5", smtp_only, "x@mail.example", HARD),
    ]
    writer = MongoLogWriter(mongo_settings)
    producer = KafkaProducer({"bootstrap.servers": kafka_bootstrap})
    try:
        await writer.ensure_indexes()
        task = _task(writer, usend, producer, topic)
        with trio.fail_after(30):
            await task(_messages(batch))
            # A replay (``--from-earliest``): the documents are duplicates, the events the same.
            await task(_messages(batch))
    finally:
        writer.close()
        producer.close()
    assert task.statistics().email_events == 6
    raw = await trio.to_thread.run_sync(_read_all, kafka_bootstrap, topic, 6, kafka_test_config)
    events = [decode_event(value) for value in raw]
    first, again = events[:3], events[3:]
    assert [e.id for e in again] == [e.id for e in first]
    by_type = {e.type: e for e in first}
    assert set(by_type) == {EventType.DELIVERED, EventType.DELAYED, EventType.BOUNCED}
    for event in first:
        assert event.user_id == alice
        assert event.message_id == message_id
        recipient, log_id = event.data["recipient"], event.data["log_event_id"]
        assert event.id == derived_event_id(log_id, event.type.value, recipient)
    bounced = by_type[EventType.BOUNCED].data
    assert (bounced["recipient"], bounced["bounce_class"], bounced["response"]) == (
        "gone@mail.example", "hard", HARD)
    assert by_type[EventType.DELIVERED].data["recipient"] == "ok@mail.example"
    assert by_type[EventType.DELAYED].data["response"] == "451 4.7.1 try later"


async def test_a_broker_that_does_not_answer_is_retry_later_then_published(
        mongo_settings: MongoSettings, usend: Database, kafka_bootstrap: str,  # noqa: F811
        kafka_test_config: dict, new_topic) -> None:
    topic = new_topic(1, prefix="events")
    alice = _user()
    message_id = _insert_email(usend, alice)
    batch = _messages([_event("o1", message_id, "ok@mail.example", "250 OK",
                              action="delivered")])
    writer = MongoLogWriter(mongo_settings)
    down = KafkaProducer({"bootstrap.servers": f"127.0.0.1:{free_port()}",
                          "message.timeout.ms": 1500})
    up = KafkaProducer({"bootstrap.servers": kafka_bootstrap})
    try:
        await writer.ensure_indexes()
        failing = _task(writer, usend, down, topic)
        with trio.fail_after(30):
            # The pipeline commits nothing past a batch that raised: it retries it.
            try:
                await failing(batch)
            except RetryLater:
                pass
            else:
                raise AssertionError("a broker outage must be RetryLater")
        assert failing.statistics().batches == 0
        retried = _task(writer, usend, up, topic)
        with trio.fail_after(30):
            await retried(batch)
    finally:
        writer.close()
        down.close(timeout=0.1)
        up.close()
    assert (retried.statistics().duplicates, retried.statistics().email_events) == (1, 1)
    raw = await trio.to_thread.run_sync(_read_all, kafka_bootstrap, topic, 1, kafka_test_config)
    [event] = [decode_event(value) for value in raw]
    assert (event.type, event.message_id) == (EventType.DELIVERED, message_id)
    with usend.engine.connect() as conn:
        status = conn.execute(text("SELECT status FROM email_messages WHERE message_id = :m"),
                              {"m": message_id}).scalar_one()
    assert status == "delivered"
