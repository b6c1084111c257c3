"""Benchmark: fetchlog against plain programs, same broker and MongoDB: ingest rate, CPU per event.

The MongoDB-wire server of the test harness (secantus) takes only a few thousand documents a
second, so a rate comparison with the insert in it measures the server on both sides.  This
benchmark therefore also compares what etrans itself costs: the CPU time (user + system, all
threads) of the process doing the work, which excludes the broker and the database server (other
processes), and the rate of fetchlog's decode/filter/map path with the insert replaced by a sink.

1. fill a topic with N delivery-log events (default 100,000, all of stored types);
2. raw insert_many loop: the same documents (decoded and mapped beforehand, so this loop does no
   JSON work at all) written with a plain ``insert_many(ordered=False)`` loop, in batches of
   LOG_BATCH_SIZE, into an empty collection with the same five indexes;
3. fetchlog: the real pipeline + FetchlogTask + MongoLogWriter (``--from-earliest
   --stop-at-end`` semantics) into another empty collection of the same server; the rate of
   steps 2 and 3 is the ``insert rate ratio`` line (fetchlog / raw);
4. raw consume+decode+insert loop: a plain program doing the whole job - confluent-kafka
   ``consume(batch)``, ``json.loads``, the same filtering and mapping written plainly
   (:func:`plain_document`, checked to give the same documents as etrans), ``insert_many`` and an
   asynchronous offset commit per batch - into a third empty collection: its CPU per document
   against fetchlog's CPU per event of step 3;
5. the same two without MongoDB: the pipeline + FetchlogTask writing to :class:`DiscardingWriter`
   (a second implementation of the LogDocumentWriter port, which drops the documents), against
   the plain loop of step 4 without ``insert_many``: events/s and CPU per event of each.

Every run is timed, and its CPU counted, from its first partition assignment to the end (the
consumer is closed; the group join is not ingest).  The USEND status update is not part of this
run (USEND_DB_URI unset).  With ``--usend``, fetchlog also labels each document
(``source``/``user_id``: one lookup per batch in a migrated USEND DB where half of the messages
are API emails), as ``etrans fetchlog`` does with USEND_DB_URI set; the plain loops do not, so
then the CPU comparison includes the labelling on fetchlog's side only.  Services:
$ETRANS_TEST_KAFKA_BOOTSTRAP / $ETRANS_TEST_MONGODB_URI (/ $ETRANS_TEST_POSTGRES_URL), else
private tansu and secantus (and PostgreSQL) started here.

Last line: ``ratio <plain loop's CPU per document / fetchlog's CPU per event>``, both with the
insert (steps 4 and 3): above 1 means etrans spends less CPU per event than the plain program,
below 1 is etrans's overhead (0.5: twice the plain program's CPU).

    .venv/bin/python bench/fetchlog.py [--events 100000] [--partitions 3] [--batch 500] [--usend]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import resource
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from etrans import observability
from etrans.adapters.mongo.log_writer import INDEXES, InsertResult, MongoLogWriter
from etrans.adapters.sql import usend_database
from etrans.adapters.sql.message_owners import MessageOwnerLookup
from etrans.app.ports import LogDocumentWriter
from etrans.domain.bounces import BounceClass, classify
from etrans.domain.delivery_log import (
    EventFilter,
    Verdict,
    add_bounce_class,
    decode_event,
    to_document,
)
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


def cpu_seconds() -> float:
    """User + system CPU seconds of this process, all its threads (not its children: the broker
    and the MongoDB server started here are other processes)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Run:
    """One side's measurement, from its first partition assignment to the end."""

    events: int
    seconds: float
    cpu: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    @property
    def cpu_us(self) -> float:  # CPU microseconds per event
        return self.cpu * 1e6 / self.events


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


# -- the plain program: fetchlog's filter and mapping written plainly ----------------------------

STORE_EVENTS = frozenset(("Sender", "Queue", "Deferred", "Reject"))
SKIP_PATTERN = re.compile("bizfly.vn")  # SKIP_MESSAGE_ID_PATTERN's default
BOUNCE_ACTIONS = frozenset(("bounced", "bounce", "reject", "rejected"))
KNOWN_CLASSES = frozenset(member.value for member in BounceClass)
EVENT_FILTER = EventFilter()


def plain_document(event: dict[str, Any]) -> dict[str, Any] | None:
    """The document fetchlog stores for ``event`` (None: not stored), as a plain program writes
    it for well-formed Filebeat events: string fields, ``Z`` timestamps.  The bounce class is the
    domain's rule (:func:`~etrans.domain.bounces.classify`), which any program needs as is."""
    kind = event.get("Event")
    message_id = event.get("message_id") or ""
    if kind not in STORE_EVENTS or SKIP_PATTERN.search(message_id):
        return None
    moment = datetime.fromisoformat(event["@timestamp"]).astimezone(UTC)
    agent = event.get("agent") or {}
    action = event.get("SMTP_Action") or ""
    response = event.get("response") or ""
    event_id = event.get("Event_ID") or "sha256:" + hashlib.sha256(json.dumps(
        event, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()
    document = {
        "event": kind, "timestamp": moment.replace(microsecond=moment.microsecond // 1000 * 1000),
        "action": action, "sender": event.get("from") or "",
        "recipient": event.get("recipient") or "", "response": response,
        "from_domain": event.get("from_domain") or "", "message_id": message_id,
        "to_domain": event.get("to_domain") or "", "event_id": event_id,
        "agent_type": agent.get("type") or "", "agent_name": agent.get("name") or "",
        "agent_hostname": agent.get("hostname") or "",
    }
    if kind == "Reject" or (kind != "Deferred" and action.strip().lower() in BOUNCE_ACTIONS):
        given = event.get("bounce_class")
        document["bounce_class"] = given if given in KNOWN_CLASSES else classify(response).value
    return document


def etrans_document(value: bytes) -> dict[str, Any] | None:
    event = decode_event(value)
    if EVENT_FILTER.verdict(event) is not Verdict.STORE:
        return None
    document = to_document(event)
    add_bounce_class(document, event.get("bounce_class"))
    return document


def plain_loop(bootstrap: str, topic: str, count: int, batch: int,
               insert: Callable[[list[dict[str, Any]]], object] | None) -> Run:
    """consume -> json.loads -> :func:`plain_document` -> ``insert`` (None: drop) -> commit."""
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_name("bench-plain"),
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         **KAFKA_TEST_CONSUMER_CONFIG})
    start: list[float] = []

    def on_assign(consumer: object, partitions: object) -> None:
        if not start:
            start.extend((time.perf_counter(), cpu_seconds()))

    consumer.subscribe([topic], on_assign=on_assign)
    seen = 0
    try:
        while seen < count:
            records = consumer.consume(batch, 0.5)
            documents = []
            for record in records:
                if record.error() is not None:
                    continue
                seen += 1
                document = plain_document(json.loads(record.value()))
                if document is not None:
                    documents.append(document)
            if documents and insert is not None:
                insert(documents)
            if records:
                consumer.commit(asynchronous=True)
    finally:
        consumer.close()
    return Run(seen, time.perf_counter() - start[0], cpu_seconds() - start[1])


def plain_insert_loop(bootstrap: str, topic: str, count: int, batch: int, uri: str,
                      dbname: str) -> Run:
    from pymongo import IndexModel, MongoClient

    client: MongoClient = MongoClient(uri, tz_aware=True)
    try:
        collection = client[dbname]["email_logs"]
        collection.create_indexes([IndexModel(keys, name=name, **options)
                                   for name, (keys, options) in INDEXES.items()])
        run = plain_loop(bootstrap, topic, count, batch,
                         lambda documents: collection.insert_many(documents, ordered=False))
        assert collection.count_documents({}) == count
        return run
    finally:
        client.drop_database(dbname)
        client.close()


# -- fetchlog ------------------------------------------------------------------------------------

class DiscardingWriter:
    """LogDocumentWriter that drops every document: fetchlog's path without the database."""

    name = "discard"

    async def ensure_indexes(self) -> list[str]:
        return []

    async def insert(self, documents: Sequence[Mapping[str, Any]]) -> InsertResult:
        return InsertResult(len(documents), 0)

    def close(self) -> None:
        pass


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


async def fetchlog_run(bootstrap: str, topic: str, writer: LogDocumentWriter, expected: int,
                       batch: int, workers: int,
                       usend_url: str | None = None) -> tuple[Run, dict[str, int]]:
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
            started, cpu = time.perf_counter(), cpu_seconds()
        run = Run(expected, time.perf_counter() - started, cpu_seconds() - cpu)
    finally:
        if usend is not None:
            usend.dispose()
    counters = task.statistics().as_dict()
    if owners is not None:
        counters["usend_queries"] = owners.queries
    assert counters["stored"] == expected, counters
    return run, counters


def fetchlog_into_mongo(args: argparse.Namespace, bootstrap: str, topic: str, uri: str,
                        usend_url: str | None) -> tuple[Run, dict[str, int]]:
    dbname = unique_name("bench_fl").replace("-", "_")
    writer = MongoLogWriter(MongoSettings(uri=Secret(uri), dbname=dbname, collection="email_logs"),
                            threads=args.workers)
    try:
        return trio.run(fetchlog_run, bootstrap, topic, writer, args.events, args.batch,
                        args.workers, usend_url)
    finally:
        writer.close()
        from pymongo import MongoClient

        client: MongoClient = MongoClient(uri)
        client.drop_database(dbname)
        client.close()


def compare(args: argparse.Namespace, bootstrap: str, topic: str, uri: str,
            events: list[bytes], usend_url: str | None) -> None:
    labelled = ", labelled from the USEND DB" if args.usend else ""
    documents = [d for d in map(etrans_document, events) if d is not None]
    plain = [d for d in (plain_document(json.loads(value)) for value in events) if d is not None]
    assert plain == documents, "plain_document does not give fetchlog's documents"

    raw_seconds = raw_insert(uri, unique_name("bench_raw").replace("-", "_"), documents,
                             args.batch)
    raw_rate = args.events / raw_seconds
    print(f"raw insert_many loop: {args.events} docs in {raw_seconds:.2f} s"
          f" = {raw_rate:,.0f} docs/s (batch {args.batch})")
    fetchlog, counters = fetchlog_into_mongo(args, bootstrap, topic, uri, usend_url)
    print(f"fetchlog: {args.events} events in {fetchlog.seconds:.2f} s = {fetchlog.rate:,.0f}"
          f" events/s, {fetchlog.cpu_us:.0f} us CPU per event ({args.workers} workers,"
          f" batch {args.batch}{labelled}; {counters})")
    print(f"insert rate ratio (fetchlog / raw insert_many) {fetchlog.rate / raw_rate:.3f}")

    plain_insert = plain_insert_loop(bootstrap, topic, args.events, args.batch, uri,
                                     unique_name("bench_plain").replace("-", "_"))
    print(f"plain consume+decode+insert_many loop: {plain_insert.rate:,.0f} docs/s,"
          f" {plain_insert.cpu_us:.0f} us CPU per doc")
    plain_decode = plain_loop(bootstrap, topic, args.events, args.batch, None)
    print(f"plain consume+decode loop (no insert): {plain_decode.rate:,.0f} events/s,"
          f" {plain_decode.cpu_us:.0f} us CPU per event")
    sink, _ = trio.run(fetchlog_run, bootstrap, topic, DiscardingWriter(), args.events,
                       args.batch, args.workers, usend_url)
    print(f"fetchlog into a discarding sink: {sink.rate:,.0f} events/s,"
          f" {sink.cpu_us:.0f} us CPU per event{labelled}")
    print(f"no-op sink rate ratio (fetchlog / plain decode loop) "
          f"{sink.rate / plain_decode.rate:.3f}; CPU ratio {plain_decode.cpu_us / sink.cpu_us:.3f}")
    print(f"ratio {plain_insert.cpu_us / fetchlog.cpu_us:.3f}")


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
        compare(args, bootstrap, topic, uri, events, usend_url)
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
