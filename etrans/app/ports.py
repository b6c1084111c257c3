"""Ports: the Protocols that use cases and the API depend on; adapters implement them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from datetime import datetime

    from etrans.adapters.dns_verify import DnsVerification
    from etrans.domain.delivery_log import StatusChange
    from etrans.domain.domains import DkimRecord


class HealthProbe(Protocol):
    """A dependency that can say whether it answers.  ``check`` raises when it does not."""

    name: str

    async def check(self) -> None: ...


# -- fetchlog (delivery logs) ---------------------------------------------------------------------

class LogInsertResult(Protocol):
    inserted: int
    duplicates: int  # already stored: a replayed or retried event, not an error


class LogDocumentWriter(Protocol):
    """Stores delivery-log documents idempotently (unique ``event_id``).  Raises
    :class:`etrans.errors.RetryLater` when the store is unavailable: nothing may be committed."""

    async def ensure_indexes(self) -> list[str]: ...

    async def insert(self, documents: Sequence[Mapping[str, Any]]) -> LogInsertResult: ...


class EmailStatusStore(Protocol):
    """Advances ``email_messages.status`` monotonically; returns the number of rows changed."""

    async def apply(self, changes: Sequence[StatusChange]) -> int: ...


# -- sendmail -------------------------------------------------------------------------------------

class CredentialSource(Protocol):
    """The SMTP credentials of a user.  Raises ``CredentialsUnavailable`` (permanent) or
    :class:`etrans.errors.RetryLater` (the store is down)."""

    async def fetch(self, user_id: str) -> Any: ...


class DeliveryMarks(Protocol):
    """Which message ids were already delivered/rejected (``outcome`` -> None when not)."""

    async def outcome(self, message_id: str) -> str | None: ...

    async def record(self, message_id: str, outcome: str) -> None: ...


class MailTransport(Protocol):
    """Sends one message over SMTP; raises ``SmtpFailure`` (transient or permanent)."""

    async def send(self, credentials: Any, sender: str, recipients: Sequence[str],
                   data: bytes) -> Any: ...


class EventPublisher(Protocol):
    """Publishes one record and returns once the broker acknowledged it."""

    async def publish(self, topic: str, value: bytes | None, key: bytes | None = None,
                      headers: Any = None) -> None: ...


# -- billing (API part 2: domains, subscriptions) --------------------------------------------------

class BillingGateway(Protocol):
    """Writes the spec attributes to "BillingSync" / the "External Billing API".

    Two adapters: ``local`` (:mod:`etrans.adapters.billing_local`: etrans owns the billing
    tables in its USEND DB) and ``http`` (:mod:`etrans.adapters.billing_http`, contract in
    ``docs/billing-gateway.md``).
    A failed call raises an :class:`etrans.errors.AppError` (Forbidden, NotFound, InvalidInput,
    or UpstreamUnavailable with status 502/503) and has changed nothing.
    """

    mode: str  # "local" | "http"

    async def create_domain(self, *, user_id: int, name: str, dkim_selector: str,
                            dkim_public_key: str, dkim_private_key_pem: bytes) -> int:
        """Creates the domain (status pending) with its DKIM key; returns its id."""
        ...

    async def delete_domain(self, *, user_id: int, domain_id: int) -> None: ...

    async def mark_domain_verified(self, *, user_id: int, domain_id: int,
                                   verified_at: datetime) -> None: ...

    async def create_subscription(self, *, user_id: int, domain_id: int, pack_code: str,
                                  pack_name: str, price: float) -> str | None:
        """Buys ``pack_code`` for the domain; Forbidden when the user is not the owner or the
        balance is insufficient.  Returns the billing system's subscription id, if any."""
        ...

    async def create_payg_subscription(self, *, user_id: int, domain_id: int, pack_code: str,
                                       pack_name: str) -> str | None: ...

    async def cancel_payg_subscription(self, *, user_id: int, domain_id: int) -> None: ...


class BillingEvents(Protocol):
    """Announces subscription changes on KAFKA_BILLING_TOPIC (``docs/wire-formats.md``)."""

    async def subscription_changed(self, *, event: str, user_id: int, domain_id: int,
                                   pack_code: str | None, previous_pack_code: str | None,
                                   kind: str) -> None: ...


class DomainVerifier(Protocol):
    """Looks up a domain's SPF, MX and DKIM records (:mod:`etrans.adapters.dns_verify`)."""

    async def verify(self, domain: str, dkim: DkimRecord) -> DnsVerification: ...
