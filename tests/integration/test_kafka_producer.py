"""KafkaProducer.publish_many against the real broker: one refused record fails alone."""

from __future__ import annotations

import trio
from confluent_kafka import Consumer

from etrans.adapters.kafka.client import KafkaProducer, PublishFailure


def _read_all(bootstrap: str, topic: str, expected: int, config: dict) -> list[bytes]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{topic}",
                         "auto.offset.reset": "earliest", **config})
    consumer.subscribe([topic])
    values: list[bytes] = []
    try:
        for _ in range(300):
            message = consumer.poll(0.1)
            if message is not None and message.error() is None:
                values.append(message.value())
            if len(values) >= expected:
                break
    finally:
        consumer.close()
    return values


async def test_publish_many_isolates_a_record_refused_at_once(
        kafka_bootstrap: str, kafka_test_config: dict, new_topic) -> None:
    topic = new_topic(1, prefix="producer")
    producer = KafkaProducer({"bootstrap.servers": kafka_bootstrap})
    try:
        records = [(topic, b"first", None),
                   ("not a valid topic name!", b"refused", None),  # librdkafka refuses it
                   (topic, b"second", b"k")]
        with trio.fail_after(30):
            errors = await producer.publish_many(records)
    finally:
        producer.close()
    assert errors[0] is None
    assert errors[2] is None
    assert errors[1] is not None
    # The broker answers TOPIC_EXCEPTION: a topic problem (configuration), not the record's.
    assert errors[1].kind == "unreachable", errors[1]
    values = await trio.to_thread.run_sync(_read_all, kafka_bootstrap, topic, 2,
                                           kafka_test_config)
    assert values == [b"first", b"second"]


def test_delivery_errors_are_classified_by_whose_fault_they_are() -> None:
    """What the outbox does with a failed record depends on it: ``unreachable`` never fails a
    row, ``answered`` fails it after ETRANS_OUTBOX_MAX_ATTEMPTS."""
    from confluent_kafka import KafkaError

    def kind(code: int) -> str:
        return PublishFailure.of_delivery_error(KafkaError(code)).kind

    for code in (KafkaError._MSG_TIMED_OUT, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN,
                 KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC,
                 KafkaError.TOPIC_EXCEPTION, KafkaError.TOPIC_AUTHORIZATION_FAILED,
                 KafkaError.NOT_ENOUGH_REPLICAS, KafkaError.NOT_LEADER_FOR_PARTITION,
                 KafkaError.REQUEST_TIMED_OUT):
        assert kind(code) == "unreachable", KafkaError(code).name()
    for code in (KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_RECORD,
                 KafkaError.INVALID_MSG):
        assert kind(code) == "answered", KafkaError(code).name()


def test_what_produce_raises_is_refused_unless_the_topic_is_unknown() -> None:
    """produce() raises _UNKNOWN_TOPIC at once when the cluster has no such topic (auto-create
    off): a misconfigured KAFKA_TOPIC, which must leave emails pending, not fail them all."""
    from confluent_kafka import KafkaError, KafkaException

    def kind(code: int) -> str:
        return PublishFailure.of_produce_error(KafkaException(KafkaError(code))).kind

    assert kind(KafkaError.MSG_SIZE_TOO_LARGE) == "refused"
    assert kind(KafkaError._INVALID_ARG) == "refused"
    assert kind(KafkaError._UNKNOWN_TOPIC) == "unreachable"
    assert kind(KafkaError._UNKNOWN_PARTITION) == "unreachable"
    assert PublishFailure.of_produce_error(TypeError("bad value")).kind == "refused"


async def test_publish_chained_produces_a_follow_up_only_once_its_record_is_acknowledged(
        kafka_bootstrap: str, kafka_test_config: dict, new_topic) -> None:
    """The outbox relay's send requests and their email.queued events in one wait: a record
    refused at once, or by the broker, never gets its follow-up produced."""
    topic, events = new_topic(1, prefix="chained"), new_topic(1, prefix="chained-events")
    producer = KafkaProducer({"bootstrap.servers": kafka_bootstrap, "message.max.bytes": 10_000})
    try:
        records = [(topic, b"r1", None), (topic, b"x" * 20_000, None),  # refused at once
                   ("not a valid topic name!", b"r3", None),  # refused by the broker
                   (topic, b"r4", b"k"), (topic, b"r5", None)]
        then = [(events, b"e1", b"k1"), (events, b"e2", None), (events, b"e3", None),
                (events, b"e4", None), None]
        with trio.fail_after(30):
            errors, then_errors = await producer.publish_chained(
                records, then, headers=[[("traceparent", "t1")], None, None, None, None])
    finally:
        producer.close()
    assert [e is None for e in errors] == [True, False, False, True, True]
    assert errors[1] is not None
    assert errors[1].kind == "refused"
    assert then_errors == [None] * 5
    values = await trio.to_thread.run_sync(_read_all, kafka_bootstrap, events, 2,
                                           kafka_test_config)
    assert sorted(values) == [b"e1", b"e4"]
    assert await trio.to_thread.run_sync(_read_all, kafka_bootstrap, topic, 3,
                                         kafka_test_config) == [b"r1", b"r4", b"r5"]
