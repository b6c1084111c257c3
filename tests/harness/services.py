"""Session fixtures for the real services every test may need (a pytest plugin).

Loaded by ``tests/conftest.py``.  Request a fixture by name, import nothing:

``kafka_bootstrap``     "host:port" of a Kafka-API broker (tansu, or $ETRANS_TEST_KAFKA_BOOTSTRAP)
``kafka_test_config``   librdkafka overrides for test consumers (short sessions, classic groups)
``new_topic``           ``new_topic(partitions=1, prefix="t") -> name``: a fresh unique topic
``mongo_uri``           MongoDB-wire server (secantus in memory, or $ETRANS_TEST_MONGODB_URI)
``redis_url``           Redis (local 6379, a private redis-server, or $ETRANS_TEST_REDIS_URL)
``postgres_admin_url``  PostgreSQL superuser URL (local 5432, a private cluster, or
                        $ETRANS_TEST_POSTGRES_URL)
``fresh_database``      ``fresh_database(prefix="etrans") -> url``: a new empty database,
                        dropped at session end
``etrans_env``          ``etrans_env(**overrides) -> dict``: a complete valid environment for
                        every subcommand (``NAME=None`` removes a variable)

A service that cannot be had fails the test with instructions; nothing is skipped.  The start/stop
logic lives in :mod:`tests.harness.servers` (re-exported here) for benchmarks and for tests that
start, kill and restart a private server of their own.
"""

from __future__ import annotations

import os
import secrets
import string
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.harness.servers import (
    ENV_KAFKA,
    ENV_MONGODB,
    ENV_POSTGRES,
    ENV_REDIS,
    KAFKA_TEST_CONSUMER_CONFIG,
    ManagedServer,
    PostgresServer,
    RedisServer,
    SecantusServer,
    ServiceUnavailable,
    TansuBroker,
    create_database,
    create_topic,
    delete_topics,
    drop_database,
    ensure_kafka,
    ensure_mongo,
    ensure_postgres,
    ensure_redis,
    free_port,
    unique_name,
    wait_until_ready,
)

__all__ = [
    "ENV_KAFKA",
    "ENV_MONGODB",
    "ENV_POSTGRES",
    "ENV_REDIS",
    "KAFKA_TEST_CONSUMER_CONFIG",
    "ManagedServer",
    "PostgresServer",
    "RedisServer",
    "SecantusServer",
    "ServiceUnavailable",
    "TansuBroker",
    "create_database",
    "create_topic",
    "free_port",
    "random_token",
    "unique_name",
    "wait_until_ready",
]


Ensure = Callable[[], tuple[str, ManagedServer | None]]


def _need(ensure: Ensure) -> tuple[str, ManagedServer | None]:
    """Run an ``ensure_*``; a service that cannot be had fails the test with its instructions."""
    try:
        return ensure()
    except ServiceUnavailable as exc:
        problem = str(exc)
    pytest.fail(problem, pytrace=False)


def _session_service(ensure: Ensure) -> Iterator[str]:
    """A session fixture's body: the service's address, and the private server (if one was
    started for it) cleaned up afterwards."""
    address, server = _need(ensure)
    try:
        yield address
    finally:
        if server is not None:
            server.cleanup()


def random_token(length: int) -> str:
    """ASCII secret of exactly ``length`` bytes (TOKEN_SECRET=32, TOKEN_IV=16)."""
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    bootstrap, broker = _need(ensure_kafka)
    try:
        yield bootstrap
    finally:
        if broker is not None:
            broker.cleanup()


@pytest.fixture(scope="session")
def kafka_test_config() -> dict[str, str | int]:
    return dict(KAFKA_TEST_CONSUMER_CONFIG)


@pytest.fixture(scope="session")
def new_topic(kafka_bootstrap: str) -> Iterator[Callable[..., str]]:
    created: list[str] = []

    def make(partitions: int = 1, prefix: str = "t") -> str:
        name = create_topic(kafka_bootstrap, unique_name(prefix), partitions=partitions)
        created.append(name)
        return name

    yield make
    # tansu forgets everything when it stops; an external cluster must not fill up with our topics.
    if os.environ.get(ENV_KAFKA):
        delete_topics(kafka_bootstrap, created)


@pytest.fixture(scope="session")
def mongo_uri() -> Iterator[str]:
    yield from _session_service(ensure_mongo)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    yield from _session_service(ensure_redis)


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    yield from _session_service(ensure_postgres)


@pytest.fixture(scope="session")
def fresh_database(postgres_admin_url: str) -> Iterator[Callable[..., str]]:
    created: list[str] = []

    def make(prefix: str = "etrans") -> str:
        # PostgreSQL folds unquoted names to lower case; keep names plain for psql users.
        name = unique_name(prefix).lower().replace("-", "_")
        url = create_database(postgres_admin_url, name)
        created.append(name)
        return url

    yield make
    for name in created:
        try:
            drop_database(postgres_admin_url, name)
        except Exception as exc:  # a leftover database must not hide the test results
            print(f"warning: could not drop test database {name}: {exc!r}")


def _database_urls(request: pytest.FixtureRequest,
                   fresh_database: Callable[..., str]) -> tuple[str, str]:
    """(DB_URI, USEND_DB_URI): the migrated USEND DB and the read-only billing role when the
    database plugin provides them, else two empty databases (enough for /readyz)."""
    try:
        usend = str(request.getfixturevalue("usend_db_url"))
    except pytest.FixtureLookupError:
        usend = fresh_database("usend")
    try:
        billing = str(request.getfixturevalue("billing_db").readonly_url)
    except pytest.FixtureLookupError:
        billing = fresh_database("billing")
    return billing, usend


@pytest.fixture(scope="session")
def etrans_env(
    request: pytest.FixtureRequest,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    mongo_uri: str,
    redis_url: str,
    fresh_database: Callable[..., str],
) -> Callable[..., dict[str, str]]:
    billing_url, usend_url = _database_urls(request, fresh_database)
    token_secret, token_iv = random_token(32), random_token(16)

    def make(**overrides: Any) -> dict[str, str]:
        env: dict[str, str] = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "KAFKA_TOPIC": new_topic(prefix="sendmail"),
            "KAFKA_GROUP_ID": unique_name("sendmail-group"),
            "LOG_TOPIC": new_topic(prefix="email-logs"),
            "LOG_GROUP_ID": unique_name("fetchlog-group"),
            # librdkafka pass-through: short consumer-group sessions against tansu.
            "KAFKA_CONF_SESSION_TIMEOUT_MS": "6000",
            "KAFKA_CONF_HEARTBEAT_INTERVAL_MS": "2000",
            "KAFKA_CONF_GROUP_PROTOCOL": "classic",
            "REDIS_URI": redis_url,
            "MONGODB_URI": mongo_uri,
            "MONGODB_DBNAME": unique_name("etrans").replace("-", "_"),
            "MONGODB_COLLECTION": "email_logs",
            "TOKEN_SECRET": token_secret,
            "TOKEN_IV": token_iv,
            # No SMTP server here: tests that deliver mail override these with their own.
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(free_port()),
            "DB_URI": billing_url,
            "USEND_DB_URI": usend_url,
            "ETRANS_BIND": f"127.0.0.1:{free_port()}",
        }
        if "PYTHONPATH" in os.environ:  # a checkout run without installing it (git worktrees)
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        for name, value in overrides.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = str(value)
        return env

    return make
