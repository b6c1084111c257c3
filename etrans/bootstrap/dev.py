"""``etrans dev``: the API, sendmail, fetchlog and webhooks in one Trio process
(:mod:`etrans.dev`).

Every service has an embedded stand-in with its data under ``data_dir``; a real service given
in the settings replaces its stand-in (:mod:`etrans.bootstrap.stores` makes the choice):

==============  =====================================  ==================================
service         stand-in (``data_dir``)                replaced when set
==============  =====================================  ==================================
USEND DB        SQLite ``usend.sqlite3``               USEND_DB_URI (migrated at start)
Kafka topics    ``topics.sqlite3`` (in-process)        KAFKA_BOOTSTRAP_SERVERS
Redis           ``state.sqlite3``                      REDIS_URI / REDIS_HOST
MongoDB         ``logs.sqlite3``                       MONGODB_URI
SMTP server     built-in sink, ``mail/*.eml``          SMTP_HOST
==============  =====================================  ==================================

Billing is the local mode (``local_*`` tables).  TOKEN_SECRET/TOKEN_IV default to secrets
generated once in ``data_dir/secrets.json``.  The API, the pipelines and the SMTP pool are built
by the same functions as those of ``serve``, ``sendmail``, ``fetchlog`` and ``webhooks``
(webhooks: the USEND DB in use holds the webhooks, attempts and retries; loopback and private
endpoint addresses are allowed unless WEBHOOKS_ALLOW_PRIVATE_URLS=false).  Open and click
tracking is on (:func:`dev_tracking`): ``/t/o`` and ``/t/c`` on dev's own server.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import trio

from etrans.bootstrap.api import ApiBackends, ApiSections, create_api, outbox_relay
from etrans.bootstrap.configs import (
    fetchlog_pipeline,
    hypercorn_config,
    log_topic,
    mmap_large_allocations,
    sendmail_pipeline,
    webhooks_pipeline,
)
from etrans.bootstrap.readiness import run_ready
from etrans.bootstrap.serve import serve_http
from etrans.bootstrap.stores import (
    LogStores,
    StateStores,
    Topics,
    UsendStores,
    open_logs,
    open_state,
    open_topics,
    open_usend,
)
from etrans.bootstrap.tracing import process_tracer
from etrans.bootstrap.webhooks import webhook_client, webhook_delivery
from etrans.bootstrap.workers import (
    dkim_key_source,
    email_delivery,
    fetchlog_task,
    message_signing,
    message_tracking,
    smtp_pool,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from quart_trio import QuartTrio

    from etrans.adapters.crypto.credentials import CredentialCipher
    from etrans.adapters.metrics.prometheus import PrometheusMetrics
    from etrans.adapters.sql.outbox import OutboxRelay
    from etrans.pipeline import Pipeline, PipelineConfig
    from etrans.runtime import ServiceMain, Shutdown
    from etrans.settings import DevSettings, SmtpSettings, TokenSettings
    from etrans.settings.tracking import TrackingSettings
    from etrans.workers.fetchlog import FetchlogTask


@dataclass(frozen=True)
class DevBackends:
    usend: UsendStores
    topics: Topics
    logs: LogStores
    state: StateStores


def build(settings: DevSettings, *, data_dir: Path) -> ServiceMain:
    from etrans.adapters.crypto.credentials import CredentialCipher
    from etrans.dev import demo
    from etrans.settings import Secret, TokenSettings

    data_dir.mkdir(parents=True, exist_ok=True)
    tokens = settings.tokens
    if tokens is None:
        secret, iv = demo.data_secrets(data_dir)
        tokens = TokenSettings(Secret(secret), Secret(iv))
    sections = ApiSections(http=settings.http, tokens=tokens, kafka=settings.topics,
                           outbox=settings.outbox, tracking=dev_tracking(settings, tokens))
    cipher = CredentialCipher(tokens.secret.get(), tokens.iv.get())

    async def main(shutdown: Shutdown) -> None:
        from etrans.adapters.metrics.prometheus import PrometheusMetrics
        from etrans.adapters.metrics.server import serve_metrics

        # The banner lists the services in this order, whichever is opened first.
        stand_ins = dict.fromkeys(("usend db", "topics", "redis", "logs", "smtp"), "")
        # One registry for the API and every worker: GET /metrics on the API's port, or at
        # ETRANS_METRICS_BIND instead (as serve).
        metrics = PrometheusMetrics()
        async with _open_backends(settings, data_dir, cipher, stand_ins) as backends, \
                trio.open_nursery() as nursery:
            if settings.metrics_bind is not None:
                await nursery.start(serve_metrics, settings.metrics_bind, metrics.render)
            await _run(settings, sections, data_dir, backends, cipher, stand_ins, shutdown,
                       metrics)
            nursery.cancel_scope.cancel()

    return main


def _local_url(settings: DevSettings) -> str:
    host, _, port = settings.http.bind.rpartition(":")
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"


def dev_tracking(settings: DevSettings, tokens: TokenSettings) -> TrackingSettings:
    """ETRANS_TRACKING_* when set; else tracking on (for the domains whose flags are on), served
    by dev's own API, with a key derived from TOKEN_SECRET, events on the webhooks' topic."""
    from etrans.settings.tracking import TrackingSettings

    if settings.tracking is not None:
        return settings.tracking
    return TrackingSettings(base_url=_local_url(settings), secret=tokens.secret,
                            events_topic=settings.webhooks.events_topic)


@asynccontextmanager
async def _open_backends(settings: DevSettings, data_dir: Path, cipher: CredentialCipher,
                         stand_ins: dict[str, str]) -> AsyncIterator[DevBackends]:
    async with open_usend(settings.databases, data_dir, stand_ins,
                          settings.webhooks.events_topic) as usend, \
            open_topics(settings.kafka, data_dir, stand_ins) as topics, \
            open_logs(settings.mongo, settings.fetchlog, data_dir, stand_ins) as logs, \
            open_state(settings.redis, data_dir, prefix=settings.http.redis_prefix,
                       usend_repo=usend.repo, log_reader=logs.reader, cipher=cipher,
                       sendmail=settings.sendmail, stand_ins=stand_ins) as state:
        yield DevBackends(usend=usend, topics=topics, logs=logs, state=state)


def pipeline_configs(settings: DevSettings) -> tuple[PipelineConfig, PipelineConfig]:
    """(sendmail's, fetchlog's): as their own subcommands build them, each consumer with its own
    static member id."""
    kafka = settings.topics
    return (sendmail_pipeline(kafka, settings.consumer("sendmail"), settings.sendmail),
            fetchlog_pipeline(kafka, settings.consumer("fetchlog"), settings.fetchlog))


async def _run_webhooks(settings: DevSettings, backends: DevBackends, token_secret: str,
                        shutdown: Shutdown, metrics: PrometheusMetrics, *,
                        task_status: trio.TaskStatus[Pipeline] = trio.TASK_STATUS_IGNORED,
                        ) -> None:
    """``etrans webhooks``, on the USEND DB and the topics in use."""
    from etrans.workers.webhooks import run_webhooks

    options = settings.webhooks
    config = webhooks_pipeline(settings.topics, settings.consumer("webhooks"), options)
    client = webhook_client(options)
    delivery = webhook_delivery(backends.usend.db, token_secret, client,
                                backends.topics.publisher, options, metrics, process_tracer())
    try:
        await run_webhooks(config, delivery, shutdown, poll_seconds=options.retry_poll_seconds,
                           source=backends.topics.source, tracer=process_tracer(),
                           task_status=task_status)
    finally:
        with trio.CancelScope(shield=True):
            await delivery.aclose()
            await client.aclose()


async def _run_engagement(settings: DevSettings, backends: DevBackends,
                          shutdown: Shutdown, metrics: PrometheusMetrics, *,
                          task_status: trio.TaskStatus[Pipeline] = trio.TASK_STATUS_IGNORED,
                          ) -> None:
    """fetchlog's second pipeline: the opens and clicks, on the logs and USEND DB in use."""
    from etrans.bootstrap.fetchlog import engagement_task, watch_engagement
    from etrans.workers.engagement import run_engagement

    config = fetchlog_pipeline(settings.topics, settings.consumer("engagement"),
                               settings.fetchlog)
    task = engagement_task(backends.logs.writer, backends.usend.db)
    watch_engagement(metrics, task)
    await run_engagement(config, task, shutdown, source=backends.topics.source,
                         task_status=task_status)


async def _start_sink(nursery: trio.Nursery, data_dir: Path, backends: DevBackends,
                      topic: str, stand_ins: dict[str, str]) -> SmtpSettings:
    """The built-in SMTP server: every message kept as ``mail/*.eml``."""
    from etrans.dev.smtp_sink import SmtpSink
    from etrans.settings import SmtpSettings

    sink = SmtpSink(data_dir / "mail", backends.topics.publisher, topic)
    port = await nursery.start(sink.serve)
    stand_ins["smtp"] = f"built-in on 127.0.0.1:{port}, messages in {data_dir / 'mail'}"
    # The sink listens on 127.0.0.1 only: AUTH without TLS stays on the machine.
    return SmtpSettings(host="127.0.0.1", port=port, allow_plaintext_auth=True)


def _api(settings: DevSettings, sections: ApiSections, backends: DevBackends,
         relay: OutboxRelay, metrics: PrometheusMetrics) -> QuartTrio:
    """The API of ``serve``, its GET /metrics on the API's port unless ETRANS_METRICS_BIND."""
    usend, topics = backends.usend, backends.topics
    metrics.watch_backlog("etrans_outbox_backlog", "etrans_outbox_oldest_age_seconds",
                          usend.outbox.backlog)
    return create_api(sections, ApiBackends(usend_db=usend.db, stores=backends.state.api,
                                            relay=relay, events=topics.publisher),
                      probes=[usend.db, topics.publisher, backends.logs.writer],
                      metrics=metrics.http(),
                      metrics_page=metrics.render if settings.metrics_bind is None else None)


def _fetchlog_task(settings: DevSettings, backends: DevBackends,
                   metrics: PrometheusMetrics) -> FetchlogTask:
    from etrans.bootstrap.fetchlog import watch_events

    usend = backends.usend
    task = fetchlog_task(settings.fetchlog, backends.logs.writer, usend=usend.db,
                         statuses=usend.statuses, suppressions=usend.suppressions,
                         events=backends.topics.publisher,
                         events_topic=settings.webhooks.events_topic)
    watch_events(metrics, "fetchlog", task)
    return task


async def _run(settings: DevSettings, sections: ApiSections, data_dir: Path,
               backends: DevBackends, cipher: CredentialCipher, stand_ins: dict[str, str],
               shutdown: Shutdown, metrics: PrometheusMetrics) -> None:
    from etrans.bootstrap.metrics import watched
    from etrans.dev import demo
    from etrans.pipeline import run_pipeline
    from etrans.workers.fetchlog import run_fetchlog
    from etrans.workers.sendmail import SendmailTask

    usend, topics, kafka = backends.usend, backends.topics, sections.kafka
    account = await usend.db.run(demo.ensure_demo, usend.db, cipher, data_dir)
    relay = outbox_relay(kafka, settings.outbox, usend.outbox, topics.publisher,
                         settings.webhooks.events_topic)
    app = _api(settings, sections, backends, relay, metrics)
    config = hypercorn_config(settings.http, drain_seconds=settings.drain_seconds)
    mmap_large_allocations()
    sendmail_config, fetchlog_config = pipeline_configs(settings)
    fetchlog = _fetchlog_task(settings, backends, metrics)
    async with trio.open_nursery() as outer:
        # The SMTP sink lives in the outer nursery: it stays up until sendmail has drained.
        smtp = settings.smtp
        if smtp is None:
            smtp = await _start_sink(outer, data_dir, backends, log_topic(kafka), stand_ins)
        else:
            stand_ins["smtp"] = f"{smtp.host}:{smtp.port}"
        pool = smtp_pool(smtp, settings.sendmail)
        # Billing is local: the domains' DKIM keys are the local_dkim rows of the USEND DB.
        keys = dkim_key_source(usend.db, sections.tokens.secret.get(), settings.sendmail,
                               local=True)
        tracking = (message_tracking(sections.tracking, usend.db) if sections.tracking
                    else None)
        delivery = email_delivery(backends.state.delivery, pool, topics.publisher, kafka,
                                  settings.sendmail, message_signing(settings.sendmail, keys),
                                  tracking, events_topic=settings.webhooks.events_topic,
                                  metrics=metrics.smtp())
        metrics.watch_counts("etrans_sendmail_outcomes_total", "sendmail", delivery.statistics)
        try:
            # Ready (and the banner printed) once the API listens and every consumer has
            # subscribed, as each production subcommand reports it.
            await run_ready(
                shutdown, f"dev: HTTP on {_local_url(settings)}",
                partial(serve_http, app, config, relay, shutdown),
                watched(metrics, "sendmail", partial(
                    run_pipeline, sendmail_config, SendmailTask(delivery, process_tracer()),
                    shutdown, producer=topics.publisher, source=topics.source)),
                watched(metrics, "fetchlog", partial(run_fetchlog, fetchlog_config, fetchlog,
                                                     shutdown, source=topics.source)),
                watched(metrics, "webhooks", partial(
                    _run_webhooks, settings, backends, sections.tokens.secret.get(), shutdown,
                    metrics)),
                watched(metrics, "engagement", partial(_run_engagement, settings, backends,
                                                       shutdown, metrics)),
                then=partial(print, demo.banner(account, _local_url(settings), data_dir,
                                                stand_ins), flush=True))
            outer.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await pool.aclose()
