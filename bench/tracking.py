"""Benchmark: GET /t/o/<token> and GET /t/c/<token> (valid tokens) against GET /healthz on the
same ``etrans serve``, one run.

Set up like ``bench/api.py`` (PostgreSQL, Redis, a Kafka-API broker, a MongoDB-wire server, a
migrated USEND DB and a Billing DB; ``etrans serve`` as a subprocess) with
ETRANS_TRACKING_BASE_URL / ETRANS_TRACKING_SECRET set and KAFKA_EVENTS_TOPIC on a fresh topic.
The same load generator (``bench/api.py``: raw Trio sockets, requests serialised once,
``--connections`` keep-alive connections, the same User-Agent on every request) runs the three
loads in ``--rounds`` slices whose order rotates each round, after a warm-up of each; rates are
medians of the rounds.  Every open and click is an event produced to the broker by the server
(in the background: see ``etrans/app/tracking_hits.py``); the events found on the topic at the
end are printed against the hits answered (fewer: the queue was full and dropped some).  The
last line is ``ratio <min(open rate, click rate) / healthz rate>`` (goal >= 0.7).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import trio  # noqa: E402

from bench.api import build_request, load, summary  # noqa: E402
from etrans.domain.tracking import (  # noqa: E402
    CLICK,
    OPEN,
    TrackingTarget,
    derive_tracking_key,
    make_token,
)
from tests.e2e.send_support import JWT_SECRET, ServeProcess  # noqa: E402
from tests.harness.databases import create_billing_database, drop_billing_role  # noqa: E402
from tests.harness.servers import (  # noqa: E402
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

SECRET = "bench-tracking-secret-0123456789"
USER_AGENT = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/120.0 Safari/537.36")


def events_on(kafka: str, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": kafka, "group.id": f"b-{uuid.uuid4()}",
                         "log_level": 3})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        return int(high - low)
    finally:
        consumer.close()


def serve_env(kafka: str, redis_url: str, mongo_uri: str, billing_url: str, usend_url: str,
              events_topic: str) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1",
        "KAFKA_BOOTSTRAP_SERVERS": kafka, "KAFKA_TOPIC": unique_name("bench-sendmail"),
        "REDIS_URI": redis_url, "MONGODB_URI": mongo_uri, "MONGODB_DBNAME": "bench",
        "MONGODB_COLLECTION": "logs",
        "TOKEN_SECRET": "0123456789abcdef0123456789abcdef", "TOKEN_IV": "fedcba9876543210",
        "DB_URI": billing_url, "USEND_DB_URI": usend_url,
        "BILLING_V4_URI": "http://127.0.0.1:9/", "JWT_SECRET": JWT_SECRET,
        "ETRANS_REDIS_PREFIX": f"bench:{uuid.uuid4().hex[:8]}:",
        "ETRANS_BIND": f"127.0.0.1:{free_port()}", "ETRANS_LOG_LEVEL": "WARNING",
        "ETRANS_TRACKING_BASE_URL": "https://t.example.com", "ETRANS_TRACKING_SECRET": SECRET,
        "KAFKA_EVENTS_TOPIC": events_topic,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=12.0,
                        help="measured seconds per load (split into --rounds slices)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--warmup", type=float, default=2.0)
    args = parser.parse_args()

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
        events_topic = create_topic(kafka, unique_name("bench-email-events"))
        env = serve_env(kafka, redis_url, mongo_uri, billing.readonly_url, usend_url,
                        events_topic)
        serve = ServeProcess(env).start()
        cleanups.insert(0, serve.stop)

        key = derive_tracking_key(SECRET.encode())
        message_id = f"msg_{uuid.uuid4().hex}@example.com"
        opened = make_token(key, TrackingTarget(OPEN, 42, message_id))
        clicked = make_token(key, TrackingTarget(
            CLICK, 42, message_id, "https://shop.example.com/sale?utm_source=email&x=1"))
        bind = env["ETRANS_BIND"]
        host, port = bind.split(":")
        headers = {"User-Agent": USER_AGENT}
        requests = {"healthz": build_request(bind, "GET", "/healthz", headers),
                    "open": build_request(bind, "GET", f"/t/o/{opened}", headers),
                    "click": build_request(bind, "GET", f"/t/c/{clicked}", headers)}

        warmup_hits = [0]

        async def run() -> dict[str, dict[str, Any]]:
            n = args.connections
            for name, request in requests.items():
                latencies, _, _ = await load(host, int(port), request, seconds=args.warmup,
                                             connections=n)
                warmup_hits[0] += len(latencies) if name != "healthz" else 0
            results: dict[str, list[Any]] = {name: [] for name in requests}
            names = list(requests)
            for round_no in range(args.rounds):
                shift = round_no % len(names)
                for name in names[shift:] + names[:shift]:
                    results[name].append(await load(
                        host, int(port), requests[name], seconds=args.seconds / args.rounds,
                        connections=n))
            return {name: summary(parts) for name, parts in results.items()}

        measured = trio.run(run)
        for name, result in measured.items():
            print(f"GET {name:8s} {result['rate']:8.1f} req/s  n={result['count']:6d}  "
                  f"p50 {result['p50_ms']:6.2f} ms  p99 {result['p99_ms']:7.2f} ms  "
                  f"statuses {result['statuses']}")
        health = measured["healthz"]["rates"]
        for i, h in enumerate(health):
            o, c = measured["open"]["rates"][i], measured["click"]["rates"][i]
            print(f"round {i + 1}: healthz {h:7.1f}/s  open {o:7.1f}/s  click {c:7.1f}/s  "
                  f"ratios {o / h:.3f} {c / h:.3f}")
        time.sleep(2.0)  # the background task produces what is still queued
        hits = sum(measured[name]["count"] for name in ("open", "click")) + warmup_hits[0]
        events = events_on(kafka, events_topic)
        print(f"events on {events_topic}: {events} of {hits} hits answered (warm-up included;"
              f" {hits - events} not produced: dropped or still queued)")
        print(f"connections {args.connections}, {args.seconds:.0f} s per load in {args.rounds} "
              f"rotating slices after {args.warmup:.0f} s warm-up each; rates are medians")
        healthz_rate = measured["healthz"]["rate"]
        open_ratio = measured["open"]["rate"] / healthz_rate
        click_ratio = measured["click"]["rate"] / healthz_rate
        paired = [min(o, c) / h for o, c, h in zip(measured["open"]["rates"],
                                                   measured["click"]["rates"], health,
                                                   strict=True)]
        print(f"open/healthz {open_ratio:.3f}  click/healthz {click_ratio:.3f}  per-round "
              f"min(open, click)/healthz: median {statistics.median(paired):.3f}")
        print(f"ratio {min(open_ratio, click_ratio):.3f}")
    finally:
        for cleanup in cleanups:
            try:
                cleanup()
            except Exception as exc:
                print(f"cleanup: {exc!r}", file=sys.stderr)
        for server in started:
            server.cleanup()


if __name__ == "__main__":
    main()
