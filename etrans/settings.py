"""Environment -> frozen, validated settings.

Variable names are the contract of ``shared/spec/system-overview.md``: an operator can point one of
our processes at the environment of the process it replaces.  Nothing here does I/O at import time.

Each subcommand asks only for the sections it needs (``load(env, "kafka_consumer", "redis", ...)``);
every missing or invalid variable of those sections is collected, and one ``ConfigError`` lists
them all.  Secrets are kept in :class:`Secret` so that ``repr`` and logs never show them.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from etrans.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from pathlib import Path

# librdkafka settings pass through the environment: KAFKA_CONF_SESSION_TIMEOUT_MS=6000 becomes
# session.timeout.ms=6000.  librdkafka property names contain no underscores, so the mapping is
# exact.
KAFKA_CONF_PREFIX = "KAFKA_CONF_"

DEFAULT_STORE_EVENT_TYPES = ("Sender", "Queue", "Deferred", "Reject")

# The largest Kafka record (key + value) etrans produces, by default the record of the largest
# email the API accepts: 25 MiB of attachments is 34,952,536 bytes of base64, plus 1 MiB for the
# rest of the JSON (addresses, subject, headers, ...).  Emails whose record is larger are refused
# with 400 before they are stored (a text-only email carries its text twice: as the HTML ``body``
# the old worker reads and as ``text``).
DEFAULT_MAX_RECORD_BYTES = (25 * 1024 * 1024 + 2) // 3 * 4 + 1024 * 1024
# What a record batch adds around one record (batch header, record header, varints): the
# producer's message.max.bytes and the topic's max.message.bytes must leave this much room.
RECORD_FRAMING_BYTES = 1024
# librdkafka's upper bound for message.max.bytes.
_LIBRDKAFKA_MAX_MESSAGE_BYTES = 1_000_000_000


class Secret:
    """A string that never shows itself in ``repr``/``str`` (logs, tracebacks, error output)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def redact_uri(uri: str) -> str:
    """``postgresql://u:pw@h/db`` -> ``postgresql://u:***@h/db``; other strings unchanged."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparseable uri>"
    if parts.password is None:
        return uri
    # The host part as written (parts.port would raise on a malformed port).
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{parts.username or ''}:***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


# librdkafka properties that apply to one kind of client only (CONFIGURATION.md marks them C or
# P); given to another kind, librdkafka prints a warning on stderr at every start.
_CONSUMER_ONLY = frozenset({
    "group.id", "group.instance.id", "group.protocol", "group.remote.assignor",
    "partition.assignment.strategy", "session.timeout.ms", "heartbeat.interval.ms",
    "group.protocol.type", "coordinator.query.interval.ms", "max.poll.interval.ms",
    "enable.auto.commit", "auto.commit.interval.ms", "enable.auto.offset.store",
    "auto.offset.reset", "queued.min.messages", "queued.max.messages.kbytes",
    "fetch.wait.max.ms", "fetch.queue.backoff.ms", "fetch.message.max.bytes",
    "max.partition.fetch.bytes", "fetch.max.bytes", "fetch.min.bytes", "fetch.error.backoff.ms",
    "offset.store.method", "isolation.level", "enable.partition.eof", "check.crcs",
    "consume.callback.max.messages",
})
_PRODUCER_ONLY = frozenset({
    "transactional.id", "transaction.timeout.ms", "enable.idempotence",
    "enable.gapless.guarantee", "queue.buffering.max.messages", "queue.buffering.max.kbytes",
    "queue.buffering.max.ms", "linger.ms", "message.send.max.retries", "retries",
    "queue.buffering.backpressure.threshold", "compression.codec", "compression.type",
    "batch.num.messages", "batch.size", "delivery.report.only.error",
    "sticky.partitioning.linger.ms",
    "acks", "request.required.acks", "request.timeout.ms", "message.timeout.ms",
    "delivery.timeout.ms", "partitioner", "compression.level",
})
_NOT_FOR_ROLE = {
    "consumer": _PRODUCER_ONLY,
    "producer": _CONSUMER_ONLY,
    "admin": _CONSUMER_ONLY | _PRODUCER_ONLY,
}


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap_servers: str
    topic: str = "sendmail"
    group_id: str | None = None
    log_topic: str | None = None
    log_group_id: str | None = None
    billing_topic: str | None = None
    dead_letter_topic: str | None = None
    # Extra librdkafka properties: SASL/SSL and KAFKA_CONF_* pass-through.  Values may be secrets.
    client_config: Mapping[str, Secret] = field(default_factory=dict)
    commit_interval_seconds: float = 1.0
    assignment_strategy: str = "range,roundrobin"
    # KAFKA_MAX_RECORD_BYTES: see DEFAULT_MAX_RECORD_BYTES.
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    # KAFKA_GROUP_INSTANCE_ID: static group membership of this process's consumer (None: off).
    group_instance_id: str | None = None

    @property
    def max_batch_bytes(self) -> int:
        """The producer's ``message.max.bytes``, and the least ``max.message.bytes`` a topic
        must allow: the largest record plus its batch framing."""
        return self.max_record_bytes + RECORD_FRAMING_BYTES

    def librdkafka(self, role: str = "consumer",
                   **overrides: str | int | bool) -> dict[str, str | int | bool]:
        """The librdkafka configuration of one client: bootstrap + security + pass-through +
        overrides.  ``role`` ("consumer", "producer" or "admin") leaves out the pass-through
        properties librdkafka would only warn about for that kind of client (KAFKA_CONF_* is one
        set of variables for every client of the process)."""
        if role not in _NOT_FOR_ROLE:
            raise ValueError(f"unknown Kafka client role {role!r}")
        unwanted = _NOT_FOR_ROLE[role]
        conf: dict[str, str | int | bool] = {"bootstrap.servers": self.bootstrap_servers}
        if role == "producer":
            conf["message.max.bytes"] = self.max_batch_bytes
        conf.update({k: v.get() for k, v in self.client_config.items() if k not in unwanted})
        if role == "producer" and "message.max.bytes" in self.client_config:
            # KAFKA_CONF_MESSAGE_MAX_BYTES may only raise it (checked when loading).
            conf["message.max.bytes"] = max(self.max_batch_bytes,
                                            int(self.client_config["message.max.bytes"].get()))
        conf.update(overrides)
        return conf


@dataclass(frozen=True)
class RedisSettings:
    url: Secret

    def redacted(self) -> str:
        return redact_uri(self.url.get())


@dataclass(frozen=True)
class MongoSettings:
    uri: Secret
    dbname: str
    collection: str


@dataclass(frozen=True)
class TokenSettings:
    secret: Secret  # 32 bytes: AES-256 key
    iv: Secret  # 16 bytes: AES-CBC IV


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    secure: bool = False
    timeout_seconds: float = 30.0
    # A worker's connection idle longer than this is closed instead of reused.
    idle_seconds: float = 60.0
    # TLS trust: a CA bundle (default: the system's) and whether to verify at all.
    ca_file: str | None = None
    tls_verify: bool = True
    # AUTH on a connection without TLS (a relay on the loopback interface); never by default.
    allow_plaintext_auth: bool = False


@dataclass(frozen=True)
class DatabaseSettings:
    billing_uri: Secret | None  # DB_URI (read-only, managed externally)
    usend_uri: Secret | None  # USEND_DB_URI
    pool_size: int = 10


@dataclass(frozen=True)
class FetchlogSettings:
    worker_pool_size: int = 10
    process_timeout_seconds: float = 10.0
    mongo_insert_timeout_seconds: float = 10.0
    store_event_types: tuple[str, ...] = DEFAULT_STORE_EVENT_TYPES
    skip_message_id_pattern: str = "bizfly.vn"
    # Documents per insert_many, and how long a worker waits to fill a batch (etrans additions).
    batch_size: int = 500
    batch_linger_seconds: float = 0.1


@dataclass(frozen=True)
class SendmailSettings:
    worker_pool_size: int = 10
    email_timeout_seconds: float = 300.0
    retry_attempts: int = 5
    retry_base_seconds: float = 1.0
    # How long "already delivered" marks stay in Redis (at least 7 days).
    delivered_ttl_seconds: int = 7 * 24 * 3600


@dataclass(frozen=True)
class OutboxSettings:
    """The outbox relay of ``serve`` and ``dev`` (``etrans/adapters/sql/outbox.py``)."""

    # A row the broker answered with an error this many times is marked failed (its email too).
    max_attempts: int = 10
    # Published rows are deleted this long after publication.
    retention_hours: float = 24.0


@dataclass(frozen=True)
class HttpSettings:
    bind: str = "0.0.0.0:8000"
    manage_auth_uri: str | None = None
    billing_v4_uri: str | None = None
    # Sent as "Authorization: Bearer <token>" to BILLING_V4_URI.
    billing_v4_token: Secret | None = None
    # Plain http to a host that is not loopback (the token and every call in clear; the DKIM
    # private key is never sent so, see adapters/http/billing_gateway.py).
    billing_v4_allow_http: bool = False
    jwt_secret: Secret | None = None
    jwt_public_key: Secret | None = None
    # Checked in tokens verified locally (not by MANAGE_AUTH_URI): one of these `aud`, this `iss`.
    jwt_audience: tuple[str, ...] = ()
    jwt_issuer: str | None = None
    jwt_leeway_seconds: float = 5.0
    default_spf_value: str = "v=spf1 include:_spf.etrans.local ~all"
    default_mx_host: str = "mx.etrans.local"
    default_mx_priority: int = 5
    dns_nameservers: tuple[str, ...] = ()
    enable_testing_routes: bool = False
    # Prefix of etrans's own Redis keys (API key cache, quotas, idempotency); not of hash ``auth``.
    redis_prefix: str = "etrans:"
    session_cookie_name: str = "session"
    # Origins (scheme://host[:port]) besides the API's own allowed to change state with the cookie.
    allowed_origins: tuple[str, ...] = ()
    # Request rate limits (etrans.api.rate_limit): per API key / user, and per client address for
    # requests without valid credentials, per fixed window; 0 turns one off.
    rate_limit_requests: int = 6000
    rate_limit_anonymous_requests: int = 600
    rate_limit_window_seconds: int = 60
    # Peers whose X-Forwarded-For is believed (addresses or CIDR networks).
    rate_limit_trusted_proxies: tuple[str, ...] = ()
    # Server limits (docs/configuration.md, "Server limits"): a connection that sends nothing
    # for read_timeout_seconds is closed, so is an idle keep-alive connection after
    # keep_alive_timeout_seconds; request bodies held in memory at once are capped at
    # body_memory_bytes (503 + Retry-After beyond it).
    read_timeout_seconds: int = 30
    keep_alive_timeout_seconds: float = 5.0
    body_memory_bytes: int = 256 * 1024 * 1024


@dataclass(frozen=True)
class Settings:
    """Everything a subcommand was given; sections it did not ask for are ``None``."""

    drain_seconds: float = 25.0
    sentry_dsn: Secret | None = None
    kafka: KafkaSettings | None = None
    redis: RedisSettings | None = None
    mongo: MongoSettings | None = None
    tokens: TokenSettings | None = None
    smtp: SmtpSettings | None = None
    databases: DatabaseSettings | None = None
    fetchlog: FetchlogSettings | None = None
    sendmail: SendmailSettings | None = None
    http: HttpSettings | None = None
    outbox: OutboxSettings | None = None


class _Reader:
    """Reads variables and collects every problem instead of stopping at the first."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def raw(self, name: str) -> str | None:
        value = self.env.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def required(self, name: str, why: str = "") -> str:
        value = self.raw(name)
        if value is None:
            self.problems.append(f"{name} is required{f' ({why})' if why else ''}")
            return ""
        return value

    def text(self, name: str, default: str) -> str:
        value = self.raw(name)
        return default if value is None else value

    def integer(self, name: str, default: int, *, minimum: int = 0,
                maximum: int | None = None) -> int:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            self.problems.append(f"{name} must be an integer, got {value!r}")
            return default
        if number < minimum or (maximum is not None and number > maximum):
            upper = f" and at most {maximum}" if maximum is not None else ""
            self.problems.append(f"{name} must be at least {minimum}{upper}, got {number}")
            return default
        return number

    def number(self, name: str, default: float, *, minimum: float = 0.0) -> float:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            self.problems.append(f"{name} must be a number, got {value!r}")
            return default
        if number < minimum:
            self.problems.append(f"{name} must be at least {minimum}, got {number}")
            return default
        return number

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        self.problems.append(f"{name} must be true or false, got {value!r}")
        return default

    def fixed_bytes(self, name: str, length: int) -> Secret:
        # The value is a secret: the message gives its length, never its content.
        value = self.raw(name)
        if value is None:
            self.problems.append(f"{name} is required ({length} bytes)")
            return Secret("")
        size = len(value.encode())
        if size != length:
            self.problems.append(f"{name} must be exactly {length} bytes, got {size}")
        return Secret(value)

    def uri(self, name: str, schemes: Iterable[str], *, required: bool = True) -> Secret | None:
        value = self.raw(name)
        if value is None:
            if required:
                self.problems.append(f"{name} is required")
            return None
        scheme = value.split("://", 1)[0].lower() if "://" in value else ""
        allowed = tuple(schemes)
        if not any(scheme == s or scheme.startswith(s + "+") for s in allowed):
            self.problems.append(
                f"{name} must be a URI starting with {' or '.join(s + '://' for s in allowed)},"
                f" got {redact_uri(value)!r}"
            )
        else:
            # A malformed port would otherwise surface later as a traceback quoting the URI.
            try:
                urlsplit(value).port  # noqa: B018
            except ValueError:
                self.problems.append(f"{name} has an invalid host or port: {redact_uri(value)!r}")
        return Secret(value)


def _kafka(r: _Reader, *, consumer_of: str | None) -> KafkaSettings:
    bootstrap = r.required("KAFKA_BOOTSTRAP_SERVERS")
    if consumer_of == "sendmail":
        topic = r.required("KAFKA_TOPIC")
        group_id: str | None = r.required("KAFKA_GROUP_ID")
    else:
        topic = r.text("KAFKA_TOPIC", "sendmail")
        group_id = r.raw("KAFKA_GROUP_ID")
    if consumer_of == "fetchlog":
        log_topic: str | None = r.required("LOG_TOPIC")
        log_group: str | None = r.required("LOG_GROUP_ID")
    else:
        log_topic, log_group = r.raw("LOG_TOPIC"), r.raw("LOG_GROUP_ID")

    conf: dict[str, Secret] = {}
    protocol = r.raw("KAFKA_SECURITY_PROTOCOL")
    mechanism = r.raw("KAFKA_SASL_MECHANISM") or r.raw("KAFKA_SASL_MECHANISMS")
    username = r.raw("KAFKA_SASL_USERNAME")
    password = r.raw("KAFKA_SASL_PASSWORD")
    if mechanism or username or password:
        if not (username and password):
            r.problems.append("KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD must be set together")
        conf["sasl.mechanisms"] = Secret(mechanism or "PLAIN")
        conf["security.protocol"] = Secret(protocol or "SASL_PLAINTEXT")
        conf["sasl.username"] = Secret(username or "")
        conf["sasl.password"] = Secret(password or "")
    elif protocol:
        conf["security.protocol"] = Secret(protocol)
    for name, value in r.env.items():
        if name.startswith(KAFKA_CONF_PREFIX) and value != "":
            key = name[len(KAFKA_CONF_PREFIX) :].lower().replace("_", ".")
            if key:
                conf[key] = Secret(value)
    instance_id = _group_instance_id(r, conf, consumer_of)
    _check_librdkafka(r, conf)
    max_record = r.integer("KAFKA_MAX_RECORD_BYTES", DEFAULT_MAX_RECORD_BYTES, minimum=65536,
                           maximum=_LIBRDKAFKA_MAX_MESSAGE_BYTES - RECORD_FRAMING_BYTES)
    given = conf.get("message.max.bytes")
    if given is not None and given.get().isdigit() and (
            int(given.get()) < max_record + RECORD_FRAMING_BYTES):
        r.problems.append(
            f"KAFKA_CONF_MESSAGE_MAX_BYTES ({given.get()}) is smaller than KAFKA_MAX_RECORD_BYTES"
            f" + {RECORD_FRAMING_BYTES} ({max_record + RECORD_FRAMING_BYTES}): leave it unset"
            " (KAFKA_MAX_RECORD_BYTES sets the producer's message.max.bytes) or raise it")

    return KafkaSettings(
        bootstrap_servers=bootstrap,
        topic=topic,
        group_id=group_id,
        log_topic=log_topic,
        log_group_id=log_group,
        billing_topic=r.raw("KAFKA_BILLING_TOPIC"),
        dead_letter_topic=r.raw("KAFKA_DEAD_LETTER_TOPIC"),
        client_config=conf,
        commit_interval_seconds=r.number("KAFKA_COMMIT_INTERVAL_SECONDS", 1.0, minimum=0.01),
        assignment_strategy=r.text("KAFKA_ASSIGNMENT_STRATEGY", "range,roundrobin"),
        max_record_bytes=max_record,
        group_instance_id=instance_id,
    )


_GROUP_INSTANCE_ID = re.compile(r"[A-Za-z0-9._-]{1,249}")


def default_group_instance_id(consumer: str) -> str:
    """``<hostname>-<consumer>``: stable across restarts of one worker on one host."""
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:200] or "localhost"
    return f"{host}-{consumer}"


def _group_instance_id(r: _Reader, conf: dict[str, Secret],
                       consumer_of: str | None) -> str | None:
    """KAFKA_GROUP_INSTANCE_ID (or KAFKA_CONF_GROUP_INSTANCE_ID), default
    ``<hostname>-<subcommand>`` for a consumer; ``none`` turns static membership off."""
    passed_through = conf.pop("group.instance.id", None)
    value = r.raw("KAFKA_GROUP_INSTANCE_ID")
    if value is None and passed_through is not None:
        value = passed_through.get().strip()
    if value is None:
        return default_group_instance_id(consumer_of) if consumer_of is not None else None
    if value.lower() == "none":
        return None
    if not _GROUP_INSTANCE_ID.fullmatch(value):
        r.problems.append("KAFKA_GROUP_INSTANCE_ID must be 1-249 letters, digits, '.', '_' or "
                          f"'-' (or none), got {value!r}")
        return None
    return value


_SASL_VARIABLES = {
    "security.protocol": "KAFKA_SECURITY_PROTOCOL",
    "sasl.mechanisms": "KAFKA_SASL_MECHANISM",
    "sasl.username": "KAFKA_SASL_USERNAME",
    "sasl.password": "KAFKA_SASL_PASSWORD",
}


# librdkafka properties whose values are secrets (sasl.password, ssl.key.password, ...).
_SECRET_PROPERTY = re.compile(r"password|secret|key|token|jaas|credential|config")


def _variable_of(key: str) -> str:
    """The environment variable a librdkafka property came from."""
    return _SASL_VARIABLES.get(key, KAFKA_CONF_PREFIX + key.upper().replace(".", "_"))


def _check_librdkafka(r: _Reader, conf: Mapping[str, Secret]) -> None:
    """Let librdkafka itself reject unknown properties and bad values, at start (exit 2).

    librdkafka checks its configuration when a client is created; a producer with no
    ``bootstrap.servers`` does no I/O.  Each property is tried alone so that every bad one is
    named; its value is never quoted (it may be a password).
    """
    if not conf:
        return
    import logging

    from confluent_kafka import KafkaException, Producer

    quiet = logging.getLogger("etrans.settings.librdkafka_check")
    quiet.disabled = True  # "no brokers configured" and friends are expected here

    def rejection(properties: Mapping[str, str]) -> str | None:
        try:
            Producer({**properties, "logger": quiet})
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            message = error.str() if hasattr(error, "str") else str(exc)
            for key, value in properties.items():
                if value and _SECRET_PROPERTY.search(key):
                    message = message.replace(value, "***")
            return message
        return None

    # Security properties only make sense together (SASL_PLAINTEXT alone means GSSAPI).
    security = {k: v.get() for k, v in conf.items() if k.startswith(("security.", "sasl.", "ssl."))}
    rejected = False
    if security:
        problem = rejection(security)
        if problem is not None:
            variables = ", ".join(_variable_of(key) for key in security)
            r.problems.append(f"Kafka security settings ({variables}) are rejected by librdkafka:"
                              f" {problem}")
            rejected = True
    for key, value in conf.items():
        if key in security:
            continue
        problem = rejection({key: value.get()})
        if problem is not None:
            r.problems.append(f"{_variable_of(key)} is rejected by librdkafka: {problem}")
            rejected = True
    if not rejected:
        problem = rejection({k: v.get() for k, v in conf.items()})
        if problem is not None:
            r.problems.append(f"Kafka client settings are rejected by librdkafka: {problem}")


def _redis(r: _Reader) -> RedisSettings:
    uri = r.uri("REDIS_URI", ("redis", "rediss", "unix"), required=False)
    if uri is not None:
        return RedisSettings(url=uri)
    # The Go worker's form: REDIS_HOST / REDIS_PORT / REDIS_DB (and REDIS_PASSWORD).
    host = r.raw("REDIS_HOST")
    if host is None:
        r.problems.append("REDIS_URI or REDIS_HOST is required")
        return RedisSettings(url=Secret(""))
    port = r.integer("REDIS_PORT", 6379, minimum=1, maximum=65535)
    db = r.integer("REDIS_DB", 0, minimum=0)
    password = r.raw("REDIS_PASSWORD")
    auth = f":{password}@" if password else ""
    return RedisSettings(url=Secret(f"redis://{auth}{host}:{port}/{db}"))


def _mongo(r: _Reader) -> MongoSettings:
    uri = r.uri("MONGODB_URI", ("mongodb", "mongodb+srv"))
    return MongoSettings(
        uri=uri or Secret(""),
        dbname=r.required("MONGODB_DBNAME"),
        collection=r.required("MONGODB_COLLECTION"),
    )


def _tokens(r: _Reader) -> TokenSettings:
    return TokenSettings(secret=r.fixed_bytes("TOKEN_SECRET", 32), iv=r.fixed_bytes("TOKEN_IV", 16))


def _smtp(r: _Reader) -> SmtpSettings:
    host = r.required("SMTP_HOST")
    port_raw = r.raw("SMTP_PORT")
    if port_raw is None:
        r.problems.append("SMTP_PORT is required")
        port = 25
    else:
        port = r.integer("SMTP_PORT", 25, minimum=1, maximum=65535)
    return SmtpSettings(
        host=host,
        port=port,
        secure=r.boolean("SMTP_SECURE", False),
        timeout_seconds=r.number("SMTP_TIMEOUT_SECONDS", 30.0, minimum=0.1),
        idle_seconds=r.number("SMTP_IDLE_SECONDS", 60.0, minimum=0.0),
        ca_file=r.raw("SMTP_CA_FILE"),
        tls_verify=r.boolean("SMTP_TLS_VERIFY", True),
        allow_plaintext_auth=r.boolean("SMTP_ALLOW_PLAINTEXT_AUTH", False),
    )


def _databases(r: _Reader, *, billing: bool, usend: bool) -> DatabaseSettings:
    schemes = ("postgresql", "postgres", "sqlite")
    return DatabaseSettings(
        billing_uri=r.uri("DB_URI", schemes, required=billing),
        usend_uri=r.uri("USEND_DB_URI", schemes, required=usend),
        pool_size=r.integer("DB_POOL_SIZE", 10, minimum=1),
    )


def _fetchlog(r: _Reader) -> FetchlogSettings:
    types = tuple(t.strip() for t in r.text("STORE_EVENT_TYPES", "").split(",") if t.strip())
    pattern = r.text("SKIP_MESSAGE_ID_PATTERN", "bizfly.vn")
    try:
        re.compile(pattern)
    except re.error as exc:
        r.problems.append(f"SKIP_MESSAGE_ID_PATTERN is not a valid regular expression: {exc}")
    return FetchlogSettings(
        worker_pool_size=r.integer("LOG_WORKER_POOL_SIZE", 10, minimum=1, maximum=1000),
        process_timeout_seconds=r.number("LOG_PROCESS_TIMEOUT_SECONDS", 10.0, minimum=0.1),
        mongo_insert_timeout_seconds=r.number("LOG_MONGO_INSERT_TIMEOUT_SECONDS", 10.0,
                                              minimum=0.1),
        store_event_types=types or DEFAULT_STORE_EVENT_TYPES,
        skip_message_id_pattern=pattern,
        batch_size=r.integer("LOG_BATCH_SIZE", 500, minimum=1, maximum=100_000),
        batch_linger_seconds=r.number("LOG_BATCH_LINGER_SECONDS", 0.1, minimum=0.0),
    )


def _sendmail(r: _Reader) -> SendmailSettings:
    return SendmailSettings(
        worker_pool_size=r.integer("WORKER_POOL_SIZE", 10, minimum=1, maximum=1000),
        email_timeout_seconds=r.number("SENDMAIL_EMAIL_TIMEOUT_SECONDS", 300.0, minimum=0.1),
        retry_attempts=r.integer("SENDMAIL_RETRY_ATTEMPTS", 5, minimum=0, maximum=20),
        retry_base_seconds=r.number("SENDMAIL_RETRY_BASE_SECONDS", 1.0, minimum=0.0),
        delivered_ttl_seconds=r.integer("SENDMAIL_DELIVERED_TTL_SECONDS", 7 * 24 * 3600,
                                        minimum=7 * 24 * 3600),
    )


def is_loopback_host(host: str | None) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1): traffic that never leaves the
    machine."""
    import ipaddress

    if not host:
        return False
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _secret_or_none(value: str | None) -> Secret | None:
    return Secret(value) if value else None


def _billing_allow_http(r: _Reader, billing: Secret | None) -> bool:
    allow = r.boolean("BILLING_V4_ALLOW_HTTP", False)
    if billing is None or not billing.get().lower().startswith("http://"):
        return allow
    try:
        host = urlsplit(billing.get()).hostname
    except ValueError:
        return allow
    if not allow and not is_loopback_host(host):
        r.problems.append(
            f"BILLING_V4_URI must be https:// (plain http to {host!r} would send the billing "
            "token and the calls in clear); use https, a loopback host, or set "
            "BILLING_V4_ALLOW_HTTP=true")
    return allow


# etrans.api.app.DEFAULT_MAX_BODY_BYTES (settings must not import the API layer).
_LARGEST_BODY_BYTES = 36 * 1024 * 1024


def _http(r: _Reader, *, billing_api: bool = True) -> HttpSettings:
    """``billing_api=False``: BILLING_V4_URI is not used (``etrans dev``), nor checked."""
    bind = r.text("ETRANS_BIND", "0.0.0.0:8000")
    if ":" not in bind:
        r.problems.append(f"ETRANS_BIND must be HOST:PORT, got {bind!r}")
    manage_auth = r.uri("MANAGE_AUTH_URI", ("http", "https"), required=False)
    billing = r.uri("BILLING_V4_URI", ("http", "https"), required=False)
    jwt_secret = r.raw("JWT_SECRET")
    jwt_public = _jwt_public_key(r) if jwt_secret is None else None
    leeway = r.number("JWT_LEEWAY_SECONDS", 5.0)
    if leeway > 300:
        r.problems.append(f"JWT_LEEWAY_SECONDS must be at most 300, got {leeway:g}")
    nameservers = tuple(s.strip() for s in r.text("DNS_NAMESERVERS", "").split(",") if s.strip())
    return HttpSettings(
        bind=bind,
        manage_auth_uri=manage_auth.get() if manage_auth else None,
        billing_v4_uri=billing.get() if billing else None,
        billing_v4_token=_secret_or_none(r.raw("BILLING_V4_TOKEN")),
        billing_v4_allow_http=_billing_allow_http(r, billing if billing_api else None),
        jwt_secret=Secret(jwt_secret) if jwt_secret else None,
        jwt_public_key=Secret(jwt_public) if jwt_public else None,
        jwt_audience=tuple(a.strip() for a in r.text("JWT_AUDIENCE", "").split(",") if a.strip()),
        jwt_issuer=r.raw("JWT_ISSUER"),
        jwt_leeway_seconds=min(leeway, 300.0),
        default_spf_value=r.text("DEFAULT_SPF_VALUE", HttpSettings.default_spf_value),
        default_mx_host=r.text("DEFAULT_MX_HOST", HttpSettings.default_mx_host),
        default_mx_priority=r.integer("DEFAULT_MX_PRIORITY", 5, minimum=0, maximum=65535),
        dns_nameservers=nameservers,
        enable_testing_routes=r.boolean("ETRANS_ENABLE_TESTING_ROUTES", False),
        redis_prefix=r.text("ETRANS_REDIS_PREFIX", "etrans:"),
        session_cookie_name=r.text("SESSION_COOKIE_NAME", "session"),
        allowed_origins=_allowed_origins(r),
        rate_limit_requests=r.integer("RATE_LIMIT_REQUESTS", 6000, minimum=0),
        rate_limit_anonymous_requests=r.integer("RATE_LIMIT_ANONYMOUS_REQUESTS", 600, minimum=0),
        rate_limit_window_seconds=r.integer("RATE_LIMIT_WINDOW_SECONDS", 60, minimum=1,
                                            maximum=86_400),
        rate_limit_trusted_proxies=_trusted_proxies(r),
        read_timeout_seconds=r.integer("ETRANS_READ_TIMEOUT_SECONDS",
                                       HttpSettings.read_timeout_seconds, minimum=1),
        keep_alive_timeout_seconds=r.number("ETRANS_KEEP_ALIVE_TIMEOUT_SECONDS",
                                            HttpSettings.keep_alive_timeout_seconds,
                                            minimum=0.1),
        # At least one largest request body (36 MiB), or no large email could ever be sent.
        body_memory_bytes=r.integer("ETRANS_BODY_MEMORY_BYTES", HttpSettings.body_memory_bytes,
                                    minimum=_LARGEST_BODY_BYTES),
    )


def _trusted_proxies(r: _Reader) -> tuple[str, ...]:
    import ipaddress

    networks = tuple(s.strip() for s in r.text("RATE_LIMIT_TRUSTED_PROXIES", "").split(",")
                     if s.strip())
    for item in networks:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            r.problems.append("RATE_LIMIT_TRUSTED_PROXIES must be comma-separated addresses or"
                              f" CIDR networks, got {item!r}")
    return networks


def _allowed_origins(r: _Reader) -> tuple[str, ...]:
    """ETRANS_ALLOWED_ORIGINS: comma-separated ``scheme://host[:port]`` (as in Origin headers)."""
    origins = []
    for item in (s.strip() for s in r.text("ETRANS_ALLOWED_ORIGINS", "").split(",")):
        if not item:
            continue
        try:
            parts = urlsplit(item)
            parts.port  # noqa: B018 - raises on a malformed port
        except ValueError:
            parts = None
        if (parts is None or parts.scheme.lower() not in ("http", "https") or not parts.hostname
                or "@" in parts.netloc or parts.path not in ("", "/") or parts.query
                or parts.fragment):
            r.problems.append("ETRANS_ALLOWED_ORIGINS must be comma-separated origins "
                              f"(scheme://host[:port]), got {item!r}")
            continue
        origins.append(f"{parts.scheme}://{parts.netloc}".lower())
    return tuple(origins)


def _jwt_public_key(r: _Reader) -> str | None:
    """JWT_PUBLIC_KEY: a PEM public key of a type bearer tokens can be verified with.  An env file
    may write the PEM on one line with ``\\n`` for its line breaks."""
    value = r.raw("JWT_PUBLIC_KEY")
    if value is None:
        return None
    if "\n" not in value and "\\n" in value:
        value = value.replace("\\n", "\n")
    from etrans.api.auth import load_jwt_public_key

    try:
        load_jwt_public_key(value)
    except ValueError as exc:
        r.problems.append(f"JWT_PUBLIC_KEY must be a PEM public key (RSA, EC P-256/P-384/P-521 "
                          f"or Ed25519/Ed448): {exc}")
    return value


def _outbox(r: _Reader) -> OutboxSettings:
    return OutboxSettings(
        max_attempts=r.integer("ETRANS_OUTBOX_MAX_ATTEMPTS", 10, minimum=1, maximum=1000),
        retention_hours=r.number("ETRANS_OUTBOX_RETENTION_HOURS", 24.0, minimum=0.0),
    )


def _dev(r: _Reader) -> dict[str, object]:
    """``etrans dev``: every service is optional; a section is set only when its real service is
    given (KAFKA_BOOTSTRAP_SERVERS, REDIS_URI/REDIS_HOST, MONGODB_URI, SMTP_HOST, USEND_DB_URI,
    TOKEN_SECRET/TOKEN_IV), and None means "use the embedded stand-in".  Billing is always the
    local mode; the API listens on 127.0.0.1:8000 unless ETRANS_BIND says otherwise."""
    from dataclasses import replace

    http = _http(r, billing_api=False)
    values: dict[str, object] = {
        "http": replace(http, bind=http.bind if r.raw("ETRANS_BIND") else "127.0.0.1:8000",
                        billing_v4_uri=None),
        "fetchlog": _fetchlog(r),
        "sendmail": _sendmail(r),
        "databases": _databases(r, billing=False, usend=False),
        "outbox": _outbox(r),
    }
    if r.raw("KAFKA_BOOTSTRAP_SERVERS"):
        # Two consumers (sendmail, fetchlog): bootstrap.dev appends "-sendmail"/"-fetchlog" to
        # the instance id, whose default is "<hostname>-dev".
        kafka = _kafka(r, consumer_of="dev")
        values["kafka"] = replace(
            kafka, group_id=kafka.group_id or "etrans-dev-sendmail",
            log_topic=kafka.log_topic or "email-logs",
            log_group_id=kafka.log_group_id or "etrans-dev-fetchlog")
    if r.raw("REDIS_URI") or r.raw("REDIS_HOST"):
        values["redis"] = _redis(r)
    if r.raw("MONGODB_URI"):
        values["mongo"] = MongoSettings(
            uri=r.uri("MONGODB_URI", ("mongodb", "mongodb+srv")) or Secret(""),
            dbname=r.text("MONGODB_DBNAME", "etrans"),
            collection=r.text("MONGODB_COLLECTION", "email_logs"))
    if r.raw("TOKEN_SECRET") or r.raw("TOKEN_IV"):
        values["tokens"] = _tokens(r)
    if r.raw("SMTP_HOST"):
        values["smtp"] = _smtp(r)
    return values


# What each subcommand needs.  Sections not named are left as None.
SECTIONS = {
    "serve": ("kafka_producer", "redis", "mongo", "tokens", "databases_api", "http", "outbox"),
    "sendmail": ("kafka_sendmail", "redis", "tokens", "smtp", "sendmail"),
    "fetchlog": ("kafka_fetchlog", "mongo", "databases_optional", "fetchlog"),
    "db": ("databases_usend",),
    "dev": ("dev",),
}


def load(env: Mapping[str, str] | None = None, *sections: str) -> Settings:
    """Build :class:`Settings` with the named sections; raise ConfigError listing every problem."""
    r = _Reader(os.environ if env is None else env)
    values: dict[str, object] = {
        "drain_seconds": r.number("ETRANS_DRAIN_SECONDS", 25.0, minimum=0.0),
    }
    dsn = r.raw("SENTRY_DSN")
    values["sentry_dsn"] = Secret(dsn) if dsn else None
    for section in sections:
        match section:
            case "kafka_producer":
                values["kafka"] = _kafka(r, consumer_of=None)
            case "kafka_sendmail":
                values["kafka"] = _kafka(r, consumer_of="sendmail")
            case "kafka_fetchlog":
                values["kafka"] = _kafka(r, consumer_of="fetchlog")
            case "redis":
                values["redis"] = _redis(r)
            case "mongo":
                values["mongo"] = _mongo(r)
            case "tokens":
                values["tokens"] = _tokens(r)
            case "smtp":
                values["smtp"] = _smtp(r)
            case "databases_api":
                values["databases"] = _databases(r, billing=True, usend=True)
            case "databases_usend":
                values["databases"] = _databases(r, billing=False, usend=True)
            case "databases_optional":
                values["databases"] = _databases(r, billing=False, usend=False)
            case "fetchlog":
                values["fetchlog"] = _fetchlog(r)
            case "sendmail":
                values["sendmail"] = _sendmail(r)
            case "http":
                values["http"] = _http(r)
            case "outbox":
                values["outbox"] = _outbox(r)
            case "dev":
                values.update(_dev(r))
            case _:
                raise ValueError(f"unknown settings section {section!r}")
    if r.problems:
        raise ConfigError(r.problems)
    return Settings(**values)  # type: ignore[arg-type]


def for_command(command: str, env: Mapping[str, str] | None = None) -> Settings:
    return load(env, *SECTIONS[command])


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a systemd-style env file: KEY=VALUE lines, ``#`` comments, optional quotes."""
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("export "):
            stripped = stripped[len("export ") :].lstrip()
        key, sep, value = stripped.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ConfigError([f"{path}:{number}: expected KEY=VALUE"])
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key] = value
    return values
