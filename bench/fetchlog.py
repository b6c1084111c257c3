"""Benchmark: fetchlog ingest rate from a backlog vs a raw ``insert_many`` loop, same MongoDB.

1. fill a topic with N delivery-log events (default 100,000, all of stored types);
2. raw baseline: the same documents (decoded and mapped beforehand, so the baseline does no
   JSON work at all) written with a plain ``insert_many(ordered=False)`` loop, in batches of
   LOG_BATCH_SIZE, into an empty collection with the same four indexes;
3. fetchlog: the real pipeline + FetchlogTask (``--from-earliest --stop-at-end`` semantics) into
   another empty collection of the same server, timed from the first partition assignment to
   the end (the consumer-group join is not ingest);

prints both rates and, last, ``ratio <fetchlog/raw>`` (goal >= 0.8).  The USEND status update is
not part of this run (USEND_DB_URI unset).  With ``--usend``, fetchlog also labels each document
(``source``/``user_id``: one lookup per batch in a migrated USEND DB where half of the messages are
API emails), as ``etrans fetchlog`` does with USEND_DB_URI set.  Services:
$ETRANS_TEST_KAFKA_BOOTSTRAP / $ETRANS_TEST_MONGODB_URI (/ $ETRANS_TEST_POSTGRES_URL), else
private tansu and secantus (and PostgreSQL) started here.

    .venv/bin/python bench/fetchlog.py [--events 100000] [--partitions 3] [--batch 500] [--usend]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from etrans import observability
from etrans.adapters.mongo.log_writer import INDEXES, MongoLogWriter
from etrans.adapters.sql import usend_database
from etrans.adapters.sql.message_owners import MessageOwnerLookup
from etrans.domain.delivery_log import EventFilter, decode_event, to_document
from etrans.pipeline import Pipeline, PipelineConfig
from etrans.runtime import Shutdown
from etrans.settings import MongoSettings, Secret
from etrans.workers.fetchlog import FetchlogTask
from tests.harness.servers import (
    KAFKA_TEST_CONSUMER_CONFIG,
    create_database,
    create_topic,
    drop_database,
    ensure_kafka,
    ensure_mongo,
    ensure_postgres,
    unique_name,
)


def make_events(count: int, prefix: str) -> list[bytes]:
    kinds = ("Sender", "Queue", "Deferred", "Reject")
    events = []
    for n in range(count):
        kind = kinds[n % 4]
        events.append(json.dumps({
            "Event": kind, "@timestamp": f"2026-03-10T{(n // 3600) % 24:02d}:{(n // 60) % 60:02d}:"
                                         f"{n % 60:02d}.{n % 1000:03d}Z",
            "SMTP_Action": "delivered" if kind == "Sender" else kind.lower(),
            "from": "hello@shop.example", "from_name": "Shop", "recipient": f"user{n}@mail.example",
            "to_name": "User", "response": "250 2.0.0 OK 1772679259 xyz",
            "from_domain": "shop.example", "Event_ID": f"{prefix}-{n}",
            "message_id": f"msg_{prefix}_{n // 3}", "to_domain": "mail.example",
            "agent": {"id": "a1", "type": "filebeat", "hostname": "mx1", "name": "beat-1",
                      "ephemeral_id": "e1"},
        }).encode())
    return events


def produce(bootstrap: str, topic: str, events: list[bytes]) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50,
                         "batch.num.messages": 10000})
    for n, value in enumerate(events):
        while True:
            try:
                producer.produce(topic, value, key=str(n % 997).encode())
                break
            except BufferError:
                producer.poll(0.05)
        if n % 1000 == 0:
            producer.poll(0)
    assert producer.flush(120) == 0, "produce did not complete"


def raw_insert(uri: str, dbname: str, documents: list[dict[str, object]], batch: int) -> float:
    from pymongo import IndexModel, MongoClient

    client: MongoClient = MongoClient(uri, tz_aware=True)
    try:
        collection = client[dbname]["email_logs"]
        collection.create_indexes([IndexModel(keys, name=name, **options)
                                   for name, (keys, options) in INDEXES.items()])
        started = time.perf_counter()
        for i in range(0, len(documents), batch):
            collection.insert_many(documents[i:i + batch], ordered=False)
        elapsed = time.perf_counter() - started
        assert collection.count_documents({}) == len(documents)
        return elapsed
    finally:
        client.drop_database(dbname)
        client.close()


def usend_with_emails(pg_url: str, prefix: str, count: int) -> str:
    """A migrated USEND DB whose ``email_messages`` hold every other message id of the events."""
    import psycopg

    from etrans.adapters.sql import migrations

    name = unique_name("bench_fl_usend").replace("-", "_")
    url = create_database(pg_url, name)
    migrations.upgrade(url)
    with psycopg.connect(url) as conn, conn.cursor() as cursor, cursor.copy(
            "COPY email_messages (message_id, user_id, from_address, to_addresses, subject)"
            " FROM STDIN") as copy:
        for k in range(0, (count + 2) // 3, 2):
            copy.write_row((f"msg_{prefix}_{k}", 7, "hello@shop.example", '["u@x"]', "s"))
    return url


async def fetchlog_run(bootstrap: str, topic: str, uri: str, dbname: str, expected: int,
                       batch: int, workers: int,
                       usend_url: str | None = None) -> tuple[float, dict[str, int]]:
    writer = MongoLogWriter(MongoSettings(uri=Secret(uri), dbname=dbname, collection="email_logs"),
                            threads=workers)
    usend = usend_database(usend_url, pool_size=workers) if usend_url else None
    owners = MessageOwnerLookup(usend) if usend is not None else None
    task = FetchlogTask(EventFilter(), writer, owners=owners)
    config = PipelineConfig(
        topics=(topic,), group_id=unique_name("bench-fetchlog"),
        kafka={"bootstrap.servers": bootstrap, **KAFKA_TEST_CONSUMER_CONFIG},
        workers=workers, channel_size=max(1000, 2 * workers * batch), batch_size=batch,
        batch_linger=0.1, message_timeout=30.0, from_earliest=True, stop_at_end=True,
    )
    await writer.ensure_indexes()
    pipeline = Pipeline(config, batch_task=task)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(pipeline.run, Shutdown(drain_seconds=30))
            await pipeline.wait_assigned()
            started = time.perf_counter()
        elapsed = time.perf_counter() - started
    finally:
        writer.close()
        if usend is not None:
            usend.dispose()
    counters = task.statistics().as_dict()
    if owners is not None:
        counters["usend_queries"] = owners.queries
    assert counters["stored"] == expected, counters
    return elapsed, counters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--usend", action="store_true",
                        help="label documents from a USEND DB (source/user_id), as with "
                             "USEND_DB_URI")
    args = parser.parse_args()
    observability.configure("bench-fetchlog", level="WARNING", json=False)

    bootstrap, broker = ensure_kafka()
    uri, mongo = ensure_mongo()
    pg = None
    cleanups = []
    try:
        prefix = unique_name("bench")
        events = make_events(args.events, prefix)
        usend_url = None
        if args.usend:
            pg_url, pg = ensure_postgres()
            usend_url = usend_with_emails(pg_url, prefix, args.events)
            name = usend_url.rsplit("/", 1)[1]
            cleanups.append(lambda: drop_database(pg_url, name))
        topic = create_topic(bootstrap, unique_name("bench-email-logs"),
                             partitions=args.partitions)
        t = time.perf_counter()
        produce(bootstrap, topic, events)
        print(f"backlog: {args.events} events on {args.partitions} partitions"
              f" (produced in {time.perf_counter() - t:.1f} s)")

        documents = [to_document(decode_event(value)) for value in events]
        raw_db = unique_name("bench_raw").replace("-", "_")
        raw_seconds = raw_insert(uri, raw_db, documents, args.batch)
        raw_rate = args.events / raw_seconds
        print(f"raw insert_many loop: {args.events} docs in {raw_seconds:.2f} s"
              f" = {raw_rate:,.0f} docs/s (batch {args.batch})")

        fl_db = unique_name("bench_fl").replace("-", "_")
        try:
            fl_seconds, counters = trio.run(fetchlog_run, bootstrap, topic, uri, fl_db,
                                            args.events, args.batch, args.workers, usend_url)
        finally:
            from pymongo import MongoClient

            client: MongoClient = MongoClient(uri)
            client.drop_database(fl_db)
            client.close()
        fl_rate = args.events / fl_seconds
        labelled = ", labelled from the USEND DB" if args.usend else ""
        print(f"fetchlog: {args.events} events in {fl_seconds:.2f} s = {fl_rate:,.0f} events/s"
              f" ({args.workers} workers, batch {args.batch}{labelled}; {counters})")
        print(f"ratio {fl_rate / raw_rate:.3f}")
    finally:
        for cleanup in cleanups:
            cleanup()
        if pg is not None:
            pg.cleanup()
        if mongo is not None:
            mongo.cleanup()
        if broker is not None:
            broker.cleanup()


if __name__ == "__main__":
    main()
