"""Environment -> settings sections: the :class:`Reader` of variables and one function per
section.

A Reader collects every missing or invalid variable instead of stopping at the first; the
subcommand's loader (:mod:`etrans.settings.commands`) raises one ConfigError listing them all.
Variable names are the contract of ``shared/spec/system-overview.md``.  Nothing here does I/O at
import time.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from etrans.errors import ConfigError
from etrans.settings.models import (
    DEFAULT_MAX_RECORD_BYTES,
    DEFAULT_STORE_EVENT_TYPES,
    KAFKA_CONF_PREFIX,
    LIBRDKAFKA_MAX_MESSAGE_BYTES,
    RECORD_FRAMING_BYTES,
    DatabaseSettings,
    FetchlogOptions,
    HttpSettings,
    KafkaSettings,
    MongoSettings,
    OutboxSettings,
    RedisSettings,
    Secret,
    SmtpSettings,
    TokenSettings,
    redact_uri,
)
from etrans.settings.validations import (
    allowed_origins,
    billing_allow_http,
    check_librdkafka,
    group_instance_id,
    jwt_public_key,
    trusted_proxies,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from pathlib import Path


class Reader:
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


def read_kafka(r: Reader, *, consumer_of: str | None) -> KafkaSettings:
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

    conf = _client_config(r)
    instance_id = group_instance_id(r, conf, consumer_of)
    check_librdkafka(r, conf)
    max_record = _max_record_bytes(r, conf)
    return KafkaSettings(
        bootstrap_servers=bootstrap,
        topic=topic,
        group_id=group_id,
        log_topic=log_topic,
        log_group_id=log_group,
        billing_topic=r.raw("KAFKA_BILLING_TOPIC"),
        dead_letter_topic=r.raw("KAFKA_DEAD_LETTER_TOPIC"),
        events_topic=r.text("KAFKA_EVENTS_TOPIC", "email-events"),
        client_config=conf,
        commit_interval_seconds=r.number("KAFKA_COMMIT_INTERVAL_SECONDS", 1.0, minimum=0.01),
        assignment_strategy=r.text("KAFKA_ASSIGNMENT_STRATEGY", "range,roundrobin"),
        max_record_bytes=max_record,
        group_instance_id=instance_id,
    )


def _client_config(r: Reader) -> dict[str, Secret]:
    """The librdkafka properties of every client: SASL/SSL, then KAFKA_CONF_* pass-through."""
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
    return conf


def _max_record_bytes(r: Reader, conf: dict[str, Secret]) -> int:
    """KAFKA_MAX_RECORD_BYTES; KAFKA_CONF_MESSAGE_MAX_BYTES may only raise the producer's limit."""
    max_record = r.integer("KAFKA_MAX_RECORD_BYTES", DEFAULT_MAX_RECORD_BYTES, minimum=65536,
                           maximum=LIBRDKAFKA_MAX_MESSAGE_BYTES - RECORD_FRAMING_BYTES)
    given = conf.get("message.max.bytes")
    if given is not None and given.get().isdigit() and (
            int(given.get()) < max_record + RECORD_FRAMING_BYTES):
        r.problems.append(
            f"KAFKA_CONF_MESSAGE_MAX_BYTES ({given.get()}) is smaller than KAFKA_MAX_RECORD_BYTES"
            f" + {RECORD_FRAMING_BYTES} ({max_record + RECORD_FRAMING_BYTES}): leave it unset"
            " (KAFKA_MAX_RECORD_BYTES sets the producer's message.max.bytes) or raise it")
    return max_record


def read_redis(r: Reader) -> RedisSettings:
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


def read_mongo(r: Reader) -> MongoSettings:
    uri = r.uri("MONGODB_URI", ("mongodb", "mongodb+srv"))
    return MongoSettings(
        uri=uri or Secret(""),
        dbname=r.required("MONGODB_DBNAME"),
        collection=r.required("MONGODB_COLLECTION"),
    )


def read_tokens(r: Reader) -> TokenSettings:
    return TokenSettings(secret=r.fixed_bytes("TOKEN_SECRET", 32), iv=r.fixed_bytes("TOKEN_IV", 16))


def read_smtp(r: Reader) -> SmtpSettings:
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


def read_databases(r: Reader, *, billing: bool, usend: bool) -> DatabaseSettings:
    schemes = ("postgresql", "postgres", "sqlite")
    return DatabaseSettings(
        billing_uri=r.uri("DB_URI", schemes, required=billing),
        usend_uri=r.uri("USEND_DB_URI", schemes, required=usend),
        pool_size=r.integer("DB_POOL_SIZE", 10, minimum=1),
    )


def read_fetchlog(r: Reader) -> FetchlogOptions:
    types = tuple(t.strip() for t in r.text("STORE_EVENT_TYPES", "").split(",") if t.strip())
    pattern = r.text("SKIP_MESSAGE_ID_PATTERN", "bizfly.vn")
    try:
        re.compile(pattern)
    except re.error as exc:
        r.problems.append(f"SKIP_MESSAGE_ID_PATTERN is not a valid regular expression: {exc}")
    return FetchlogOptions(
        worker_pool_size=r.integer("LOG_WORKER_POOL_SIZE", 10, minimum=1, maximum=1000),
        process_timeout_seconds=r.number("LOG_PROCESS_TIMEOUT_SECONDS", 10.0, minimum=0.1),
        mongo_insert_timeout_seconds=r.number("LOG_MONGO_INSERT_TIMEOUT_SECONDS", 10.0,
                                              minimum=0.1),
        store_event_types=types or DEFAULT_STORE_EVENT_TYPES,
        skip_message_id_pattern=pattern,
        batch_size=r.integer("LOG_BATCH_SIZE", 500, minimum=1, maximum=100_000),
        batch_linger_seconds=r.number("LOG_BATCH_LINGER_SECONDS", 0.1, minimum=0.0),
    )


def _secret_or_none(value: str | None) -> Secret | None:
    return Secret(value) if value else None


# etrans.api.app.DEFAULT_MAX_BODY_BYTES (settings must not import the API layer).
_LARGEST_BODY_BYTES = 36 * 1024 * 1024


def read_http(r: Reader, *, billing_api: bool = True) -> HttpSettings:
    """``billing_api=False``: BILLING_V4_URI is not used (``etrans dev``), nor checked."""
    bind = r.text("ETRANS_BIND", "0.0.0.0:8000")
    if ":" not in bind:
        r.problems.append(f"ETRANS_BIND must be HOST:PORT, got {bind!r}")
    manage_auth = r.uri("MANAGE_AUTH_URI", ("http", "https"), required=False)
    billing = r.uri("BILLING_V4_URI", ("http", "https"), required=False)
    jwt_secret = r.raw("JWT_SECRET")
    jwt_public = jwt_public_key(r) if jwt_secret is None else None
    leeway = r.number("JWT_LEEWAY_SECONDS", 5.0)
    if leeway > 300:
        r.problems.append(f"JWT_LEEWAY_SECONDS must be at most 300, got {leeway:g}")
    nameservers = tuple(s.strip() for s in r.text("DNS_NAMESERVERS", "").split(",") if s.strip())
    return HttpSettings(
        bind=bind,
        manage_auth_uri=manage_auth.get() if manage_auth else None,
        billing_v4_uri=billing.get() if billing else None,
        billing_v4_token=_secret_or_none(r.raw("BILLING_V4_TOKEN")),
        billing_v4_allow_http=billing_allow_http(r, billing if billing_api else None),
        jwt_secret=Secret(jwt_secret) if jwt_secret else None,
        jwt_public_key=Secret(jwt_public) if jwt_public else None,
        jwt_audience=tuple(a.strip() for a in r.text("JWT_AUDIENCE", "").split(",") if a.strip()),
        jwt_issuer=r.raw("JWT_ISSUER"),
        jwt_leeway_seconds=min(leeway, 300.0),
        default_spf_value=r.text("DEFAULT_SPF_VALUE", HttpSettings.default_spf_value),
        default_mx_host=r.text("DEFAULT_MX_HOST", HttpSettings.default_mx_host),
        default_mx_priority=r.integer("DEFAULT_MX_PRIORITY", 5, minimum=0, maximum=65535),
        dns_nameservers=nameservers,
        webhooks_allow_private_urls=r.boolean("WEBHOOKS_ALLOW_PRIVATE_URLS", False),
        enable_testing_routes=r.boolean("ETRANS_ENABLE_TESTING_ROUTES", False),
        redis_prefix=r.text("ETRANS_REDIS_PREFIX", "etrans:"),
        session_cookie_name=r.text("SESSION_COOKIE_NAME", "session"),
        allowed_origins=allowed_origins(r),
        rate_limit_requests=r.integer("RATE_LIMIT_REQUESTS", 6000, minimum=0),
        rate_limit_anonymous_requests=r.integer("RATE_LIMIT_ANONYMOUS_REQUESTS", 600, minimum=0),
        rate_limit_window_seconds=r.integer("RATE_LIMIT_WINDOW_SECONDS", 60, minimum=1,
                                            maximum=86_400),
        rate_limit_trusted_proxies=trusted_proxies(r),
        read_timeout_seconds=r.integer("ETRANS_READ_TIMEOUT_SECONDS",
                                       HttpSettings.read_timeout_seconds, minimum=1),
        keep_alive_timeout_seconds=r.number("ETRANS_KEEP_ALIVE_TIMEOUT_SECONDS",
                                            HttpSettings.keep_alive_timeout_seconds,
                                            minimum=0.1),
        # At least one largest request body (36 MiB), or no large email could ever be sent.
        body_memory_bytes=r.integer("ETRANS_BODY_MEMORY_BYTES", HttpSettings.body_memory_bytes,
                                    minimum=_LARGEST_BODY_BYTES),
    )


def read_outbox(r: Reader) -> OutboxSettings:
    return OutboxSettings(
        max_attempts=r.integer("ETRANS_OUTBOX_MAX_ATTEMPTS", 10, minimum=1, maximum=1000),
        retention_hours=r.number("ETRANS_OUTBOX_RETENTION_HOURS", 24.0, minimum=0.0),
    )


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
