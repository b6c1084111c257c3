"""Benchmark: sustained POST /emails against GET /healthz on the same ``etrans serve``, one run.

Starts (or reuses, like the tests: $ETRANS_TEST_*) PostgreSQL, Redis, a Kafka-API broker and a
MongoDB-wire server; creates a migrated USEND DB and a Billing DB (read-only role) with one user
owning a verified, unlimited domain; starts ``etrans serve`` as a subprocess.  A load generator on
loopback (raw Trio sockets, requests serialised once, ``--connections`` keep-alive connections)
then runs GET /healthz and POST /emails for ``--seconds`` each, in ``--rounds`` alternating
slices so that a change in the machine's load affects both alike.  Each accepted email is a row,
an outbox row and a Kafka record published by the relay.  Prints rates, p50/p99 latencies and
non-2xx counts; the line before the last is ``template ratio <send by template_id rate / send
rate>`` (goal >= 0.8); the last line is ``ratio <send rate / healthz rate>`` (goal >= 0.5).

With ``--workers N`` (default 2; 0: skipped), a second ``etrans serve --workers N`` on the same
databases runs beside the first, and each round also runs GET /healthz and POST /emails
against it: the rates with 1 and with N serve workers, measured in the same rounds, are
printed before the ratio lines (docs/operations.md, "Using every core").

Method (the machine is shared, so single measurements move by tens of percent): both loads use
the same connection count, the same generator and fresh keep-alive connections per slice; each
load is warmed up (``--warmup`` seconds) before the measured rounds; within a round the order of
the two loads alternates (healthz first in even rounds, send first in odd ones) so that neither
side always runs right after the other; the rate of each side is the MEDIAN of its per-round
rates (a slice hit by another process's burst does not drag the figure), and the ratio is
median(send) / median(healthz).  Every round is printed, with the median and spread of the
per-round (paired) ratios.

CPU per request (less sensitive to the other loads of a shared machine than rates): the CPU time
of the ``etrans serve`` process (all its threads, ``/proc/<pid>/stat``) and of the PostgreSQL
backends connected to the benchmark's databases (``pg_stat_activity``, when PostgreSQL runs on
this machine), summed over each load's slices and divided by its requests; the line ``template
cpu ratio <send CPU per request / template CPU per request>`` compares the two sends (1.0: a send
by template costs no more than a plain one).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import trio  # noqa: E402

from tests.e2e.send_support import JWT_SECRET, ServeProcess, bearer, seed_sender  # noqa: E402
from tests.harness.databases import (  # noqa: E402
    BillingSeeder,
    create_billing_database,
    drop_billing_role,
)
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


def build_request(host: str, method: str, path: str, headers: dict[str, str],
                  body: Any = None) -> bytes:
    """One HTTP/1.1 keep-alive request, serialised once (the generator must stay cheap)."""
    payload = json.dumps(body).encode() if body is not None else b""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: keep-alive",
             *(f"{k}: {v}" for k, v in headers.items())]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


async def _read_response(stream: trio.SocketStream, buffer: bytearray) -> int:
    while b"\r\n\r\n" not in buffer:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    body = bytearray(rest)
    while len(body) < length:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        body += chunk
    buffer[:] = body[length:]
    return status


async def load(host: str, port: int, request: bytes, *, seconds: float,
               connections: int) -> tuple[list[float], dict[int, int], float]:
    """``connections`` keep-alive connections send ``request`` in a loop for ``seconds``:
    (latencies, status counts, elapsed)."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    deadline = trio.current_time() + seconds

    async def worker() -> None:
        while trio.current_time() < deadline:
            # hypercorn closes a keep-alive connection after keep_alive_max_requests (1000):
            # open a new one and go on.
            stream = await trio.open_tcp_stream(host, port)
            buffer = bytearray()
            async with stream:
                while trio.current_time() < deadline:
                    start = time.perf_counter()
                    try:
                        await stream.send_all(request)
                        status = await _read_response(stream, buffer)
                    except (ConnectionError, trio.BrokenResourceError):
                        break
                    latencies.append(time.perf_counter() - start)
                    statuses[status] = statuses.get(status, 0) + 1

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(worker)
    return latencies, statuses, time.perf_counter() - started


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of process ``pid`` (all its threads) so far; 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


class CpuMeter:
    """CPU seconds of ``etrans serve`` and of the PostgreSQL backends of ``databases``."""

    def __init__(self, serve_pid: int, admin_url: str, databases: list[str]) -> None:
        self.serve_pid = serve_pid
        self.admin_url = admin_url
        self.databases = databases

    def backends(self) -> list[int]:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = ANY(%s)",
                                [self.databases]).fetchall()
        return [int(pid) for (pid,) in rows]

    def sample(self) -> tuple[float, dict[int, float]]:
        return (process_cpu_seconds(self.serve_pid),
                {pid: process_cpu_seconds(pid) for pid in self.backends()})

    @staticmethod
    def spent(before: tuple[float, dict[int, float]], after: tuple[float, dict[int, float]]
              ) -> tuple[float, float]:
        """(serve, database) CPU seconds between two samples (backends present at both)."""
        database = sum(after[1][pid] - t for pid, t in before[1].items() if pid in after[1])
        return after[0] - before[0], database


def summary(parts: list[tuple[list[float], dict[int, int], float]]) -> dict[str, Any]:
    latencies = sorted(x for part in parts for x in part[0])
    statuses: dict[int, int] = {}
    for _, counts, _ in parts:
        for status, n in counts.items():
            statuses[status] = statuses.get(status, 0) + n
    rates = [len(part[0]) / part[2] for part in parts]
    return {
        "rate": statistics.median(rates), "rates": rates, "count": len(latencies),
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "non_2xx": sum(n for s, n in statuses.items() if not 200 <= s < 300),
        "statuses": statuses,
    }


def seed_template(usend_url: str, user: int) -> str:
    """A stored template like the plain email of the benchmark; its ``tpl_<n>`` id."""
    from sqlalchemy import create_engine, insert

    from etrans.adapters.sql.usend import EmailTemplate

    table = EmailTemplate.__table__
    engine = create_engine(usend_url)
    try:
        with engine.begin() as conn:
            number = conn.execute(insert(table).returning(table.c.id), {
                "user_id": user, "name": "bench", "subject": "Benchmark {{ name }}",
                "html": "<p>Hello {{ name }} from the benchmark</p>",
                "text": "Hello {{ name }} from the benchmark"}).scalar_one()
    finally:
        engine.dispose()
    return f"tpl_{number}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=14.0,
                        help="measured seconds per load (split into --rounds slices)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=7,
                        help="alternating healthz/send slices per phase")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="seconds of each load before the measured rounds")
    parser.add_argument("--workers", type=int, default=2,
                        help="also measure `etrans serve --workers N` (0: not)")
    parser.add_argument("--profile", metavar="PATH",
                        help="run etrans serve under cProfile, stats written to PATH")
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

        usend_name, billing_name = unique_name("bench_usend"), unique_name("bench_billing")
        usend_url = create_database(pg_url, usend_name.replace("-", "_"))
        cleanups.append(lambda: drop_database(pg_url, usend_name.replace("-", "_")))
        migrations.upgrade(usend_url)
        owner_url = create_database(pg_url, billing_name.replace("-", "_"))
        cleanups.append(lambda: drop_database(pg_url, billing_name.replace("-", "_")))
        billing = create_billing_database(owner_url, billing_name.replace("-", "_"))
        cleanups.insert(0, lambda: drop_billing_role(pg_url, billing))
        user, domain = seed_sender(BillingSeeder(billing.owner_url))
        topic = create_topic(kafka, unique_name("bench-sendmail"))

        env = {
            "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1",
            "KAFKA_BOOTSTRAP_SERVERS": kafka, "KAFKA_TOPIC": topic, "REDIS_URI": redis_url,
            "MONGODB_URI": mongo_uri, "MONGODB_DBNAME": "bench", "MONGODB_COLLECTION": "logs",
            "TOKEN_SECRET": "0123456789abcdef0123456789abcdef", "TOKEN_IV": "fedcba9876543210",
            "DB_URI": billing.readonly_url, "USEND_DB_URI": usend_url,
            "BILLING_V4_URI": "http://127.0.0.1:9/", "JWT_SECRET": JWT_SECRET,
            "ETRANS_REDIS_PREFIX": f"bench:{uuid.uuid4().hex[:8]}:",
            "ETRANS_BIND": f"127.0.0.1:{free_port()}", "ETRANS_LOG_LEVEL": "WARNING",
            "DB_POOL_SIZE": "20",
            # The rate limiter runs (its Redis round trip is part of the cost measured) but with a
            # budget the benchmark cannot reach: 429s would be cheap non-2xx answers.
            "RATE_LIMIT_REQUESTS": "1000000000",
        }
        python_args = ("-m", "cProfile", "-o", args.profile) if args.profile else ()
        serve = ServeProcess(env, python_args=python_args).start()
        cleanups.insert(0, serve.stop)
        multi_bind = f"127.0.0.1:{free_port()}"
        if args.workers:
            # The same database connections in all: DB_POOL_SIZE is per process (and per
            # database), and PostgreSQL's max_connections is shared with everything else.
            pool = str(max(1, int(env["DB_POOL_SIZE"]) // args.workers))
            multi = ServeProcess({**env, "ETRANS_BIND": multi_bind, "DB_POOL_SIZE": pool},
                                 serve_args=("--workers", str(args.workers))).start()
            cleanups.insert(0, multi.stop)
        email = {"from": f"Bench <bench@{domain}>", "to": ["rcpt@example.org"],
                 "subject": "Benchmark", "html": "<p>Hello from the benchmark</p>",
                 "text": "Hello from the benchmark"}
        auth = bearer(user)
        template_id = seed_template(usend_url, user)
        template_email = {"from": email["from"], "to": email["to"], "template_id": template_id,
                          "template_data": {"name": "Bench"}}

        assert serve.process is not None
        meter = CpuMeter(serve.process.pid, pg_url, [usend_name.replace("-", "_"),
                                                     billing_name.replace("-", "_")])
        cpu: dict[str, list[float]] = {"healthz": [0.0, 0.0], "send": [0.0, 0.0],
                                       "template": [0.0, 0.0]}
        host, port = env["ETRANS_BIND"].split(":")
        health_request = build_request(env["ETRANS_BIND"], "GET", "/healthz", {})
        send_request = build_request(env["ETRANS_BIND"], "POST", "/emails", auth, email)
        template_request = build_request(env["ETRANS_BIND"], "POST", "/emails", auth,
                                         template_email)

        multi_port = int(multi_bind.split(":")[1])
        multi_health = build_request(multi_bind, "GET", "/healthz", {})
        multi_send = build_request(multi_bind, "POST", "/emails", auth, email)
        multi: dict[str, list[Any]] = {"health": [], "send": []}

        async def run() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
            # Warm-up (connections, caches, JIT-less but lazily built paths, the group commit's
            # pool), then alternating slices of the two loads, in alternating order, so that a
            # change in the machine's load during the run affects both alike.
            n = args.connections
            await load(host, int(port), health_request, seconds=args.warmup, connections=n)
            await load(host, int(port), send_request, seconds=args.warmup, connections=n)
            await load(host, int(port), template_request, seconds=args.warmup, connections=n)
            if args.workers:
                for request in (multi_health, multi_send):
                    await load(host, multi_port, request, seconds=args.warmup, connections=n)
            health: list[Any] = []
            send: list[Any] = []
            template: list[Any] = []
            slice_seconds = args.seconds / args.rounds
            for round_no in range(args.rounds):
                order = [("healthz", health, health_request), ("send", send, send_request),
                         ("template", template, template_request)]
                if round_no % 2:
                    order.reverse()
                for name, results, request in order:
                    before = meter.sample()
                    results.append(await load(host, int(port), request, seconds=slice_seconds,
                                              connections=n))
                    serve_cpu, db_cpu = meter.spent(before, meter.sample())
                    cpu[name][0] += serve_cpu
                    cpu[name][1] += db_cpu
                if args.workers:
                    for kind, request in (("health", multi_health), ("send", multi_send)):
                        multi[kind].append(await load(host, multi_port, request,
                                                      seconds=slice_seconds, connections=n))
            return summary(health), summary(send), summary(template)

        health, send, template = trio.run(run)
        for name, result in (("GET /healthz", health), ("POST /emails", send),
                             ("POST /emails template", template)):
            print(f"{name:13s} {result['rate']:8.1f} req/s  n={result['count']:6d}  "
                  f"p50 {result['p50_ms']:6.2f} ms  p99 {result['p99_ms']:7.2f} ms  "
                  f"non-2xx {result['non_2xx']}  statuses {result['statuses']}")
        paired = [s / h for h, s in zip(health["rates"], send["rates"], strict=True)]
        for i, (h, s) in enumerate(zip(health["rates"], send["rates"], strict=True)):
            print(f"round {i + 1}: healthz {h:7.1f}/s  send {s:7.1f}/s  ratio {s / h:.3f}")
        print(f"per-round ratio: median {statistics.median(paired):.3f}  "
              f"min {min(paired):.3f}  max {max(paired):.3f}")
        print(f"connections {args.connections}, {args.seconds:.0f} s per load in {args.rounds} "
              f"alternating slices after {args.warmup:.0f} s warm-up each; rates are medians of "
              "the rounds")
        per_request = {}
        for name, result in (("healthz", health), ("send", send), ("template", template)):
            serve_ms, db_ms = (1000 * t / max(1, result["count"]) for t in cpu[name])
            per_request[name] = serve_ms + db_ms
            print(f"cpu per request {name:8s} serve {serve_ms:6.3f} ms  database {db_ms:6.3f} ms"
                  f"  total {serve_ms + db_ms:6.3f} ms")
        print(f"template cpu ratio {per_request['send'] / per_request['template']:.3f}")
        if health["non_2xx"] or send["non_2xx"] or template["non_2xx"]:
            print("WARNING: non-2xx responses were counted", file=sys.stderr)
        if args.workers:
            for name, one, label in (("health", health, "GET /healthz"),
                                     ("send", send, "POST /emails")):
                many = summary(multi[name])
                print(f"{label}: 1 serve worker {one['rate']:7.1f} req/s, {args.workers} workers "
                      f"{many['rate']:7.1f} req/s (x{many['rate'] / one['rate']:.2f}; p50 "
                      f"{many['p50_ms']:.2f} ms, p99 {many['p99_ms']:.2f} ms, statuses "
                      f"{many['statuses']})")
        # A send by stored template (fetched, rendered from the compiled cache) beside the same
        # email sent plainly (goal >= 0.8).
        print(f"template ratio {template['rate'] / send['rate']:.3f}")
        print(f"ratio {send['rate'] / health['rate']:.3f}")
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
