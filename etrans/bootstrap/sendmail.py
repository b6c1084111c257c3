"""``etrans sendmail``: KAFKA_TOPIC -> SMTP (credentials from Redis, DKIM keys from the database
the billing mode keeps them in); Reject events to LOG_TOPIC."""

from __future__ import annotations

from contextlib import AsyncExitStack
from functools import partial
from typing import TYPE_CHECKING

import trio

from etrans.bootstrap.configs import log_topic, sendmail_pipeline
from etrans.bootstrap.readiness import run_ready
from etrans.bootstrap.stores import redis_delivery_stores
from etrans.bootstrap.tracing import process_tracer
from etrans.bootstrap.workers import (
    dkim_key_source,
    email_delivery,
    message_signing,
    message_tracking,
    smtp_pool,
)
from etrans.observability import get_logger

if TYPE_CHECKING:
    from etrans.adapters.crypto.signing_process import ProcessDkimSigner
    from etrans.adapters.crypto.signing_threads import ThreadDkimSigner
    from etrans.adapters.metrics.prometheus import PrometheusMetrics
    from etrans.adapters.sql import Database
    from etrans.app.ports import DkimKeySource
    from etrans.app.tracking import MessageTracking
    from etrans.pipeline import PipelineConfig
    from etrans.runtime import ServiceMain, Shutdown
    from etrans.settings import KafkaSettings, SendmailSettings

log = get_logger(__name__)


def producer_config(kafka: KafkaSettings) -> dict[str, str | int | bool]:
    """sendmail's producer sends at once (``linger.ms`` 0): each message's task waits for the
    acknowledgement of its ``email.sent`` or Reject event before it completes (and its offset
    may be committed), so librdkafka's default 5 ms linger was 5 ms of every message: with 10
    tasks at most ~1,500 msg/s (bench/sendmail.py: 1,473 msg/s, 3,740 with 0).  Requests still
    batch what queues while one is in flight.  KAFKA_CONF_LINGER_MS wins."""
    overrides: dict[str, str | int | bool] = (
        {} if "linger.ms" in kafka.client_config else {"linger.ms": 0})
    return kafka.librdkafka("producer", **overrides)


def pipeline_config(settings: SendmailSettings) -> PipelineConfig:
    return sendmail_pipeline(settings.kafka, settings.consumer, settings.sendmail)


def dkim_keys(settings: SendmailSettings) -> tuple[Database, DkimKeySource] | None:
    """The database the DKIM keys are read from (never written; the Billing DB read-only) and
    the key source on it; None when SENDMAIL_DKIM_SIGNING is off or no database is set."""
    from etrans.adapters.sql import billing_database, usend_database

    store = settings.dkim_keys
    if store is None:
        return None
    open_db = billing_database if store.external else usend_database
    db = open_db(store.uri.get(), pool_size=store.pool_size)
    return db, dkim_key_source(db, settings.tokens.secret.get(), settings.sendmail,
                               local=not store.external)


def tracking_of(settings: SendmailSettings) -> tuple[list[Database], MessageTracking] | None:
    """Open and click tracking (None: ETRANS_TRACKING_BASE_URL unset) and the databases its
    flags are read from (the USEND DB; the Billing DB too when BILLING_V4_URI is set)."""
    from etrans.adapters.sql import billing_database, usend_database

    tracking, store = settings.tracking, settings.tracking_flags
    if tracking is None or store is None:
        return None
    usend = usend_database(store.usend_uri.get(), pool_size=store.pool_size)
    domains = (billing_database(store.domains_uri.get(), pool_size=store.pool_size)
               if store.domains_uri is not None else None)
    return ([usend, *([domains] if domains else [])],
            message_tracking(tracking, usend, domains))


async def message_signer(stack: AsyncExitStack, settings: SendmailSettings,
                         has_keys: bool) -> ThreadDkimSigner | ProcessDkimSigner | None:
    """The RSA step's runner (SENDMAIL_DKIM_SIGNER: a signing process, or
    SENDMAIL_DKIM_SIGNER_THREADS signing threads), owned by ``stack`` (it outlives the
    pipeline's drain); None: signed in the Trio thread (0 threads, or nothing to sign)."""
    from etrans.adapters.crypto.signing_threads import ThreadDkimSigner, open_signing_threads

    count = settings.sendmail.dkim_signer_threads
    if not has_keys or count == 0 or settings.sendmail.dkim_signing == "off":
        return None
    if settings.sendmail.dkim_signer == "process":
        from etrans.adapters.crypto.signing_process import (
            ProcessDkimSigner,
            open_signing_process,
        )
        process = await stack.enter_async_context(open_signing_process())
        log.info("DKIM signing process started", pid=process.pid)
        return ProcessDkimSigner(process)
    threads = await stack.enter_async_context(open_signing_threads(count))
    log.info("DKIM signing threads started", threads=count)
    return ThreadDkimSigner(threads)


def build(settings: SendmailSettings) -> ServiceMain:
    from etrans.adapters.crypto.credentials import CredentialCipher
    from etrans.adapters.kafka.client import KafkaProducer
    from etrans.adapters.redis.client import open_redis
    from etrans.bootstrap.metrics import run_with_metrics
    from etrans.pipeline import Pipeline
    from etrans.workers.sendmail import SendmailTask

    kafka, smtp, options = settings.kafka, settings.smtp, settings.sendmail
    config = pipeline_config(settings)
    cipher = CredentialCipher(settings.tokens.secret.get(), settings.tokens.iv.get())

    async def main(shutdown: Shutdown) -> None:
        await run_with_metrics(settings.metrics_bind, partial(deliver, shutdown))

    async def deliver(shutdown: Shutdown, metrics: PrometheusMetrics) -> None:
        keys, tracking = dkim_keys(settings), tracking_of(settings)
        async with AsyncExitStack() as stack:
            if keys is not None:
                stack.callback(keys[0].dispose)
            for db in tracking[0] if tracking is not None else ():
                stack.callback(db.dispose)
            redis = await stack.enter_async_context(open_redis(settings.redis.url.get()))
            producer = KafkaProducer(producer_config(kafka))
            pool = smtp_pool(smtp, options)
            signer = await message_signer(stack, settings, keys is not None)
            signing = message_signing(options, keys[1] if keys is not None else None, signer)
            delivery = email_delivery(redis_delivery_stores(redis, cipher, options), pool,
                                      producer, kafka, options, signing,
                                      tracking[1] if tracking is not None else None,
                                      metrics=metrics.smtp())
            running = Pipeline(config, SendmailTask(delivery, process_tracer()), producer=producer)
            metrics.watch_pipeline("sendmail", running.statistics)
            metrics.watch_counts("etrans_sendmail_outcomes_total", "sendmail",
                                 delivery.statistics)
            log.info("started", worker="sendmail", topic=config.topics[0],
                     group_id=config.group_id, group_instance_id=config.group_instance_id,
                     log_topic=log_topic(kafka), workers=options.worker_pool_size,
                     smtp=f"{smtp.host}:{smtp.port}", smtp_secure=smtp.secure,
                     dkim_signing=options.dkim_signing,
                     tracking=settings.tracking.base_url if settings.tracking else "off")
            try:
                [pipeline] = await run_ready(shutdown, "sendmail",
                                             partial(running.run, shutdown))
                assert isinstance(pipeline, Pipeline)
                log.info("pipeline stopped", pipeline=repr(pipeline.statistics()),
                         sendmail=delivery.statistics(), smtp=pool.statistics(),
                         sent_events=delivery.sent_event_statistics(),
                         signing=signing.statistics(),
                         signer=signer.statistics() if signer is not None else None)
            finally:
                with trio.CancelScope(shield=True):
                    await pool.aclose()
                producer.close(timeout=5.0)

    return main
