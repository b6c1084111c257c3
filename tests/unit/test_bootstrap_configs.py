"""``etrans dev`` builds its pipelines, SMTP pool and delivery marks as ``sendmail`` and
``fetchlog`` do from the same settings (they had drifted: dev ignored KAFKA_DEAD_LETTER_TOPIC,
KAFKA_ASSIGNMENT_STRATEGY, SMTP_IDLE_SECONDS and SENDMAIL_DELIVERED_TTL_SECONDS)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from etrans.bootstrap import dev, fetchlog, sendmail
from etrans.bootstrap.stores import open_state, redis_delivery_stores
from etrans.bootstrap.workers import smtp_pool
from etrans.settings import Consumer, for_command

TOKEN_SECRET = "S" * 32
TOKEN_IV = "I" * 16

# One environment every subcommand can read, with every option away from its default.
ENV = {
    "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092", "KAFKA_TOPIC": "send-requests",
    "KAFKA_GROUP_ID": "senders", "LOG_TOPIC": "delivery-logs", "LOG_GROUP_ID": "loggers",
    "KAFKA_DEAD_LETTER_TOPIC": "dead-letters", "KAFKA_ASSIGNMENT_STRATEGY": "cooperative-sticky",
    "KAFKA_COMMIT_INTERVAL_SECONDS": "2.5", "KAFKA_CONF_SESSION_TIMEOUT_MS": "7000",
    "REDIS_URI": "redis://127.0.0.1:6379/0", "TOKEN_SECRET": TOKEN_SECRET, "TOKEN_IV": TOKEN_IV,
    "SMTP_HOST": "mail.example", "SMTP_PORT": "2525", "SMTP_IDLE_SECONDS": "7",
    "SMTP_TIMEOUT_SECONDS": "9", "SMTP_SECURE": "true", "SMTP_TLS_VERIFY": "false",
    "WORKER_POOL_SIZE": "4", "SENDMAIL_EMAIL_TIMEOUT_SECONDS": "40",
    "SENDMAIL_RETRY_ATTEMPTS": "2", "SENDMAIL_DELIVERED_TTL_SECONDS": str(8 * 24 * 3600),
    "MONGODB_URI": "mongodb://127.0.0.1:27017", "MONGODB_DBNAME": "etrans",
    "MONGODB_COLLECTION": "email_logs", "LOG_WORKER_POOL_SIZE": "3", "LOG_BATCH_SIZE": "50",
    "LOG_BATCH_LINGER_SECONDS": "0.3", "LOG_PROCESS_TIMEOUT_SECONDS": "4",
    "KAFKA_GROUP_INSTANCE_ID": "host-a",
}

# Each consumer of dev has its own static member id (``<id>-sendmail``): the one field apart.
OWN_PER_PROCESS = {"group_instance_id"}


def _fields(config: object) -> dict[str, object]:
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}  # type: ignore[arg-type]
    return {k: v for k, v in values.items() if k not in OWN_PER_PROCESS}


def test_dev_builds_the_sendmail_pipeline_sendmail_builds():
    dev_sendmail, _ = dev.pipeline_configs(for_command("dev", ENV))
    alone = sendmail.pipeline_config(for_command("sendmail", ENV))
    assert _fields(dev_sendmail) == _fields(alone)
    assert alone.dead_letter_topic == "dead-letters"
    assert alone.assignment_strategy == "cooperative-sticky"
    assert (dev_sendmail.group_instance_id, alone.group_instance_id) == ("host-a-sendmail",
                                                                         "host-a")


def test_dev_builds_the_fetchlog_pipeline_fetchlog_builds():
    _, dev_fetchlog = dev.pipeline_configs(for_command("dev", ENV))
    alone = fetchlog.pipeline_config(for_command("fetchlog", ENV))
    assert _fields(dev_fetchlog) == _fields(alone)
    assert (alone.topics, alone.group_id, alone.batch_size) == (("delivery-logs",), "loggers", 50)
    assert dev_fetchlog.group_instance_id == "host-a-fetchlog"


def test_dev_on_its_stand_ins_uses_the_same_options():
    """No Kafka given: the in-process topics, the workers' options all the same."""
    env = {k: v for k, v in ENV.items() if not k.startswith(("KAFKA_", "LOG_TOPIC", "LOG_GROUP"))}
    dev_sendmail, dev_fetchlog = dev.pipeline_configs(for_command("dev", env))
    alone = sendmail.pipeline_config(for_command("sendmail", ENV))
    assert dev_sendmail.kafka == {}
    for name in ("workers", "channel_size", "message_timeout"):
        assert getattr(dev_sendmail, name) == getattr(alone, name), name
    assert (dev_sendmail.topics, dev_sendmail.group_id) == (("sendmail",), "etrans-dev-sendmail")
    assert (dev_fetchlog.topics, dev_fetchlog.group_id) == (("email-logs",), "etrans-dev-fetchlog")


def test_dev_builds_the_smtp_pool_sendmail_builds():
    in_dev, alone = for_command("dev", ENV), for_command("sendmail", ENV)
    assert in_dev.smtp is not None
    dev_pool, own_pool = smtp_pool(in_dev.smtp, in_dev.sendmail), smtp_pool(alone.smtp,
                                                                           alone.sendmail)
    assert dev_pool.config == own_pool.config
    assert dev_pool.size == own_pool.size == 4
    assert own_pool.config.idle_seconds == 7.0


async def test_delivery_marks_keep_sendmail_delivered_ttl_seconds_everywhere(tmp_path: Path):
    from etrans.adapters.crypto.credentials import CredentialCipher

    in_dev, alone = for_command("dev", ENV), for_command("sendmail", ENV)
    cipher = CredentialCipher(TOKEN_SECRET, TOKEN_IV)
    own = redis_delivery_stores(object(), cipher, alone.sendmail)
    async with open_state(None, tmp_path, prefix="etrans:", usend_repo=None,
                          log_reader=None, cipher=cipher,  # type: ignore[arg-type]
                          sendmail=in_dev.sendmail, stand_ins={}) as local:
        stand_in_ttl = local.delivery.marks.ttl_seconds  # type: ignore[attr-defined]
    assert own.marks.ttl_seconds == stand_in_ttl == 8 * 24 * 3600  # type: ignore[attr-defined]


def test_fetchlog_consumes_the_opens_and_clicks_with_a_group_of_its_own():
    own = for_command("fetchlog", ENV)
    config = fetchlog.engagement_config(own)
    alone = fetchlog.pipeline_config(own)
    assert config.topics == ("email-events",)
    assert (config.group_id, config.group_instance_id) == ("loggers-engagement",
                                                          "host-a-engagement")
    for name in ("workers", "batch_size", "channel_size", "message_timeout", "kafka"):
        assert getattr(config, name) == getattr(alone, name), name
    named = fetchlog.engagement_config(for_command(
        "fetchlog", {**ENV, "ENGAGEMENT_GROUP_ID": "opens", "KAFKA_EVENTS_TOPIC": "ev"}))
    assert (named.topics, named.group_id) == (("ev",), "opens")
    in_dev = for_command("dev", ENV)
    assert in_dev.consumer("engagement") == Consumer("email-events", "loggers-engagement",
                                                     "host-a-engagement")


def test_sendmail_producer_sends_at_once_unless_the_operator_sets_linger():
    """Each message's task waits for its event's acknowledgement before it completes: with
    librdkafka's 5 ms linger, 10 tasks could not pass ~1,500 msg/s (bench/sendmail.py)."""
    settings = for_command("sendmail", ENV)
    assert sendmail.producer_config(settings.kafka)["linger.ms"] == 0
    assert sendmail.producer_config(settings.kafka)["bootstrap.servers"] == "127.0.0.1:9092"
    chosen = for_command("sendmail", {**ENV, "KAFKA_CONF_LINGER_MS": "20"})
    assert str(sendmail.producer_config(chosen.kafka)["linger.ms"]) == "20"
