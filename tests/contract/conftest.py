"""Fixtures of the contract suites: each port's implementations as pytest parameters.

``kv``        quota, API-key cache, idempotency, credential cache: fake, local store, Redis
``kv_store``  the same without the fake, with the raw view of the keys (wire format, expiry)
``usend``     the USEND DB's email repository and status updater: PostgreSQL, SQLite
``email_store``  the EmailStore alone: fake, PostgreSQL, SQLite
``topics``    an EventPublisher and the pipeline's message source: in-process topics, Kafka

The services themselves come from the harness plugins of ``tests/conftest.py`` (``redis_url``,
``usend_db_url``, ``mongo_uri``, ``kafka_bootstrap``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from tests.contract.kv_backends import LocalBackend, RedisBackend, unique_prefix

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

    import redis


@pytest.fixture(scope="session")
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """redis-py: the tests' own view of the keys, independent of the client under test."""
    import redis

    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


async def _backend(name: str, request: pytest.FixtureRequest, tmp_path: Path
                   ) -> AsyncIterator[Any]:
    from etrans.adapters.redis.client import open_redis

    if name == "fake":
        from tests.contract.fake_backend import FakeBackend

        yield FakeBackend()
    elif name == "local":
        backend = LocalBackend(tmp_path / "state.sqlite3", unique_prefix())
        yield backend
        await backend.cleanup()
    else:
        client = request.getfixturevalue("redis_client")
        async with open_redis(request.getfixturevalue("redis_url")) as fast:
            redis = RedisBackend(client, fast, unique_prefix())
            yield redis
            await redis.cleanup()


@pytest.fixture(params=["fake", "local", "redis"])
async def kv(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    async for backend in _backend(request.param, request, tmp_path):
        yield backend


@pytest.fixture(params=["local", "redis"])
async def kv_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    async for backend in _backend(request.param, request, tmp_path):
        yield backend


# -- the USEND DB ---------------------------------------------------------------------------------

async def _usend(name: str, request: pytest.FixtureRequest, tmp_path: Path
                 ) -> AsyncIterator[Any]:
    from tests.contract.usend_backends import postgres_backend, sqlite_backend

    if name == "fake":
        from tests.contract.fake_backend import FakeUsendBackend

        yield FakeUsendBackend()
        return
    backend = (postgres_backend(request.getfixturevalue("usend_db_url")) if name == "postgres"
               else sqlite_backend(tmp_path / "usend.sqlite3"))
    yield backend
    await backend.close()


@pytest.fixture(params=["postgres", "sqlite"])
async def usend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    async for backend in _usend(request.param, request, tmp_path):
        yield backend


@pytest.fixture(params=["fake", "postgres", "sqlite"])
async def email_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    async for backend in _usend(request.param, request, tmp_path):
        yield backend


# -- topics ---------------------------------------------------------------------------------------

@pytest.fixture(params=["local", "kafka"])
def topics(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    from tests.contract.topic_backends import KafkaTopics, LocalTopicsBackend

    if request.param == "local":
        backend: Any = LocalTopicsBackend(tmp_path / "topics.sqlite3")
    else:
        backend = KafkaTopics(request.getfixturevalue("kafka_bootstrap"),
                              request.getfixturevalue("new_topic"),
                              request.getfixturevalue("kafka_test_config"))
    yield backend
    backend.close()
