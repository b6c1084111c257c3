"""``etrans fetchlog``: LOG_TOPIC -> MongoDB (+ email_messages.status, the suppression lists'
hard bounces and the email events of API emails on KAFKA_EVENTS_TOPIC when USEND_DB_URI is
set)."""

from __future__ import annotations

from dataclasses import asdict
from functools import partial
from typing import TYPE_CHECKING

import trio

from etrans.bootstrap.configs import fetchlog_pipeline
from etrans.bootstrap.readiness import run_ready
from etrans.bootstrap.stores import mongo_log_writer, suppression_store
from etrans.bootstrap.workers import fetchlog_task
from etrans.observability import get_logger

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from etrans.adapters.sql import Database
    from etrans.app.metrics import MetricsRegistry
    from etrans.app.ports import LogDocumentWriter
    from etrans.observability import ErrorSink
    from etrans.pipeline import PipelineConfig
    from etrans.runtime import ServiceMain, Shutdown
    from etrans.settings import DatabaseSettings, FetchlogSettings
    from etrans.workers.engagement import EngagementTask
    from etrans.workers.fetchlog import FetchlogTask

log = get_logger(__name__)


def _usend_database(databases: DatabaseSettings) -> Database | None:
    from etrans.adapters.sql import Database, make_engine

    if databases.usend_uri is None:
        log.info("USEND_DB_URI not set: email statuses and suppression lists are not updated")
        return None
    return Database(make_engine(databases.usend_uri.get(), pool_size=databases.pool_size,
                                application_name="etrans-fetchlog"), name="usend_db")


def pipeline_config(settings: FetchlogSettings, *, from_earliest: bool = False,
                    stop_at_end: bool = False) -> PipelineConfig:
    return fetchlog_pipeline(settings.kafka, settings.consumer, settings.fetchlog,
                             from_earliest=from_earliest, stop_at_end=stop_at_end)


def engagement_config(settings: FetchlogSettings, *, from_earliest: bool = False,
                      stop_at_end: bool = False) -> PipelineConfig:
    """KAFKA_EVENTS_TOPIC -> the engagement batches: fetchlog's pipeline options (LOG_*), its
    own consumer group (ENGAGEMENT_GROUP_ID)."""
    return fetchlog_pipeline(settings.kafka, settings.engagement, settings.fetchlog,
                             from_earliest=from_earliest, stop_at_end=stop_at_end)


def engagement_task(writer: LogDocumentWriter, usend: Database | None,
                    reporter: ErrorSink | None = None) -> EngagementTask:
    """The opens and clicks: documents by ``writer``, rows in ``usend`` (None: not recorded)."""
    from etrans.adapters.sql.engagement import SqlEngagementStore
    from etrans.workers.engagement import EngagementTask

    return EngagementTask(writer, SqlEngagementStore(usend) if usend is not None else None,
                          reporter)


async def _engagement_wanted(settings: FetchlogSettings, stop_at_end: bool) -> bool:
    """A replay (``--stop-at-end``) of a KAFKA_EVENTS_TOPIC that does not exist would wait for it
    forever: that pipeline is left out (a service subscribes and waits for the topic)."""
    from etrans.adapters.kafka.client import topic_exists

    if not stop_at_end:
        return True
    topic = settings.engagement.topic
    try:
        exists = await trio.to_thread.run_sync(
            topic_exists, settings.kafka.librdkafka("admin"), topic)
    except Exception as exc:  # the broker does not answer: the pipelines wait for it alike
        log.warning("could not look up the events topic", topic=topic, error=str(exc))
        return True
    if not exists:
        log.info("events topic does not exist: no opens and clicks to replay", topic=topic)
    return exists


# The outcomes of etrans_fetchlog_events_total: what became of each delivery-log event.
EVENT_OUTCOMES = ("stored", "duplicates", "filtered", "skipped", "invalid")


def watch_events(metrics: MetricsRegistry, worker: str, task: FetchlogTask) -> None:
    """``task``'s events by outcome, read at every scrape."""
    def outcomes() -> dict[str, int]:
        counters = task.statistics()
        return {outcome: getattr(counters, outcome) for outcome in EVENT_OUTCOMES}

    metrics.watch_counts("etrans_fetchlog_events_total", worker, outcomes)


def watch_engagement(metrics: MetricsRegistry, task: EngagementTask) -> None:
    """The opens and clicks pipeline's records by outcome, read at every scrape."""
    def outcomes() -> dict[str, int]:
        return {k: v for k, v in asdict(task.statistics()).items() if k != "batches"}

    metrics.watch_counts("etrans_fetchlog_events_total", "engagement", outcomes)


def build(settings: FetchlogSettings, *, from_earliest: bool, stop_at_end: bool) -> ServiceMain:
    from etrans import __version__
    from etrans.adapters.http.sentry_reporter import ErrorReporter
    from etrans.adapters.kafka.client import KafkaProducer
    from etrans.adapters.sql.email_status import EmailStatusUpdater
    from etrans.bootstrap.metrics import run_with_metrics, watched
    from etrans.workers.engagement import run_engagement
    from etrans.workers.fetchlog import progress_stream_for, run_fetchlog

    options = settings.fetchlog
    config = pipeline_config(settings, from_earliest=from_earliest, stop_at_end=stop_at_end)
    engagement = engagement_config(settings, from_earliest=from_earliest,
                                   stop_at_end=stop_at_end)

    async def main(shutdown: Shutdown) -> None:
        await run_with_metrics(settings.metrics_bind, partial(ingest, shutdown))

    async def ingest(shutdown: Shutdown, metrics: MetricsRegistry) -> None:
        reporter = ErrorReporter.start(
            settings.sentry_dsn.get() if settings.sentry_dsn else None,
            service="fetchlog", release=__version__,
        )
        writer = mongo_log_writer(settings.mongo, options, metrics.log_inserts("mongodb"))
        usend = _usend_database(settings.databases)
        # The email events of API emails (KAFKA_EVENTS_TOPIC): only with the USEND DB, which
        # says which emails are API emails and whose.
        producer = KafkaProducer.from_settings(settings.kafka) if usend is not None else None
        task = fetchlog_task(
            options, writer, usend=usend, reporter=reporter,
            statuses=EmailStatusUpdater(usend) if usend is not None else None,
            suppressions=suppression_store(usend) if usend is not None else None,
            events=producer, events_topic=settings.kafka.events_topic)
        watch_events(metrics, "fetchlog", task)
        # Ready once both consumers have subscribed (the opens and clicks one unless left out).
        pipelines: list[Callable[..., Awaitable[object]]] = [watched(metrics, "fetchlog", partial(
            run_fetchlog, config, task, shutdown,
            progress_stream=progress_stream_for(from_earliest or stop_at_end)))]
        try:
            if await _engagement_wanted(settings, stop_at_end):
                opens_clicks = engagement_task(writer, usend, reporter)
                watch_engagement(metrics, opens_clicks)
                pipelines.append(watched(metrics, "engagement", partial(
                    run_engagement, engagement, opens_clicks, shutdown)))
            await run_ready(shutdown, "fetchlog", *pipelines)
        except BaseException as exc:
            reporter.capture(exc, step="fetchlog")
            raise
        finally:
            writer.close()
            if producer is not None:
                producer.close(timeout=5.0)
            if usend is not None:
                usend.dispose()
            reporter.flush()

    return main
