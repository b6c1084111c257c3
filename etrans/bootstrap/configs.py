"""The configurations more than one subcommand builds, each built by one function.

``serve``, ``sendmail`` and ``fetchlog`` build these from their settings, and ``etrans dev``
builds the very same ones from the same sections, so the two cannot drift apart again (they had:
dev's pipelines ignored KAFKA_DEAD_LETTER_TOPIC and KAFKA_ASSIGNMENT_STRATEGY, its SMTP pool
SMTP_IDLE_SECONDS, its delivery marks SENDMAIL_DELIVERED_TTL_SECONDS;
tests/unit/test_bootstrap_configs.py compares them).  The Redis client is one per process,
:func:`etrans.adapters.redis.client.open_redis`, for every subcommand.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hypercorn.config import Config as HypercornConfig

    from etrans.adapters.smtp.pool import SmtpConfig
    from etrans.app.sendmail import DeliveryPolicy
    from etrans.pipeline import PipelineConfig
    from etrans.settings import (
        Consumer,
        FetchlogOptions,
        HttpSettings,
        KafkaSettings,
        SendmailOptions,
        SmtpSettings,
        WebhooksOptions,
    )

# LOG_TOPIC where it is only produced to (sendmail's Reject events, the outbox relay's).
DEFAULT_LOG_TOPIC = "email-logs"


def log_topic(kafka: KafkaSettings) -> str:
    """Where delivery-log events are produced: LOG_TOPIC, default ``email-logs``."""
    return kafka.log_topic or DEFAULT_LOG_TOPIC


def hypercorn_config(http: HttpSettings, *, drain_seconds: float) -> HypercornConfig:
    """The HTTP server's configuration, the same for ``serve`` and ``dev``.

    Limits (docs/configuration.md, "Server limits"): a connection that sends nothing for
    ETRANS_READ_TIMEOUT_SECONDS is closed (hypercorn's default is never), an idle keep-alive
    connection after ETRANS_KEEP_ALIVE_TIMEOUT_SECONDS.  hypercorn has no cap on the number of
    connections: the process's file-descriptor limit (LimitNOFILE) is the cap, and memory is
    bounded by the body budget (etrans.api.body_budget), not by the connection count."""
    from hypercorn.config import Config

    config = Config()
    config.bind = [http.bind]
    config.graceful_timeout = drain_seconds
    config.read_timeout = http.read_timeout_seconds
    config.keep_alive_timeout = http.keep_alive_timeout_seconds
    config.accesslog = None
    # Hypercorn logs through the root handler (JSON with "service"), not a plain handler of its own.
    config.errorlog = logging.getLogger("hypercorn.error")
    return config


def delivery_policy(options: SendmailOptions) -> DeliveryPolicy:
    from etrans.app.sendmail import DeliveryPolicy

    return DeliveryPolicy(attempts=options.retry_attempts,
                          base_seconds=options.retry_base_seconds,
                          email_timeout=options.email_timeout_seconds)


def _librdkafka(kafka: KafkaSettings) -> dict[str, str | int | bool]:
    # No bootstrap servers: ``etrans dev``'s in-process topics, which take no librdkafka options.
    return kafka.librdkafka() if kafka.bootstrap_servers else {}


def sendmail_pipeline(kafka: KafkaSettings, consumer: Consumer,
                      options: SendmailOptions) -> PipelineConfig:
    """KAFKA_TOPIC -> sendmail workers."""
    from etrans.pipeline import PipelineConfig

    pool_size = options.worker_pool_size
    return PipelineConfig(
        topics=(consumer.topic,),
        group_id=consumer.group_id,
        group_instance_id=consumer.instance_id,
        kafka=_librdkafka(kafka),
        workers=pool_size,
        # Sendmail messages may carry 25 MB of attachments: buffer few of them.
        channel_size=max(50, pool_size * 5),
        commit_interval=kafka.commit_interval_seconds,
        # The task enforces the per-email cap itself, then may retry recording the outcome
        # while Redis is down; this only catches a stuck call.
        message_timeout=(options.email_timeout_seconds
                         + delivery_policy(options).record_patience + 10.0),
        dead_letter_topic=kafka.dead_letter_topic,
        assignment_strategy=kafka.assignment_strategy,
    )


def fetchlog_pipeline(kafka: KafkaSettings, consumer: Consumer, options: FetchlogOptions, *,
                      from_earliest: bool = False, stop_at_end: bool = False) -> PipelineConfig:
    """LOG_TOPIC -> fetchlog batches."""
    from etrans.pipeline import PipelineConfig

    return PipelineConfig(
        topics=(consumer.topic,),
        group_id=consumer.group_id,
        group_instance_id=consumer.instance_id,
        kafka=_librdkafka(kafka),
        workers=options.worker_pool_size,
        channel_size=max(1000, 2 * options.worker_pool_size * options.batch_size),
        commit_interval=kafka.commit_interval_seconds,
        message_timeout=options.process_timeout_seconds,
        batch_size=options.batch_size,
        batch_linger=options.batch_linger_seconds,
        dead_letter_topic=kafka.dead_letter_topic,
        from_earliest=from_earliest,
        stop_at_end=stop_at_end,
        assignment_strategy=kafka.assignment_strategy,
    )


def smtp_config(smtp: SmtpSettings) -> SmtpConfig:
    """The SMTP pool's connection settings (SMTP_*)."""
    from etrans.adapters.smtp.pool import SmtpConfig

    return SmtpConfig(host=smtp.host, port=smtp.port, implicit_tls=smtp.secure,
                      timeout_seconds=smtp.timeout_seconds, idle_seconds=smtp.idle_seconds,
                      ca_file=smtp.ca_file, verify_tls=smtp.tls_verify,
                      allow_plaintext_auth=smtp.allow_plaintext_auth)


# glibc's mallopt(M_MMAP_THRESHOLD): allocations from this size up are mmapped and given back to
# the OS when freed.  glibc's default threshold grows (up to 32 MiB) each time such a block is
# freed, after which request bodies and their copies come from the heap and its fragments stay
# resident.  Measured (tests/integration/test_server_limits.py, 20 x 31.8 MiB sends, same body
# budget, two runs each): peak RSS 1236-1300 MiB without this, 1014-1142 MiB with it.
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 1024 * 1024


def mmap_large_allocations() -> None:
    """Return large buffers to the OS when freed (an operator's MALLOC_MMAP_THRESHOLD_ wins)."""
    import ctypes
    import ctypes.util
    import os

    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)


def webhooks_pipeline(kafka: KafkaSettings, consumer: Consumer,
                      options: WebhooksOptions) -> PipelineConfig:
    """KAFKA_EVENTS_TOPIC -> webhook deliveries."""
    from etrans.pipeline import PipelineConfig

    return PipelineConfig(
        topics=(consumer.topic,),
        group_id=consumer.group_id,
        group_instance_id=consumer.instance_id,
        kafka=_librdkafka(kafka),
        workers=options.workers,
        channel_size=max(100, options.workers * 10),
        commit_interval=kafka.commit_interval_seconds,
        # An event's attempts run at once, each bounded by the client's timeouts (connect,
        # write, read); this only catches a stuck call (the store waiting on the database).
        message_timeout=options.timeout_seconds * 3 + 30.0,
        dead_letter_topic=kafka.dead_letter_topic,
        assignment_strategy=kafka.assignment_strategy,
    )
