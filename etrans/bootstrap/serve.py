"""``etrans serve``: the HTTP API on PostgreSQL, Redis, MongoDB and Kafka, with its outbox relay.

The API itself is wired by :mod:`etrans.bootstrap.api`, as in ``etrans dev``; this module opens
the real services, checks KAFKA_TOPIC at start and runs the server.
"""

from __future__ import annotations

import os
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING

import trio

from etrans.bootstrap.api import ApiBackends, ApiSections, create_api, outbox_relay
from etrans.bootstrap.configs import hypercorn_config, mmap_large_allocations
from etrans.bootstrap.readiness import run_ready
from etrans.bootstrap.stores import redis_api_stores, release_domains, release_screen
from etrans.observability import get_logger

if TYPE_CHECKING:
    import socket
    from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

    from hypercorn.config import Config as HypercornConfig
    from quart_trio import QuartTrio

    from etrans.adapters.sql.outbox import OutboxRelay
    from etrans.adapters.sql.outbox_store import OutboxStore
    from etrans.app.ports import HealthProbe
    from etrans.runtime import ServiceMain, Shutdown
    from etrans.settings import ServeSettings

log = get_logger(__name__)


def build(settings: ServeSettings) -> ServiceMain:
    sections = ApiSections(http=settings.http, tokens=settings.tokens, kafka=settings.kafka,
                           outbox=settings.outbox, tracking=settings.tracking)
    config = hypercorn_config(settings.http, drain_seconds=settings.drain_seconds)
    mmap_large_allocations()

    async def main(shutdown: Shutdown) -> None:
        from etrans.adapters.metrics.prometheus import PrometheusMetrics
        from etrans.adapters.metrics.server import serve_metrics

        metrics = PrometheusMetrics()
        # GET /metrics on the API's port, unless ETRANS_METRICS_BIND puts it elsewhere.
        bind = settings.metrics_bind
        async with _open_backends(settings) as (backends, relay, probes, outbox):
            metrics.watch_backlog("etrans_outbox_backlog", "etrans_outbox_oldest_age_seconds",
                                  outbox.backlog)
            app = create_api(sections, backends, probes=probes, metrics=metrics.http(),
                             metrics_page=metrics.render if bind is None else None)
            async with trio.open_nursery() as nursery:
                if bind is not None:
                    await nursery.start(serve_metrics, bind, metrics.render)
                await run_ready(shutdown, f"HTTP on {shown(config.bind[0])}",
                                partial(serve_http, app, config, relay, shutdown))
                nursery.cancel_scope.cancel()

    return main


def shown(bind: str) -> str:
    """``bind`` for people: a worker of ``--workers`` binds ``fd://N``, its parent's socket."""
    if not bind.startswith("fd://"):
        return bind
    import socket

    with socket.socket(fileno=os.dup(int(bind[5:]))) as sock:
        host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


def listening_sockets(settings: ServeSettings) -> list[socket.socket]:
    """For ``serve --workers N``: the parent binds and listens at ETRANS_BIND (as hypercorn's
    own multi-process mode does) and its children accept on these inherited descriptors
    (``fd://N``): one accept queue, so a worker that drains leaves the waiting connections to
    the others, and a busy worker accepts less."""
    config = hypercorn_config(settings.http, drain_seconds=settings.drain_seconds)
    sockets = config.create_sockets().insecure_sockets
    for sock in sockets:
        sock.listen(config.backlog)
    return sockets


async def serve_http(app: QuartTrio, config: HypercornConfig, relay: OutboxRelay,
                     shutdown: Shutdown, *,
                     task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    """The HTTP server until shutdown, and the outbox relay that publishes what requests
    committed: it runs until the server has drained, then makes one last pass.
    ``task_status.started(binds)`` once the sockets listen (the relay runs by then)."""
    from hypercorn.trio import serve as hypercorn_serve

    async with trio.open_nursery() as nursery:
        relay_done = trio.Event()
        await nursery.start(relay.run, relay_done)
        log.info("listening", bind=shown(config.bind[0]))
        await hypercorn_serve(app, config, shutdown_trigger=shutdown.wait_requested,
                              task_status=task_status)
        relay_done.set()
        relay.notify()


@asynccontextmanager
async def _open_backends(settings: ServeSettings
                         ) -> AsyncIterator[tuple[ApiBackends, OutboxRelay, Sequence[HealthProbe],
                                                  OutboxStore]]:
    """PostgreSQL (Billing DB read only, USEND DB), MongoDB, Kafka and Redis, closed on exit in
    reverse order; the outbox relay on the USEND DB."""
    from etrans.adapters.kafka.client import KafkaProducer
    from etrans.adapters.mongo.log_reader import MongoLogReader
    from etrans.adapters.mongo.store import MongoStore
    from etrans.adapters.redis.client import open_redis
    from etrans.adapters.sql import billing_database, usend_database
    from etrans.adapters.sql.outbox_store import PgOutboxStore
    from etrans.adapters.sql.usend_repo import UsendRepository

    dbs = settings.databases
    async with AsyncExitStack() as stack:
        # The Billing DB is external: its engine opens READ ONLY sessions (docs/database.md).
        # Both engines' sessions cancel a statement after DB_STATEMENT_TIMEOUT_SECONDS (running
        # or waiting for a lock): no request holds a pooled connection longer.  The outbox relay
        # (PgOutboxStore.of) and the email writes of UsendRepository open connections of their
        # own from the URL, without that bound.
        timeout = dbs.statement_timeout_seconds
        billing = billing_database(dbs.billing_uri.get(), pool_size=dbs.pool_size,
                                   statement_timeout=timeout)
        stack.callback(billing.dispose)
        usend = usend_database(dbs.usend_uri.get(), pool_size=dbs.pool_size,
                               statement_timeout=timeout)
        stack.callback(usend.dispose)
        mongo = MongoStore(settings.mongo)
        stack.callback(mongo.close)
        producer = KafkaProducer.from_settings(settings.kafka)
        # The relay and the tracking events produce here, and both have returned: what is
        # still queued belongs to a relay pass that was cut short and rolled back, published
        # again at the next start (tracking events: see app/tracking_hits.py).
        stack.callback(producer.close, 1.0)
        # One Redis client for every Redis adapter (requests' commands are pipelined).
        redis = await stack.enter_async_context(open_redis(settings.redis.url.get()))
        usend_repo = UsendRepository(usend)
        stack.push_async_callback(_shielded, usend_repo.aclose)
        stores = redis_api_stores(redis, prefix=settings.http.redis_prefix,
                                  usend_repo=usend_repo, log_reader=MongoLogReader(mongo))
        # The relay's rows, and their backlog for the metrics; releasing a scheduled email
        # checks the suppression list again.
        outbox = PgOutboxStore.of(usend, release_screen(
            usend_repo, settings.kafka.events_topic,
            release_domains(billing if settings.http.billing_v4_uri else None, usend)))
        relay = outbox_relay(settings.kafka, settings.outbox, outbox, producer)
        yield (ApiBackends(usend_db=usend, stores=stores, billing_db=billing, relay=relay,
                           events=producer), relay,
               [billing, usend, redis, producer, mongo], outbox)


async def _shielded(close: Callable[[], Awaitable[object]]) -> None:
    with trio.CancelScope(shield=True):
        await close()


def check_kafka_topic(settings: ServeSettings, *, timeout: float = 5.0) -> None:
    """At start: KAFKA_TOPIC must take the largest record etrans produces (its
    ``max.message.bytes`` at least KAFKA_MAX_RECORD_BYTES + framing), else ConfigError (exit 2)
    naming both settings.  A broker that cannot be asked, or a topic that does not report the
    value, is a warning: the check cannot be made, serving goes on."""
    from etrans.adapters.kafka.client import KafkaAdmin
    from etrans.errors import ConfigError

    kafka = settings.kafka
    try:
        limit = KafkaAdmin(kafka, timeout=timeout).topic_max_message_bytes(kafka.topic)
    except Exception as exc:
        log.warning("could not check that KAFKA_TOPIC takes the largest email record",
                    topic=kafka.topic, error=repr(exc), needed=kafka.max_batch_bytes)
        return
    if limit is None:
        log.info("KAFKA_TOPIC does not report max.message.bytes: not checked", topic=kafka.topic)
        return
    if limit < kafka.max_batch_bytes:
        raise ConfigError([
            f"Kafka topic {kafka.topic!r} (KAFKA_TOPIC) takes records of at most {limit} bytes "
            f"(its max.message.bytes), but etrans produces records of up to "
            f"KAFKA_MAX_RECORD_BYTES={kafka.max_record_bytes} bytes (+1024 of framing): raise the "
            f"topic's max.message.bytes to at least {kafka.max_batch_bytes} (kafka-configs.sh "
            f"--alter --entity-type topics --entity-name {kafka.topic} --add-config "
            f"max.message.bytes={kafka.max_batch_bytes}), or lower KAFKA_MAX_RECORD_BYTES to "
            f"{limit - 1024} or less (larger emails are then refused with 400); see "
            "docs/configuration.md, 'Large emails and Kafka size limits'"])
    log.info("KAFKA_TOPIC takes the largest email record", topic=kafka.topic,
             max_message_bytes=limit, needed=kafka.max_batch_bytes)
