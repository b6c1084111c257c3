"""The user's sending domains with their limits, and the SMTP credentials to cache for them.

:class:`DomainDirectory` (port ``SendingDomains``) joins the Billing DB's ``domain`` and
``mkt_domain`` (read-only, :meth:`SqlDomains.find_for_sending`) with the pack tables of the USEND
DB (:meth:`SqlSubscriptions.quota_facts`); the limits are THE quota rule,
:func:`etrans.domain.quota.domain_quota` - the one GET /domains/{id}/quota shows.  Verified
domains are cached in memory for ``ttl_seconds`` (5 s) - the hot path of POST /emails; others are
looked up on every request, so a domain works the moment it is verified; a domain deleted through
this process is dropped from the cache at once (:meth:`DomainDirectory.forget`).

:class:`CredentialDirectory` (port ``SenderCredentials``): the user's active sender
(``transport``, already stored in the cache format) first, else the newest unexpired
``temporary_password`` the billing system issued, encrypted with TOKEN_SECRET/TOKEN_IV.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from etrans.adapters.crypto.credentials import SmtpCredentials
from etrans.app.records import SendingDomain
from etrans.domain.quota import DEFAULT_PACK_CODE, domain_quota

if TYPE_CHECKING:
    from datetime import datetime

    from etrans.adapters.crypto.credentials import CredentialCipher
    from etrans.adapters.sql.domains_repo import SqlDomains
    from etrans.adapters.sql.issued_credentials import IssuedCredentialReader
    from etrans.adapters.sql.subscriptions_repo import SqlSubscriptions
    from etrans.adapters.sql.usend_repo import UsendRepository


class DomainDirectory:
    def __init__(self, domains: SqlDomains, subscriptions: SqlSubscriptions, *,
                 ttl_seconds: float = 5.0, default_pack_code: str = DEFAULT_PACK_CODE) -> None:
        self._domains = domains
        self._subscriptions = subscriptions
        self._ttl = ttl_seconds
        self._default_pack = default_pack_code
        self._cache: dict[tuple[int, str], tuple[float, SendingDomain]] = {}

    async def find(self, user_id: int, name: str) -> SendingDomain | None:
        key = (user_id, name.lower())
        hit = self._cache.get(key)
        now = trio.current_time()
        if hit is not None and hit[0] > now:
            return hit[1]
        found = await self._domains.find_for_sending(user_id, name)
        if found is None:
            self._cache.pop(key, None)
            return None
        row, mkt = found
        facts = await self._subscriptions.quota_facts(row.user_id, row.id, mkt,
                                                      self._default_pack)
        domain = SendingDomain(id=row.id, user_id=row.user_id, name=row.name,
                               verified=row.verified,
                               limits=domain_quota(facts, self._default_pack).limits)
        if domain.verified:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = (now + self._ttl, domain)
        else:
            self._cache.pop(key, None)
        return domain

    async def verified_since(self, user_id: int) -> dict[str, datetime]:
        return await self._domains.verified_since(user_id)

    def forget(self, user_id: int, name: str) -> None:
        """DELETE /domains in this process: the next send from it is refused at once (other
        ``serve`` processes notice within ``ttl_seconds``)."""
        self._cache.pop((user_id, name.lower()), None)


class CredentialDirectory:
    """Found credentials are remembered for ``ttl_seconds`` (30 s) per (user, domain): a new or
    changed sender is used within that time; a user without credentials is asked again on each
    request."""

    def __init__(self, usend: UsendRepository, billing: IssuedCredentialReader,
                 cipher: CredentialCipher, *, ttl_seconds: float = 30.0) -> None:
        self._usend = usend
        self._billing = billing
        self._cipher = cipher
        self._ttl = ttl_seconds
        self._cache: dict[tuple[int, str], tuple[float, str]] = {}

    async def cache_value(self, user_id: int, domain: str) -> str | None:
        key = (user_id, domain)
        now = trio.current_time()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        value = await self._lookup(user_id, domain)
        if value is not None:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = (now + self._ttl, value)
        return value

    async def _lookup(self, user_id: int, domain: str) -> str | None:
        value = await self._usend.cache_value(user_id, domain)
        if value is not None:
            return value
        issued = await self._billing.issued_credentials(user_id)
        if issued is None:
            return None
        return self._cipher.encrypt(SmtpCredentials(issued.username, issued.password))
