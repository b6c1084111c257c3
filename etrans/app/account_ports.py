"""Ports of the account use cases (domains, API keys, senders, billing); adapters implement them.

Every call that can block is ``async``: the adapter does its own thread hop (the SQL ones run
``Database.run``, a worker thread under the pool's limiter).  Records are plain dataclasses of
:mod:`etrans.app.records`.  Every query takes the ``user_id`` it is for: tenant isolation is in
the adapter's SQL, never a filter applied afterwards.

The ports the sending path shares (``QuotaCounter``, ``ApiKeyCache``, ``CredentialCache``,
``SendingDomains``, ``OutboxNotifier``, ``BillingGateway``, ``DomainVerifier``) are in
:mod:`etrans.app.ports`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from datetime import datetime

    from etrans.app.account_records import ApiKey, DomainRow, Pack, Sender, Subscription
    from etrans.domain.domains import DkimKeyPair
    from etrans.domain.quota import MktLimits, QuotaFacts


class DomainRepository(Protocol):
    """The user's live domains in the billing-shaped tables (the Billing DB, read only, or the
    ``local_*`` tables of the USEND DB); written only through the ``BillingGateway``."""

    async def get(self, user_id: int, domain_id: int) -> DomainRow | None: ...

    async def find_live_by_name(self, name: str) -> DomainRow | None:
        """Any user's live domain of that name (a name is unique across users)."""
        ...

    async def verified_by_another(self, user_id: int, name: str) -> bool:
        """Whether another user holds a live, verified domain of that name."""
        ...

    async def count(self, user_id: int) -> int: ...

    async def page(self, user_id: int, *, page: int, per_page: int, search: str
                   ) -> tuple[list[DomainRow], int, int]:
        """(rows of the page, newest first; total matching; verified among them)."""
        ...

    async def all_for_user(self, user_id: int) -> list[DomainRow]:
        """Ordered by id (the newest last)."""
        ...

    async def mkt_limits(self, domain_id: int) -> MktLimits | None:
        """The domain's ``mkt_domain`` row (None: it has none)."""
        ...


class PackCatalogue(Protocol):
    """The packs on offer (``email_transaction_pack``)."""

    async def packs(self) -> list[Pack]:
        """The active packs, cheapest first."""
        ...

    async def pack(self, pack_code: str) -> Pack | None: ...

    async def payg_pack(self) -> Pack | None:
        """The active pay-as-you-go pack (None: none is offered)."""
        ...


class SubscriptionRepository(Protocol):
    """Subscriptions of domains and the user-level pack (USEND DB).  A change writes its
    KAFKA_BILLING_TOPIC event into the outbox in the same transaction (when ``event`` is given)."""

    async def active(self, user_id: int, domain_id: int,
                     kind: str | None = None) -> Subscription | None: ...

    async def active_pack_codes(self, user_id: int) -> list[str]:
        """The pack codes of all the user's active subscriptions."""
        ...

    async def user_pack_code(self, user_id: int) -> str | None: ...

    async def quota_facts(self, user_id: int, domain_id: int | None, mkt: MktLimits | None,
                          default_pack_code: str) -> QuotaFacts:
        """The USEND DB half of the quota rule (``mkt`` is the billing tables' half)."""
        ...

    async def replace(self, *, user_id: int, domain_id: int, pack_code: str, kind: str,
                      external_id: str | None = None, event: str | None = None) -> str | None:
        """Ends the domain's active subscription (if any) and starts this one, atomically;
        returns the previous pack code."""
        ...

    async def cancel(self, user_id: int, domain_id: int, kind: str,
                     event: str | None = None) -> bool:
        """Ends the domain's active subscription of ``kind``; False when there was none."""
        ...

    async def assign_for_testing(self, user_id: int, domain_ids: list[int],
                                 pack_code: str) -> int:
        """The user-level pack and every given domain get ``pack_code`` (no event)."""
        ...


class DomainSettings(Protocol):
    """What the USEND DB holds per domain besides subscriptions: tracking settings, senders."""

    async def tracking(self, user_id: int, domain_id: int) -> tuple[bool, bool]:
        """(click tracking, open tracking); both False when never set."""
        ...

    async def set_tracking(self, user_id: int, domain_id: int, click: bool | None,
                           open_: bool | None) -> tuple[bool, bool]:
        """Changes the given settings (None: unchanged); answers both after the change."""
        ...

    async def forget_domain(self, user_id: int, domain_id: int, name: str) -> list[str]:
        """After the domain was deleted: its tracking settings go, its subscriptions end, its
        senders are deactivated.  Returns the deactivated senders' credential-cache values."""
        ...


class ApiKeyRepository(Protocol):
    """Rows of ``api_keys`` (the live ones: not deleted)."""

    async def create(self, *, user_id: int, name: str, key_hash: str, key_prefix: str,
                     permission: str, expires_at: datetime | None,
                     created_by_key_id: int | None = None) -> ApiKey | None:
        """The new key; None when ``created_by_key_id`` is no live key of the user (then
        nothing was created).  A deletion of the creator running at the same time either
        happens first (None) or deletes this key too."""
        ...

    async def page(self, user_id: int, *, page: int, per_page: int
                   ) -> tuple[list[ApiKey], int]:
        """(rows of the page, newest first; total)."""
        ...

    async def get(self, user_id: int, key_id: int) -> ApiKey | None: ...

    async def delete(self, user_id: int, key_id: int) -> list[str] | None:
        """Deletes the key and every live key it created, recursively; returns their hashes
        (the key's first), or None when the key is not found."""
        ...


class SenderRepository(Protocol):
    """Rows of ``transport``: SMTP accounts (unique across users)."""

    async def exists(self, account: str) -> bool: ...

    async def create(self, *, user_id: int, domain_id: int, domain: str, account: str,
                     password_encrypted: str, daily_limit: int, hourly_limit: int
                     ) -> Sender | None:
        """The new sender; None when the account exists already."""
        ...


class CredentialSealer(Protocol):
    """SMTP credentials -> the credential-cache value (``docs/wire-formats.md``).  Pure CPU work
    of microseconds: not async."""

    def seal(self, username: str, password: str) -> str: ...


class DkimKeyGenerator(Protocol):
    """A fresh DKIM key pair for a new domain."""

    async def generate(self) -> DkimKeyPair: ...
