"""The one place that builds adapters and wires them into services.

Each public function takes validated :class:`~etrans.settings.Settings` and returns the
``main(shutdown)`` coroutine function that :func:`etrans.runtime.run` supervises.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

from etrans.observability import get_logger

if TYPE_CHECKING:
    from etrans.runtime import ServiceMain, Shutdown
    from etrans.settings import Settings

log = get_logger(__name__)


def _api_part1(settings: Settings, *, billing_db: Any, usend_db: Any, redis: Any, mongo: Any,
               relay: Any) -> tuple[Any, dict[str, Any]]:
    """Authentication and the services of emails and logs (API part 1): (authenticator, services).

    SMTP credentials come from the user's sender (``transport``), else from the billing system's
    ``temporary_password`` (external billing only); domains and ``mkt_domain`` from the Billing DB,
    or from the ``local_*`` tables of the USEND DB when BILLING_V4_URI is unset (local billing).
    """
    from etrans.adapters.api_key_cache import RedisApiKeyCache
    from etrans.adapters.auth_gateway import HttpAuthGateway
    from etrans.adapters.billing_repo import BillingRepository
    from etrans.adapters.credentials import CredentialCipher
    from etrans.adapters.idempotency import RedisIdempotencyStore
    from etrans.adapters.mongo_logs import MongoLogReader
    from etrans.adapters.redis_credentials import RedisCredentialCache
    from etrans.adapters.redis_quota import RedisQuota
    from etrans.adapters.sending_domains import CredentialDirectory, DomainDirectory
    from etrans.adapters.usend_repo import UsendRepository
    from etrans.api.auth import ApiKeyResolver, Authenticator, JwtVerifier
    from etrans.app import emails as email_cases
    from etrans.app import logs as log_cases
    from etrans.app.bus import MessageBus

    assert settings.http is not None
    assert settings.tokens is not None
    assert settings.kafka is not None
    http = settings.http
    local_billing = http.billing_v4_uri is None
    usend_repo = UsendRepository(usend_db)
    billing_repo = BillingRepository(usend_db if local_billing else billing_db,
                                     local=local_billing)
    domains = DomainDirectory(billing_repo, usend_repo)
    cipher = CredentialCipher(settings.tokens.secret.get(), settings.tokens.iv.get())
    prefix = http.redis_prefix
    key_cache = RedisApiKeyCache(redis, prefix=f"{prefix}apikey:")
    quota = RedisQuota(redis, prefix=f"{prefix}quota:")

    jwt = None
    if http.jwt_secret is not None:
        jwt = JwtVerifier(secret=http.jwt_secret.get())
    elif http.jwt_public_key is not None:
        jwt = JwtVerifier(public_key=http.jwt_public_key.get())
    gateway = (HttpAuthGateway(http.manage_auth_uri, cookie_name=http.session_cookie_name)
               if http.manage_auth_uri else None)
    authenticator = Authenticator(ApiKeyResolver(usend_repo, key_cache), jwt=jwt,
                                  gateway=gateway, session_cookie=http.session_cookie_name)

    bus = MessageBus()
    email_cases.register(bus, email_cases.EmailService(email_cases.EmailDeps(
        domains=domains, credentials=CredentialDirectory(usend_repo, billing_repo, cipher),
        credential_cache=RedisCredentialCache(redis), quota=quota, store=usend_repo,
        outbox=relay, topic=settings.kafka.topic,
    )))
    log_cases.register(bus, log_cases.LogService(MongoLogReader(mongo), usend_repo, domains))
    services: dict[str, Any] = {
        "bus": bus, "idempotency": RedisIdempotencyStore(redis, prefix=f"{prefix}idem:"),
        "api_key_cache": key_cache, "quota": quota, "sending_domains": domains,
    }
    return authenticator, services


def _api_part2(settings: Settings, *, billing_db: Any, usend_db: Any, producer: Any,
               services: dict[str, Any]) -> Any:
    """Domains, API keys, senders, billing (API part 2): ``services["accounts"]``.

    Billing mode: ``http`` (BILLING_V4_URI set; domains read from the read-only Billing DB) or
    ``local`` (etrans's ``local_*`` tables in the USEND DB).  The quota counters and the API key
    cache are part 1's objects, so GET /domains/{id}/quota reads the counters POST /emails
    increments and DELETE /api-keys revokes the entries authentication reads.
    """
    from etrans.adapters.account_repo import AccountRepo, BillingTables, DomainReader
    from etrans.adapters.billing_events import KafkaBillingEvents
    from etrans.adapters.billing_http import HttpBillingGateway
    from etrans.adapters.billing_local import LocalBillingGateway
    from etrans.adapters.credentials import CredentialCipher
    from etrans.adapters.dkim_keys import DkimKeyCipher
    from etrans.adapters.dns_verify import DnsVerifier
    from etrans.adapters.redis_credentials import RedisCredentialCache
    from etrans.app.domains import AccountServices
    from etrans.domain.domains import DnsTemplate

    assert settings.http is not None
    assert settings.tokens is not None
    assert settings.kafka is not None
    http = settings.http
    secret = settings.tokens.secret.get()
    billing: Any
    if http.billing_v4_uri:
        billing = HttpBillingGateway(http.billing_v4_uri)
        reader = DomainReader(billing_db, BillingTables.external())
    else:
        billing = LocalBillingGateway(usend_db, DkimKeyCipher(secret))
        reader = DomainReader(usend_db, BillingTables.local())

    return AccountServices(
        domains=reader,
        accounts=AccountRepo(usend_db),
        billing=billing,
        verifier=DnsVerifier(spf_value=http.default_spf_value, mx_host=http.default_mx_host,
                             nameservers=http.dns_nameservers),
        events=KafkaBillingEvents(producer, settings.kafka.billing_topic),
        template=DnsTemplate(spf_value=http.default_spf_value, mx_host=http.default_mx_host,
                             mx_priority=http.default_mx_priority),
        quota=services["quota"],
        api_key_cache=services["api_key_cache"],
        credential_cache=RedisCredentialCache(services["redis"]),
        credential_cipher=CredentialCipher(secret, settings.tokens.iv.get()),
        enable_testing_routes=http.enable_testing_routes,
    )


def serve(settings: Settings) -> ServiceMain:
    from hypercorn.config import Config
    from hypercorn.trio import serve as hypercorn_serve

    from etrans.adapters.kafka_client import KafkaProducer
    from etrans.adapters.mongo import MongoStore
    from etrans.adapters.outbox import OutboxRelay
    from etrans.adapters.redis_store import RedisClient
    from etrans.adapters.sql import billing_database, usend_database
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
    redis = RedisClient(settings.redis.url.get(), max_connections=max(20, dbs.pool_size * 2))
    producer = KafkaProducer.from_settings(settings.kafka)
    mongo = MongoStore(settings.mongo)
    relay = OutboxRelay(usend, producer)
    authenticator, services = _api_part1(settings, billing_db=billing, usend_db=usend,
                                         redis=redis, mongo=mongo, relay=relay)
    services["accounts"] = _api_part2(settings, billing_db=billing, usend_db=usend,
                                      producer=producer, services={**services, "redis": redis})
    app = create_app(ApiDependencies(probes=[billing, usend, redis, producer, mongo],
                                     authenticator=authenticator, services=services))

    config = Config()
    config.bind = [settings.http.bind]
    config.graceful_timeout = settings.drain_seconds
    config.accesslog = None
    # Hypercorn logs through the root handler (JSON with "service"), not a plain handler of its own.
    config.errorlog = logging.getLogger("hypercorn.error")

    async def main(shutdown: Shutdown) -> None:
        try:
            async with trio.open_nursery() as nursery:
                # The outbox relay publishes what requests committed; it runs until the HTTP
                # server has drained, then makes one last pass.
                relay_done = trio.Event()
                await nursery.start(relay.run, relay_done)
                log.info("listening", bind=settings.http.bind)
                await hypercorn_serve(app, config, shutdown_trigger=shutdown.wait_requested)
                relay_done.set()
                relay.notify()
        finally:
            producer.close(timeout=5.0)
            billing.dispose()
            usend.dispose()
            redis.close()
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
    from etrans.adapters.credentials import CredentialCipher
    from etrans.adapters.delivery_marks import RedisDeliveryMarks
    from etrans.adapters.kafka_client import KafkaProducer
    from etrans.adapters.redis_trio import open_redis
    from etrans.adapters.smtp import SmtpConfig, SmtpPool
    from etrans.adapters.smtp_credentials import RedisCredentialSource
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
        kafka=kafka.librdkafka(),
        workers=pool_size,
        # Sendmail messages may carry 25 MB of attachments: buffer few of them.
        channel_size=max(50, pool_size * 5),
        commit_interval=kafka.commit_interval_seconds,
        # The task enforces the per-email cap itself; this only catches a stuck Redis/Kafka call.
        message_timeout=options.email_timeout_seconds + 120.0,
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
                                   verify_tls=smtp.tls_verify), size=pool_size)
        cipher = CredentialCipher(settings.tokens.secret.get(), settings.tokens.iv.get())
        delivery = EmailDelivery(
            credentials=RedisCredentialSource(redis, cipher),
            marks=RedisDeliveryMarks(redis, ttl_seconds=options.delivered_ttl_seconds),
            transport=pool, events=producer, log_topic=log_topic, policy=policy,
        )
        task = SendmailTask(delivery)
        log.info("started", worker="sendmail", topic=kafka.topic, group_id=kafka.group_id,
                 log_topic=log_topic, workers=pool_size, smtp=f"{smtp.host}:{smtp.port}",
                 smtp_secure=smtp.secure)
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
    from etrans.adapters.email_status import EmailStatusUpdater
    from etrans.adapters.mongo_logs_writer import MongoLogWriter
    from etrans.adapters.sentry_reporter import ErrorReporter
    from etrans.adapters.sql import Database, make_engine
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
