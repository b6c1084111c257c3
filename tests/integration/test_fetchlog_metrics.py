"""``etrans fetchlog --metrics-bind``: scraped while it ingests a topic, the figures move as
they must (issue 17 item 1): events by outcome, MongoDB insert time and batch sizes, the
pipeline's lag per partition, commits, dead letters."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
from confluent_kafka import Producer
from pymongo import MongoClient

from tests.harness.servers import free_port
from tests.integration.test_fetchlog_cli import (
    _topic_with_events,
    start_fetchlog,
)
from tests.integration.test_serve_metrics import samples

EVENTS = 400  # 20 filtered, 20 skipped, 360 stored (test_fetchlog_cli.produce_events)


def scrape(port: int) -> dict:
    return samples(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text)


def value(scraped: dict, name: str, **labels: str) -> float:
    return scraped.get((name, frozenset(labels.items())), 0.0)


def wait_scrape(port: int, process, log_path: Path) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 60
    while True:
        try:
            return scrape(port)
        except httpx.HTTPError:
            assert process.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.2)


def produce_poison(bootstrap: str, topic: str) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, b"{not json", key=b"poison", partition=0)
    assert producer.flush(30) == 0


def test_fetchlog_metrics_move_with_the_events_ingested(
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    etrans_env: Callable[..., dict[str, str]],
    mongo_uri: str,
    tmp_path: Path,
) -> None:
    topic, _prefix, expected = _topic_with_events(kafka_bootstrap, new_topic, EVENTS, partitions=2)
    produce_poison(kafka_bootstrap, topic)
    port = free_port()
    env = etrans_env(
        LOG_TOPIC=topic,
        LOG_BATCH_SIZE=50,
        KAFKA_EVENTS_TOPIC=new_topic(prefix="email-events"),
        KAFKA_DEAD_LETTER_TOPIC=new_topic(prefix="dead"),
    )
    log_path = tmp_path / "fetchlog.log"
    # The option, not the setting: --metrics-bind sets ETRANS_METRICS_BIND for this run.
    process = start_fetchlog(env, "--metrics-bind", f"127.0.0.1:{port}", log_path=log_path)
    client: MongoClient = MongoClient(mongo_uri, tz_aware=True)
    try:
        before = wait_scrape(port, process, log_path)
        deadline = time.monotonic() + 120
        while True:
            after = scrape(port)
            lags = {
                labels: v
                for (name, labels), v in after.items()
                if name == "etrans_pipeline_consumer_lag" and ("worker", "fetchlog") in labels
            }
            done = (
                value(after, "etrans_fetchlog_events_total", worker="fetchlog", outcome="stored")
                == expected
            )
            if done and len(lags) == 2 and set(lags.values()) == {0.0}:
                break
            assert process.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, (after, log_path.read_text()[-3000:])
            time.sleep(0.3)
    finally:
        process.terminate()
        process.wait(30)
        client.drop_database(env["MONGODB_DBNAME"])
    assert value(before, "etrans_fetchlog_events_total", worker="fetchlog", outcome="stored") == 0

    def events(outcome: str) -> float:
        return value(after, "etrans_fetchlog_events_total", worker="fetchlog", outcome=outcome)

    assert (events("filtered"), events("skipped")) == (EVENTS // 20, EVENTS // 20)
    assert (events("invalid"), events("duplicates")) == (1, 0)
    # Every stored document went through one timed insert_many (documents are not re-sent).
    assert value(after, "etrans_log_insert_documents_sum", store="mongodb") == expected
    inserts = value(after, "etrans_log_insert_seconds_count", store="mongodb")
    assert inserts == value(after, "etrans_log_insert_documents_count", store="mongodb")
    assert expected / 50 <= inserts <= expected
    assert value(after, "etrans_log_insert_seconds_sum", store="mongodb") > 0
    # The pipeline: the poison message given up on and dead-lettered, offsets committed, all
    # caught up on both partitions, nothing left in flight.
    assert value(after, "etrans_pipeline_poisoned_total", worker="fetchlog") == 1
    assert value(after, "etrans_pipeline_dead_lettered_total", worker="fetchlog") == 1
    assert value(after, "etrans_pipeline_commits_total", worker="fetchlog") > 0
    assert value(after, "etrans_pipeline_processed_total", worker="fetchlog") > 0
    assert value(after, "etrans_pipeline_in_flight", worker="fetchlog") == 0
    assert value(after, "etrans_pipeline_channel_capacity", worker="fetchlog") > 0
    assert value(after, "etrans_pipeline_channel_occupancy", worker="fetchlog") == 0
    # The second pipeline (opens and clicks) is watched too, under its own name.
    assert value(after, "etrans_pipeline_channel_capacity", worker="engagement") > 0
