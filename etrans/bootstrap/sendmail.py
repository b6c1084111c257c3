"""``etrans sendmail``: KAFKA_TOPIC -> SMTP (credentials from Redis); Reject events to
LOG_TOPIC."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from etrans.bootstrap.configs import log_topic, sendmail_pipeline
from etrans.bootstrap.stores import redis_delivery_stores
from etrans.bootstrap.workers import email_delivery, smtp_pool
from etrans.observability import get_logger

if TYPE_CHECKING:
    from etrans.pipeline import PipelineConfig
    from etrans.runtime import ServiceMain, Shutdown
    from etrans.settings import SendmailSettings

log = get_logger(__name__)


def pipeline_config(settings: SendmailSettings) -> PipelineConfig:
    return sendmail_pipeline(settings.kafka, settings.consumer, settings.sendmail)


def build(settings: SendmailSettings) -> ServiceMain:
    from etrans.adapters.crypto.credentials import CredentialCipher
    from etrans.adapters.kafka.client import KafkaProducer
    from etrans.adapters.redis.client import open_redis
    from etrans.pipeline import run_pipeline
    from etrans.workers.sendmail import SendmailTask

    kafka, smtp, options = settings.kafka, settings.smtp, settings.sendmail
    config = pipeline_config(settings)
    cipher = CredentialCipher(settings.tokens.secret.get(), settings.tokens.iv.get())

    async def main(shutdown: Shutdown) -> None:
        async with open_redis(settings.redis.url.get()) as redis:
            producer = KafkaProducer.from_settings(kafka)
            pool = smtp_pool(smtp, options)
            delivery = email_delivery(redis_delivery_stores(redis, cipher, options), pool,
                                      producer, kafka, options)
            log.info("started", worker="sendmail", topic=config.topics[0],
                     group_id=config.group_id, group_instance_id=config.group_instance_id,
                     log_topic=log_topic(kafka), workers=options.worker_pool_size,
                     smtp=f"{smtp.host}:{smtp.port}", smtp_secure=smtp.secure)
            try:
                stats = await run_pipeline(config, SendmailTask(delivery), shutdown,
                                           producer=producer)
                log.info("pipeline stopped", pipeline=repr(stats),
                         sendmail=delivery.statistics(), smtp=pool.statistics())
            finally:
                with trio.CancelScope(shield=True):
                    await pool.aclose()
                producer.close(timeout=5.0)

    return main
