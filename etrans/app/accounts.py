"""What the account use cases (domains, API keys, senders, billing) depend on, their one
registration on the :class:`~etrans.app.bus.MessageBus`, and the pack rules they share.

Pack rules (the rules themselves are :mod:`etrans.domain.quota`; here they get their facts):

- a domain's pack and sending limits: :func:`quota_of`, by
  :func:`etrans.domain.quota.domain_quota`, THE quota rule that POST /emails enforces
  (``mkt_domain`` limits when set, else the pack of the active subscription /
  ``mkt_domain.pack_code`` / ``user_pack`` / the default pack FREE);
- the domain limit of a user: :func:`domain_limit`, by :func:`etrans.domain.quota.domain_limit`
  (the largest ``domain_limit`` among the packs of the user's active subscriptions, else that of
  the user-level pack, else that of the default pack).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from etrans.domain import quota as quota_rule
from etrans.domain.quota import DEFAULT_PACK_CODE, DomainQuota, QuotaUsage
from etrans.errors import NotFound

if TYPE_CHECKING:
    from collections.abc import Callable

    from etrans.app.account_ports import (
        ApiKeyRepository,
        CredentialSealer,
        DkimKeyGenerator,
        DomainRepository,
        DomainSettings,
        PackCatalogue,
        SenderRepository,
        SubscriptionRepository,
    )
    from etrans.app.account_records import DomainRow
    from etrans.app.bus import MessageBus
    from etrans.app.ports import (
        ApiKeyCache,
        BillingGateway,
        CredentialCache,
        DomainVerifier,
        OutboxNotifier,
        QuotaCounter,
        SendingDomains,
    )
    from etrans.domain.domains import DnsTemplate


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class AccountDeps:
    """Built by :mod:`etrans.bootstrap`; the quota counters, the API key cache and the credential
    cache are the sending path's objects, so GET /domains/{id}/quota reads the counters POST
    /emails increments and DELETE /api-keys revokes the entries authentication reads."""

    domains: DomainRepository
    packs: PackCatalogue
    subscriptions: SubscriptionRepository
    domain_settings: DomainSettings
    api_keys: ApiKeyRepository
    senders: SenderRepository
    billing: BillingGateway
    verifier: DomainVerifier
    dkim_keys: DkimKeyGenerator
    sealer: CredentialSealer
    template: DnsTemplate
    quota: QuotaCounter
    api_key_cache: ApiKeyCache
    credential_cache: CredentialCache
    sending_domains: SendingDomains | None = None  # POST /emails' domain cache: forget on delete
    outbox: OutboxNotifier | None = None  # the relay that publishes billing events
    default_pack_code: str = DEFAULT_PACK_CODE
    fallback_domain_limit: int = 1  # when not even the default pack is in the catalogue
    clock: Callable[[], datetime] = field(default=_utcnow)


def register(bus: MessageBus, deps: AccountDeps) -> None:
    """Every account command and query, with its handler bound to ``deps``."""
    from etrans.app import api_keys, billing, domains, senders

    for module in (domains, api_keys, senders, billing):
        module.register(bus, deps)


async def owned_domain(deps: AccountDeps, user_id: int, domain_id: int) -> DomainRow:
    """The user's live domain; NotFound for an unknown, deleted or another user's domain."""
    row = await deps.domains.get(user_id, domain_id)
    if row is None:
        raise NotFound("Domain not found")
    return row


async def quota_of(deps: AccountDeps, user_id: int, domain_id: int | None) -> DomainQuota:
    """The limits and pack of a domain by THE quota rule - the rule POST /emails enforces.
    ``domain_id`` None: a user without domains (user-level pack, else the default pack)."""
    mkt = None if domain_id is None else await deps.domains.mkt_limits(domain_id)
    facts = await deps.subscriptions.quota_facts(user_id, domain_id, mkt,
                                                 deps.default_pack_code)
    return quota_rule.domain_quota(facts, deps.default_pack_code)


async def usage_of(deps: AccountDeps, domain_id: int) -> QuotaUsage:
    return await deps.quota.usage(domain_id, deps.clock())


async def domain_limit(deps: AccountDeps, user_id: int) -> tuple[int, str | None]:
    """(how many live domains the user may hold, the pack that says so):
    :func:`etrans.domain.quota.domain_limit` on the user's packs."""
    codes = sorted(set(await deps.subscriptions.active_pack_codes(user_id)))
    subscribed = {p.pack_code: p.domain_limit
                  for p in [await deps.packs.pack(code) for code in codes] if p is not None}
    user_level = None
    if not subscribed:
        code = await deps.subscriptions.user_pack_code(user_id) or deps.default_pack_code
        pack = await deps.packs.pack(code)
        user_level = (pack.pack_code, pack.domain_limit) if pack is not None else None
    return quota_rule.domain_limit(subscribed, user_level, deps.fallback_domain_limit)


def published_soon(deps: AccountDeps) -> None:
    """A billing event was queued in the outbox: wake the relay."""
    if deps.outbox is not None:
        deps.outbox.notify()
