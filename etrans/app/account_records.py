"""Plain records of the account use cases (domains, packs, subscriptions, API keys, senders):
what their ports (:mod:`etrans.app.account_ports`) answer and their handlers return; the routes
(``etrans/api/routes_*.py``) shape the JSON.  No behaviour, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datetime import datetime

    from etrans.domain.quota import QuotaLimits, QuotaUsage


@dataclass(frozen=True)
class DomainRow:
    """A sending domain as the billing-shaped tables hold it (``domain`` + its newest ``dkim``
    row), in both billing modes.  The DKIM fields are None where the reader does not need them
    (the send path)."""

    id: int
    user_id: int
    name: str
    status: str  # "pending" | "verified" | ...
    created_at: datetime | None
    verified_at: datetime | None
    dkim_selector: str | None = None
    dkim_public_key: str | None = None

    @property
    def verified(self) -> bool:
        return self.status == "verified"


@dataclass(frozen=True)
class DomainPage:
    rows: list[DomainRow]
    total: int
    total_verified: int
    page: int
    per_page: int


@dataclass(frozen=True)
class DomainDetails:
    """A domain with the DNS records its owner publishes (:func:`etrans.domain.domains.
    dns_records`; after a verification each says whether it was found)."""

    domain: DomainRow
    dns_records: list[dict[str, object]]


@dataclass(frozen=True)
class DomainTracking:
    domain: DomainRow
    click_tracking: bool
    open_tracking: bool


@dataclass(frozen=True)
class DomainQuotaReport:
    """GET /domains/{id}/quota: the limits by THE quota rule and the counters' usage."""

    domain: DomainRow
    limits: QuotaLimits
    usage: QuotaUsage
    pack_code: str | None
    pack_name: str | None


@dataclass(frozen=True)
class Pack:
    """A row of the pack catalogue (``email_transaction_pack``)."""

    pack_code: str
    pack_name: str
    pack_type: str
    daily_email_limit: int
    hourly_email_limit: int | None
    monthly_email_limit: int | None
    domain_limit: int
    price: float
    is_active: bool
    is_payg: bool
    pricing: dict[str, Any] | None = None


@dataclass(frozen=True)
class Subscription:
    """A row of ``domain_subscription_status``."""

    id: int
    domain_id: int
    pack_code: str
    kind: str  # "subscription" | "payg"
    status: str
    previous_pack_code: str | None
    started_at: datetime | None


@dataclass(frozen=True)
class CurrentPack:
    """GET /billing/subscription/current-pack (see :func:`etrans.app.billing.get_current_pack`)."""

    pack_code: str | None
    pack_name: str | None
    pack: Pack | None  # the catalogue row of ``pack_code``, when there is one
    daily_email_limit: int | None
    domain_limit: int
    limits: QuotaLimits  # summed over the user's domains
    usage: QuotaUsage
    domains: list[DomainRow]


@dataclass(frozen=True)
class PaygSubscribed:
    subscription: Subscription | None
    previous_pack: str | None


@dataclass(frozen=True)
class PackAssigned:
    """POST /testing/set-pack."""

    pack: Pack
    domains_updated: int


@dataclass(frozen=True)
class ApiKey:
    """A live row of ``api_keys`` (the key itself is never stored: its SHA-256 is)."""

    id: int
    user_id: int
    name: str
    key_hash: str
    permission: str
    expires_at: datetime | None
    active: bool
    created_at: datetime | None
    updated_at: datetime | None


@dataclass(frozen=True)
class NewApiKey:
    """A created key: the only moment its clear text exists outside the caller."""

    key: str
    record: ApiKey

    def __repr__(self) -> str:
        return f"NewApiKey(key='**********', record={self.record!r})"


@dataclass(frozen=True)
class ApiKeyPage:
    rows: list[ApiKey]
    total: int
    page: int
    per_page: int


@dataclass(frozen=True)
class Sender:
    """A row of ``transport``: an SMTP account of the user's domain."""

    id: int
    user_id: int
    account: str
    domain: str
    active: bool
    daily_limit: int
    hourly_limit: int
    created_at: datetime | None
