"""Use cases of sending domains: create, list, get, verify, tracking, delete, quota.

A domain is written only through the billing gateway (it may refuse, and then nothing of ours
changed); what the USEND DB holds per domain (tracking, subscriptions, senders) follows.
Creating one checks the name is free and the user's domain limit (:func:`~etrans.app.accounts.
domain_limit`); the gateway checks the limit again atomically with its insert.  Verifying looks
up SPF, MX and DKIM; a name is verified by one user at a time (GET /logs shows a verified
domain's events).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING

from etrans.app.account_records import (
    DomainDetails,
    DomainPage,
    DomainQuotaReport,
    DomainRow,
    DomainTracking,
)
from etrans.app.accounts import domain_limit, owned_domain, quota_of, usage_of
from etrans.domain.domains import (
    DKIM_SELECTOR,
    DkimRecord,
    dns_records,
    domain_limit_message,
    format_domain_id,
    normalize_domain_name,
)
from etrans.errors import Conflict, InvalidInput
from etrans.observability import get_logger

if TYPE_CHECKING:
    from etrans.app.accounts import AccountDeps
    from etrans.app.bus import MessageBus

log = get_logger(__name__)


@dataclass(frozen=True)
class CreateDomain:
    user_id: int
    name: object  # as given: validated by normalize_domain_name


@dataclass(frozen=True)
class ListDomains:
    user_id: int
    page: int = 1
    per_page: int = 20
    search: str = ""


@dataclass(frozen=True)
class GetDomain:
    user_id: int
    domain_id: int


@dataclass(frozen=True)
class VerifyDomain:
    user_id: int
    domain_id: int


@dataclass(frozen=True)
class UpdateDomainTracking:
    """None: leave that setting as it is (both None: just read them)."""

    user_id: int
    domain_id: int
    click_tracking: bool | None = None
    open_tracking: bool | None = None


@dataclass(frozen=True)
class DeleteDomain:
    user_id: int
    domain_id: int


@dataclass(frozen=True)
class GetDomainQuota:
    user_id: int
    domain_id: int


def _dkim(row: DomainRow) -> DkimRecord | None:
    if not row.dkim_public_key:
        return None
    return DkimRecord(selector=row.dkim_selector or DKIM_SELECTOR,
                      public_key_b64=row.dkim_public_key)


async def create_domain(deps: AccountDeps, cmd: CreateDomain) -> DomainDetails:
    name = normalize_domain_name(cmd.name)
    if await deps.domains.find_live_by_name(name) is not None:
        raise InvalidInput(f"Domain {name} already exists")
    limit, pack_code = await domain_limit(deps, cmd.user_id)
    # A quick refusal; the gateway checks again atomically with the insert (local billing:
    # serialized per user), the billing system itself in the http mode.
    if await deps.domains.count(cmd.user_id) >= limit:
        raise InvalidInput(domain_limit_message(limit, pack_code))
    pair = await deps.dkim_keys.generate()
    domain_id = await deps.billing.create_domain(
        user_id=cmd.user_id, name=name, dkim_selector=pair.record.selector,
        dkim_public_key=pair.record.public_key_b64, dkim_private_key_pem=pair.private_key_pem,
        max_domains=limit)
    log.info("domain created", user_id=cmd.user_id, domain_id=domain_id, domain=name)
    stored = await deps.domains.get(cmd.user_id, domain_id)
    row = DomainRow(id=domain_id, user_id=cmd.user_id, name=name, status="pending",
                    created_at=stored.created_at if stored else deps.clock(), verified_at=None,
                    dkim_selector=pair.record.selector,
                    dkim_public_key=pair.record.public_key_b64)
    return DomainDetails(row, dns_records(deps.template, pair.record))


async def list_domains(deps: AccountDeps, cmd: ListDomains) -> DomainPage:
    rows, total, verified = await deps.domains.page(
        cmd.user_id, page=cmd.page, per_page=cmd.per_page, search=cmd.search.strip().lower())
    return DomainPage(rows, total, verified, cmd.page, cmd.per_page)


async def get_domain(deps: AccountDeps, cmd: GetDomain) -> DomainDetails:
    row = await owned_domain(deps, cmd.user_id, cmd.domain_id)
    return DomainDetails(row, dns_records(deps.template, _dkim(row)))


async def verify_domain(deps: AccountDeps, cmd: VerifyDomain) -> DomainDetails:
    """Verified: the row as it is now (``verified_at`` kept from the first verification).
    Any record missing: InvalidInput whose detail lists what was found (nothing changes)."""
    row = await owned_domain(deps, cmd.user_id, cmd.domain_id)
    dkim = _dkim(row)
    if dkim is None:
        raise InvalidInput("Domain has no DKIM key: delete and re-create it")
    result = await deps.verifier.verify(row.name, dkim)
    records = dns_records(deps.template, dkim)
    for record, check in zip(records, (result.spf, result.mx, result.dkim), strict=True):
        record["verified"] = check.verified
        if not check.verified:
            record["error"] = check.reason
    if not result.all_verified:
        raise InvalidInput({"message": "DNS verification failed",
                            "id": format_domain_id(row.id), "domain": row.name,
                            "status": row.status, "dns_records": records})
    if not row.verified and await deps.domains.verified_by_another(cmd.user_id, row.name):
        # Its delivery logs are another user's (GET /logs shows a verified domain's events).
        raise Conflict(f"Domain {row.name} is verified by another account")
    verified_at = row.verified_at if row.verified and row.verified_at else deps.clock()
    if not row.verified:
        await deps.billing.mark_domain_verified(user_id=cmd.user_id, domain_id=row.id,
                                                verified_at=verified_at)
    return DomainDetails(replace(row, status="verified", verified_at=verified_at), records)


async def update_tracking(deps: AccountDeps, cmd: UpdateDomainTracking) -> DomainTracking:
    row = await owned_domain(deps, cmd.user_id, cmd.domain_id)
    if cmd.click_tracking is None and cmd.open_tracking is None:
        click, open_ = await deps.domain_settings.tracking(cmd.user_id, row.id)
    else:
        click, open_ = await deps.domain_settings.set_tracking(
            cmd.user_id, row.id, cmd.click_tracking, cmd.open_tracking)
    return DomainTracking(row, click, open_)


async def delete_domain(deps: AccountDeps, cmd: DeleteDomain) -> DomainRow:
    """The deleted domain.  Its senders stop working at once: the sendmail worker's cached
    credential is dropped when it is one of them (another domain's credential stays)."""
    row = await owned_domain(deps, cmd.user_id, cmd.domain_id)
    await deps.billing.delete_domain(user_id=cmd.user_id, domain_id=row.id)
    credentials = await deps.domain_settings.forget_domain(cmd.user_id, row.id, row.name)
    if deps.sending_domains is not None:
        deps.sending_domains.forget(cmd.user_id, row.name)  # no more sends from it, from now on
    dropped = bool(credentials) and await deps.credential_cache.forget(cmd.user_id, credentials)
    log.info("domain deleted", user_id=cmd.user_id, domain_id=row.id, domain=row.name,
             senders_deactivated=len(credentials), cached_credential_dropped=dropped)
    return row


async def get_domain_quota(deps: AccountDeps, cmd: GetDomainQuota) -> DomainQuotaReport:
    row = await owned_domain(deps, cmd.user_id, cmd.domain_id)
    quota = await quota_of(deps, cmd.user_id, row.id)
    used = await usage_of(deps, row.id)
    return DomainQuotaReport(row, quota.limits, used, quota.pack_code, quota.pack_name)


def register(bus: MessageBus, deps: AccountDeps) -> None:
    bus.register(CreateDomain, partial(create_domain, deps))
    bus.register(ListDomains, partial(list_domains, deps))
    bus.register(GetDomain, partial(get_domain, deps))
    bus.register(VerifyDomain, partial(verify_domain, deps))
    bus.register(UpdateDomainTracking, partial(update_tracking, deps))
    bus.register(DeleteDomain, partial(delete_domain, deps))
    bus.register(GetDomainQuota, partial(get_domain_quota, deps))
