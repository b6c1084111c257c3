"""Open and click tracking (``docs/tracking.md``): ETRANS_TRACKING_BASE_URL and
ETRANS_TRACKING_SECRET, read by ``serve`` (the ``/t/o`` and ``/t/c`` endpoints) and ``sendmail``
(which instruments the HTML).  Tracking is off everywhere while the base URL is unset.

``sendmail`` reads each domain's flags (``domain_tracking_settings``, USEND DB) and, when
BILLING_V4_URI is set, the domain's id in the Billing DB (DB_URI): both must be configured then.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from etrans.settings.models import Secret

if TYPE_CHECKING:
    from etrans.settings.reader import Reader

MIN_SECRET_BYTES = 16
DEFAULT_EVENTS_TOPIC = "email-events"
_DB_SCHEMES = ("postgresql", "postgres", "sqlite")


@dataclass(frozen=True)
class TrackingSettings:
    """``base_url``: public, without a trailing slash (``https://t.example.com``)."""

    base_url: str
    secret: Secret
    events_topic: str = DEFAULT_EVENTS_TOPIC  # KAFKA_EVENTS_TOPIC
    # The cap of the in-memory queue of events not yet produced (serve).
    queue_size: int = 10_000
    flags_cache_seconds: float = 60.0  # sendmail: a domain's flags are kept this long


@dataclass(frozen=True)
class TrackingFlagsStore:
    """Where ``sendmail`` reads a domain's tracking flags: the USEND DB, and the Billing DB
    (``domains_uri``) where the domain ids live when BILLING_V4_URI is set (None: local)."""

    usend_uri: Secret
    domains_uri: Secret | None = None
    pool_size: int = 2


def read_tracking(r: Reader) -> TrackingSettings | None:
    """None when ETRANS_TRACKING_BASE_URL is unset (tracking off)."""
    base = r.raw("ETRANS_TRACKING_BASE_URL")
    if base is None:
        return None
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        r.problems.append("ETRANS_TRACKING_BASE_URL must be an http(s) URL without query or "
                          f"fragment, e.g. https://t.example.com, got {base!r}")
    secret = r.raw("ETRANS_TRACKING_SECRET")
    if secret is None:
        r.problems.append("ETRANS_TRACKING_SECRET is required when ETRANS_TRACKING_BASE_URL is "
                          f"set (at least {MIN_SECRET_BYTES} bytes)")
    elif len(secret.encode()) < MIN_SECRET_BYTES:
        r.problems.append(f"ETRANS_TRACKING_SECRET must be at least {MIN_SECRET_BYTES} bytes, got "
                          f"{len(secret.encode())}")
    return TrackingSettings(
        base_url=base.rstrip("/"), secret=Secret(secret or ""),
        events_topic=r.text("KAFKA_EVENTS_TOPIC", DEFAULT_EVENTS_TOPIC),
        queue_size=r.integer("ETRANS_TRACKING_QUEUE_SIZE", 10_000, minimum=1,
                             maximum=1_000_000),
        flags_cache_seconds=r.number("SENDMAIL_TRACKING_CACHE_SECONDS", 60.0))


def read_tracking_flags_store(r: Reader) -> TrackingFlagsStore:
    """sendmail with tracking on: USEND_DB_URI, and DB_URI when BILLING_V4_URI is set."""
    why = "ETRANS_TRACKING_BASE_URL is set: the domains' tracking flags are read there"
    usend = r.uri("USEND_DB_URI", _DB_SCHEMES, required=False)
    if usend is None:
        r.problems.append(f"USEND_DB_URI is required ({why})")
    domains = None
    if r.raw("BILLING_V4_URI"):
        domains = r.uri("DB_URI", _DB_SCHEMES, required=False)
        if domains is None:
            r.problems.append("DB_URI is required (ETRANS_TRACKING_BASE_URL and BILLING_V4_URI "
                              "are set: the domains' ids are read in the Billing DB)")
    return TrackingFlagsStore(usend_uri=usend or Secret(""), domains_uri=domains)
