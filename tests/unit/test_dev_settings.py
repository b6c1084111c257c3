"""``etrans dev`` settings: every service optional, a real one replaces its stand-in."""

from __future__ import annotations

import pytest

from etrans import settings
from etrans.errors import ConfigError


def test_an_empty_environment_runs_everything_embedded():
    loaded = settings.for_command("dev", {})
    assert loaded.kafka is None
    assert loaded.redis is None
    assert loaded.mongo is None
    assert loaded.smtp is None
    assert loaded.tokens is None
    assert loaded.databases is not None
    assert loaded.databases.usend_uri is None
    assert loaded.http is not None
    assert loaded.http.bind == "127.0.0.1:8000"
    assert loaded.http.billing_v4_uri is None


def test_given_services_are_used_with_dev_defaults_for_what_is_not_given():
    loaded = settings.for_command("dev", {
        "KAFKA_BOOTSTRAP_SERVERS": "k:9092", "REDIS_HOST": "r", "MONGODB_URI": "mongodb://m",
        "SMTP_HOST": "mail", "SMTP_PORT": "2525", "USEND_DB_URI": "postgresql://p/db",
        "ETRANS_BIND": "0.0.0.0:9000", "BILLING_V4_URI": "http://billing.example/",
    })
    assert loaded.kafka is not None
    assert (loaded.kafka.topic, loaded.kafka.group_id) == ("sendmail", "etrans-dev-sendmail")
    assert (loaded.kafka.log_topic, loaded.kafka.log_group_id) == ("email-logs",
                                                                   "etrans-dev-fetchlog")
    assert loaded.redis is not None
    assert loaded.redis.url.get() == "redis://r:6379/0"
    assert loaded.mongo is not None
    assert (loaded.mongo.dbname, loaded.mongo.collection) == ("etrans", "email_logs")
    assert loaded.smtp is not None
    assert (loaded.smtp.host, loaded.smtp.port) == ("mail", 2525)
    assert loaded.databases is not None
    assert loaded.databases.usend_uri is not None
    assert loaded.http is not None
    assert loaded.http.bind == "0.0.0.0:9000"
    assert loaded.http.billing_v4_uri is None  # dev always uses the local billing mode


def test_invalid_values_of_given_services_are_still_reported():
    with pytest.raises(ConfigError) as error:
        settings.for_command("dev", {"REDIS_URI": "http://nope", "TOKEN_SECRET": "short",
                                     "SMTP_HOST": "mail"})
    text = "\n".join(error.value.problems)
    assert "REDIS_URI" in text
    assert "TOKEN_SECRET" in text
    assert "SMTP_PORT is required" in text
