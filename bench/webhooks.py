"""Benchmark: ``etrans webhooks`` delivered events/s vs a raw httpx loop, same receiver.

1. a receiver in a subprocess of its own (the standard library's threading HTTP/1.1 server,
   keep-alive, answers 200 at once, counts requests and distinct ``webhook-id`` s; no signature
   check: the tests verify signatures);
2. a topic with N email events of one user (default 3,000), a migrated USEND DB with one
   endpoint of that user pointing at the receiver;
3. raw baselines: one httpx ``AsyncClient`` (on Trio) POSTing the same N bodies with a
   ``webhook-id`` header - no Kafka, no signing, no database - in a loop (one at a time: the
   issue's baseline, ``ratio``), and as many at once as the worker may send to one endpoint
   (WEBHOOKS_ENDPOINT_CONCURRENCY, 4: ``ratio_same_concurrency``, the stricter figure);
4. etrans webhooks: the real pipeline + WebhookDelivery (PostgreSQL store and directory, signing,
   retry loop, 10 workers), timed from the first partition assignment until the receiver has
   seen every event id;

5. the raw baselines again: each ratio uses the best of a baseline's two runs, so a slow
   moment of the shared machine during one of them does not flatter the worker;

prints the rates, ``ratio_same_concurrency`` and, last, ``ratio <webhooks/raw loop>`` (goal >=
0.7).  Services:
$ETRANS_TEST_KAFKA_BOOTSTRAP / $ETRANS_TEST_POSTGRES_URL, else private tansu / PostgreSQL.

    .venv/bin/python bench/webhooks.py [--events 3000] [--concurrency 4] [--workers 10]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from etrans import observability
from etrans.app.webhook_delivery import webhook_body
from etrans.domain.events import EventType
from etrans.pipeline import Pipeline
from etrans.runtime import Shutdown
from etrans.settings import Consumer, KafkaSettings, WebhooksOptions
from tests.harness.servers import (
    KAFKA_TEST_CONSUMER_CONFIG,
    create_database,
    create_topic,
    drop_database,
    ensure_kafka,
    ensure_postgres,
    unique_name,
)
from tests.integration.webhook_support import add_webhook, email_event, produce_events


def serve_receiver(port: int) -> None:
    """The receiver process: POST counts, GET /stats answers the counts, GET /reset zeroes."""
    import threading

    lock = threading.Lock()
    seen: set[str] = set()
    counts = {"requests": 0}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body are two writes: with Nagle on, each answer waits ~40 ms for the
        # client's delayed ACK.
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", "0")))
            with lock:
                counts["requests"] += 1
                seen.add(self.headers.get("webhook-id", ""))
            self._answer(b"ok")

        def do_GET(self) -> None:
            with lock:
                if self.path == "/reset":
                    seen.clear()
                    counts["requests"] = 0
                body = json.dumps({"requests": counts["requests"], "unique": len(seen)}).encode()
            self._answer(body)

        def _answer(self, body: bytes) -> None:
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print("ready", flush=True)
    server.serve_forever()


def start_receiver() -> tuple[subprocess.Popen[bytes], str]:
    from tests.harness.servers import free_port

    port = free_port()
    process = subprocess.Popen([sys.executable, __file__, "--receiver", str(port)],
                               stdout=subprocess.PIPE)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == b"ready"
    return process, f"http://127.0.0.1:{port}"


def stats(base: str, client: httpx.Client | None = None) -> dict[str, int]:
    answer: dict[str, int] = (client.get(base + "/stats") if client is not None
                              else httpx.get(base + "/stats")).json()
    return answer


async def raw_loop(url: str, bodies: list[tuple[str, bytes]], concurrency: int) -> float:
    async with httpx.AsyncClient(timeout=10.0) as client:
        queue = iter(bodies)
        started, cpu = time.perf_counter(), time.process_time()

        async def post() -> None:
            for event_id, body in queue:
                response = await client.post(url, content=body, headers={
                    "webhook-id": event_id, "content-type": "application/json"})
                assert response.status_code == 200

        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(post)
        elapsed = time.perf_counter() - started
        print(f"  process CPU {(time.process_time() - cpu) / len(bodies) * 1e6:.0f} us/POST")
        return elapsed


async def webhooks_run(bootstrap: str, topic: str, usend_url: str, token_secret: str,
                       base: str, expected: int, workers: int, concurrency: int) -> float:
    from etrans.adapters.sql import usend_database
    from etrans.bootstrap.configs import webhooks_pipeline
    from etrans.bootstrap.webhooks import webhook_client, webhook_delivery
    from etrans.workers.webhooks import WebhooksTask, run_retries

    class NoPublisher:
        async def publish(self, topic: str, value: bytes | None, key: bytes | None = None,
                          headers: object = None) -> None:
            raise AssertionError("no endpoint is disabled in this run")

    options = WebhooksOptions(events_topic=topic, workers=workers, allow_private_urls=True,
                              endpoint_concurrency=concurrency, busy_retry_seconds=0.05,
                              retry_poll_seconds=0.05)
    kafka = KafkaSettings(bootstrap_servers=bootstrap, topic=topic)
    config = webhooks_pipeline(kafka, Consumer(topic, unique_name("bench-webhooks")), options)
    config = replace(config, kafka={"bootstrap.servers": bootstrap,
                                    **KAFKA_TEST_CONSUMER_CONFIG})
    db = usend_database(usend_url, pool_size=workers + 2)
    client = webhook_client(options)
    delivery = webhook_delivery(db, token_secret, client, NoPublisher(), options)
    pipeline = Pipeline(config, WebhooksTask(delivery))
    shutdown = Shutdown(drain_seconds=10)
    # Polled every 50 ms while the worker is timed: one client made beforehand (a new one per
    # poll built an SSL context each time - ~10 ms of CPU taken from the worker per poll).
    poller = httpx.Client()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_retries, delivery, shutdown, options.retry_poll_seconds)
            await nursery.start(pipeline.run, shutdown)
            await pipeline.wait_assigned()
            started, cpu = time.perf_counter(), time.process_time()
            while (await trio.to_thread.run_sync(stats, base, poller))["unique"] < expected:  # noqa: ASYNC110
                await trio.sleep(0.05)
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu
            shutdown.request()
    finally:
        await delivery.aclose()
        await client.aclose()
        await trio.to_thread.run_sync(poller.close)
        db.dispose()
    print(f"  delivery counters: {delivery.statistics()}")
    # All threads of this process (Trio thread, consumer thread, pollers), not PostgreSQL's.
    print(f"  process CPU {cpu / expected * 1e6:.0f} us/event")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=4,
                        help="WEBHOOKS_ENDPOINT_CONCURRENCY, and the raw loop's")
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--receiver", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receiver:
        serve_receiver(args.receiver)
        return
    observability.configure("bench-webhooks", level="WARNING", json=False)
    bootstrap, _broker = ensure_kafka()
    pg_url, _pg = ensure_postgres()
    receiver, base = start_receiver()
    name = unique_name("bench_webhooks").replace("-", "_")
    usend_url = create_database(pg_url, name)
    try:
        from etrans.adapters.sql import migrations

        migrations.upgrade(usend_url)
        token_secret, user = "b" * 32, 42
        add_webhook(usend_url, token_secret, user, base + "/hook", "whsec_" + "A" * 43 + "=")
        events = [email_event(user, n, EventType.DELIVERED) for n in range(args.events)]
        topic = create_topic(bootstrap, unique_name("bench-email-events"), partitions=3)
        produce_events(bootstrap, topic, events)
        print(f"backlog: {args.events} events on 3 partitions; one endpoint, receiver {base}")

        bodies = [(e.id, webhook_body(e)) for e in events]
        raw_rates: dict[int, float] = {}

        def measure_raw() -> None:
            """The raw loops; each keeps its best rate (the machine is shared: a baseline
            measured in a slow moment would flatter the worker)."""
            for concurrency in (1, args.concurrency):
                raw_seconds = trio.run(raw_loop, base + "/hook", bodies, concurrency)
                rate = args.events / raw_seconds
                raw_rates[concurrency] = max(rate, raw_rates.get(concurrency, 0.0))
                print(f"raw httpx: {args.events} POSTs in {raw_seconds:.2f} s ="
                      f" {rate:,.0f}/s ({concurrency} at once)")
                httpx.get(base + "/reset")

        measure_raw()
        seconds = trio.run(webhooks_run, bootstrap, topic, usend_url, token_secret, base,
                           args.events, args.workers, args.concurrency)
        rate = args.events / seconds
        got = stats(base)
        print(f"etrans webhooks: {args.events} events in {seconds:.2f} s = {rate:,.0f}/s"
              f" ({args.workers} workers, {args.concurrency} per endpoint; receiver got"
              f" {got['requests']} requests for {got['unique']} ids)")
        httpx.get(base + "/reset")
        measure_raw()  # again after the worker: the ratios use the best raw rates
        print(f"ratio_same_concurrency {rate / raw_rates[args.concurrency]:.3f}")
        print(f"ratio {rate / raw_rates[1]:.3f}")
    finally:
        receiver.terminate()
        drop_database(pg_url, name)


if __name__ == "__main__":
    main()
