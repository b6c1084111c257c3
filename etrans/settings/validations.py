"""The checks of settings that go beyond a type and a range: librdkafka's own verdict on the
Kafka client properties, static group membership ids, plain-http billing, proxies, origins and
JWT public keys.  Each adds its problems to the :class:`~etrans.settings.reader.Reader`, so that
one ConfigError names every bad variable at once.
"""

from __future__ import annotations

import re
import socket
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from etrans.settings.models import KAFKA_CONF_PREFIX, Secret

if TYPE_CHECKING:
    from collections.abc import Mapping

    from etrans.settings.reader import Reader

_GROUP_INSTANCE_ID = re.compile(r"[A-Za-z0-9._-]{1,249}")


def default_group_instance_id(consumer: str) -> str:
    """``<hostname>-<consumer>``: stable across restarts of one worker on one host."""
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:200] or "localhost"
    return f"{host}-{consumer}"


def group_instance_id(r: Reader, conf: dict[str, Secret],
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


def check_librdkafka(r: Reader, conf: Mapping[str, Secret]) -> None:
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
            message = str(error.str()) if error is not None and hasattr(error, "str") else str(exc)
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


def billing_allow_http(r: Reader, billing: Secret | None) -> bool:
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


def trusted_proxies(r: Reader) -> tuple[str, ...]:
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


def allowed_origins(r: Reader) -> tuple[str, ...]:
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


def jwt_public_key(r: Reader) -> str | None:
    """JWT_PUBLIC_KEY: a PEM public key of a type bearer tokens can be verified with.  An env file
    may write the PEM on one line with ``\\n`` for its line breaks."""
    value = r.raw("JWT_PUBLIC_KEY")
    if value is None:
        return None
    if "\n" not in value and "\\n" in value:
        value = value.replace("\\n", "\n")
    from etrans.settings.jwt_keys import load_jwt_public_key

    try:
        load_jwt_public_key(value)
    except ValueError as exc:
        r.problems.append(f"JWT_PUBLIC_KEY must be a PEM public key (RSA, EC P-256/P-384/P-521 "
                          f"or Ed25519/Ed448): {exc}")
    return value
