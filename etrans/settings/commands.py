"""The settings of each subcommand: exactly the sections it needs, none of them optional unless
the subcommand can run without that service.

``for_command("sendmail", env)`` reads the sections of ``sendmail`` and raises one
:class:`~etrans.errors.ConfigError` naming every missing or invalid variable; what it returns is a
:class:`SendmailSettings` whose ``redis``, ``smtp``, ... are always there, so the wiring
(:mod:`etrans.bootstrap`) never has to check.  ``etrans dev`` is the exception by design: each
service it is not given is replaced by an embedded stand-in, so its sections are ``None`` then.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal, TypeVar, overload

from etrans.errors import ConfigError
from etrans.settings.models import (
    ApiDatabases,
    Consumer,
    DatabaseSettings,
    DkimKeyStore,
    FetchlogOptions,
    HttpSettings,
    KafkaSettings,
    MongoSettings,
    OutboxSettings,
    RedisSettings,
    Secret,
    SendmailOptions,
    SmtpSettings,
    TokenSettings,
)
from etrans.settings.reader import (
    Reader,
    read_databases,
    read_fetchlog,
    read_http,
    read_kafka,
    read_mongo,
    read_outbox,
    read_redis,
    read_smtp,
    read_tokens,
)
from etrans.settings.sendmail_reader import read_dkim_key_store, read_sendmail
from etrans.settings.tracking import (
    TrackingFlagsStore,
    TrackingSettings,
    read_tracking,
    read_tracking_flags_store,
)
from etrans.settings.webhooks import WebhooksOptions, read_webhooks

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class Settings:
    """What every subcommand reads: the drain deadline (ETRANS_DRAIN_SECONDS), SENTRY_DSN and
    where the metrics are served (ETRANS_METRICS_BIND, ``--metrics-bind``)."""

    drain_seconds: float = 25.0
    sentry_dsn: Secret | None = None
    # HOST:PORT of GET /metrics.  None: the workers serve none; serve answers /metrics on the
    # API's own port (docs/operations.md, "Metrics").
    metrics_bind: str | None = None
    # How many processes run the subcommand under one parent: ETRANS_SERVE_WORKERS (serve),
    # ETRANS_PROCESSES (sendmail, fetchlog, webhooks); 1 for the others (docs/operations.md,
    # "Using every core").
    processes: int = 1


@dataclass(frozen=True, kw_only=True)
class ServeSettings(Settings):
    """``etrans serve``: the HTTP API and the outbox relay."""

    kafka: KafkaSettings
    redis: RedisSettings
    mongo: MongoSettings
    tokens: TokenSettings
    databases: ApiDatabases
    http: HttpSettings
    outbox: OutboxSettings
    tracking: TrackingSettings | None = None  # ETRANS_TRACKING_BASE_URL unset: off


@dataclass(frozen=True, kw_only=True)
class SendmailSettings(Settings):
    """``etrans sendmail``: KAFKA_TOPIC -> SMTP."""

    kafka: KafkaSettings
    consumer: Consumer  # KAFKA_TOPIC, KAFKA_GROUP_ID
    redis: RedisSettings
    tokens: TokenSettings
    smtp: SmtpSettings
    sendmail: SendmailOptions
    # Where DKIM keys are read (SENDMAIL_DKIM_SIGNING); None: that database is not configured.
    dkim_keys: DkimKeyStore | None = None
    # Open and click tracking (None: off) and where the domains' flags are read.
    tracking: TrackingSettings | None = None
    tracking_flags: TrackingFlagsStore | None = None


@dataclass(frozen=True, kw_only=True)
class FetchlogSettings(Settings):
    """``etrans fetchlog``: LOG_TOPIC -> MongoDB (+ statuses when USEND_DB_URI is set)."""

    kafka: KafkaSettings
    consumer: Consumer  # LOG_TOPIC, LOG_GROUP_ID
    mongo: MongoSettings
    databases: DatabaseSettings  # USEND_DB_URI optional
    fetchlog: FetchlogOptions
    # The opens and clicks: KAFKA_EVENTS_TOPIC, ENGAGEMENT_GROUP_ID (default
    # "<LOG_GROUP_ID>-engagement"), the static member id "<id>-engagement".
    engagement: Consumer


@dataclass(frozen=True, kw_only=True)
class WebhooksSettings(Settings):
    """``etrans webhooks``: KAFKA_EVENTS_TOPIC -> the customers' endpoints (USEND DB: the
    webhooks, their attempts and retries; TOKEN_SECRET: their signing secrets)."""

    kafka: KafkaSettings
    consumer: Consumer  # KAFKA_EVENTS_TOPIC, WEBHOOKS_GROUP_ID
    usend_uri: Secret
    pool_size: int = 10
    tokens: TokenSettings
    webhooks: WebhooksOptions


@dataclass(frozen=True, kw_only=True)
class DbSettings(Settings):
    """``etrans db``: the USEND DB only."""

    usend_uri: Secret
    pool_size: int = 10


@dataclass(frozen=True, kw_only=True)
class DlqSettings(Settings):
    """``etrans dlq``: KAFKA_DEAD_LETTER_TOPIC read back and replayed to the source topics."""

    kafka: KafkaSettings
    dead_letter_topic: str


# ``etrans dev`` without KAFKA_BOOTSTRAP_SERVERS: the in-process topics, with these names.
LOCAL_TOPICS = KafkaSettings(bootstrap_servers="", log_topic="email-logs",
                             group_id="etrans-dev-sendmail", log_group_id="etrans-dev-fetchlog")


@dataclass(frozen=True, kw_only=True)
class DevSettings(Settings):
    """``etrans dev``: every service optional; None means "use the embedded stand-in"."""

    http: HttpSettings
    fetchlog: FetchlogOptions
    sendmail: SendmailOptions
    databases: DatabaseSettings  # USEND_DB_URI None: SQLite
    outbox: OutboxSettings
    kafka: KafkaSettings | None = None
    redis: RedisSettings | None = None
    mongo: MongoSettings | None = None
    tokens: TokenSettings | None = None  # None: secrets generated in the data directory
    smtp: SmtpSettings | None = None  # None: the built-in SMTP sink
    # WEBHOOKS_*; WEBHOOKS_ALLOW_PRIVATE_URLS defaults to true here (receivers on this machine)
    webhooks: WebhooksOptions = field(
        default_factory=lambda: WebhooksOptions(allow_private_urls=True))
    # ETRANS_TRACKING_*; None: on, with dev's own server and TOKEN_SECRET (bootstrap/dev.py)
    tracking: TrackingSettings | None = None
    engagement_group_id: str | None = None  # ENGAGEMENT_GROUP_ID

    @property
    def topics(self) -> KafkaSettings:
        """The Kafka settings the wiring uses: the real broker's, else the local topics'."""
        return self.kafka or replace(LOCAL_TOPICS, events_topic=self.webhooks.events_topic)

    def consumer(self, worker: Literal["sendmail", "fetchlog", "webhooks", "engagement"]
                 ) -> Consumer:
        """Four consumers in one process: one static member id each (``<id>-sendmail``)."""
        topics = self.topics
        instance = topics.group_instance_id
        if worker == "sendmail":
            topic, group = topics.topic, topics.group_id or "etrans-dev-sendmail"
        elif worker == "webhooks":
            topic, group = self.webhooks.events_topic, self.webhooks.group_id
        elif worker == "engagement":
            topic = self.webhooks.events_topic
            group = self.engagement_group_id or (
                f"{topics.log_group_id or 'etrans-dev-fetchlog'}-engagement")
        else:
            topic = topics.log_topic or "email-logs"
            group = topics.log_group_id or "etrans-dev-fetchlog"
        return Consumer(topic, group, f"{instance}-{worker}" if instance else None)


def _common(r: Reader) -> Settings:
    dsn = r.raw("SENTRY_DSN")
    metrics_bind = r.raw("ETRANS_METRICS_BIND") or None
    if metrics_bind is not None and not metrics_bind.rpartition(":")[2].isdigit():
        r.problems.append(f"ETRANS_METRICS_BIND must be HOST:PORT, got {metrics_bind!r}")
    return Settings(drain_seconds=r.number("ETRANS_DRAIN_SECONDS", 25.0, minimum=0.0),
                    sentry_dsn=Secret(dsn) if dsn else None, metrics_bind=metrics_bind)


def _serve(r: Reader) -> ServeSettings:
    common = _common(r)
    kafka, redis, mongo = read_kafka(r, consumer_of=None), read_redis(r), read_mongo(r)
    tokens = read_tokens(r)
    databases = read_databases(r, billing=True, usend=True)
    return ServeSettings(
        drain_seconds=common.drain_seconds, sentry_dsn=common.sentry_dsn,
        metrics_bind=common.metrics_bind,
        processes=r.integer("ETRANS_SERVE_WORKERS", 1, minimum=1, maximum=64),
        kafka=kafka, redis=redis, mongo=mongo, tokens=tokens,
        databases=ApiDatabases(billing_uri=databases.billing_uri or Secret(""),
                               usend_uri=databases.usend_uri or Secret(""),
                               pool_size=databases.pool_size,
                               statement_timeout_seconds=r.number(
                                   "DB_STATEMENT_TIMEOUT_SECONDS", 5.0, minimum=0.0)),
        http=read_http(r), outbox=read_outbox(r), tracking=read_tracking(r))


def _sendmail(r: Reader) -> SendmailSettings:
    common = _common(r)
    kafka = read_kafka(r, consumer_of="sendmail")
    options = read_sendmail(r)
    keys = None if options.dkim_signing == "off" else read_dkim_key_store(r, options.dkim_signing)
    tracking = read_tracking(r)
    return SendmailSettings(
        drain_seconds=common.drain_seconds, sentry_dsn=common.sentry_dsn,
        metrics_bind=common.metrics_bind,
        processes=r.integer("ETRANS_PROCESSES", 1, minimum=1, maximum=64),
        kafka=kafka,
        consumer=Consumer(kafka.topic, kafka.group_id or "", kafka.group_instance_id),
        redis=read_redis(r), tokens=read_tokens(r), smtp=read_smtp(r),
        sendmail=options, dkim_keys=keys, tracking=tracking,
        tracking_flags=read_tracking_flags_store(r) if tracking is not None else None)


def _fetchlog(r: Reader) -> FetchlogSettings:
    common = _common(r)
    kafka = read_kafka(r, consumer_of="fetchlog")
    instance = kafka.group_instance_id
    return FetchlogSettings(
        drain_seconds=common.drain_seconds, sentry_dsn=common.sentry_dsn,
        metrics_bind=common.metrics_bind,
        processes=r.integer("ETRANS_PROCESSES", 1, minimum=1, maximum=64),
        kafka=kafka,
        consumer=Consumer(kafka.log_topic or "", kafka.log_group_id or "", instance),
        mongo=read_mongo(r), databases=read_databases(r, billing=False, usend=False),
        fetchlog=read_fetchlog(r),
        engagement=Consumer(
            kafka.events_topic,
            r.text("ENGAGEMENT_GROUP_ID", f"{kafka.log_group_id or 'etrans-fetchlog'}-engagement"),
            f"{instance}-engagement" if instance else None))


def _webhooks(r: Reader) -> WebhooksSettings:
    common = _common(r)
    kafka = read_kafka(r, consumer_of="webhooks")
    options = read_webhooks(r)
    databases = read_databases(r, billing=False, usend=True)
    return WebhooksSettings(
        drain_seconds=common.drain_seconds, sentry_dsn=common.sentry_dsn,
        metrics_bind=common.metrics_bind,
        processes=r.integer("ETRANS_PROCESSES", 1, minimum=1, maximum=64),
        kafka=kafka,
        consumer=Consumer(options.events_topic, options.group_id, kafka.group_instance_id),
        usend_uri=databases.usend_uri or Secret(""), pool_size=databases.pool_size,
        tokens=read_tokens(r), webhooks=options)


def _db(r: Reader) -> DbSettings:
    common = _common(r)
    databases = read_databases(r, billing=False, usend=True)
    return DbSettings(drain_seconds=common.drain_seconds, sentry_dsn=common.sentry_dsn,
                      usend_uri=databases.usend_uri or Secret(""), pool_size=databases.pool_size)


def _dlq(r: Reader) -> DlqSettings:
    common = _common(r)
    kafka = read_kafka(r, consumer_of=None)
    return DlqSettings(drain_seconds=common.drain_seconds, sentry_dsn=common.sentry_dsn,
                       kafka=kafka, dead_letter_topic=r.required("KAFKA_DEAD_LETTER_TOPIC"))


def _dev(r: Reader) -> DevSettings:
    """A section is set only when its real service is given (KAFKA_BOOTSTRAP_SERVERS,
    REDIS_URI/REDIS_HOST, MONGODB_URI, SMTP_HOST, USEND_DB_URI, TOKEN_SECRET/TOKEN_IV).  Billing
    is always the local mode; the API listens on 127.0.0.1:8000 unless ETRANS_BIND says
    otherwise."""
    common = _common(r)
    http = read_http(r, billing_api=False)
    http = replace(http, bind=http.bind if r.raw("ETRANS_BIND") else "127.0.0.1:8000",
                   billing_v4_uri=None)
    fetchlog, sendmail = read_fetchlog(r), read_sendmail(r)
    databases, outbox = read_databases(r, billing=False, usend=False), read_outbox(r)
    kafka = None
    if r.raw("KAFKA_BOOTSTRAP_SERVERS"):
        # Two consumers (sendmail, fetchlog): DevSettings.consumer appends "-sendmail" /
        # "-fetchlog" to the instance id, whose default is "<hostname>-dev".
        kafka = read_kafka(r, consumer_of="dev")
        kafka = replace(kafka, group_id=kafka.group_id or "etrans-dev-sendmail",
                        log_topic=kafka.log_topic or "email-logs",
                        log_group_id=kafka.log_group_id or "etrans-dev-fetchlog")
    redis = read_redis(r) if r.raw("REDIS_URI") or r.raw("REDIS_HOST") else None
    mongo = None
    if r.raw("MONGODB_URI"):
        mongo = MongoSettings(
            uri=r.uri("MONGODB_URI", ("mongodb", "mongodb+srv")) or Secret(""),
            dbname=r.text("MONGODB_DBNAME", "etrans"),
            collection=r.text("MONGODB_COLLECTION", "email_logs"))
    tokens = read_tokens(r) if r.raw("TOKEN_SECRET") or r.raw("TOKEN_IV") else None
    smtp = read_smtp(r) if r.raw("SMTP_HOST") else None
    webhooks = read_webhooks(r)
    if r.raw("WEBHOOKS_ALLOW_PRIVATE_URLS") is None:
        webhooks = replace(webhooks, allow_private_urls=True)
        # The API of dev checks the URLs it saves by the same rule as its worker delivers.
        http = replace(http, webhooks_allow_private_urls=True)
    if r.raw("WEBHOOKS_GROUP_ID") is None:
        webhooks = replace(webhooks, group_id="etrans-dev-webhooks")
    return DevSettings(drain_seconds=common.drain_seconds, sentry_dsn=common.sentry_dsn,
                       http=http, fetchlog=fetchlog, sendmail=sendmail, databases=databases,
                       outbox=outbox, kafka=kafka, redis=redis, mongo=mongo, tokens=tokens,
                       smtp=smtp, webhooks=webhooks, tracking=read_tracking(r),
                       engagement_group_id=r.raw("ENGAGEMENT_GROUP_ID"))


# Every subcommand and how its settings are read.
COMMANDS: dict[str, Callable[[Reader], Settings]] = {
    "serve": _serve, "sendmail": _sendmail, "fetchlog": _fetchlog, "db": _db, "dev": _dev,
    "webhooks": _webhooks, "dlq": _dlq,
}


@overload
def for_command(command: Literal["serve"], env: Mapping[str, str] | None = None
                ) -> ServeSettings: ...
@overload
def for_command(command: Literal["sendmail"], env: Mapping[str, str] | None = None
                ) -> SendmailSettings: ...
@overload
def for_command(command: Literal["fetchlog"], env: Mapping[str, str] | None = None
                ) -> FetchlogSettings: ...
@overload
def for_command(command: Literal["webhooks"], env: Mapping[str, str] | None = None
                ) -> WebhooksSettings: ...
@overload
def for_command(command: Literal["db"], env: Mapping[str, str] | None = None) -> DbSettings: ...
@overload
def for_command(command: Literal["dlq"], env: Mapping[str, str] | None = None
                ) -> DlqSettings: ...
@overload
def for_command(command: Literal["dev"], env: Mapping[str, str] | None = None) -> DevSettings: ...
@overload
def for_command(command: str, env: Mapping[str, str] | None = None) -> Settings: ...
def for_command(command: str, env: Mapping[str, str] | None = None) -> Settings:
    """The settings of ``command`` (``os.environ`` by default); ConfigError lists every
    problem."""
    return read_section(os.environ if env is None else env, COMMANDS[command])


def read_section(env: Mapping[str, str], read: Callable[[Reader], T]) -> T:
    """Whatever ``read`` builds from ``env`` (a subcommand's settings, or one section for a
    tool or a test); ConfigError listing every problem."""
    r = Reader(env)
    value = read(r)
    if r.problems:
        raise ConfigError(r.problems)
    return value
