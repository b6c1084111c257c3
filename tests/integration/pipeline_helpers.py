"""Helpers shared by the pipeline integration tests and the subprocess consumer."""

from __future__ import annotations

from collections import Counter

from confluent_kafka import Consumer, Producer, TopicPartition


def produce(bootstrap: str, topic: str, count: int, partitions: int,
            value: bytes | None = None) -> dict[int, int]:
    """Produce ``count`` records round-robin over partitions; returns the end offset of each."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "log_level": 3})
    ends: Counter[int] = Counter()
    for i in range(count):
        partition = i % partitions
        producer.produce(topic, value if value is not None else b"m%d" % i, key=b"%d" % i,
                         partition=partition)
        ends[partition] += 1
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0
    return dict(ends)


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int,
                      extra: dict[str, str | int]) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "log_level": 3,
                         **extra})
    try:
        result = consumer.committed([TopicPartition(topic, p) for p in range(partitions)],
                                    timeout=15)
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in result}


def read_all(bootstrap: str, topic: str, expected: int, extra: dict[str, str | int],
             timeout: float = 30.0) -> list:
    """Read ``expected`` records of ``topic`` from the beginning (fresh group)."""
    import time
    import uuid

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "log_level": 3, **extra})
    consumer.subscribe([topic])
    records = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < expected and time.monotonic() < deadline:
            for record in consumer.consume(100, 0.5):
                if record.error() is None:
                    records.append(record)
    finally:
        consumer.close()
    return records
