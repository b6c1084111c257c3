"""Use cases of sending domains: create, verify, get, list, update tracking, delete, quota.

Also the pack rules shared by the billing use cases (:func:`quota_of`, :func:`domain_limit`):

- a domain's pack and sending limits: :func:`etrans.domain.quota.domain_quota`, the rule
  POST /emails enforces (``mkt_domain`` limits when set, else the pack of the active
  subscription / ``mkt_domain.pack_code`` / ``user_pack`` / the default pack FREE);
- the domain limit of a user: the largest ``domain_limit`` among the packs of the user's active
  subscriptions, else that of the user-level pack, else that of the default pack.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import trio

from etrans.domain import quota as quota_rule
from etrans.domain.domains import (
    DKIM_SELECTOR,
    DkimRecord,
    DnsTemplate,
    dns_records,
    domain_limit_message,
    format_domain_id,
    normalize_domain_name,
    quota_view,
)
from etrans.domain.quota import DEFAULT_PACK_CODE, DomainQuota, QuotaUsage
from etrans.errors import Conflict, InvalidInput, NotFound
from etrans.observability import get_logger

if TYPE_CHECKING:
    from collections.abc import Callable

    from etrans.adapters.sql.account_repo import AccountRepo, DomainReader, DomainRow, PackRow
    from etrans.app.ports import (
        BillingGateway,
        DomainVerifier,
        OutboxNotifier,
        QuotaCounter,
        SendingDomains,
    )

log = get_logger(__name__)


@dataclass
class AccountServices:
    """What the domain, API key, sender and billing use cases need (built by bootstrap)."""

    domains: DomainReader
    accounts: AccountRepo
    billing: BillingGateway
    verifier: DomainVerifier
    template: DnsTemplate
    outbox: OutboxNotifier | None = None  # the relay that publishes billing events
    quota: QuotaCounter | None = None
    api_key_cache: Any = None  # ApiKeyCache: revoke(key_hash) on delete
    sending_domains: SendingDomains | None = None  # POST /emails' domain cache: forget on delete
    credential_cache: Any = None  # CredentialCache: store(user_id, value)
    credential_cipher: Any = None  # CredentialCipher
    default_pack_code: str = DEFAULT_PACK_CODE
    fallback_domain_limit: int = 1
    enable_testing_routes: bool = False

    async def read(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a blocking read of the billing-shaped tables in a worker thread."""
        return await self.domains.db.run(fn, *args, **kwargs)

    async def usend(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a blocking USEND DB call in a worker thread."""
        return await self.accounts.db.run(fn, *args, **kwargs)


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _records(s: AccountServices, row: DomainRow) -> list[dict[str, Any]]:
    dkim = None
    if row.dkim_public_key:
        dkim = DkimRecord(selector=row.dkim_selector or DKIM_SELECTOR,
                          public_key_b64=row.dkim_public_key)
    return dns_records(s.template, dkim)


def _summary(row: DomainRow) -> dict[str, Any]:
    return {"id": format_domain_id(row.id), "domain": row.name, "status": row.status,
            "created_at": iso(row.created_at)}


def _detail(s: AccountServices, row: DomainRow) -> dict[str, Any]:
    return {**_summary(row), "dns_records": _records(s, row), "verified_at": iso(row.verified_at)}


async def owned_domain(s: AccountServices, user_id: int, domain_id: int) -> DomainRow:
    """The user's live domain; 404 for unknown, deleted or another user's domain."""
    row = await s.read(s.domains.get, user_id, domain_id)
    if row is None:
        raise NotFound("Domain not found")
    return row


# -- packs and limits ------------------------------------------------------------------------

async def quota_of(s: AccountServices, user_id: int, domain_id: int | None) -> DomainQuota:
    """The limits and pack of a domain by THE quota rule (:func:`etrans.domain.quota.domain_quota`)
    - the rule POST /emails enforces.  ``domain_id`` None: a user without domains (user-level
    pack, else the default pack)."""
    mkt = None if domain_id is None else await s.read(s.domains.mkt_domain, domain_id)
    facts = await s.usend(s.accounts.quota_facts, user_id, domain_id, mkt, s.default_pack_code)
    return quota_rule.domain_quota(facts, s.default_pack_code)


async def usage_of(s: AccountServices, domain_id: int) -> QuotaUsage:
    if s.quota is None:
        return QuotaUsage(daily=0, hourly=0, monthly=0)
    return await s.quota.usage(domain_id, datetime.now(UTC))


async def user_pack(s: AccountServices, user_id: int) -> PackRow | None:
    """The user-level pack: the user_pack row, else the default pack."""
    code = await s.usend(s.accounts.user_pack_code, user_id) or s.default_pack_code
    return await s.usend(s.accounts.pack, code)


async def domain_limit(s: AccountServices, user_id: int) -> tuple[int, str | None]:
    codes = await s.usend(s.accounts.subscription_pack_codes, user_id)
    packs = [p for p in [await s.usend(s.accounts.pack, c) for c in set(codes)] if p]
    if packs:
        best = max(packs, key=lambda p: p.domain_limit)
        return best.domain_limit, best.pack_code
    pack = await user_pack(s, user_id)
    if pack is not None:
        return pack.domain_limit, pack.pack_code
    return s.fallback_domain_limit, None


# -- use cases ---------------------------------------------------------------------------------

async def create_domain(s: AccountServices, user_id: int, raw_name: object) -> dict[str, Any]:
    from etrans.adapters.crypto.dkim_keys import generate_dkim_key_pair

    name = normalize_domain_name(raw_name)
    if await s.read(s.domains.find_live_by_name, name) is not None:
        raise InvalidInput(f"Domain {name} already exists")
    limit, pack_code = await domain_limit(s, user_id)
    # A quick refusal; the gateway checks again atomically with the insert (local billing:
    # serialized per user), the billing system itself in the http mode.
    if await s.read(s.domains.count, user_id) >= limit:
        raise InvalidInput(domain_limit_message(limit, pack_code))
    # RSA key generation is CPU work (tens of ms): keep it off the event loop.
    pair = await trio.to_thread.run_sync(generate_dkim_key_pair)
    domain_id = await s.billing.create_domain(
        user_id=user_id, name=name, dkim_selector=pair.record.selector,
        dkim_public_key=pair.record.public_key_b64, dkim_private_key_pem=pair.private_key_pem,
        max_domains=limit)
    log.info("domain created", user_id=user_id, domain_id=domain_id, domain=name)
    row = await s.read(s.domains.get, user_id, domain_id)
    created_at = row.created_at if row else datetime.now(UTC)
    return {"id": format_domain_id(domain_id), "domain": name, "status": "pending",
            "dns_records": dns_records(s.template, pair.record), "created_at": iso(created_at)}


async def list_domains(s: AccountServices, user_id: int, *, page: int, per_page: int,
                       search: str) -> dict[str, Any]:
    rows, total, verified = await s.read(s.domains.list, user_id, page=page, per_page=per_page,
                                         search=search.strip().lower())
    return {"data": [_summary(r) for r in rows], "total": total, "total_verified": verified,
            "page": page, "per_page": per_page}


async def get_domain(s: AccountServices, user_id: int, domain_id: int) -> dict[str, Any]:
    return _detail(s, await owned_domain(s, user_id, domain_id))


async def verify_domain(s: AccountServices, user_id: int, domain_id: int) -> dict[str, Any]:
    row = await owned_domain(s, user_id, domain_id)
    if not row.dkim_public_key:
        raise InvalidInput("Domain has no DKIM key: delete and re-create it")
    dkim = DkimRecord(selector=row.dkim_selector or DKIM_SELECTOR,
                      public_key_b64=row.dkim_public_key)
    result = await s.verifier.verify(row.name, dkim)
    records = _records(s, row)
    for record, check in zip(records, (result.spf, result.mx, result.dkim), strict=True):
        record["verified"] = check.verified
        if not check.verified:
            record["error"] = check.reason
    if not result.all_verified:
        raise InvalidInput({"message": "DNS verification failed",
                            "id": format_domain_id(row.id), "domain": row.name,
                            "status": row.status, "dns_records": records})
    if row.status != "verified" and await s.read(s.domains.verified_by_another, user_id,
                                                 row.name):
        # Its delivery logs are another user's (GET /logs shows a verified domain's events).
        raise Conflict(f"Domain {row.name} is verified by another account")
    verified_at = row.verified_at if row.status == "verified" and row.verified_at else \
        datetime.now(UTC)
    if row.status != "verified":
        await s.billing.mark_domain_verified(user_id=user_id, domain_id=row.id,
                                             verified_at=verified_at)
    return {"id": format_domain_id(row.id), "domain": row.name, "status": "verified",
            "dns_records": records, "verified_at": iso(verified_at)}


async def update_tracking(s: AccountServices, user_id: int, domain_id: int,
                          click: bool | None, open_: bool | None) -> dict[str, Any]:
    row = await owned_domain(s, user_id, domain_id)
    if click is None and open_ is None:
        click_now, open_now = await s.usend(s.accounts.tracking, user_id, row.id)
    else:
        click_now, open_now = await s.usend(s.accounts.set_tracking, user_id, row.id, click,
                                            open_)
    return {"id": format_domain_id(row.id), "domain": row.name, "click_tracking": click_now,
            "open_tracking": open_now}


async def delete_domain(s: AccountServices, user_id: int, domain_id: int) -> dict[str, Any]:
    row = await owned_domain(s, user_id, domain_id)
    await s.billing.delete_domain(user_id=user_id, domain_id=row.id)
    credentials = await s.usend(s.accounts.forget_domain, user_id, row.id, row.name)
    if s.sending_domains is not None:
        s.sending_domains.forget(user_id, row.name)  # no more sends from it, from now on
    # The sendmail worker must stop using a deleted domain's sender: drop the cached credential
    # when it is one of them (another domain's credential stays).
    dropped = bool(credentials) and s.credential_cache is not None and \
        await s.credential_cache.forget(user_id, credentials)
    log.info("domain deleted", user_id=user_id, domain_id=row.id, domain=row.name,
             senders_deactivated=len(credentials), cached_credential_dropped=dropped)
    return {"id": format_domain_id(row.id), "deleted": True}


async def domain_quota(s: AccountServices, user_id: int, domain_id: int) -> dict[str, Any]:
    row = await owned_domain(s, user_id, domain_id)
    quota = await quota_of(s, user_id, row.id)
    used = await usage_of(s, row.id)
    return {"domain": row.name, **quota_view(quota.limits, used),
            "pack_code": quota.pack_code, "pack_name": quota.pack_name}
