"""The one place that builds adapters and wires them into services.

Each public function takes validated :class:`~etrans.settings.Settings` and returns the
``main(shutdown)`` coroutine function that :func:`etrans.runtime.run` supervises.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from etrans.observability import get_logger

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from hypercorn.config import Config as HypercornConfig

    from etrans.runtime import ServiceMain, Shutdown
    from etrans.settings import Settings

log = get_logger(__name__)


@dataclass
class ApiStores:
    """The API's stores besides its SQL tables: built on Redis and MongoDB for ``serve``
    (:func:`_redis_api_stores`), on the embedded stand-ins (or a mix) for ``dev``."""

    usend_repo: Any  # UsendRepository (EmailStore, ApiKeyStore, SenderCredentials)
    key_cache: Any  # ApiKeyCache
    quota: Any  # QuotaCounter
    idempotency: Any  # IdempotencyStore
    credential_cache: Any  # CredentialCache (hash ``auth``)
    log_reader: Any  # LogReader
    rate_counter: Any = None  # RateCounter (None: no request rate limits)


def _rate_limiter(settings: Settings, counter: Any) -> Any:
    """The API's request rate limits (etrans.api.rate_limit), or None without a counter store."""
    import ipaddress

    from etrans.api.rate_limit import RateLimiter, RateLimitPolicy

    assert settings.http is not None
    if counter is None:
        return None
    http = settings.http
    return RateLimiter(counter, RateLimitPolicy(
        requests=http.rate_limit_requests,
        anonymous_requests=http.rate_limit_anonymous_requests,
        window_seconds=http.rate_limit_window_seconds,
        trusted_proxies=tuple(ipaddress.ip_network(n, strict=False)
                              for n in http.rate_limit_trusted_proxies)))


def _redis_api_stores(settings: Settings, *, usend_db: Any, redis: Any, mongo: Any) -> ApiStores:
    from etrans.adapters.mongo.log_reader import MongoLogReader
    from etrans.adapters.redis.api_key_cache import RedisApiKeyCache
    from etrans.adapters.redis.credential_cache import RedisCredentialCache
    from etrans.adapters.redis.idempotency import RedisIdempotencyStore
    from etrans.adapters.redis.quota import RedisQuota
    from etrans.adapters.redis.rate_limit import RedisRateCounter
    from etrans.adapters.sql.usend_repo import UsendRepository

    assert settings.http is not None
    prefix = settings.http.redis_prefix
    return ApiStores(
        usend_repo=UsendRepository(usend_db),
        key_cache=RedisApiKeyCache(redis, prefix=f"{prefix}apikey:"),
        quota=RedisQuota(redis, prefix=f"{prefix}quota:"),
        idempotency=RedisIdempotencyStore(redis, prefix=f"{prefix}idem:"),
        credential_cache=RedisCredentialCache(redis),
        log_reader=MongoLogReader(mongo),
        rate_counter=RedisRateCounter(redis, prefix=f"{prefix}ratelimit:"),
    )


def _sending_services(settings: Settings, *, billing_db: Any, usend_db: Any, stores: ApiStores,
               relay: Any) -> tuple[Any, dict[str, Any]]:
    """Authentication and the services of emails and logs: (authenticator, services).

    SMTP credentials come from the user's sender (``transport``), else from the billing system's
    ``temporary_password`` (external billing only); domains and ``mkt_domain`` from the Billing DB,
    or from the ``local_*`` tables of the USEND DB when BILLING_V4_URI is unset (local billing).
    """
    from etrans.adapters.crypto.credentials import CredentialCipher
    from etrans.adapters.http.auth_gateway import HttpAuthGateway
    from etrans.adapters.sql.issued_credentials import IssuedCredentialReader
    from etrans.adapters.sql.sending_domains import CredentialDirectory, DomainDirectory
    from etrans.adapters.sql.subscriptions_repo import SqlSubscriptions
    from etrans.api.auth import ApiKeyResolver, Authenticator, JwtVerifier
    from etrans.app import emails as email_cases
    from etrans.app import logs as log_cases
    from etrans.app.bus import MessageBus

    assert settings.http is not None
    assert settings.tokens is not None
    assert settings.kafka is not None
    http = settings.http
    local_billing = http.billing_v4_uri is None
    usend_repo = stores.usend_repo
    issued = IssuedCredentialReader(usend_db if local_billing else billing_db,
                                    local=local_billing)
    domains = DomainDirectory(_billing_domains(settings, billing_db=billing_db,
                                               usend_db=usend_db),
                              SqlSubscriptions(usend_db))
    cipher = CredentialCipher(settings.tokens.secret.get(), settings.tokens.iv.get())
    key_cache, quota = stores.key_cache, stores.quota

    jwt = None
    if http.jwt_secret is not None or http.jwt_public_key is not None:
        jwt = JwtVerifier(
            secret=http.jwt_secret.get() if http.jwt_secret is not None else None,
            public_key=(http.jwt_public_key.get()
                        if http.jwt_secret is None and http.jwt_public_key is not None else None),
            audience=http.jwt_audience, issuer=http.jwt_issuer,
            leeway_seconds=http.jwt_leeway_seconds)
    gateway = (HttpAuthGateway(http.manage_auth_uri, cookie_name=http.session_cookie_name)
               if http.manage_auth_uri else None)
    authenticator = Authenticator(ApiKeyResolver(usend_repo, key_cache), jwt=jwt,
                                  gateway=gateway, session_cookie=http.session_cookie_name,
                                  allowed_origins=http.allowed_origins)

    bus = MessageBus()
    email_cases.register(bus, email_cases.EmailDeps(
        domains=domains, credentials=CredentialDirectory(usend_repo, issued, cipher),
        credential_cache=stores.credential_cache, quota=quota, store=usend_repo,
        outbox=relay, topic=settings.kafka.topic,
        max_record_bytes=settings.kafka.max_record_bytes,
    ))
    log_cases.register(bus, log_cases.LogDeps(stores.log_reader, usend_repo, domains))
    services: dict[str, Any] = {
        "bus": bus, "idempotency": stores.idempotency,
        "api_key_cache": key_cache, "quota": quota, "sending_domains": domains,
        "credential_cache": stores.credential_cache, "outbox": relay,
    }
    return authenticator, services


def _http_billing_gateway(http: Any) -> Any:
    """BILLING_V4_URI with its token (``Authorization: Bearer BILLING_V4_TOKEN``)."""
    from etrans.adapters.http.billing_gateway import HttpBillingGateway

    assert http.billing_v4_uri
    return HttpBillingGateway(
        http.billing_v4_uri,
        api_token=http.billing_v4_token.get() if http.billing_v4_token else None)


def _billing_domains(settings: Settings, *, billing_db: Any, usend_db: Any) -> Any:
    """The domains in the billing-shaped tables: the Billing DB (read only) when BILLING_V4_URI
    is set, else etrans's ``local_*`` tables in the USEND DB."""
    from etrans.adapters.sql.domains_repo import BillingTables, SqlDomains

    assert settings.http is not None
    if settings.http.billing_v4_uri:
        return SqlDomains(billing_db, BillingTables.external())
    return SqlDomains(usend_db, BillingTables.local())


def _account_deps(settings: Settings, *, billing_db: Any, usend_db: Any,
                  services: dict[str, Any]) -> Any:
    """What the account use cases (domains, API keys, senders, billing) depend on.

    Billing mode: ``http`` (BILLING_V4_URI set; domains read from the read-only Billing DB) or
    ``local`` (etrans's ``local_*`` tables in the USEND DB).  The quota counters and the API key
    cache are the sending services' objects, so GET /domains/{id}/quota reads the counters
    POST /emails increments and DELETE /api-keys revokes the entries authentication reads.
    """
    from etrans.adapters.crypto.credentials import CredentialCipher
    from etrans.adapters.crypto.dkim_keys import DkimKeyCipher, RsaDkimKeys
    from etrans.adapters.dns.verify import DnsVerifier
    from etrans.adapters.sql.api_keys_repo import SqlApiKeys
    from etrans.adapters.sql.billing_events import BillingEventOutbox
    from etrans.adapters.sql.billing_local import LocalBillingGateway
    from etrans.adapters.sql.domain_settings_repo import SqlDomainSettings
    from etrans.adapters.sql.packs_repo import SqlPackCatalogue
    from etrans.adapters.sql.senders_repo import SqlSenders
    from etrans.adapters.sql.subscriptions_repo import SqlSubscriptions
    from etrans.app.accounts import AccountDeps
    from etrans.domain.domains import DnsTemplate

    assert settings.http is not None
    assert settings.tokens is not None
    assert settings.kafka is not None
    http = settings.http
    secret = settings.tokens.secret.get()
    billing: Any = _http_billing_gateway(http) if http.billing_v4_uri else \
        LocalBillingGateway(usend_db, DkimKeyCipher(secret))
    return AccountDeps(
        domains=_billing_domains(settings, billing_db=billing_db, usend_db=usend_db),
        packs=SqlPackCatalogue(usend_db),
        subscriptions=SqlSubscriptions(usend_db, BillingEventOutbox(settings.kafka.billing_topic)),
        domain_settings=SqlDomainSettings(usend_db),
        api_keys=SqlApiKeys(usend_db),
        senders=SqlSenders(usend_db),
        billing=billing,
        verifier=DnsVerifier(spf_value=http.default_spf_value, mx_host=http.default_mx_host,
                             nameservers=http.dns_nameservers),
        dkim_keys=RsaDkimKeys(),
        sealer=CredentialCipher(secret, settings.tokens.iv.get()),
        template=DnsTemplate(spf_value=http.default_spf_value, mx_host=http.default_mx_host,
                             mx_priority=http.default_mx_priority),
        quota=services["quota"],
        api_key_cache=services["api_key_cache"],
        credential_cache=services["credential_cache"],
        sending_domains=services["sending_domains"],
        outbox=services.get("outbox"),
    )


def _account_services(settings: Settings, *, billing_db: Any, usend_db: Any,
                      services: dict[str, Any]) -> Any:
    """Registers the account use cases on ``services["bus"]`` (:func:`etrans.app.accounts.
    register`) and returns what the account routers need: ``services["accounts"]``."""
    from etrans.api.routes_domains import AccountRoutes
    from etrans.app import accounts

    assert settings.http is not None
    deps = _account_deps(settings, billing_db=billing_db, usend_db=usend_db, services=services)
    accounts.register(services["bus"], deps)
    return AccountRoutes(services["bus"], testing_routes=settings.http.enable_testing_routes)


def _outbox_relay(settings: Settings, store: Any, publisher: Any) -> Any:
    """The outbox relay of ``serve`` and ``dev`` on ``store`` (an OutboxStore: PostgreSQL or
    SQLite): a row that can never be published fails its email and queues Reject events for
    LOG_TOPIC (default ``email-logs``, as sendmail)."""
    from etrans.adapters.sql.outbox import OutboxRelay
    from etrans.settings import OutboxSettings
    from etrans.workers.reject_events import outbox_agent, reject_events

    assert settings.kafka is not None
    options = settings.outbox or OutboxSettings()
    return OutboxRelay(store, publisher, max_attempts=options.max_attempts,
                       retention_seconds=options.retention_hours * 3600.0,
                       log_topic=settings.kafka.log_topic or "email-logs",
                       reject_events=partial(reject_events, agent=outbox_agent()))


def check_kafka_topic(settings: Settings, *, timeout: float = 5.0) -> None:
    """``serve`` at start: KAFKA_TOPIC must take the largest record etrans produces (its
    ``max.message.bytes`` at least KAFKA_MAX_RECORD_BYTES + framing), else ConfigError (exit 2)
    naming both settings.  A broker that cannot be asked, or a topic that does not report the
    value, is a warning: the check cannot be made, serving goes on."""
    from etrans.adapters.kafka.client import KafkaAdmin
    from etrans.errors import ConfigError

    assert settings.kafka is not None
    kafka = settings.kafka
    try:
        limit = KafkaAdmin(kafka, timeout=timeout).topic_max_message_bytes(kafka.topic)
    except Exception as exc:
        log.warning("could not check that KAFKA_TOPIC takes the largest email record",
                    topic=kafka.topic, error=repr(exc), needed=kafka.max_batch_bytes)
        return
    if limit is None:
        log.info("KAFKA_TOPIC does not report max.message.bytes: not checked", topic=kafka.topic)
        return
    if limit < kafka.max_batch_bytes:
        raise ConfigError([
            f"Kafka topic {kafka.topic!r} (KAFKA_TOPIC) takes records of at most {limit} bytes "
            f"(its max.message.bytes), but etrans produces records of up to "
            f"KAFKA_MAX_RECORD_BYTES={kafka.max_record_bytes} bytes (+1024 of framing): raise the "
            f"topic's max.message.bytes to at least {kafka.max_batch_bytes} (kafka-configs.sh "
            f"--alter --entity-type topics --entity-name {kafka.topic} --add-config "
            f"max.message.bytes={kafka.max_batch_bytes}), or lower KAFKA_MAX_RECORD_BYTES to "
            f"{limit - 1024} or less (larger emails are then refused with 400); see "
            "docs/configuration.md, 'Large emails and Kafka size limits'"])
    log.info("KAFKA_TOPIC takes the largest email record", topic=kafka.topic,
             max_message_bytes=limit, needed=kafka.max_batch_bytes)


# glibc's mallopt(M_MMAP_THRESHOLD): allocations from this size up are mmapped and given back to
# the OS when freed.  glibc's default threshold grows (up to 32 MiB) each time such a block is
# freed, after which request bodies and their copies come from the heap and its fragments stay
# resident.  Measured (tests/integration/test_server_limits.py, 20 x 31.8 MiB sends, same body
# budget, two runs each): peak RSS 1236-1300 MiB without this, 1014-1142 MiB with it.
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 1024 * 1024


def _mmap_large_allocations() -> None:
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


def hypercorn_config(settings: Settings) -> HypercornConfig:
    """The HTTP server's configuration, the same for ``serve`` and ``dev``.

    Limits (docs/configuration.md, "Server limits"): a connection that sends nothing for
    ETRANS_READ_TIMEOUT_SECONDS is closed (hypercorn's default is never), an idle keep-alive
    connection after ETRANS_KEEP_ALIVE_TIMEOUT_SECONDS.  hypercorn has no cap on the number of
    connections: the process's file-descriptor limit (LimitNOFILE) is the cap, and memory is
    bounded by the body budget (etrans.api.body_budget), not by the connection count."""
    from hypercorn.config import Config

    assert settings.http is not None
    config = Config()
    config.bind = [settings.http.bind]
    config.graceful_timeout = settings.drain_seconds
    config.read_timeout = settings.http.read_timeout_seconds
    config.keep_alive_timeout = settings.http.keep_alive_timeout_seconds
    config.accesslog = None
    # Hypercorn logs through the root handler (JSON with "service"), not a plain handler of its own.
    config.errorlog = logging.getLogger("hypercorn.error")
    return config


def serve(settings: Settings) -> ServiceMain:
    from hypercorn.trio import serve as hypercorn_serve

    from etrans.adapters.kafka.client import KafkaProducer
    from etrans.adapters.mongo.store import MongoStore
    from etrans.adapters.redis.client import open_redis
    from etrans.adapters.sql import billing_database, usend_database
    from etrans.adapters.sql.outbox_store import PgOutboxStore
    from etrans.api.app import ApiDependencies, create_app

    assert settings.http is not None
    assert settings.databases is not None
    assert settings.redis is not None
    assert settings.kafka is not None
    assert settings.mongo is not None
    dbs = settings.databases
    assert dbs.billing_uri is not None
    assert dbs.usend_uri is not None
    # The Billing DB is external: its engine opens READ ONLY sessions (docs/database.md).
    billing = billing_database(dbs.billing_uri.get(), pool_size=dbs.pool_size)
    usend = usend_database(dbs.usend_uri.get(), pool_size=dbs.pool_size)
    producer = KafkaProducer.from_settings(settings.kafka)
    mongo = MongoStore(settings.mongo)
    relay = _outbox_relay(settings, PgOutboxStore.of(usend), producer)
    config = hypercorn_config(settings)
    _mmap_large_allocations()

    async def main(shutdown: Shutdown) -> None:
        assert settings.redis is not None
        assert settings.http is not None
        stores: ApiStores | None = None
        try:
            # One Redis client for every Redis adapter (requests' commands are pipelined).
            async with open_redis(settings.redis.url.get()) as redis, \
                    trio.open_nursery() as nursery:
                stores = _redis_api_stores(settings, usend_db=usend, redis=redis, mongo=mongo)
                authenticator, services = _sending_services(
                    settings, billing_db=billing, usend_db=usend, stores=stores, relay=relay)
                services["accounts"] = _account_services(
                    settings, billing_db=billing, usend_db=usend, services=services)
                app = create_app(ApiDependencies(
                    probes=[billing, usend, redis, producer, mongo],
                    authenticator=authenticator, services=services,
                    rate_limiter=_rate_limiter(settings, stores.rate_counter),
                    body_memory_bytes=settings.http.body_memory_bytes))
                # The outbox relay publishes what requests committed; it runs until the HTTP
                # server has drained, then makes one last pass.
                relay_done = trio.Event()
                await nursery.start(relay.run, relay_done)
                log.info("listening", bind=settings.http.bind)
                await hypercorn_serve(app, config, shutdown_trigger=shutdown.wait_requested)
                relay_done.set()
                relay.notify()
        finally:
            if stores is not None:
                with trio.CancelScope(shield=True):
                    await stores.usend_repo.aclose()
            # Only the relay produces here, and it has returned: what is still queued belongs to
            # a pass that was cut short and rolled back, published again at the next start.
            producer.close(timeout=1.0)
            billing.dispose()
            usend.dispose()
            mongo.close()

    return main


def _idle_worker(name: str) -> ServiceMain:
    # Placeholder main for a worker whose pipeline is wired by a later change: it starts,
    # reports readiness, and stops cleanly on the first signal.
    async def main(shutdown: Shutdown) -> None:
        log.info("started", worker=name)
        await shutdown.wait_requested()
        await trio.lowlevel.checkpoint()

    return main


def sendmail(settings: Settings) -> ServiceMain:
    """KAFKA_TOPIC -> SMTP (credentials from Redis); Reject events to LOG_TOPIC."""
    from etrans.adapters._net.redis_trio import open_redis
    from etrans.adapters.crypto.credentials import CredentialCipher
    from etrans.adapters.kafka.client import KafkaProducer
    from etrans.adapters.redis.credential_source import RedisCredentialSource
    from etrans.adapters.redis.delivery_marks import RedisDeliveryMarks
    from etrans.adapters.smtp.pool import SmtpConfig, SmtpPool
    from etrans.app.sendmail import DeliveryPolicy, EmailDelivery
    from etrans.pipeline import PipelineConfig, run_pipeline
    from etrans.workers.sendmail import SendmailTask

    assert settings.kafka is not None
    assert settings.redis is not None
    assert settings.tokens is not None
    assert settings.smtp is not None
    assert settings.sendmail is not None
    assert settings.kafka.group_id is not None
    kafka, smtp, options = settings.kafka, settings.smtp, settings.sendmail
    pool_size = options.worker_pool_size
    log_topic = kafka.log_topic or "email-logs"
    policy = DeliveryPolicy(attempts=options.retry_attempts,
                            base_seconds=options.retry_base_seconds,
                            email_timeout=options.email_timeout_seconds)
    config = PipelineConfig(
        topics=(kafka.topic,),
        group_id=kafka.group_id,
        group_instance_id=kafka.group_instance_id,
        kafka=kafka.librdkafka(),
        workers=pool_size,
        # Sendmail messages may carry 25 MB of attachments: buffer few of them.
        channel_size=max(50, pool_size * 5),
        commit_interval=kafka.commit_interval_seconds,
        # The task enforces the per-email cap itself, then may retry recording the outcome
        # while Redis is down; this only catches a stuck call.
        message_timeout=options.email_timeout_seconds + policy.record_patience + 10.0,
        dead_letter_topic=kafka.dead_letter_topic,
        assignment_strategy=kafka.assignment_strategy,
    )

    async def main(shutdown: Shutdown) -> None:
        async with open_redis(settings.redis.url.get()) as redis:
            await _sendmail_main(shutdown, redis)

    async def _sendmail_main(shutdown: Shutdown, redis: Any) -> None:
        producer = KafkaProducer.from_settings(kafka)
        pool = SmtpPool(SmtpConfig(host=smtp.host, port=smtp.port, implicit_tls=smtp.secure,
                                   timeout_seconds=smtp.timeout_seconds,
                                   idle_seconds=smtp.idle_seconds, ca_file=smtp.ca_file,
                                   verify_tls=smtp.tls_verify,
                                   allow_plaintext_auth=smtp.allow_plaintext_auth),
                        size=pool_size)
        cipher = CredentialCipher(settings.tokens.secret.get(), settings.tokens.iv.get())
        delivery = EmailDelivery(
            credentials=RedisCredentialSource(redis, cipher),
            marks=RedisDeliveryMarks(redis, ttl_seconds=options.delivered_ttl_seconds),
            transport=pool, events=producer, log_topic=log_topic, policy=policy,
        )
        task = SendmailTask(delivery)
        log.info("started", worker="sendmail", topic=kafka.topic, group_id=kafka.group_id,
                 group_instance_id=kafka.group_instance_id, log_topic=log_topic,
                 workers=pool_size, smtp=f"{smtp.host}:{smtp.port}", smtp_secure=smtp.secure)
        try:
            stats = await run_pipeline(config, task, shutdown, producer=producer)
            log.info("pipeline stopped", pipeline=repr(stats), sendmail=delivery.statistics(),
                     smtp=pool.statistics())
        finally:
            with trio.CancelScope(shield=True):
                await pool.aclose()
            producer.close(timeout=5.0)

    return main


def fetchlog(settings: Settings, *, from_earliest: bool, stop_at_end: bool) -> ServiceMain:
    """LOG_TOPIC -> MongoDB (+ email_messages.status when USEND_DB_URI is set)."""
    from etrans import __version__
    from etrans.adapters.http.sentry_reporter import ErrorReporter
    from etrans.adapters.mongo.log_writer import MongoLogWriter
    from etrans.adapters.sql import Database, make_engine
    from etrans.adapters.sql.email_status import EmailStatusUpdater
    from etrans.adapters.sql.message_owners import MessageOwnerLookup
    from etrans.domain.delivery_log import EventFilter
    from etrans.pipeline import PipelineConfig
    from etrans.workers.fetchlog import FetchlogTask, progress_stream_for, run_fetchlog

    assert settings.kafka is not None
    assert settings.mongo is not None
    assert settings.fetchlog is not None
    assert settings.databases is not None
    kafka, options = settings.kafka, settings.fetchlog
    assert kafka.log_topic is not None
    assert kafka.log_group_id is not None
    config = PipelineConfig(
        topics=(kafka.log_topic,),
        group_id=kafka.log_group_id,
        group_instance_id=kafka.group_instance_id,
        kafka=kafka.librdkafka(),
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

    async def main(shutdown: Shutdown) -> None:
        reporter = ErrorReporter.start(
            settings.sentry_dsn.get() if settings.sentry_dsn else None,
            service="fetchlog", release=__version__,
        )
        writer = MongoLogWriter(settings.mongo, insert_timeout=options.mongo_insert_timeout_seconds,
                                threads=options.worker_pool_size)
        usend_uri = settings.databases.usend_uri
        usend = (Database(make_engine(usend_uri.get(), pool_size=settings.databases.pool_size,
                                      application_name="etrans-fetchlog"), name="usend_db")
                 if usend_uri is not None else None)
        if usend is None:
            log.info("USEND_DB_URI not set: email statuses are not updated")
        task = FetchlogTask(
            EventFilter.from_settings(options.store_event_types, options.skip_message_id_pattern),
            writer,
            EmailStatusUpdater(usend) if usend is not None else None,
            reporter,
            MessageOwnerLookup(usend) if usend is not None else None,
        )
        try:
            await run_fetchlog(config, task, shutdown,
                               progress_stream=progress_stream_for(from_earliest or stop_at_end))
        except BaseException as exc:
            reporter.capture(exc, step="fetchlog")
            raise
        finally:
            writer.close()
            if usend is not None:
                usend.dispose()
            reporter.flush()

    return main


def dev(settings: Settings, *, data_dir: Path) -> ServiceMain:
    """``etrans dev``: the API, sendmail and fetchlog in one Trio process (:mod:`etrans.dev`).

    Every service has an embedded stand-in with its data under ``data_dir``; a real service given
    in the settings replaces its stand-in:

    ==============  =====================================  ==================================
    service         stand-in (``data_dir``)                replaced when set
    ==============  =====================================  ==================================
    USEND DB        SQLite ``usend.sqlite3``               USEND_DB_URI (migrated at start)
    Kafka topics    ``topics.sqlite3`` (in-process)        KAFKA_BOOTSTRAP_SERVERS
    Redis           ``state.sqlite3``                      REDIS_URI / REDIS_HOST
    MongoDB         ``logs.sqlite3``                       MONGODB_URI
    SMTP server     built-in sink, ``mail/*.eml``          SMTP_HOST
    ==============  =====================================  ==================================

    Billing is the local mode (``local_*`` tables).  TOKEN_SECRET/TOKEN_IV default to secrets
    generated once in ``data_dir/secrets.json``.
    """
    from dataclasses import replace

    from etrans.adapters.crypto.credentials import CredentialCipher
    from etrans.dev import demo
    from etrans.settings import KafkaSettings, Secret, TokenSettings

    assert settings.http is not None
    data_dir.mkdir(parents=True, exist_ok=True)
    if settings.tokens is not None:
        token_secret, token_iv = settings.tokens.secret.get(), settings.tokens.iv.get()
    else:
        token_secret, token_iv = demo.data_secrets(data_dir)
    # The shared wiring reads settings.tokens and settings.kafka (topic names): fill them in.
    kafka = settings.kafka or KafkaSettings(bootstrap_servers="", log_topic="email-logs",
                                            group_id="etrans-dev-sendmail",
                                            log_group_id="etrans-dev-fetchlog")
    settings = replace(settings, tokens=TokenSettings(Secret(token_secret), Secret(token_iv)),
                       kafka=kafka)
    cipher = CredentialCipher(token_secret, token_iv)

    async def main(shutdown: Shutdown) -> None:
        stand_ins: dict[str, str] = {}
        async with _dev_services(settings, data_dir, cipher, stand_ins) as services:
            await _dev_main(settings, data_dir, services, stand_ins, shutdown)

    return main


async def _dev_main(settings: Settings, data_dir: Path, services: _DevServices,
                    stand_ins: dict[str, str], shutdown: Shutdown) -> None:
    from hypercorn.trio import serve as hypercorn_serve

    from etrans.adapters.smtp.pool import SmtpConfig, SmtpPool
    from etrans.adapters.sql.message_owners import MessageOwnerLookup
    from etrans.api.app import ApiDependencies, create_app
    from etrans.app.sendmail import DeliveryPolicy, EmailDelivery
    from etrans.dev import demo
    from etrans.domain.delivery_log import EventFilter
    from etrans.pipeline import PipelineConfig, run_pipeline
    from etrans.workers.fetchlog import FetchlogTask, run_fetchlog
    from etrans.workers.sendmail import SendmailTask

    assert settings.http is not None
    assert settings.kafka is not None
    assert settings.sendmail is not None
    assert settings.fetchlog is not None
    http, kafka = settings.http, settings.kafka
    mail_options, log_options = settings.sendmail, settings.fetchlog
    log_topic = kafka.log_topic or "email-logs"
    usend, publisher = services.usend, services.publisher

    account = await usend.run(demo.ensure_demo, usend, services.cipher, data_dir)
    relay = _outbox_relay(settings, services.outbox, publisher)
    authenticator, api_services = _sending_services(settings, billing_db=None, usend_db=usend,
                                             stores=services.stores, relay=relay)
    api_services["accounts"] = _account_services(settings, billing_db=None, usend_db=usend,
                                          services=api_services)
    app = create_app(ApiDependencies(probes=[usend, publisher, services.log_writer],
                                     authenticator=authenticator, services=api_services,
                                     rate_limiter=_rate_limiter(settings,
                                                                services.stores.rate_counter),
                                     body_memory_bytes=http.body_memory_bytes))
    config = hypercorn_config(settings)
    _mmap_large_allocations()

    librdkafka = kafka.librdkafka() if kafka.bootstrap_servers else {}
    # Two consumers in this process: one static member id each (default "<hostname>-dev-...").
    instance = kafka.group_instance_id
    pool_size = mail_options.worker_pool_size
    sendmail_config = PipelineConfig(
        topics=(kafka.topic,), group_id=kafka.group_id or "etrans-dev-sendmail",
        group_instance_id=f"{instance}-sendmail" if instance else None,
        kafka=librdkafka, workers=pool_size, channel_size=max(50, pool_size * 5),
        commit_interval=kafka.commit_interval_seconds,
        message_timeout=(mail_options.email_timeout_seconds
                         + DeliveryPolicy.record_patience + 10.0))
    fetchlog_config = PipelineConfig(
        topics=(log_topic,), group_id=kafka.log_group_id or "etrans-dev-fetchlog",
        group_instance_id=f"{instance}-fetchlog" if instance else None,
        kafka=librdkafka, workers=log_options.worker_pool_size,
        channel_size=max(1000, 2 * log_options.worker_pool_size * log_options.batch_size),
        commit_interval=kafka.commit_interval_seconds,
        message_timeout=log_options.process_timeout_seconds,
        batch_size=log_options.batch_size, batch_linger=log_options.batch_linger_seconds)
    fetchlog_task = FetchlogTask(
        EventFilter.from_settings(log_options.store_event_types,
                                  log_options.skip_message_id_pattern),
        services.log_writer, services.statuses, owners=MessageOwnerLookup(usend))

    async def api() -> None:
        relay_done = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(relay.run, relay_done)
            await hypercorn_serve(app, config, shutdown_trigger=shutdown.wait_requested)
            relay_done.set()
            relay.notify()

    async with trio.open_nursery() as outer:
        # The SMTP sink lives in the outer nursery: it stays up until sendmail has drained.
        smtp = settings.smtp
        if smtp is None:
            from etrans.dev.smtp_sink import SmtpSink

            sink = SmtpSink(data_dir / "mail", publisher, log_topic)
            smtp_host, smtp_port, secure = "127.0.0.1", await outer.start(sink.serve), False
            stand_ins["smtp"] = (f"built-in on {smtp_host}:{smtp_port},"
                                 f" messages in {data_dir / 'mail'}")
        else:
            smtp_host, smtp_port, secure = smtp.host, smtp.port, smtp.secure
            stand_ins["smtp"] = f"{smtp_host}:{smtp_port}"
        pool = SmtpPool(SmtpConfig(host=smtp_host, port=smtp_port, implicit_tls=secure,
                                   timeout_seconds=smtp.timeout_seconds if smtp else 30.0,
                                   ca_file=smtp.ca_file if smtp else None,
                                   verify_tls=smtp.tls_verify if smtp else True,
                                   # the built-in sink listens on 127.0.0.1 only
                                   allow_plaintext_auth=smtp.allow_plaintext_auth if smtp
                                   else True),
                        size=pool_size)
        delivery = EmailDelivery(
            credentials=services.credentials, marks=services.marks, transport=pool,
            events=publisher, log_topic=log_topic,
            policy=DeliveryPolicy(attempts=mail_options.retry_attempts,
                                  base_seconds=mail_options.retry_base_seconds,
                                  email_timeout=mail_options.email_timeout_seconds))
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(api)
                nursery.start_soon(partial(run_pipeline, sendmail_config, SendmailTask(delivery),
                                           shutdown, producer=publisher, source=services.source))
                nursery.start_soon(partial(run_fetchlog, fetchlog_config, fetchlog_task,
                                           shutdown, source=services.source))
                host, _, port = http.bind.rpartition(":")
                host = "127.0.0.1" if host in ("0.0.0.0", "") else host
                print(demo.banner(account, f"http://{host}:{port}", data_dir, stand_ins),
                      flush=True)
            outer.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await pool.aclose()


@dataclass
class _DevServices:
    cipher: Any
    usend: Any  # Database: SQLite or PostgreSQL
    outbox: Any  # OutboxStore of that database
    publisher: Any  # LocalPublisher or KafkaProducer
    source: Any  # the pipelines' message source: LocalTopics.source() or None (Kafka)
    stores: ApiStores
    credentials: Any  # sendmail's CredentialSource
    marks: Any  # sendmail's DeliveryMarks
    log_writer: Any  # fetchlog's LogDocumentWriter
    statuses: Any  # fetchlog's EmailStatusStore


@asynccontextmanager
async def _dev_services(settings: Settings, data_dir: Path, cipher: Any,
                        stand_ins: dict[str, str]) -> AsyncIterator[_DevServices]:
    """The stores of ``etrans dev``, real or embedded (see :func:`dev`); closed on exit."""
    assert settings.databases is not None
    assert settings.http is not None
    assert settings.kafka is not None
    prefix = settings.http.redis_prefix
    async with AsyncExitStack() as stack:
        # USEND DB
        usend_uri = settings.databases.usend_uri
        sqlite_path = data_dir / "usend.sqlite3"
        if usend_uri is not None and usend_uri.get().startswith("sqlite:///"):
            # A SQLite USEND_DB_URI is the embedded database at another path.
            from pathlib import Path

            sqlite_path, usend_uri = Path(usend_uri.get()[len("sqlite:///"):]), None
        if usend_uri is not None:
            from etrans.adapters.sql import migrations, usend_database
            from etrans.adapters.sql.email_status import EmailStatusUpdater
            from etrans.adapters.sql.outbox_store import PgOutboxStore
            from etrans.adapters.sql.usend_repo import UsendRepository
            from etrans.settings import redact_uri

            await trio.to_thread.run_sync(migrations.upgrade, usend_uri.get())
            usend = usend_database(usend_uri.get(), pool_size=settings.databases.pool_size)
            usend_repo: Any = UsendRepository(usend)
            statuses: Any = EmailStatusUpdater(usend)
            outbox: Any = PgOutboxStore.of(usend)
            stand_ins["usend db"] = redact_uri(usend_uri.get())
        else:
            from etrans.dev import sqlite_db
            from etrans.dev.sqlite_outbox import SqliteOutboxStore

            usend = sqlite_db.sqlite_database(sqlite_path)
            await usend.run(sqlite_db.create_schema, usend)
            usend_repo = sqlite_db.SqliteUsendRepository(usend)
            statuses = sqlite_db.SqliteEmailStatusUpdater(usend)
            outbox = SqliteOutboxStore(usend)
            stand_ins["usend db"] = f"SQLite {sqlite_path}"
        stack.callback(usend.dispose)

        # topics
        source: Any = None
        if settings.kafka.bootstrap_servers:
            from etrans.adapters.kafka.client import KafkaProducer

            publisher: Any = KafkaProducer.from_settings(settings.kafka)
            stack.callback(publisher.close, 5.0)
            stand_ins["topics"] = f"Kafka {settings.kafka.bootstrap_servers}"
        else:
            from etrans.dev.topics import LocalPublisher, LocalTopics

            topics = LocalTopics(data_dir / "topics.sqlite3")
            stack.callback(topics.close)
            publisher, source = LocalPublisher(topics), topics.source()
            stand_ins["topics"] = f"in-process, {data_dir / 'topics.sqlite3'}"

        # credentials, quotas, idempotency keys, API-key cache, delivery marks
        if settings.redis is not None:
            from etrans.adapters.redis.api_key_cache import RedisApiKeyCache
            from etrans.adapters.redis.client import open_redis
            from etrans.adapters.redis.credential_cache import RedisCredentialCache
            from etrans.adapters.redis.credential_source import RedisCredentialSource
            from etrans.adapters.redis.delivery_marks import RedisDeliveryMarks
            from etrans.adapters.redis.idempotency import RedisIdempotencyStore
            from etrans.adapters.redis.quota import RedisQuota
            from etrans.adapters.redis.rate_limit import RedisRateCounter

            redis = await stack.enter_async_context(open_redis(settings.redis.url.get()))
            stores = ApiStores(
                usend_repo=usend_repo,
                key_cache=RedisApiKeyCache(redis, prefix=f"{prefix}apikey:"),
                quota=RedisQuota(redis, prefix=f"{prefix}quota:"),
                idempotency=RedisIdempotencyStore(redis, prefix=f"{prefix}idem:"),
                credential_cache=RedisCredentialCache(redis), log_reader=None,
                rate_counter=RedisRateCounter(redis, prefix=f"{prefix}ratelimit:"))
            credentials: Any = RedisCredentialSource(redis, cipher)
            marks: Any = RedisDeliveryMarks(redis)
            stand_ins["redis"] = settings.redis.redacted()
        else:
            from etrans.dev import kv

            store = kv.LocalStore(data_dir / "state.sqlite3")
            stack.callback(store.close)
            stores = ApiStores(
                usend_repo=usend_repo,
                key_cache=kv.LocalApiKeyCache(store, prefix=f"{prefix}apikey:"),
                quota=kv.LocalQuota(store, prefix=f"{prefix}quota:"),
                idempotency=kv.LocalIdempotencyStore(store, prefix=f"{prefix}idem:"),
                credential_cache=kv.LocalCredentialCache(store), log_reader=None)
            credentials = kv.LocalCredentialSource(store, cipher)
            marks = kv.LocalDeliveryMarks(store)
            stand_ins["redis"] = f"local store, {data_dir / 'state.sqlite3'}"

        # delivery logs
        if settings.mongo is not None:
            from etrans.adapters.mongo.log_reader import MongoLogReader
            from etrans.adapters.mongo.log_writer import MongoLogWriter
            from etrans.adapters.mongo.store import MongoStore

            mongo = MongoStore(settings.mongo)
            writer: Any = MongoLogWriter(settings.mongo)
            stack.callback(mongo.close)
            stack.callback(writer.close)
            stores.log_reader = MongoLogReader(mongo)
            stand_ins["logs"] = f"MongoDB {settings.mongo.dbname}.{settings.mongo.collection}"
        else:
            from etrans.dev.log_store import SqliteLogStore

            writer = stores.log_reader = SqliteLogStore(data_dir / "logs.sqlite3")
            stack.callback(writer.close)
            stand_ins["logs"] = f"SQLite {data_dir / 'logs.sqlite3'}"
        await writer.ensure_indexes()

        yield _DevServices(cipher=cipher, usend=usend, outbox=outbox, publisher=publisher,
                           source=source,
                           stores=stores, credentials=credentials, marks=marks,
                           log_writer=writer, statuses=statuses)
