"""The settings' sections: frozen dataclasses, one per service a subcommand talks to.

Which subcommand gets which section is :mod:`etrans.settings.commands`; how a section is read from
the environment is :mod:`etrans.settings.reader`.  Secrets are kept in :class:`Secret` so that
``repr`` and logs never show them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from collections.abc import Mapping

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
LIBRDKAFKA_MAX_MESSAGE_BYTES = 1_000_000_000


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
    # KAFKA_EVENTS_TOPIC: the email events (docs/wire-formats.md, "Email events").
    events_topic: str = "email-events"
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
class Consumer:
    """One Kafka consumer of a pipeline: its topic, group and static member id."""

    topic: str
    group_id: str
    instance_id: str | None = None


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
    """DB_URI / USEND_DB_URI where either may be absent (``fetchlog``, ``dev``)."""

    billing_uri: Secret | None  # DB_URI (read-only, managed externally)
    usend_uri: Secret | None  # USEND_DB_URI
    pool_size: int = 10


@dataclass(frozen=True)
class DkimKeyStore:
    """Where ``sendmail`` reads DKIM keys: the USEND DB's ``local_dkim`` (local billing), or the
    Billing DB's ``dkim`` (``external``: BILLING_V4_URI set)."""

    uri: Secret
    external: bool
    pool_size: int = 2


@dataclass(frozen=True)
class ApiDatabases:
    """``serve``: the Billing DB (DB_URI, read-only, managed externally) and the USEND DB."""

    billing_uri: Secret
    usend_uri: Secret
    pool_size: int = 10
    # DB_STATEMENT_TIMEOUT_SECONDS: PostgreSQL's statement_timeout and lock_timeout on the API's
    # connections to both (0: none); not on the outbox relay's, nor on migrations'.
    statement_timeout_seconds: float = 5.0


@dataclass(frozen=True)
class FetchlogOptions:
    """The fetchlog worker's options (LOG_*), used by ``fetchlog`` and ``dev``."""

    worker_pool_size: int = 10
    process_timeout_seconds: float = 10.0
    mongo_insert_timeout_seconds: float = 10.0
    store_event_types: tuple[str, ...] = DEFAULT_STORE_EVENT_TYPES
    skip_message_id_pattern: str = "bizfly.vn"
    # Documents per insert_many, and how long a worker waits to fill a batch (etrans additions).
    batch_size: int = 500
    batch_linger_seconds: float = 0.1


@dataclass(frozen=True)
class SendmailOptions:
    """The sendmail worker's options (WORKER_POOL_SIZE, SENDMAIL_*), used by ``sendmail`` and
    ``dev``."""

    worker_pool_size: int = 10
    email_timeout_seconds: float = 300.0
    retry_attempts: int = 5
    retry_base_seconds: float = 1.0
    # How long "already delivered" marks stay in Redis (at least 7 days).
    delivered_ttl_seconds: int = 7 * 24 * 3600
    # SENDMAIL_DKIM_SIGNING: auto (sign when the domain has a key), on (never send unsigned),
    # off (never sign: the relay signs); keys are kept this long once read.
    dkim_signing: str = "auto"
    dkim_key_cache_seconds: float = 60.0
    # SENDMAIL_DKIM_SIGNER_THREADS: threads making the RSA step of the signatures
    # (etrans/adapters/crypto/signing_threads.py) with SENDMAIL_DKIM_SIGNER=threads; 0: in the
    # Trio thread (with either signer).
    dkim_signer_threads: int = 2
    # SENDMAIL_DKIM_SIGNER: where the RSA step runs, ``process`` (a child process,
    # etrans/adapters/crypto/signing_process.py) or ``threads`` (SENDMAIL_DKIM_SIGNER_THREADS).
    dkim_signer: str = "process"


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
    # Webhook URLs may be http:// and resolve to loopback/private addresses (local tests only).
    webhooks_allow_private_urls: bool = False
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
