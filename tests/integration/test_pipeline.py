"""The consumer pipeline against a real Kafka-API broker (tansu): nothing is lost.

In-process tests; the crash/restart tests (kill -9, SIGTERM) are in test_pipeline_restart.py.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
import trio

from etrans.errors import PoisonMessage, RetryLater
from etrans.pipeline import Message, Pipeline, PipelineConfig, RetryPolicy
from etrans.pipeline.dead_letter import ERROR_HEADER, SOURCE_HEADER
from etrans.runtime import Shutdown
from tests.harness.servers import unique_name
from tests.integration.pipeline_helpers import committed_offsets, produce, read_all


def config(bootstrap: str, topic: str, extra: dict[str, Any], **fields: Any) -> PipelineConfig:
    kafka = {"bootstrap.servers": bootstrap, "log_level": 3, **extra}
    kafka.update(fields.pop("kafka", {}))
    return PipelineConfig(topics=(topic,), group_id=unique_name("pipeline-group"), kafka=kafka,
                          **fields)


async def test_ten_thousand_messages_over_three_partitions(
    kafka_bootstrap: str, kafka_test_config: dict[str, Any], new_topic: Any
) -> None:
    topic = new_topic(partitions=3, prefix="pipeline-10k")
    ends = produce(kafka_bootstrap, topic, 10_000, 3)
    seen: Counter[tuple[int, int]] = Counter()
    active = 0
    max_active = 0

    async def task(message: Message) -> None:
        nonlocal active, max_active
        active += 1
        max_active = max(max_active, active)
        try:
            if random.random() < 0.05:
                await trio.sleep(random.random() * 0.02)
            else:
                await trio.lowlevel.checkpoint()
            seen[(message.partition, message.offset)] += 1
        finally:
            active -= 1

    cfg = config(kafka_bootstrap, topic, kafka_test_config, workers=10, stop_at_end=True,
                 commit_interval=0.5)
    with trio.fail_after(120):
        stats = await Pipeline(cfg, task).run(Shutdown(drain_seconds=10))

    expected = {(p, o) for p, end in ends.items() for o in range(end)}
    assert set(seen) == expected
    assert all(count == 1 for count in seen.values())
    assert stats.processed == 10_000
    assert max_active > 1  # the ten workers did overlap
    assert stats.committed == {(topic, p): end for p, end in ends.items()}
    assert committed_offsets(kafka_bootstrap, cfg.group_id, topic, 3, kafka_test_config) == ends


async def test_poison_message_is_dead_lettered_and_does_not_stop_the_good_ones(
    kafka_bootstrap: str, kafka_test_config: dict[str, Any], new_topic: Any
) -> None:
    topic = new_topic(partitions=1, prefix="pipeline-poison")
    dead_letters = new_topic(partitions=1, prefix="pipeline-dlq")
    produce(kafka_bootstrap, topic, 5, 1)
    produce(kafka_bootstrap, topic, 1, 1, value=b"not json {")
    produce(kafka_bootstrap, topic, 5, 1)
    good: list[int] = []

    async def task(message: Message) -> None:
        if message.value == b"not json {":
            raise PoisonMessage("cannot decode payload")
        good.append(message.offset)

    cfg = config(kafka_bootstrap, topic, kafka_test_config, stop_at_end=True,
                 dead_letter_topic=dead_letters)
    with trio.fail_after(60):
        stats = await Pipeline(cfg, task).run(Shutdown(drain_seconds=10))

    assert sorted(good) == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10]
    assert stats.poisoned == 1
    assert stats.dead_lettered == 1
    assert stats.committed == {(topic, 0): 11}
    [record] = read_all(kafka_bootstrap, dead_letters, 1, kafka_test_config)
    headers = dict(record.headers())
    assert record.value() == b"not json {"
    assert headers[ERROR_HEADER] == b"cannot decode payload"
    assert headers[SOURCE_HEADER] == f"{topic}/0/5".encode()


async def test_retry_later_succeeds_on_the_third_attempt_and_blocks_the_commit_until_then(
    kafka_bootstrap: str, kafka_test_config: dict[str, Any], new_topic: Any
) -> None:
    topic = new_topic(partitions=1, prefix="pipeline-retry")
    produce(kafka_bootstrap, topic, 20, 1)
    attempts: Counter[int] = Counter()
    committed_while_failing: list[int | None] = []
    pipeline: Pipeline | None = None

    async def task(message: Message) -> None:
        attempts[message.offset] += 1
        if message.offset == 3 and attempts[3] < 3:
            assert pipeline is not None
            committed_while_failing.append(pipeline.statistics().committed.get((topic, 0)))
            raise RetryLater("mongodb is down")

    cfg = config(kafka_bootstrap, topic, kafka_test_config, stop_at_end=True,
                 commit_interval=0.1,
                 retry=RetryPolicy(initial_backoff=0.4, max_backoff=1.0))
    pipeline = Pipeline(cfg, task)
    with trio.fail_after(60):
        stats = await pipeline.run(Shutdown(drain_seconds=10))

    assert attempts[3] == 3
    assert all(attempts[o] == 1 for o in range(20) if o != 3)
    assert stats.failed == 2
    assert stats.processed == 20
    # While offset 3 was failing, nothing at or past it was committed (later ones were done).
    assert all(c is None or c <= 3 for c in committed_while_failing)
    assert stats.committed == {(topic, 0): 20}


async def test_transient_failures_become_poison_after_max_attempts(
    kafka_bootstrap: str, kafka_test_config: dict[str, Any], new_topic: Any
) -> None:
    topic = new_topic(partitions=1, prefix="pipeline-maxattempts")
    produce(kafka_bootstrap, topic, 3, 1)

    async def task(message: Message) -> None:
        if message.offset == 1:
            await trio.sleep(5)  # longer than message_timeout: a transient failure each time

    cfg = config(kafka_bootstrap, topic, kafka_test_config, stop_at_end=True,
                 message_timeout=0.2,
                 retry=RetryPolicy(initial_backoff=0.05, max_attempts=3))
    with trio.fail_after(60):
        stats = await Pipeline(cfg, task).run(Shutdown(drain_seconds=10))
    assert stats.failed == 3
    assert stats.poisoned == 1
    assert stats.processed == 2
    assert stats.committed == {(topic, 0): 3}


async def test_stalled_workers_are_not_evicted(
    kafka_bootstrap: str, kafka_test_config: dict[str, Any], new_topic: Any
) -> None:
    """All workers stall for longer than max.poll.interval.ms: the consumer thread keeps polling
    (partitions paused), so there is no eviction and no rebalance, and nothing is lost."""
    topic = new_topic(partitions=2, prefix="pipeline-stall")
    ends = produce(kafka_bootstrap, topic, 600, 2)
    seen: Counter[tuple[int, int]] = Counter()
    stalled = 0

    async def task(message: Message) -> None:
        nonlocal stalled
        if stalled < 4:
            stalled += 1
            await trio.sleep(9)  # > max.poll.interval.ms (6 s) + a session timeout
        seen[(message.partition, message.offset)] += 1

    cfg = config(kafka_bootstrap, topic, kafka_test_config, workers=4, channel_size=50,
                 poll_batch=20, stop_at_end=True,
                 kafka={"max.poll.interval.ms": 6000})
    pipeline = Pipeline(cfg, task)
    paused_seen = False
    max_in_flight = 0
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            await nursery.start(pipeline.run, Shutdown(drain_seconds=10))
            await pipeline.wait_assigned()
            for _ in range(80):
                await trio.sleep(0.1)
                sample = pipeline.statistics()
                paused_seen = paused_seen or sample.paused
                max_in_flight = max(max_in_flight, sample.in_flight)
    stats = pipeline.statistics()
    assert paused_seen  # the channel filled up and the partitions were paused
    assert 0 < max_in_flight <= 50  # held in memory while paused: bounded by channel_size
    assert stats.rebalances == 1  # the first assignment only: never evicted, never reassigned
    assert set(seen) == {(p, o) for p, end in ends.items() for o in range(end)}
    assert all(count == 1 for count in seen.values())
    assert stats.committed == {(topic, p): end for p, end in ends.items()}


async def test_messages_in_memory_stay_bounded_while_a_task_is_stuck_past_its_timeout(
    kafka_bootstrap: str, kafka_test_config: dict[str, Any], new_topic: Any
) -> None:
    """A task that ignores its timeout (shielded) keeps its message in flight and its worker
    busy: the other workers go on, the commit of its partition stays behind it, and the messages
    held in memory (channel + inbox + in flight, and what the consumer thread holds back) stay
    within channel_size - with a poll batch larger than the channel."""
    topic = new_topic(partitions=2, prefix="pipeline-bound")
    ends = produce(kafka_bootstrap, topic, 3000, 2)
    release = trio.Event()
    attempts: Counter[tuple[int, int]] = Counter()
    seen: Counter[tuple[int, int]] = Counter()
    stuck_at: list[float] = []

    async def task(message: Message) -> None:
        where = (message.partition, message.offset)
        attempts[where] += 1
        if where == (0, 10) and attempts[where] == 1:
            stuck_at.append(trio.current_time())
            with trio.CancelScope(shield=True):  # deaf to the per-message timeout
                await release.wait()
        await trio.lowlevel.checkpoint()  # the expired timeout is delivered here
        seen[where] += 1

    cfg = config(kafka_bootstrap, topic, kafka_test_config, workers=4, channel_size=40,
                 poll_batch=500, message_timeout=0.3, stop_at_end=True, commit_interval=0.2,
                 retry=RetryPolicy(initial_backoff=0.05))
    pipeline = Pipeline(cfg, task)
    samples: list[tuple[int, int, int]] = []
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            await nursery.start(pipeline.run, Shutdown(drain_seconds=10))
            # Stuck well past the message timeout, while everything else gets done.
            while len(seen) < 2999 or not stuck_at or trio.current_time() < stuck_at[0] + 1:
                await trio.sleep(0.01)
                sample = pipeline.statistics()
                samples.append((sample.in_flight, sample.channel_fill, sample.held))
            stuck = pipeline.statistics()
            release.set()
    stats = pipeline.statistics()
    in_flight = [s[0] for s in samples]
    print(f"max in flight {max(in_flight)}, max channel fill {max(s[1] for s in samples)}, "
          f"max held {max(s[2] for s in samples)} (channel_size 40), {len(samples)} samples")
    assert max(in_flight) <= 40
    assert max(s[1] for s in samples) <= 40
    assert max(in_flight) + max(s[2] for s in samples) <= 40 + cfg.poll_batch
    # While stuck: only the stuck message is left, and partition 0 is not committed past it.
    assert stuck.in_flight == 1
    assert stuck.committed.get((topic, 0), 0) <= 10
    assert stats.failed == 1  # the stuck attempt counted as a timeout, then retried
    assert set(seen) == {(p, o) for p, end in ends.items() for o in range(end)}
    assert all(count == 1 for count in seen.values())
    assert stats.committed == {(topic, p): end for p, end in ends.items()}


async def test_done_offsets_behind_a_long_running_message_stay_bounded(
    kafka_bootstrap: str, kafka_test_config: dict[str, Any], new_topic: Any
) -> None:
    """One message runs for long (a retried email): the messages after it are processed, but
    their offsets cannot be committed, so the tracker remembers them.  Past max_done_behind the
    consumer stops handing out messages until the long one finishes: memory stays bounded, and
    everything is processed once it does."""
    topic = new_topic(partitions=1, prefix="pipeline-behind")
    ends = produce(kafka_bootstrap, topic, 1000, 1)
    cap, channel = 100, 40
    release, reached_cap = trio.Event(), trio.Event()
    seen: Counter[int] = Counter()

    async def task(message: Message) -> None:
        if message.offset == 5:
            await release.wait()
        seen[message.offset] += 1
        if len(seen) >= cap:
            reached_cap.set()

    cfg = config(kafka_bootstrap, topic, kafka_test_config, workers=4, channel_size=channel,
                 max_done_behind=cap, stop_at_end=True, commit_interval=0.2)
    pipeline = Pipeline(cfg, task)
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            await nursery.start(pipeline.run, Shutdown(drain_seconds=10))
            await reached_cap.wait()
            await trio.sleep(1.0)  # would go on to all 999 without the cap
            stalled = len(seen)
            stuck = pipeline.statistics()
            release.set()
    stats = pipeline.statistics()
    print(f"processed while offset 5 ran: {stalled} (cap {cap}, channel {channel})")
    assert cap <= stalled <= cap + channel + cfg.workers
    assert stuck.committed.get((topic, 0), 0) <= 5
    assert set(seen) == set(range(ends[0]))
    assert all(count == 1 for count in seen.values())
    assert stats.committed == {(topic, 0): ends[0]}


async def test_batch_task_gets_batches_and_commits_after_the_call(
    kafka_bootstrap: str, kafka_test_config: dict[str, Any], new_topic: Any
) -> None:
    topic = new_topic(partitions=2, prefix="pipeline-batch")
    ends = produce(kafka_bootstrap, topic, 400, 2)
    sizes: list[int] = []
    seen: set[tuple[int, int]] = set()

    async def batch_task(messages: Any) -> None:
        sizes.append(len(messages))
        if any(m.value == b"m77" for m in messages) and len(messages) > 1:
            raise PoisonMessage("one bad message in the batch")
        if any(m.value == b"m77" for m in messages):
            raise PoisonMessage("this one")
        seen.update((m.partition, m.offset) for m in messages)

    cfg = config(kafka_bootstrap, topic, kafka_test_config, workers=2, batch_size=50,
                 batch_linger=0.05, stop_at_end=True)
    with trio.fail_after(60):
        stats = await Pipeline(cfg, batch_task=batch_task).run(Shutdown(drain_seconds=10))
    assert max(sizes) > 1
    assert max(sizes) <= 50
    assert stats.poisoned == 1
    assert len(seen) == 399
    assert stats.committed == {(topic, p): end for p, end in ends.items()}


@pytest.mark.parametrize("strategy", ["range,roundrobin", "cooperative-sticky"])
async def test_rebalance_to_a_second_consumer_loses_and_repeats_nothing(
    kafka_bootstrap: str, kafka_test_config: dict[str, Any], new_topic: Any, strategy: str
) -> None:
    """A second pipeline joins the group mid-run: the first one's revoke waits for its started
    messages and commits them, so the partitions move without loss or repeats - with the eager
    assignors (the default) and with cooperative-sticky (incremental assign and revoke: the
    first pipeline keeps the partitions it is not asked to give up).

    Both pipelines stay in the group until every message is seen (no ``stop_at_end``): a first
    pipeline that reached the end of its partitions during the incremental rebalance would leave
    the group, and tansu then never gave the second one an assignment (a CI hang).  More
    messages are produced once the second pipeline holds partitions, so it has work whatever
    the timing of the rebalance."""
    topic = new_topic(partitions=4, prefix="pipeline-rebalance")
    first_ends = produce(kafka_bootstrap, topic, 4000, 4)
    total = 4000 + 400
    seen: Counter[tuple[int, int]] = Counter()
    by: Counter[str] = Counter()
    progressed, all_seen = trio.Event(), trio.Event()

    def task_for(name: str) -> Any:
        async def task(message: Message) -> None:
            await trio.sleep(0.01)
            seen[(message.partition, message.offset)] += 1
            by[name] += 1
            if by["first"] >= 300:
                progressed.set()
            if len(seen) >= total:
                all_seen.set()

        return task

    group = unique_name("pipeline-rebalance-group")
    first_config = config(kafka_bootstrap, topic, kafka_test_config,
                          assignment_strategy=strategy)
    first_config = PipelineConfig(**{**first_config.__dict__, "group_id": group})
    second_config = PipelineConfig(**{**first_config.__dict__})
    first, second = Pipeline(first_config, task_for("first")), Pipeline(second_config,
                                                                          task_for("second"))
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            await nursery.start(first.run, Shutdown(drain_seconds=10))
            await progressed.wait()
            await nursery.start(second.run, Shutdown(drain_seconds=10))
            # Until the rebalance gave the second pipeline partitions (a condition, not a delay).
            while not second.statistics().partitions:  # noqa: ASYNC110
                await trio.sleep(0.05)
            more = await trio.to_thread.run_sync(produce, kafka_bootstrap, topic, 400, 4)
            await all_seen.wait()
            first.stop()
            second.stop()
    ends = {p: first_ends[p] + more[p] for p in first_ends}
    assert first.statistics().rebalances >= 2  # the first pipeline was reassigned
    assert by["second"] > 0  # the second one got partitions
    assert set(seen) == {(p, o) for p, end in ends.items() for o in range(end)}
    twice = [k for k, c in seen.items() if c > 1]
    assert twice == []
    assert committed_offsets(kafka_bootstrap, group, topic, 4, kafka_test_config) == ends
