"""KafkaProducer.publish_many against the real broker: one refused record fails alone."""

from __future__ import annotations

import trio
from confluent_kafka import Consumer

from etrans.adapters.kafka_client import KafkaProducer


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
    values = await trio.to_thread.run_sync(_read_all, kafka_bootstrap, topic, 2,
                                           kafka_test_config)
    assert values == [b"first", b"second"]
