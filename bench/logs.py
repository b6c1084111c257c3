"""Benchmark: GET /logs of a tenant with a large history against a raw MongoDB find of each page.

Starts (or reuses, like the tests: $ETRANS_TEST_*) PostgreSQL, Redis, a Kafka-API broker and a
MongoDB-wire server (secantus, or $ETRANS_TEST_MONGODB_URI for a real MongoDB); creates a migrated
USEND DB and a Billing DB with one user holding one verified domain; seeds ``--events`` delivery
events over ``--events / 2`` message ids (default 200,000 / 100,000 with a real MongoDB; 20,000 /
10,000 on secantus, see ``--help``), ``--api-share`` of
them sent through the API (rows of ``email_messages``, owned by the user), the rest SMTP mail of
the domain.  The documents are labelled by the code fetchlog runs on every batch
(:func:`etrans.workers.log_labels.label_documents`, one USEND lookup per 5,000 ids) and inserted
with the indexes fetchlog creates at start; then ``etrans serve`` is started as a subprocess.

For each case (a page and its filters) it measures, ``--repeat`` times in alternation, the
latency of GET /logs over HTTP (keep-alive) and of the raw ``find(filter).sort().skip().limit()``
that returns the same page - the filter GET /logs sends (:func:`etrans.adapters.mongo.log_reader.
mongo_filter`), from this process with pymongo on the same server.  The raw find is the floor:
GET /logs also authenticates, reads the user's verified domains, counts the filtered set by
(action, event, source) for ``total`` and ``stats``, and serialises the answer.  Each case's
ratio is median(raw) / median(GET /logs); the last line is ``ratio <geometric mean of the cases'
ratios>`` (goal >= 0.3).  Every answer is checked against the raw page (same message ids in the
same order) and ``total`` against ``count_documents``.

``--serve-cwd DIR`` runs ``etrans serve`` from another checkout (e.g. the code before a change)
against the same data.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import trio  # noqa: E402

from etrans.adapters.mongo.log_reader import _PROJECTION, mongo_filter  # noqa: E402
from etrans.adapters.mongo.log_writer import MongoLogWriter  # noqa: E402
from etrans.adapters.sql import usend_database  # noqa: E402
from etrans.adapters.sql.message_owners import MessageOwnerLookup  # noqa: E402
from etrans.app.logs import ListLogs, parse_sorts  # noqa: E402
from etrans.app.records import LogFilter  # noqa: E402
from etrans.settings import MongoSettings, Secret  # noqa: E402
from etrans.workers.log_labels import label_documents  # noqa: E402
from tests.e2e.send_support import JWT_SECRET, ServeProcess, bearer  # noqa: E402
from tests.harness.databases import (  # noqa: E402
    BillingSeeder,
    create_billing_database,
    drop_billing_role,
)
from tests.harness.servers import (  # noqa: E402
    ENV_MONGODB,
    create_database,
    create_topic,
    drop_database,
    ensure_kafka,
    ensure_mongo,
    ensure_postgres,
    ensure_redis,
    free_port,
    unique_name,
)

BASE = datetime(2026, 3, 1, tzinfo=UTC)
ACTIONS = [("Sender", "delivered", "250 2.0.0 OK"), ("Queue", "queued", ""),
           ("Deferred", "deferred", "451 4.7.1 Try again later"),
           ("Reject", "rejected", "550 5.1.1 Recipient address rejected")]


def make_documents(count: int, domain: str, api_ids: list[str],
                   smtp_ids: list[str]) -> list[dict[str, Any]]:
    """``count`` documents, two per message, one second apart, in time order."""
    message_ids = api_ids + smtp_ids
    documents = []
    for i in range(count):
        event, action, response = ACTIONS[i % len(ACTIONS)]
        message_id = message_ids[(i // 2) % len(message_ids)]
        documents.append({
            "event": event, "timestamp": BASE + timedelta(seconds=i), "action": action,
            "sender": f"s{i % 10}@{domain}", "recipient": f"r{i % 5000}@example.org",
            "response": response, "from_domain": domain, "message_id": message_id,
            "to_domain": "example.org", "event_id": f"bench-{i}", "agent_type": "filebeat",
            "agent_name": "bench", "agent_hostname": "mx1",
        })
    return documents


def seed_emails(usend_url: str, user_id: int, message_ids: list[str]) -> None:
    import psycopg

    url = usend_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn, conn.cursor() as cursor, cursor.copy(
            "COPY email_messages (message_id, user_id, from_address, to_addresses, subject,"
            " status) FROM STDIN") as copy:
        for message_id in message_ids:
            copy.write_row((message_id, user_id, "bench@example.test", '["r@example.org"]',
                            "Benchmark", "delivered"))


async def seed_logs(mongo: MongoSettings, usend_url: str, documents: list[dict[str, Any]],
                    batch: int) -> float:
    started = time.perf_counter()
    usend = usend_database(usend_url, pool_size=2)
    writer = MongoLogWriter(mongo, insert_timeout=120.0)
    owners = MessageOwnerLookup(usend)
    try:
        await writer.ensure_indexes()
        for start in range(0, len(documents), batch):
            chunk = documents[start:start + batch]
            await label_documents(chunk, owners)
            result = await writer.insert(chunk)
            assert result.inserted == len(chunk), result
    finally:
        writer.close()
        usend.dispose()
    return time.perf_counter() - started


def cases(domain: str, api_ids: list[str], count: int) -> list[tuple[str, dict[str, str]]]:
    middle = BASE + timedelta(seconds=count // 2)
    return [
        ("first page (20, -timestamp)", {}),
        ("page 50 of 100", {"page": "50", "per_page": "100"}),
        ("source=api", {"source": "api"}),
        ("source=smtp&action=deferred", {"source": "smtp", "action": "deferred"}),
        ("1-hour window", {"log_after": middle.isoformat(),
                           "log_before": (middle + timedelta(hours=1)).isoformat()}),
        ("recipient", {"recipient": "r42@example.org"}),
        ("message_id", {"message_id": api_ids[len(api_ids) // 3]}),
        ("sorts=recipient,-timestamp page 3", {"sorts": "recipient,-timestamp", "page": "3"}),
    ]


def log_filter(user_id: int, domain: str, verified_at: datetime,
               params: dict[str, str]) -> tuple[LogFilter, int, int]:
    """The LogFilter GET /logs builds for ``params`` (as etrans.app.logs.list_logs does)."""
    cmd = ListLogs(user_id=user_id, page=int(params.get("page", 1)),
                   per_page=int(params.get("per_page", 20)), **{
                       k: v for k, v in params.items() if k not in ("page", "per_page")})
    sources = {"api": "API", "smtp": "SMTP"}
    query = LogFilter(
        owner=user_id, domains=((domain, verified_at),),
        before=datetime.fromisoformat(cmd.log_before) if cmd.log_before else None,
        after=datetime.fromisoformat(cmd.log_after) if cmd.log_after else None,
        actions=tuple(cmd.action.split(",")) if cmd.action else None,
        sender=cmd.sender, recipient=cmd.recipient, message_id=cmd.message_id,
        source=sources[cmd.source] if cmd.source else None, sorts=parse_sorts(cmd.sorts))
    return query, (cmd.page - 1) * cmd.per_page, cmd.per_page


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=None,
                        help="events to seed (default: 200,000 with a real MongoDB given in "
                             f"${ENV_MONGODB}; 20,000 on secantus, whose every query of a set "
                             "walks it in Python: 200,000 takes about half an hour there)")
    parser.add_argument("--api-share", type=float, default=0.8,
                        help="share of the message ids sent through the API")
    parser.add_argument("--repeat", type=int, default=3, help="measurements per case and side")
    parser.add_argument("--batch", type=int, default=5000, help="documents per seeding batch")
    parser.add_argument("--serve-cwd", help="run etrans serve from this checkout")
    args = parser.parse_args()
    if args.events is None:
        args.events = 200_000 if os.environ.get(ENV_MONGODB) else 20_000

    started: list[Any] = []
    cleanups: list[Any] = []
    try:
        pg_url, pg = ensure_postgres()
        redis_url, redis_server = ensure_redis()
        kafka, broker = ensure_kafka()
        mongo_uri, mongo_server = ensure_mongo()
        started += [s for s in (pg, redis_server, broker, mongo_server) if s is not None]

        from etrans.adapters.sql import migrations

        usend_name = unique_name("bench_usend").replace("-", "_")
        billing_name = unique_name("bench_billing").replace("-", "_")
        usend_url = create_database(pg_url, usend_name)
        cleanups.append(lambda: drop_database(pg_url, usend_name))
        migrations.upgrade(usend_url)
        owner_url = create_database(pg_url, billing_name)
        cleanups.append(lambda: drop_database(pg_url, billing_name))
        billing = create_billing_database(owner_url, billing_name)
        cleanups.insert(0, lambda: drop_billing_role(pg_url, billing))
        seed = BillingSeeder(billing.owner_url)
        user_id = int(uuid.uuid4().int % 2**40) + 10**9
        seed._insert("users", {"id": user_id, "email": f"u{user_id}@example.test"})
        domain = f"d{uuid.uuid4().hex[:12]}.example.test"
        verified_at = BASE - timedelta(days=1)
        seed.domain(user_id, domain, status="verified", verified_at=verified_at)

        messages = args.events // 2
        api_count = int(messages * args.api_share)
        api_ids = [f"msg_{uuid.uuid4().hex}@{domain}" for _ in range(api_count)]
        smtp_ids = [f"<smtp-{i}.{uuid.uuid4().hex[:8]}@{domain}>"
                    for i in range(messages - api_count)]
        t = time.perf_counter()
        seed_emails(usend_url, user_id, api_ids)
        print(f"email_messages: {api_count} rows in {time.perf_counter() - t:.1f} s")

        dbname = unique_name("bench_logs").replace("-", "_")
        mongo = MongoSettings(uri=Secret(mongo_uri), dbname=dbname, collection="logs")
        from pymongo import MongoClient

        client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri, tz_aware=True)
        cleanups.insert(0, lambda: client.drop_database(dbname))
        cleanups.append(client.close)
        documents = make_documents(args.events, domain, api_ids, smtp_ids)
        seconds = trio.run(seed_logs, mongo, usend_url, documents, args.batch)
        print(f"MongoDB: {args.events} events over {messages} message ids ({api_count} API) "
              f"labelled and inserted in {seconds:.1f} s")
        del documents
        collection = client[dbname]["logs"]

        topic = create_topic(kafka, unique_name("bench-sendmail"))
        env = {
            "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1",
            "KAFKA_BOOTSTRAP_SERVERS": kafka, "KAFKA_TOPIC": topic, "REDIS_URI": redis_url,
            "MONGODB_URI": mongo_uri, "MONGODB_DBNAME": dbname, "MONGODB_COLLECTION": "logs",
            "TOKEN_SECRET": "0123456789abcdef0123456789abcdef", "TOKEN_IV": "fedcba9876543210",
            "DB_URI": billing.readonly_url, "USEND_DB_URI": usend_url,
            "BILLING_V4_URI": "http://127.0.0.1:9/", "JWT_SECRET": JWT_SECRET,
            "ETRANS_REDIS_PREFIX": f"bench:{uuid.uuid4().hex[:8]}:",
            "ETRANS_BIND": f"127.0.0.1:{free_port()}", "ETRANS_LOG_LEVEL": "WARNING",
        }
        here = os.getcwd()
        os.chdir(args.serve_cwd or str(ROOT))  # `python -m etrans` runs the checkout it starts in
        try:
            serve = ServeProcess(env).start()
        finally:
            os.chdir(here)
        cleanups.insert(0, serve.stop)
        http = httpx.Client(base_url=serve.base_url, headers=bearer(user_id), timeout=600.0)
        cleanups.insert(0, http.close)

        ratios = []
        print(f"{'case':36s} {'GET /logs':>10s} {'raw find':>10s} {'ratio':>7s}  total")
        for name, params in cases(domain, api_ids, args.events):
            query, skip, limit = log_filter(user_id, domain, verified_at, params)
            match = mongo_filter(query)
            api_times, raw_times = [], []
            answer: dict[str, Any] = {}
            raw: list[dict[str, Any]] = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                response = http.get("/logs", params=params)
                api_times.append(time.perf_counter() - t)
                if response.status_code != 200:
                    raise SystemExit(f"GET /logs?{params}: {response.status_code} "
                                     f"{response.text[:300]}")
                answer = response.json()
                t = time.perf_counter()
                raw = list(collection.find(match, _PROJECTION).sort(list(query.sorts))
                           .skip(skip).limit(limit))
                raw_times.append(time.perf_counter() - t)
            got = [log["message_id"] for log in answer["logs"]]
            want = [doc["message_id"] for doc in raw]
            keys = [k for k, _ in query.sorts]
            if [[log[k] for k in keys] for log in answer["logs"]] != \
                    [[doc[k] if k != "timestamp" else
                      doc[k].isoformat().replace("+00:00", "Z") for k in keys] for doc in raw]:
                raise SystemExit(f"{name}: the page differs from the raw find\n{got}\n{want}")
            total = collection.count_documents(match)
            if answer["total"] != total:
                raise SystemExit(f"{name}: total {answer['total']} != count_documents {total}")
            api_ms, raw_ms = statistics.median(api_times) * 1e3, statistics.median(raw_times) * 1e3
            ratios.append(raw_ms / api_ms)
            print(f"{name:36s} {api_ms:8.1f} ms {raw_ms:8.1f} ms {raw_ms / api_ms:7.3f}  "
                  f"{answer['total']}")
        print(json.dumps({"events": args.events, "message_ids": messages, "api_ids": api_count,
                          "repeat": args.repeat, "mongo": "external" if mongo_server is None
                          else "secantus"}))
        print(f"ratio {math.exp(sum(math.log(r) for r in ratios) / len(ratios)):.3f}")
    finally:
        for cleanup in cleanups:
            try:
                cleanup()
            except Exception as exc:  # leave nothing behind, report what could not be removed
                print(f"cleanup: {exc!r}", file=sys.stderr)
        for server in started:
            server.cleanup()


if __name__ == "__main__":
    main()
