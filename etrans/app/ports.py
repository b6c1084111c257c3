"""Ports: the Protocols that use cases and the API depend on; adapters implement them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence
    from datetime import datetime

    from etrans.app.records import (
        ApiKeyRecord,
        EmailFilter,
        EmailPage,
        LogFilter,
        LogGroup,
        NewEmail,
        SendingDomain,
        Suppression,
        SuppressionFilter,
        SuppressionPage,
    )
    from etrans.app.signing import DkimKey
    from etrans.domain.delivery_log import RecipientOutcome, StatusChange
    from etrans.domain.domains import DkimRecord, DnsVerification
    from etrans.domain.engagement import Engagement
    from etrans.domain.quota import QuotaLimits, QuotaUsage


class HealthProbe(Protocol):
    """A dependency that can say whether it answers.  ``check`` raises when it does not."""

    name: str

    async def check(self) -> None: ...


class RateCounter(Protocol):
    """Request counters of the API's rate limits, one fixed window per bucket."""

    async def hit(self, bucket: str, window_seconds: int) -> tuple[int, float]:
        """Count one request in ``bucket``; answer the requests counted in its current window
        (this one included) and the seconds until that window ends."""
        ...


# -- fetchlog (delivery logs) ---------------------------------------------------------------------

class LogInsertResult(Protocol):
    @property
    def inserted(self) -> int: ...

    @property
    def duplicates(self) -> int:
        """Already stored: a replayed or retried event, not an error."""
        ...


class LogDocumentWriter(Protocol):
    """Stores delivery-log documents idempotently (unique ``event_id``).  Raises
    :class:`etrans.errors.RetryLater` when the store is unavailable: nothing may be committed."""

    async def ensure_indexes(self) -> list[str]: ...

    async def insert(self, documents: Sequence[Mapping[str, Any]]) -> LogInsertResult: ...


class MessageOwners(Protocol):
    """Who sent each message through the API: bare message id (no angle brackets) -> user id,
    for the ids that are rows of ``email_messages``; an id missing from the answer is SMTP mail.
    Raises :class:`etrans.errors.RetryLater` when the USEND DB does not answer."""

    async def owners(self, message_ids: Sequence[str]) -> dict[str, int]: ...


class LogLabels(Protocol):
    """Documents stored before fetchlog recorded ``source`` / ``user_id`` (the backfill)."""

    async def unlabelled(self, after: Any, limit: int) -> tuple[list[str], Any]:
        """Message ids of up to ``limit`` documents without ``source`` after the position
        ``after`` (None: from the start), and the position to continue from (None: done)."""
        ...

    async def label(self, message_ids: Sequence[str], source: str,
                    user_id: int | None) -> int:
        """Record ``source`` (and ``user_id``) on the unlabelled documents of ``message_ids``."""
        ...

    async def labels_complete(self) -> bool:
        """Whether a backfill finished since the last time documents were stored unlabelled."""
        ...

    async def set_labels_complete(self, complete: bool) -> None: ...


class EmailStatusStore(Protocol):
    """Advances ``email_messages.status`` monotonically; returns the number of rows changed."""

    async def apply(self, changes: Sequence[StatusChange]) -> int: ...

    async def record_outcomes(self, outcomes: Sequence[RecipientOutcome]) -> int:
        """Advance each API email's recipients monotonically (``email_recipient_outcomes``);
        returns the number of rows written."""


class EngagementStore(Protocol):
    """Records opens and clicks of API emails (``email_engagement_events``), idempotently by
    event id; an email's status is never changed.  Returns the number of rows inserted (events
    of no email of the USEND DB and those already recorded add none).  Raises
    :class:`etrans.errors.RetryLater` when the USEND DB does not answer."""

    async def record(self, engagements: Sequence[Engagement]) -> int: ...


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
                   data: bytes, *, deadline: float | None = None) -> Any: ...


class DkimKeySource(Protocol):
    """The DKIM signing key of a user's sending domain (None: it has none).  Raises
    ``DkimKeyUnavailable`` (a key that cannot be used) or :class:`etrans.errors.RetryLater`."""

    async def signing_key(self, user_id: str, domain: str) -> DkimKey | None: ...


class MessageSigner(Protocol):
    """The rendered message with a ``DKIM-Signature`` header first.  CPU work: the adapter
    decides which part runs in a worker thread.  Raises ``ValueError`` for a key it cannot use."""

    async def sign(self, message: bytes, key: DkimKey) -> bytes: ...


class TrackingFlagsSource(Protocol):
    """(click tracking, open tracking) of a user's live sending domain; both False when unset
    or unknown.  Raises :class:`etrans.errors.RetryLater` when the store cannot be read."""

    async def tracking_flags(self, user_id: str, domain: str) -> tuple[bool, bool]: ...


class EventPublisher(Protocol):
    """Publishes one record and returns once the broker acknowledged it."""

    async def publish(self, topic: str, value: bytes | None, key: bytes | None = None,
                      headers: Any = None) -> None: ...


class BatchPublisher(Protocol):
    """Publishes ``(topic, value, key)`` records (with ``headers[i]``, when given), returns once
    the broker answered for all: one entry per record, None where acknowledged (else why not)."""

    async def publish_many(self, records: Sequence[tuple[str, bytes | None, bytes | None]],
                           headers: Sequence[Any] | None = None) -> Sequence[object | None]: ...


# -- API: authentication, sending, emails, logs ---------------------------------------------------
# Records are in :mod:`etrans.app.records`.

class ApiKeyStore(Protocol):
    """Live API keys by the SHA-256 (lower-case hex) of the key; None when unknown or deleted."""

    async def find_by_hash(self, key_hash: str) -> ApiKeyRecord | None: ...


class ApiKeyCache(Protocol):
    """A short-lived cache in front of :class:`ApiKeyStore`.

    ``get`` -> the record, ``MISSING`` (known not to exist), ``REVOKED`` or None (not cached).
    ``put`` never overwrites a revocation; ``revoke`` must be called when a key is deleted: the
    very next request with that key fails whatever was cached.  A cache that cannot reach its
    store answers None (the caller asks :class:`ApiKeyStore`) and never raises from ``revoke``:
    the store is the source of truth.
    """

    async def get(self, key_hash: str) -> ApiKeyRecord | str | None: ...

    async def put(self, key_hash: str, record: ApiKeyRecord | None) -> None: ...

    async def revoke(self, key_hash: str) -> None: ...


class AuthGateway(Protocol):
    """MANAGE_AUTH_URI: validates a bearer token or a session cookie; returns the user id, or
    None when the credential is refused.  Raises UpstreamUnavailable when it cannot answer."""

    async def validate(self, *, bearer: str | None = None,
                       cookie: str | None = None) -> str | None: ...


class SendingDomains(Protocol):
    async def find(self, user_id: int, name: str) -> SendingDomain | None: ...

    async def verified_since(self, user_id: int) -> dict[str, datetime]:
        """The user's live verified domains: name -> since when (``verified_at``; the domain's
        creation when the billing system left it empty)."""
        ...

    def forget(self, user_id: int, name: str) -> None:
        """Drop what is remembered of the domain (it was deleted or changed)."""


class SenderCredentials(Protocol):
    """The user's SMTP credentials for a sending domain, already in the Redis cache format
    (``docs/wire-formats.md``), or None when the user has none."""

    async def cache_value(self, user_id: int, domain: str) -> str | None: ...


class CredentialCache(Protocol):
    """Redis hash ``auth``: user_id -> encrypted credentials (the sendmail worker reads it)."""

    async def store(self, user_id: int, value: str) -> None: ...

    async def forget(self, user_id: int, values: Collection[str]) -> bool:
        """Remove the user's field while it holds one of ``values`` (compare-and-delete)."""
        ...


class QuotaCounter(Protocol):
    """Atomic usage counters per domain and window.  ``reserve`` counts ``count`` sends when
    every limit allows all of them and returns None, else counts nothing and returns the window
    ("daily", "hourly", "monthly") that refused."""

    async def reserve(self, domain_id: int, limits: QuotaLimits, count: int,
                      now: datetime) -> str | None: ...

    async def release(self, domain_id: int, count: int, now: datetime) -> None: ...

    async def usage(self, domain_id: int, now: datetime) -> QuotaUsage: ...


class SendCheckNeeded(Exception):
    """A guarded save found a recipient on its user's suppression list, or a template that is
    no longer the version the email was rendered from (nothing saved); or the send path cannot
    decide without the list (a quota or size refusal that the recipients left out might avoid):
    the send is prepared again, the list looked up and the template read first."""


class EmailStore(Protocol):
    async def save(self, emails: Sequence[NewEmail]) -> None:
        """Insert the rows and their outbox records in ONE transaction (all or nothing).

        An email with a ``guard`` (its normalised recipients) is checked against its user's
        suppression list in the same transaction, one with a ``template_version`` against its
        user's template (same id, same ``updated_at``): when one of them is listed, or the
        template changed or is gone, NOTHING of the call is saved and it raises
        :class:`SendCheckNeeded` (the emails of other concurrent calls are saved as usual)."""

    async def list(self, query: EmailFilter) -> EmailPage: ...

    async def get(self, user_id: int, message_id: str) -> dict[str, Any] | None: ...

    async def existing_message_ids(self, message_ids: Sequence[str]) -> set[str]:
        """Which of ``message_ids`` are emails sent through the API."""


class SuppressionLookup(Protocol):
    """What the send path needs of the suppression list (a :class:`SuppressionStore` has it too:
    ``serve`` wires a cheaper one, :class:`etrans.adapters.sql.usend_repo.UsendRepository`)."""

    async def suppressed(self, user_id: int, addresses: Sequence[str]) -> dict[str, Suppression]:
        """Which of the normalised ``addresses`` are on the user's list: ONE indexed lookup.
        Raises :class:`etrans.errors.RetryLater` when the database does not answer."""
        ...


class SuppressionStore(Protocol):
    """Each user's suppression list (``suppressions``); addresses are normalised by the caller
    (:func:`etrans.domain.suppressions.normalise_address`).  Raises
    :class:`etrans.errors.RetryLater` when the database does not answer."""

    async def suppressed(self, user_id: int, addresses: Sequence[str]) -> dict[str, Suppression]:
        """Which of ``addresses`` are on the user's list: ONE indexed lookup (the send path)."""
        ...

    async def add(self, entries: Sequence[Suppression]) -> int:
        """List the entries; an address already listed for its user keeps its entry.  Returns
        the number of entries newly listed."""
        ...

    async def add_hard_bounces(self, outcomes: Sequence[RecipientOutcome]) -> int:
        """List, for its sender, every recipient of an API email whose outcome is ``bounced``
        with the ``hard`` class (reason ``hard_bounce``, with the message id and response);
        outcomes of mail not sent through the API are ignored.  Idempotent."""
        ...

    async def remove(self, user_id: int, address: str) -> bool:
        """Take the address off the user's list; False when it was not listed."""
        ...

    async def list(self, query: SuppressionFilter) -> SuppressionPage: ...


class OutboxNotifier(Protocol):
    def notify(self) -> None:
        """New outbox rows were committed: publish them soon."""


class IdempotencyStore(Protocol):
    """Idempotency-Key records (24 h).  ``begin`` returns ("started", None), ("in_flight", None),
    ("replay", (status, body)) or ("mismatch", None)."""

    async def begin(self, scope: str, fingerprint: str) -> tuple[str, Any]: ...

    async def complete(self, scope: str, fingerprint: str, status: int, body: Any) -> None: ...

    async def abandon(self, scope: str) -> None: ...


class LogReader(Protocol):
    """Delivery-log documents of MongoDB (read side).  Both calls are indexed queries of the
    visible set (:class:`~etrans.app.records.LogFilter`): no list of message ids goes in."""

    async def counts(self, query: LogFilter) -> list[LogGroup]:
        """The filtered set counted by (action, event, source)."""
        ...

    async def page(self, query: LogFilter, *, skip: int, limit: int) -> list[dict[str, Any]]:
        """One page of documents (with ``source`` when fetchlog recorded it), sorted."""
        ...


# -- billing (accounts: domains, subscriptions) ---------------------------------------------------

class BillingGateway(Protocol):
    """Writes the spec attributes to "BillingSync" / the "External Billing API".

    Two adapters: ``local`` (:mod:`etrans.adapters.sql.billing_local`: etrans owns the billing
    tables in its USEND DB) and ``http`` (:mod:`etrans.adapters.http.billing_gateway`, contract in
    ``docs/billing-gateway.md``).
    A failed call raises an :class:`etrans.errors.AppError` (Forbidden, NotFound, InvalidInput,
    or UpstreamUnavailable with status 502/503) and has changed nothing.
    """

    mode: str  # "local" | "http"

    async def create_domain(self, *, user_id: int, name: str, dkim_selector: str,
                            dkim_public_key: str, dkim_private_key_pem: bytes,
                            max_domains: int | None = None) -> int:
        """Creates the domain (status pending) with its DKIM key; returns its id.  InvalidInput
        when the user already has ``max_domains`` live domains, checked atomically with the
        insert where the gateway owns the tables (local); the http gateway leaves that decision
        to the billing system."""
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


class DomainVerifier(Protocol):
    """Looks up a domain's SPF, MX and DKIM records (:mod:`etrans.adapters.dns.verify`)."""

    async def verify(self, domain: str, dkim: DkimRecord) -> DnsVerification: ...
