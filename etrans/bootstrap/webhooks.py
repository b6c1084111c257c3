"""``etrans webhooks``: KAFKA_EVENTS_TOPIC -> the subscribed endpoints (webhooks, attempts and
retries in the USEND DB; secrets unsealed with a key derived from TOKEN_SECRET;
``webhook.disabled`` events back to KAFKA_EVENTS_TOPIC)."""

from __future__ import annotations

from dataclasses import asdict
from functools import partial
from typing import TYPE_CHECKING

import trio

from etrans.bootstrap.configs import webhooks_pipeline
from etrans.bootstrap.readiness import run_ready
from etrans.observability import get_logger

if TYPE_CHECKING:
    from etrans.adapters.http.webhook_client import WebhookClient
    from etrans.adapters.sql import Database
    from etrans.app.metrics import MetricsRegistry
    from etrans.app.ports import EventPublisher
    from etrans.app.tracing import Tracer
    from etrans.app.webhook_delivery import WebhookDelivery
    from etrans.pipeline import PipelineConfig
    from etrans.runtime import ServiceMain, Shutdown
    from etrans.settings import WebhooksOptions, WebhooksSettings

log = get_logger(__name__)


def pipeline_config(settings: WebhooksSettings) -> PipelineConfig:
    return webhooks_pipeline(settings.kafka, settings.consumer, settings.webhooks)


def webhook_client(options: WebhooksOptions) -> WebhookClient:
    from etrans.adapters.http.webhook_client import WebhookClient

    if options.allow_private_urls:
        log.warning("WEBHOOKS_ALLOW_PRIVATE_URLS: endpoints on loopback, private and "
                    "link-local addresses are called")
    return WebhookClient(timeout=options.timeout_seconds,
                         allow_private=options.allow_private_urls)


def webhook_delivery(db: Database, token_secret: str, client: WebhookClient,
                     publisher: EventPublisher, options: WebhooksOptions,
                     metrics: MetricsRegistry | None = None,
                     tracer: Tracer | None = None) -> WebhookDelivery:
    """The delivery use case on the USEND DB ``db`` (PostgreSQL, or dev's SQLite); with
    ``metrics``: attempts by outcome, the time of each POST and the retry queue, at scrape;
    ``tracer``: the spans of the retries (their emails' traces read from the same DB)."""
    from etrans.adapters.crypto.webhook_secrets import WebhookSecretCipher
    from etrans.adapters.sql.webhook_deliveries import SqlWebhookDeliveryStore
    from etrans.adapters.sql.webhook_directory import SqlWebhookDirectory
    from etrans.app.webhook_delivery import DeliveryPolicy, WebhookDelivery
    from etrans.domain.webhook_retries import RetrySchedule

    policy = DeliveryPolicy(
        schedule=RetrySchedule(options.retry_delays, options.max_attempts,
                               options.disable_after_seconds),
        endpoint_concurrency=options.endpoint_concurrency,
        busy_delay=options.busy_retry_seconds,
        # A claimed retry is invisible to other processes for longer than its attempt takes.
        claim_lease=options.timeout_seconds * 3 + 30.0)
    directory = SqlWebhookDirectory(db, WebhookSecretCipher(token_secret))
    delivery = WebhookDelivery(directory, SqlWebhookDeliveryStore(db), client, publisher,
                               options.events_topic, policy,
                               metrics=metrics.webhooks() if metrics is not None else None,
                               tracer=tracer, traces=directory)
    if metrics is not None:
        metrics.watch_counts("etrans_webhook_deliveries_total", "webhooks",
                             partial(_outcomes, delivery))
        metrics.watch_backlog("etrans_webhook_retries_waiting",
                              "etrans_webhook_retries_overdue_seconds",
                              partial(_retry_backlog, delivery))
    return delivery


def _outcomes(delivery: WebhookDelivery) -> dict[str, int]:
    return asdict(delivery.statistics())


async def _retry_backlog(delivery: WebhookDelivery) -> tuple[int, float]:
    return await delivery.store.retry_backlog(delivery.clock())


def build(settings: WebhooksSettings) -> ServiceMain:
    from etrans.adapters.kafka.client import KafkaProducer
    from etrans.adapters.sql import Database, make_engine
    from etrans.bootstrap.metrics import run_with_metrics, watched
    from etrans.bootstrap.tracing import process_tracer
    from etrans.workers.webhooks import run_webhooks

    options = settings.webhooks
    config = pipeline_config(settings)

    async def main(shutdown: Shutdown) -> None:
        await run_with_metrics(settings.metrics_bind, partial(deliver, shutdown))

    async def deliver(shutdown: Shutdown, metrics: MetricsRegistry) -> None:
        db = Database(make_engine(settings.usend_uri.get(), pool_size=settings.pool_size,
                                  application_name="etrans-webhooks"), name="usend_db")
        producer = KafkaProducer.from_settings(settings.kafka)
        client = webhook_client(options)
        delivery = webhook_delivery(db, settings.tokens.secret.get(), client, producer,
                                    options, metrics, process_tracer())
        log.info("started", worker="webhooks", topic=config.topics[0],
                 group_id=config.group_id, group_instance_id=config.group_instance_id,
                 workers=config.workers, timeout_seconds=options.timeout_seconds,
                 endpoint_concurrency=options.endpoint_concurrency)
        try:
            await run_ready(shutdown, "webhooks", watched(metrics, "webhooks", partial(
                run_webhooks, config, delivery, shutdown,
                poll_seconds=options.retry_poll_seconds, tracer=process_tracer())))
        finally:
            with trio.CancelScope(shield=True):
                await delivery.aclose()
                await client.aclose()
            producer.close(timeout=5.0)
            db.dispose()

    return main
