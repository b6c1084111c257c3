"""Per backend, the real adapter or the ``etrans dev`` stand-in behind the same port.

Each ``open_*`` function is an async context manager that yields typed, complete objects and
closes what it opened on exit: given the real service's settings it builds the real adapters
(``serve``, ``sendmail``, ``fetchlog`` and ``dev`` with that service given), given ``None`` the
embedded stand-in of :mod:`etrans.dev` with its data under ``data_dir``.  What each choice was is
written to ``stand_ins`` (``etrans dev`` prints it in its banner).
"""

from __future__ import annotations

from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import trio

from etrans.app.ports import BatchPublisher, EventPublisher, HealthProbe, LogDocumentWriter

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from etrans.adapters.crypto.credentials import CredentialCipher
    from etrans.adapters.mongo.log_writer import MongoLogWriter
    from etrans.adapters.redis.client import TrioRedis
    from etrans.adapters.sql import Database
    from etrans.adapters.sql.outbox_store import OutboxStore
    from etrans.adapters.sql.usend_repo import UsendRepository
    from etrans.app.metrics import LogInsertMetrics
    from etrans.app.ports import (
        ApiKeyCache,
        CredentialCache,
        CredentialSource,
        DeliveryMarks,
        EmailStatusStore,
        IdempotencyStore,
        LogReader,
        QuotaCounter,
        RateCounter,
        SendingDomains,
        SuppressionLookup,
        SuppressionStore,
    )
    from etrans.app.scheduled_release import ReleaseScreen
    from etrans.pipeline.source import MessageSourceFactory
    from etrans.settings import (
        DatabaseSettings,
        FetchlogOptions,
        KafkaSettings,
        MongoSettings,
        RedisSettings,
        SendmailOptions,
    )


class Publisher(EventPublisher, BatchPublisher, HealthProbe, Protocol):
    """A process's publisher: Kafka's producer, or ``dev``'s in-process topics."""


class LogWriter(LogDocumentWriter, HealthProbe, Protocol):
    """fetchlog's store: MongoDB, or ``dev``'s SQLite file."""


@dataclass(frozen=True)
class ApiStores:
    """The API's stores besides its SQL tables (Redis or the local store, MongoDB or SQLite)."""

    usend_repo: UsendRepository  # EmailStore, ApiKeyStore, SenderCredentials (SQLite: subclass)
    key_cache: ApiKeyCache
    quota: QuotaCounter
    idempotency: IdempotencyStore
    credential_cache: CredentialCache
    log_reader: LogReader
    rate_counter: RateCounter | None  # None: no request rate limits


@dataclass(frozen=True)
class DeliveryStores:
    """sendmail's state: SMTP credentials (hash ``auth``) and the "already delivered" marks."""

    credentials: CredentialSource
    marks: DeliveryMarks


@dataclass(frozen=True)
class UsendStores:
    """The USEND DB (PostgreSQL, or SQLite for ``dev``) and its repositories."""

    db: Database
    repo: UsendRepository  # or its SQLite subclass
    statuses: EmailStatusStore
    outbox: OutboxStore  # what the outbox relay reads and updates
    suppressions: SuppressionStore


@dataclass(frozen=True)
class Topics:
    """Where events are published, and the pipelines' message source (None: Kafka's)."""

    publisher: Publisher
    source: MessageSourceFactory | None


@dataclass(frozen=True)
class LogStores:
    """The delivery logs: fetchlog's writer and GET /logs' reader (one object for SQLite)."""

    writer: LogWriter
    reader: LogReader


@dataclass(frozen=True)
class StateStores:
    """Everything etrans keeps in Redis (or ``dev``'s local store)."""

    api: ApiStores
    delivery: DeliveryStores


def release_screen(lookup: SuppressionLookup, events_topic: str | None,
                   domains: SendingDomains | None = None) -> ReleaseScreen:
    """What the outbox store checks again when it releases a scheduled email: the send path's
    suppression lookup, with its email.suppressed (and email.failed) events on ``events_topic``,
    and the sending domain (``domains``: :func:`release_domains`)
    (:mod:`etrans.app.scheduled_release`)."""
    from etrans.app.scheduled_release import ReleaseScreen

    return ReleaseScreen(lookup, events_topic, domains=domains)


def release_domains(billing_db: Database | None, usend_db: Database) -> SendingDomains:
    """The sending domains as the send path reads them (the Billing DB's, read only, or the
    ``local_*`` tables of the USEND DB when ``billing_db`` is None), without the send path's
    5 s cache: a scheduled email is released only from a domain that is there and verified now."""
    from etrans.adapters.sql.domains_repo import BillingTables, SqlDomains
    from etrans.adapters.sql.sending_domains import DomainDirectory
    from etrans.adapters.sql.subscriptions_repo import SqlSubscriptions

    domains = (SqlDomains(billing_db, BillingTables.external()) if billing_db is not None
               else SqlDomains(usend_db, BillingTables.local()))
    return DomainDirectory(domains, SqlSubscriptions(usend_db), ttl_seconds=0.0)


def suppression_store(db: Database) -> SuppressionStore:
    """The suppression list on the USEND DB ``db``: PostgreSQL's, or ``dev``'s SQLite file."""
    if db.engine.url.get_backend_name() == "sqlite":
        from etrans.dev.sqlite_suppressions import SqliteSuppressionStore

        return SqliteSuppressionStore(db)
    from etrans.adapters.sql.suppressions_repo import PgSuppressionStore

    return PgSuppressionStore(db)


def mongo_log_writer(mongo: MongoSettings, options: FetchlogOptions,
                     inserts: LogInsertMetrics | None = None) -> MongoLogWriter:
    """fetchlog's MongoDB writer: LOG_MONGO_INSERT_TIMEOUT_SECONDS, one thread per worker;
    ``inserts``: each insert timed and its documents counted."""
    from etrans.adapters.mongo.log_writer import MongoLogWriter

    return MongoLogWriter(mongo, insert_timeout=options.mongo_insert_timeout_seconds,
                          threads=options.worker_pool_size, inserts=inserts)


def redis_api_stores(redis: TrioRedis, *, prefix: str, usend_repo: UsendRepository,
                     log_reader: LogReader) -> ApiStores:
    """The API's Redis stores, all on the process's one Redis client (ETRANS_REDIS_PREFIX for
    etrans's own keys; hash ``auth`` is shared with the old worker)."""
    from etrans.adapters.redis.api_key_cache import RedisApiKeyCache
    from etrans.adapters.redis.credential_cache import RedisCredentialCache
    from etrans.adapters.redis.idempotency import RedisIdempotencyStore
    from etrans.adapters.redis.quota import RedisQuota
    from etrans.adapters.redis.rate_limit import RedisRateCounter

    return ApiStores(usend_repo=usend_repo,
                     key_cache=RedisApiKeyCache(redis, prefix=f"{prefix}apikey:"),
                     quota=RedisQuota(redis, prefix=f"{prefix}quota:"),
                     idempotency=RedisIdempotencyStore(redis, prefix=f"{prefix}idem:"),
                     credential_cache=RedisCredentialCache(redis), log_reader=log_reader,
                     rate_counter=RedisRateCounter(redis, prefix=f"{prefix}ratelimit:"))


def redis_delivery_stores(redis: TrioRedis, cipher: CredentialCipher,
                          options: SendmailOptions) -> DeliveryStores:
    """sendmail's credentials and delivery marks (SENDMAIL_DELIVERED_TTL_SECONDS)."""
    from etrans.adapters.redis.credential_source import RedisCredentialSource
    from etrans.adapters.redis.delivery_marks import RedisDeliveryMarks

    return DeliveryStores(
        credentials=RedisCredentialSource(redis, cipher),
        marks=RedisDeliveryMarks(redis, ttl_seconds=options.delivered_ttl_seconds))


@asynccontextmanager
async def open_state(redis: RedisSettings | None, data_dir: Path, *, prefix: str,
                     usend_repo: UsendRepository, log_reader: LogReader,
                     cipher: CredentialCipher,
                     sendmail: SendmailOptions,
                     stand_ins: dict[str, str]) -> AsyncIterator[StateStores]:
    """Credentials, quotas, idempotency keys, API-key cache, delivery marks: Redis (one client),
    or ``state.sqlite3`` in ``data_dir``."""
    if redis is not None:
        from etrans.adapters.redis.client import open_redis

        async with open_redis(redis.url.get()) as client:
            stand_ins["redis"] = redis.redacted()
            yield StateStores(
                api=redis_api_stores(client, prefix=prefix, usend_repo=usend_repo,
                                     log_reader=log_reader),
                delivery=redis_delivery_stores(client, cipher, sendmail))
        return
    from etrans.dev import kv

    store = kv.LocalStore(data_dir / "state.sqlite3")
    try:
        stand_ins["redis"] = f"local store, {data_dir / 'state.sqlite3'}"
        yield StateStores(
            api=ApiStores(
                usend_repo=usend_repo,
                key_cache=kv.LocalApiKeyCache(store, prefix=f"{prefix}apikey:"),
                quota=kv.LocalQuota(store, prefix=f"{prefix}quota:"),
                idempotency=kv.LocalIdempotencyStore(store, prefix=f"{prefix}idem:"),
                credential_cache=kv.LocalCredentialCache(store), log_reader=log_reader,
                rate_counter=None),
            delivery=DeliveryStores(
                credentials=kv.LocalCredentialSource(store, cipher),
                marks=kv.LocalDeliveryMarks(store, ttl_seconds=sendmail.delivered_ttl_seconds)))
    finally:
        store.close()


@asynccontextmanager
async def open_usend(databases: DatabaseSettings, data_dir: Path,
                     stand_ins: dict[str, str], events_topic: str | None = None
                     ) -> AsyncIterator[UsendStores]:
    """USEND_DB_URI (migrated at start), or SQLite ``usend.sqlite3`` in ``data_dir`` (a SQLite
    USEND_DB_URI is the embedded database at another path); ``events_topic``: where releasing
    a scheduled email writes its email.suppressed events (:func:`release_screen`)."""
    from pathlib import Path

    from etrans.settings import redact_uri

    uri = databases.usend_uri.get() if databases.usend_uri is not None else None
    sqlite_path = data_dir / "usend.sqlite3"
    if uri is not None and uri.startswith("sqlite:///"):
        sqlite_path, uri = Path(uri[len("sqlite:///"):]), None
    if uri is not None:
        from etrans.adapters.sql import migrations, usend_database
        from etrans.adapters.sql.email_status import EmailStatusUpdater
        from etrans.adapters.sql.outbox_store import PgOutboxStore
        from etrans.adapters.sql.usend_repo import UsendRepository

        await trio.to_thread.run_sync(migrations.upgrade, uri)
        db = usend_database(uri, pool_size=databases.pool_size)
        repo = UsendRepository(db)
        stores = UsendStores(db=db, repo=repo, statuses=EmailStatusUpdater(db),
                             outbox=PgOutboxStore.of(db, release_screen(
                                 repo, events_topic, release_domains(None, db))),
                             suppressions=suppression_store(db))
        stand_ins["usend db"] = redact_uri(uri)
    else:
        from etrans.dev import sqlite_db
        from etrans.dev.sqlite_outbox import SqliteOutboxStore

        db = sqlite_db.sqlite_database(sqlite_path)
        await db.run(sqlite_db.create_schema, db)
        sqlite_repo = sqlite_db.SqliteUsendRepository(db)
        stores = UsendStores(db=db, repo=sqlite_repo,
                             statuses=sqlite_db.SqliteEmailStatusUpdater(db),
                             outbox=SqliteOutboxStore(db, release_screen(
                                 sqlite_repo, events_topic, release_domains(None, db))),
                             suppressions=suppression_store(db))
        stand_ins["usend db"] = f"SQLite {sqlite_path}"
    try:
        yield stores
    finally:
        # The writer's own connection (PostgreSQL), closed as ``serve`` closes it.
        with trio.CancelScope(shield=True):
            await stores.repo.aclose()
        db.dispose()


@asynccontextmanager
async def open_topics(kafka: KafkaSettings | None, data_dir: Path,
                      stand_ins: dict[str, str]) -> AsyncIterator[Topics]:
    """Kafka, or the in-process topics of ``topics.sqlite3`` in ``data_dir``."""
    if kafka is not None:
        from etrans.adapters.kafka.client import KafkaProducer

        producer = KafkaProducer.from_settings(kafka)
        stand_ins["topics"] = f"Kafka {kafka.bootstrap_servers}"
        try:
            yield Topics(publisher=producer, source=None)
        finally:
            producer.close(5.0)
        return
    from etrans.dev.topics import LocalPublisher, LocalTopics

    topics = LocalTopics(data_dir / "topics.sqlite3")
    stand_ins["topics"] = f"in-process, {data_dir / 'topics.sqlite3'}"
    try:
        yield Topics(publisher=LocalPublisher(topics), source=topics.source())
    finally:
        topics.close()


@asynccontextmanager
async def open_logs(mongo: MongoSettings | None, options: FetchlogOptions, data_dir: Path,
                    stand_ins: dict[str, str]) -> AsyncIterator[LogStores]:
    """MongoDB, or SQLite ``logs.sqlite3`` in ``data_dir``; indexes ensured."""
    async with AsyncExitStack() as stack:
        if mongo is not None:
            from etrans.adapters.mongo.log_reader import MongoLogReader
            from etrans.adapters.mongo.store import MongoStore

            store = MongoStore(mongo)
            stack.callback(store.close)
            writer = mongo_log_writer(mongo, options)
            stack.callback(writer.close)
            logs = LogStores(writer=writer, reader=MongoLogReader(store))
            stand_ins["logs"] = f"MongoDB {mongo.dbname}.{mongo.collection}"
        else:
            from etrans.dev.log_store import SqliteLogStore

            local = SqliteLogStore(data_dir / "logs.sqlite3")
            stack.callback(local.close)
            logs = LogStores(writer=local, reader=local)
            stand_ins["logs"] = f"SQLite {data_dir / 'logs.sqlite3'}"
        await logs.writer.ensure_indexes()
        yield logs
