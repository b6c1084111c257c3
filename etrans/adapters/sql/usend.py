"""The USEND DB (``USEND_DB_URI``): etrans's own tables, created by the Alembic migrations in
:mod:`etrans.adapters.sql.migrations` (``etrans db upgrade``).  The schema is PostgreSQL's (JSONB,
partial indexes); the types carry SQLite variants (:mod:`etrans.adapters.sql.portable`) so that
``etrans dev`` can run the same models on SQLite (``etrans.dev.sqlite_db``).

Tables (``docs/database.md`` has every column and the reasons):

- the spec's: ``api_keys``, ``email_messages``, ``email_transaction_pack`` (the pack catalogue),
  ``domain_subscription_status`` (a domain's subscription or pay-as-you-go state),
  ``user_pack`` (the user-level pack fallback), ``domain_tracking_settings``, ``transport``
  (SMTP sender accounts);
- ``email_recipient_outcomes``: each recipient's outcome and bounce class (fetchlog);
- ``email_outbox``: the transactional outbox (an email and its Kafka message, one transaction);
- ``local_users``, ``local_domain``, ``local_dkim``, ``local_mkt_domain``: the ``local`` billing
  mode's copies of the Billing DB shapes (:mod:`etrans.adapters.sql.billing`), owned by etrans;
- ``webhooks``, ``webhook_deliveries``, ``webhook_retries``: :mod:`.usend_webhooks`;
- ``email_engagement_events``: opens and clicks (fetchlog), :mod:`.usend_engagement`;
- ``email_templates``: stored email templates (/templates), :mod:`.usend_templates`.

Conventions: ids are ``bigint`` identities (the API shows them as ``dom_<n>``, ``key_<n>``,
``sender_<n>``); user ids are ``bigint`` (the Billing DB's ``users.id``); timestamps are
``timestamptz`` in UTC; constraint and index names follow :data:`NAMING_CONVENTION`, so the
migrations and the models can be compared (``tests/integration/test_databases.py``).
"""

from __future__ import annotations

# Mapped[...] annotations are resolved at runtime by SQLAlchemy: these imports are not
# for type checking only.
from datetime import datetime  # noqa: TC003
from decimal import Decimal  # noqa: TC003
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from etrans.adapters.sql.billing import DkimColumns, DomainColumns, MktDomainColumns, UserColumns
from etrans.adapters.sql.portable import BIGINT
from etrans.adapters.sql.usend_base import (
    EMAIL_STATUSES,
    NAMING_CONVENTION,
    OUTCOME_STATUSES,
    PENDING,
    PERMISSIONS,
    SUBSCRIPTION_KINDS,
    SUBSCRIPTION_STATES,
    SUPPRESSION_REASONS,
    WAITING,
    UsendBase,
    now_column,
    one_of,
)
from etrans.adapters.sql.usend_engagement import EmailEngagementEvent
from etrans.adapters.sql.usend_templates import EmailTemplate
from etrans.adapters.sql.usend_webhooks import Webhook, WebhookDelivery, WebhookRetry


class ApiKey(UsendBase):
    """An API key.  Only ``key_hash`` = lower-case hex SHA-256 of the full key is stored; the key
    itself is shown once.  ``key_prefix`` (e.g. ``etrans_live_ab12``) lets a user recognise it.
    A key works while ``active``, ``deleted_at IS NULL`` and ``expires_at`` is NULL or future.
    ``created_by_key_id``: the key that created this one through the API (NULL when a session or
    Bearer token did); deleting a key deletes the keys it created, so none outlives its creator."""

    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint(one_of("permission", PERMISSIONS), name="permission"),
        CheckConstraint("key_hash ~ '^[0-9a-f]{64}$'", name="key_hash_hex"),
        Index(None, "user_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    user_id: Mapped[int]
    name: Mapped[str] = mapped_column(String(255))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    key_prefix: Mapped[str] = mapped_column(String(32))
    permission: Mapped[str] = mapped_column(String(16), server_default="full_access")
    expires_at: Mapped[datetime | None]
    active: Mapped[bool] = mapped_column(server_default=text("true"))
    last_used_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = now_column()
    updated_at: Mapped[datetime] = now_column()
    deleted_at: Mapped[datetime | None]
    created_by_key_id: Mapped[int | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), index=True
    )


class EmailMessage(UsendBase):
    """One email accepted by POST /emails (or /emails/batch).  ``message_id`` is the public id and
    the SMTP Message-ID (without angle brackets).  Addresses are kept as given (``Name <a@b>``
    allowed); ``to_addresses``/``cc_addresses``/``bcc_addresses`` are JSON arrays of strings.
    ``attachments`` holds metadata only (filename, content_type, size), never the content.
    ``scheduled_at``: when a scheduled email is to be sent (NULL: at once); its outbox row waits
    until then (``email_outbox.due_at``)."""

    __tablename__ = "email_messages"
    __table_args__ = (
        CheckConstraint(one_of("status", EMAIL_STATUSES), name="status"),
        Index(None, "user_id", "created_at"),
        Index(None, "user_id", "status"),
    )

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    message_id: Mapped[str] = mapped_column(String(255), unique=True)
    user_id: Mapped[int]
    domain_id: Mapped[int | None]
    from_address: Mapped[str] = mapped_column(String(640))
    to_addresses: Mapped[list[str]]
    cc_addresses: Mapped[list[str]] = mapped_column(server_default=text("'[]'::jsonb"))
    bcc_addresses: Mapped[list[str]] = mapped_column(server_default=text("'[]'::jsonb"))
    reply_to: Mapped[str | None] = mapped_column(String(640))
    subject: Mapped[str]
    html: Mapped[str | None]
    text: Mapped[str | None]
    headers: Mapped[dict[str, Any] | None]
    tags: Mapped[list[Any] | None]
    attachments: Mapped[list[Any] | None]
    template_id: Mapped[str | None] = mapped_column(String(255))
    template_data: Mapped[dict[str, Any] | None]
    status: Mapped[str] = mapped_column(String(16), server_default="queued")
    last_event: Mapped[str | None] = mapped_column(String(32))
    response: Mapped[str | None]
    created_at: Mapped[datetime] = now_column()
    updated_at: Mapped[datetime] = now_column()
    sent_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
    scheduled_at: Mapped[datetime | None]
    traceparent: Mapped[str | None] = mapped_column(String(55))  # of the request that sent it


class EmailRecipientOutcome(UsendBase):
    """Where each recipient of an API email stands, from the delivery-log events fetchlog
    stores: ``outcome`` (a status, only moving forward), ``bounce_class`` of a bounce
    (``docs/bounces.md``), the event's ``response`` and time.  ``recipient`` is lower-cased."""

    __tablename__ = "email_recipient_outcomes"
    __table_args__ = (CheckConstraint(one_of("outcome", OUTCOME_STATUSES), name="outcome"),)

    message_id: Mapped[str] = mapped_column(
        String(255), ForeignKey("email_messages.message_id", ondelete="CASCADE"),
        primary_key=True)
    recipient: Mapped[str] = mapped_column(String(320), primary_key=True)
    outcome: Mapped[str] = mapped_column(String(16))
    bounce_class: Mapped[str | None] = mapped_column(String(16))
    response: Mapped[str | None]
    event_at: Mapped[datetime]
    updated_at: Mapped[datetime] = now_column()


class Suppression(UsendBase):
    """A user's suppression list (``docs/api.md``): the normalised ``address`` is not mailed
    again by that user, for ``reason`` (hard_bounce, complaint, manual), with the message and
    reply that caused it.  The primary key is the send path's one indexed lookup."""

    __tablename__ = "suppressions"
    __table_args__ = (
        CheckConstraint(one_of("reason", SUPPRESSION_REASONS), name="reason"),
        Index(None, "user_id", "created_at"),
    )

    user_id: Mapped[int] = mapped_column(BIGINT, primary_key=True)
    address: Mapped[str] = mapped_column(String(320), primary_key=True)
    reason: Mapped[str] = mapped_column(String(16))
    message_id: Mapped[str | None] = mapped_column(String(255))
    response: Mapped[str | None]
    created_at: Mapped[datetime] = now_column()


class EmailOutbox(UsendBase):
    """The transactional outbox: a Kafka message to publish, inserted in the same transaction as
    the row it announces.  A relay publishes pending rows (``published_at`` and ``failed_at``
    NULL) ``ORDER BY attempts, id`` (``FOR UPDATE SKIP LOCKED``), then sets ``published_at``;
    a broker's refusal bumps ``attempts`` and records ``last_error``; a row the producer refuses
    at once, or refused ``ETRANS_OUTBOX_MAX_ATTEMPTS`` times, gets ``failed_at`` and is never
    tried again.  Published rows are deleted after ``ETRANS_OUTBOX_RETENTION_HOURS``.
    ``payload`` is the exact bytes to publish (JSON for the sendmail topic), ``traceparent`` its
    record's header.  A scheduled email's row waits (``due_at``, not pending) until the relay
    releases it when due (``due_at`` NULL, its email ``queued``); partial indexes on the pending
    and the waiting rows keep both lookups cheap however many wait (``docs/database.md``)."""

    __tablename__ = "email_outbox"
    __table_args__ = (
        Index("ix_email_outbox_unpublished", "attempts", "id",
              postgresql_where=text(PENDING), sqlite_where=text(PENDING)),
        Index("ix_email_outbox_due_at", "due_at",
              postgresql_where=text(WAITING), sqlite_where=text(WAITING)),
        Index("ix_email_outbox_published_at", "published_at",
              postgresql_where=text("published_at IS NOT NULL"),
              sqlite_where=text("published_at IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    topic: Mapped[str] = mapped_column(String(249))
    key: Mapped[str | None] = mapped_column(String(255))
    payload: Mapped[bytes]
    message_id: Mapped[str | None] = mapped_column(String(255), index=True)
    created_at: Mapped[datetime] = now_column()
    published_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    last_error: Mapped[str | None]
    failed_at: Mapped[datetime | None]
    due_at: Mapped[datetime | None]
    traceparent: Mapped[str | None] = mapped_column(String(55))


class EmailTransactionPack(UsendBase):
    """The pack catalogue.  ``hourly_email_limit``/``monthly_email_limit`` NULL = derived from the
    daily limit (daily / 24, daily x 31).  ``is_payg`` marks pay-as-you-go packs (``pricing`` then
    holds their price table as JSON)."""

    __tablename__ = "email_transaction_pack"

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    pack_code: Mapped[str] = mapped_column(String(64), unique=True)
    pack_name: Mapped[str] = mapped_column(String(255))
    pack_type: Mapped[str] = mapped_column(String(32))
    daily_email_limit: Mapped[int]
    hourly_email_limit: Mapped[int | None]
    monthly_email_limit: Mapped[int | None]
    domain_limit: Mapped[int] = mapped_column(Integer)
    price: Mapped[Decimal] = mapped_column(server_default=text("0"))
    is_active: Mapped[bool] = mapped_column(server_default=text("true"))
    is_payg: Mapped[bool] = mapped_column(server_default=text("false"))
    pricing: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = now_column()
    updated_at: Mapped[datetime] = now_column()


class DomainSubscriptionStatus(UsendBase):
    """The subscription state of a domain, in both billing modes: one row per subscription,
    at most one ``active`` row per domain.  ``kind`` is ``subscription`` (a pack bought with
    POST /billing/subscription/subs) or ``payg``.  ``pack_code`` names an
    ``email_transaction_pack`` row (not enforced: in the ``http`` mode the billing API is the
    authority).  ``external_id`` is the billing API's id of the subscription, if any."""

    __tablename__ = "domain_subscription_status"
    __table_args__ = (
        CheckConstraint(one_of("kind", SUBSCRIPTION_KINDS), name="kind"),
        CheckConstraint(one_of("status", SUBSCRIPTION_STATES), name="status"),
        Index(
            "uq_domain_subscription_status_active_domain", "domain_id", unique=True,
            postgresql_where=text("status = 'active'"), sqlite_where=text("status = 'active'"),
        ),
        Index(None, "user_id"),
    )

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    domain_id: Mapped[int]
    user_id: Mapped[int]
    pack_code: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16), server_default="subscription")
    status: Mapped[str] = mapped_column(String(16), server_default="active")
    previous_pack_code: Mapped[str | None] = mapped_column(String(64))
    external_id: Mapped[str | None] = mapped_column(String(255))
    details: Mapped[dict[str, Any] | None]
    started_at: Mapped[datetime] = now_column()
    expires_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = now_column()
    updated_at: Mapped[datetime] = now_column()


class UserPack(UsendBase):
    """The user-level pack: used for the domain limit when the user has no domain subscription,
    and set by POST /testing/set-pack when the user has no domains."""

    __tablename__ = "user_pack"

    user_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    pack_code: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = now_column()
    updated_at: Mapped[datetime] = now_column()


class DomainTrackingSettings(UsendBase):
    """Click/open tracking of a domain (PATCH /domains/{id}); no row = both off."""

    __tablename__ = "domain_tracking_settings"

    domain_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    user_id: Mapped[int] = mapped_column(index=True)
    click_tracking: Mapped[bool] = mapped_column(server_default=text("false"))
    open_tracking: Mapped[bool] = mapped_column(server_default=text("false"))
    created_at: Mapped[datetime] = now_column()
    updated_at: Mapped[datetime] = now_column()


class Transport(UsendBase):
    """An SMTP sender account (POST /senders).  ``account`` is the lower-cased address.

    ``password_encrypted`` is the credential-cache value itself (``docs/wire-formats.md``:
    base64 of AES-256-CBC with TOKEN_SECRET/TOKEN_IV over ``{"username": account, "password":
    ...}``), so the API can (re)fill Redis hash ``auth`` without ever holding the password in clear
    at rest, and the sendmail worker reads the same format.  The password is never stored in clear.
    """

    __tablename__ = "transport"

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    user_id: Mapped[int] = mapped_column(index=True)
    domain_id: Mapped[int | None]
    domain: Mapped[str] = mapped_column(String(253))
    account: Mapped[str] = mapped_column(String(320), unique=True)
    password_encrypted: Mapped[str]
    active: Mapped[bool] = mapped_column(server_default=text("true"))
    daily_limit: Mapped[int] = mapped_column(Integer, server_default=text("100"))
    hourly_limit: Mapped[int] = mapped_column(Integer, server_default=text("4"))
    created_at: Mapped[datetime] = now_column()
    updated_at: Mapped[datetime] = now_column()


# --- the ``local`` billing mode: the Billing DB's shapes, owned by etrans ------------------------


class LocalUser(UserColumns, UsendBase):
    """``users`` of the local mode: balance and owner flag of a user."""

    __tablename__ = "local_users"


class LocalDomain(DomainColumns, UsendBase):
    """``domain`` of the local mode.  A name is unique among live (not deleted) domains."""

    __tablename__ = "local_domain"
    __table_args__ = (
        Index(
            "uq_local_domain_name_live", "name", unique=True,
            postgresql_where=text("deleted_at IS NULL"), sqlite_where=text("deleted_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)


class LocalDkim(DkimColumns, UsendBase):
    """``dkim`` of the local mode, plus the private key, encrypted at rest by the API (its format
    is the API's: ``docs/database.md`` points to it)."""

    __tablename__ = "local_dkim"

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    domain_id: Mapped[int] = mapped_column(
        ForeignKey("local_domain.id", ondelete="CASCADE"), index=True
    )
    private_key_encrypted: Mapped[str]


class LocalMktDomain(MktDomainColumns, UsendBase):
    """``mkt_domain`` of the local mode: a domain's pack and limits."""

    __tablename__ = "local_mkt_domain"

    domain_id: Mapped[int] = mapped_column(
        ForeignKey("local_domain.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )


USEND_TABLES = tuple(UsendBase.metadata.tables)

__all__ = [
    "EMAIL_STATUSES",
    "NAMING_CONVENTION",
    "OUTCOME_STATUSES",
    "PENDING",
    "PERMISSIONS",
    "SUBSCRIPTION_KINDS",
    "SUBSCRIPTION_STATES",
    "SUPPRESSION_REASONS",
    "USEND_TABLES",
    "WAITING",
    "ApiKey",
    "DomainSubscriptionStatus",
    "DomainTrackingSettings",
    "EmailEngagementEvent",
    "EmailMessage",
    "EmailOutbox",
    "EmailRecipientOutcome",
    "EmailTemplate",
    "EmailTransactionPack",
    "LocalDkim",
    "LocalDomain",
    "LocalMktDomain",
    "LocalUser",
    "Suppression",
    "Transport",
    "UsendBase",
    "UserPack",
    "Webhook",
    "WebhookDelivery",
    "WebhookRetry",
]
