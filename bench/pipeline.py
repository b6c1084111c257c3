"""Benchmark: the consumer pipeline against a raw confluent-kafka consume loop.

1. Pre-fills one topic with ``--messages`` (default 200,000) small records.
2. Raw baselines: one confluent Consumer in a ``poll()`` loop (the ratio's denominator), and one
   in a ``consume(num_messages=500)`` loop (printed for reference), each in a fresh group,
   touching each record's value.  Rate = records / (last record - first record).
3. Pipeline: ``Pipeline`` with a no-op task, 10 workers, ``stop_at_end`` (fresh group).  Rate =
   records / (last task call - first task call).  Group joins are excluded from both rates.
4. Memory: in a fresh subprocess (so its peak RSS is its own), a pipeline drains the same
   200,000-record backlog through a slow task (``--slow-seconds`` per message) for
   ``--rss-seconds``; prints its peak RSS (VmHWM) and the channel fill it saw.

The broker is $ETRANS_TEST_KAFKA_BOOTSTRAP, or a tansu started here (tests/harness).
Rounds alternate raw and pipeline runs (``--rounds``, default 5); every round is printed and the
ratio compares the medians.  Last line: ``ratio <median pipeline rate / median raw rate>`` (goal
>= 0.7); peak RSS goal < 150 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import trio  # noqa: E402

from etrans.observability import configure  # noqa: E402
from etrans.pipeline import Message, Pipeline, PipelineConfig  # noqa: E402
from etrans.runtime import Shutdown  # noqa: E402
from tests.harness.servers import (  # noqa: E402
    ENV_KAFKA,
    KAFKA_TEST_CONSUMER_CONFIG,
    TansuBroker,
    create_topic,
)

CONSUMER_EXTRA = {"log_level": 3, **KAFKA_TEST_CONSUMER_CONFIG}


def prefill(bootstrap: str, topic: str, count: int, partitions: int) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20,
                         "batch.num.messages": 10_000, "log_level": 3})
    payload = b'{"Event":"Sender","message_id":"%08d"}'
    for i in range(count):
        while True:
            try:
                producer.produce(topic, payload % i, partition=i % partitions)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 5000 == 0:
            producer.poll(0)
    assert producer.flush(120) == 0


def raw_rate(bootstrap: str, topic: str, count: int, *, batch: bool) -> float:
    """A raw loop: ``poll()`` one record at a time, or ``consume(500)`` lists (``batch``)."""
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"raw-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         **CONSUMER_EXTRA})
    consumer.subscribe([topic])
    seen = 0
    first = last = 0.0
    size = 0
    try:
        while seen < count:
            if batch:
                records = consumer.consume(500, 0.5)
            else:
                record = consumer.poll(0.5)
                records = [] if record is None else [record]
            for record in records:
                if record.error() is not None:
                    continue
                if not seen:
                    first = time.perf_counter()
                size += len(record.value())
                seen += 1
            last = time.perf_counter()
    finally:
        consumer.close()
    return (seen - 1) / (last - first)


def pipeline_config(bootstrap: str, topic: str, **fields: object) -> PipelineConfig:
    return PipelineConfig(topics=(topic,), group_id=f"pipeline-{uuid.uuid4()}",
                          kafka={"bootstrap.servers": bootstrap, **CONSUMER_EXTRA},
                          **fields)  # type: ignore[arg-type]


def pipeline_rate(bootstrap: str, topic: str, count: int) -> tuple[float, int, float]:
    """Rate, commits, and the process CPU time (all threads) of the run."""
    times = [0.0, 0.0]
    seen = 0

    async def task(message: Message) -> None:
        nonlocal seen
        if not seen:
            times[0] = time.perf_counter()
        seen += 1
        times[1] = time.perf_counter()

    config = pipeline_config(bootstrap, topic, workers=10, stop_at_end=True)
    cpu = time.process_time()
    stats = trio.run(Pipeline(config, task).run, Shutdown(drain_seconds=10))
    cpu = time.process_time() - cpu
    assert stats.processed == count, stats
    return (seen - 1) / (times[1] - times[0]), stats.commits, cpu


def rss_phase(bootstrap: str, topic: str, seconds: float, slow: float) -> None:
    """Runs in a subprocess: drain through a slow task, report peak RSS and channel fill."""
    processed = 0

    async def task(message: Message) -> None:
        nonlocal processed
        await trio.sleep(slow)
        processed += 1

    async def main() -> dict[str, object]:
        config = pipeline_config(bootstrap, topic, workers=10)
        shutdown = Shutdown(drain_seconds=5)
        fills: list[int] = []
        held: list[int] = []
        async with trio.open_nursery() as nursery:
            pipeline = await nursery.start(Pipeline(config, task).run, shutdown)
            end = trio.current_time() + seconds
            while trio.current_time() < end:
                await trio.sleep(0.2)
                stats = pipeline.statistics()
                fills.append(stats.in_flight)
                held.append(stats.held)
            shutdown.request()
        return {"processed": processed, "max_in_flight": max(fills), "max_held": max(held),
                "channel_size": config.channel_size}

    result = trio.run(main)
    status = Path("/proc/self/status").read_text()
    hwm_kb = int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1])
    result["peak_rss_mb"] = hwm_kb / 1024
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rss-seconds", type=float, default=15.0)
    parser.add_argument("--slow-seconds", type=float, default=0.005)
    parser.add_argument("--rss-phase", nargs=2, metavar=("BOOTSTRAP", "TOPIC"))
    args = parser.parse_args()
    configure("bench", level="WARNING", json=False)
    if args.rss_phase:
        rss_phase(*args.rss_phase, args.rss_seconds, args.slow_seconds)
        return

    broker = None
    bootstrap = os.environ.get(ENV_KAFKA)
    if not bootstrap:
        broker = TansuBroker().start()
        bootstrap = broker.bootstrap
    try:
        topic = create_topic(bootstrap, f"bench-pipeline-{uuid.uuid4().hex[:8]}",
                             partitions=args.partitions)
        started = time.perf_counter()
        prefill(bootstrap, topic, args.messages, args.partitions)
        print(f"prefilled {args.messages} messages over {args.partitions} partitions "
              f"in {time.perf_counter() - started:.1f} s")

        # The machine is shared and noisy: alternate the runs, print every round and compare
        # the medians of both sides (the same statistic for both, so the ratio is stable).
        raws, raw_batches, pipes = [], [], []
        for round_number in range(1, args.rounds + 1):
            raws.append(raw_rate(bootstrap, topic, args.messages, batch=False))
            raw_batches.append(raw_rate(bootstrap, topic, args.messages, batch=True))
            piped, commits, cpu = pipeline_rate(bootstrap, topic, args.messages)
            pipes.append(piped)
            print(f"round {round_number}: raw poll() {raws[-1]:,.0f} msg/s, raw consume(500) "
                  f"{raw_batches[-1]:,.0f} msg/s, pipeline {piped:,.0f} msg/s ({commits} commits, "
                  f"{cpu * 1e6 / args.messages:.1f} us CPU per message in the process)")
        raw, piped = statistics.median(raws), statistics.median(pipes)
        print(f"raw confluent poll() loop: {raw:,.0f} msg/s (median of {args.rounds}; "
              f"{min(raws):,.0f}-{max(raws):,.0f})")
        print(f"raw confluent consume(500) loop: {statistics.median(raw_batches):,.0f} msg/s "
              f"(median of {args.rounds}; reference only)")
        print(f"pipeline (no-op task, 10 workers): {piped:,.0f} msg/s (median of {args.rounds}; "
              f"{min(pipes):,.0f}-{max(pipes):,.0f})")
        ratios = sorted(p / r for p, r in zip(pipes, raws, strict=True))
        print("per-round ratios: " + ", ".join(f"{r:.3f}" for r in ratios))

        out = subprocess.run(
            [sys.executable, __file__, "--rss-phase", bootstrap, topic,
             "--rss-seconds", str(args.rss_seconds), "--slow-seconds", str(args.slow_seconds)],
            check=True, capture_output=True, text=True, cwd=REPO,
        )
        memory = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"slow task ({args.slow_seconds * 1000:.0f} ms/message, 10 workers) over a "
              f"{args.messages} backlog for {args.rss_seconds:.0f} s: processed "
              f"{memory['processed']}, max in flight {memory['max_in_flight']} "
              f"(+ held {memory['max_held']}) "
              f"(channel_size {memory['channel_size']}), "
              f"peak RSS {memory['peak_rss_mb']:.1f} MB (goal < 150 MB)")
        print(f"ratio {piped / raw:.3f}")
    finally:
        if broker is not None:
            broker.cleanup()


if __name__ == "__main__":
    main()
