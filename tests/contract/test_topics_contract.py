"""Topics: Kafka (``KafkaProducer`` + the pipeline's confluent-kafka consumer thread) and the
in-process topics of ``etrans dev`` (``LocalPublisher`` + ``LocalTopics.source()``) carry records
alike, as the pipeline (:mod:`etrans.pipeline`) sees them.

What the workers rely on: a published record (key, value - None too -, headers) is delivered to
a new consumer group from the start, once, with consecutive offsets per partition; all records of
a key go to one partition in publishing order; offsets are committed only for what completed, so
a restarted consumer of the same group is handed again what was not (at-least-once), starting
with the oldest record that was not finished.
"""

from __future__ import annotations

from typing import Any

import trio

from etrans.pipeline import Message, Pipeline
from etrans.runtime import Shutdown
from tests.harness.servers import unique_name


async def _consume(topics: Any, topic: str, group_id: str, **fields: Any
                   ) -> tuple[list[Message], Any]:
    seen: list[Message] = []

    async def record(message: Message) -> None:
        seen.append(message)

    config = topics.config(topic, group_id, stop_at_end=True, commit_interval=0.1, **fields)
    with trio.fail_after(30):
        stats = await Pipeline(config, record, source=topics.source).run(Shutdown(5.0))
    return seen, stats


async def test_records_arrive_once_per_group_in_order_per_key(topics: Any) -> None:
    topic = topics.new_topic(partitions=3)
    keys = [f"key-{n}".encode() for n in range(7)]

    async def publish(key: bytes) -> None:
        for i in range(8):  # one after the other: publishing order is the key's order
            await topics.publisher.publish(topic, b"%s/%d" % (key, i), key=key, headers=[
                ("n", str(i).encode()), ("key", key), ("dup", "é"), ("dup", b"2")])

    async with trio.open_nursery() as nursery:
        for key in keys:
            nursery.start_soon(publish, key)
    await topics.publisher.publish(topic, None, key=b"tombstone")
    await topics.publisher.publish(topic, b"", key=b"empty", headers={"kind": "empty"})
    seen, stats = await _consume(topics, topic, unique_name("group"))

    assert len(seen) == 58
    assert stats.processed == 58
    by_partition: dict[int, list[Message]] = {}
    for message in sorted(seen, key=lambda m: (m.partition, m.offset)):
        by_partition.setdefault(message.partition, []).append(message)
    for partition, messages in by_partition.items():
        assert [m.offset for m in messages] == list(range(len(messages))), partition
    assert stats.committed == {(topic, p): len(ms) for p, ms in by_partition.items()}
    for key in keys:
        mine = [m for m in sorted(seen, key=lambda m: (m.partition, m.offset)) if m.key == key]
        assert len({m.partition for m in mine}) == 1
        assert [m.value for m in mine] == [b"%s/%d" % (key, i) for i in range(8)]
        assert [m.header("n") for m in mine] == [str(i).encode() for i in range(8)]
        assert {m.header("key") for m in mine} == {key}
        assert {m.headers[2:] for m in mine} == {(("dup", "é".encode()), ("dup", b"2"))}
    [tombstone] = [m for m in seen if m.key == b"tombstone"]
    assert (tombstone.value, tombstone.headers) == (None, ())
    [empty] = [m for m in seen if m.key == b"empty"]
    assert (empty.value, empty.headers) == (b"", (("kind", b"empty"),))
    assert all(m.topic == topic and (m.timestamp_ms or 0) > 0 for m in seen)


async def test_what_was_not_committed_is_delivered_again_after_a_restart(topics: Any) -> None:
    topic, group = topics.new_topic(partitions=1), unique_name("group")
    for i in range(10):
        await topics.publisher.publish(topic, f"{i}".encode())  # no key: run concurrently
    started, others_done = trio.Event(), trio.Event()
    finished: list[bytes | None] = []

    async def stuck_on_5(message: Message) -> None:
        if message.value == b"5":
            started.set()
            await trio.sleep_forever()  # never completes: cancelled at the drain deadline
        finished.append(message.value)
        if len(finished) == 9:
            others_done.set()

    shutdown = Shutdown(0.3)
    config = topics.config(topic, group, commit_interval=0.05, workers=4)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            pipeline = Pipeline(config, stuck_on_5, source=topics.source)
            nursery.start_soon(pipeline.run, shutdown)
            await started.wait()
            await others_done.wait()  # the others finish; their commit stops at 5
            shutdown.request()
            # The drain deadline (what runtime.supervise does): the stuck task is cancelled.
            nursery.cancel_scope.deadline = trio.current_time() + shutdown.drain_seconds
    assert pipeline.statistics().committed == {(topic, 0): 5}

    seen, stats = await _consume(topics, topic, group, workers=1)
    assert [m.value for m in seen] == [f"{i}".encode() for i in range(5, 10)]
    assert seen[0].offset == 5
    assert stats.committed == {(topic, 0): 10}


async def test_publish_many_answers_each_record_and_keeps_their_order(topics: Any) -> None:
    # The tracking endpoints' events are produced so (etrans.app.tracking_hits).
    topic = topics.new_topic(partitions=1)
    records = [(topic, b"event-%d" % i, b"msg-1") for i in range(5)]
    assert list(await topics.publisher.publish_many(records)) == [None] * 5
    seen, _ = await _consume(topics, topic, unique_name("group"))
    in_offset_order = sorted(seen, key=lambda m: m.offset)  # the workers finish in any order
    assert [(m.key, m.value) for m in in_offset_order] == [(b"msg-1", b"event-%d" % i)
                                                           for i in range(5)]
