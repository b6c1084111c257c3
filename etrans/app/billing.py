"""Use cases of billing: packs, current pack, subscriptions, pay as you go, testing set-pack.

Order of every change: the billing gateway first (it may refuse: 403/404, or fail: 502/503, and
then nothing of ours has changed), then our ``domain_subscription_status`` row together with its
KAFKA_BILLING_TOPIC event in the outbox, one transaction (:class:`AccountRepo`); the outbox relay
publishes the event, later if the broker is down (``docs/wire-formats.md``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from etrans.app.domains import (
    domain_limit,
    iso,
    owned_domain,
    quota_of,
    usage_of,
)
from etrans.domain.domains import format_domain_id, quota_view
from etrans.domain.quota import QuotaLimits, QuotaUsage
from etrans.errors import InvalidInput, NotFound
from etrans.observability import get_logger

if TYPE_CHECKING:
    from etrans.adapters.sql.account_repo import PackRow
    from etrans.adapters.sql.usend import DomainSubscriptionStatus
    from etrans.app.domains import AccountServices

log = get_logger(__name__)


def _pack_view(p: PackRow) -> dict[str, Any]:
    return {"pack_code": p.pack_code, "pack_name": p.pack_name, "pack_type": p.pack_type,
            "daily_email_limit": p.daily_email_limit, "domain_limit": p.domain_limit,
            "price": p.price, "is_active": p.is_active}


def _subscription_view(sub: DomainSubscriptionStatus) -> dict[str, Any]:
    return {"id": sub.id, "domain_id": sub.domain_id, "pack_code": sub.pack_code,
            "kind": sub.kind, "status": sub.status,
            "previous_pack_code": sub.previous_pack_code, "started_at": iso(sub.started_at)}


def _published_soon(s: AccountServices) -> None:
    if s.outbox is not None:
        s.outbox.notify()


async def list_packs(s: AccountServices) -> dict[str, Any]:
    packs = await s.usend(s.accounts.packs)
    return {"success": True, "packages": [_pack_view(p) for p in packs if not p.is_payg]}


def _sum(values: list[int | None]) -> int | None:
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


async def current_pack(s: AccountServices, user_id: int) -> dict[str, Any]:
    """The pack of the user's newest domain by the quota rule (without domains: the user-level
    pack, else the default pack); ``quota`` sums the domains' limits (each by the rule POST
    /emails enforces) and usage; ``domain_limit`` is what POST /domains enforces."""
    domains = await s.read(s.domains.all_for_user, user_id)
    quotas = [await quota_of(s, user_id, row.id) for row in domains] or \
        [await quota_of(s, user_id, None)]
    limits = QuotaLimits(daily=_sum([q.limits.daily for q in quotas]),
                         hourly=_sum([q.limits.hourly for q in quotas]),
                         monthly=_sum([q.limits.monthly for q in quotas]))
    used = QuotaUsage(daily=0, hourly=0, monthly=0)
    for row in domains:
        u = await usage_of(s, row.id)
        used = QuotaUsage(used.daily + u.daily, used.hourly + u.hourly, used.monthly + u.monthly)
    newest = quotas[-1]  # all_for_user is ordered by id
    pack = await s.usend(s.accounts.pack, newest.pack_code) if newest.pack_code else None
    limit, _ = await domain_limit(s, user_id)
    return {
        "pack_code": newest.pack_code,
        "pack_name": newest.pack_name,
        "pack_type": pack.pack_type if pack else None,
        "daily_email_limit": pack.daily_email_limit if pack else newest.limits.daily,
        "domain_limit": limit,
        "quota": quota_view(limits, used),
        "domains": [{"domain_id": format_domain_id(r.id), "domain_name": r.name,
                     "status": r.status} for r in domains],
    }


async def create_subscription(s: AccountServices, user_id: int, *, pack_code: str,
                              domain_id: int) -> dict[str, Any]:
    pack = await s.usend(s.accounts.pack, pack_code)
    if pack is None or not pack.is_active:
        raise NotFound(f"Pack {pack_code} not found")
    if pack.is_payg:
        raise InvalidInput(f"Pack {pack_code} is pay as you go: use /billing/payg/subscriptions")
    row = await owned_domain(s, user_id, domain_id)
    external_id = await s.billing.create_subscription(
        user_id=user_id, domain_id=row.id, pack_code=pack.pack_code, pack_name=pack.pack_name,
        price=pack.price)
    await s.usend(lambda: s.accounts.replace_subscription(
        user_id=user_id, domain_id=row.id, pack_code=pack.pack_code, kind="subscription",
        external_id=external_id, event="subscription.created"))
    _published_soon(s)
    return {"success": True, "message": "Subscription created successfully",
            "domain_id": row.id, "pack_code": pack.pack_code}


async def payg_package(s: AccountServices) -> dict[str, Any]:
    pack = await s.usend(s.accounts.payg_pack)
    if pack is None:
        raise NotFound("No pay-as-you-go package is offered")
    return {"pack_code": pack.pack_code, "pack_name": pack.pack_name,
            "pack_type": pack.pack_type, "pricing": pack.pricing or {}}


async def create_payg(s: AccountServices, user_id: int, domain_id: int) -> dict[str, Any]:
    row = await owned_domain(s, user_id, domain_id)
    pack = await s.usend(s.accounts.payg_pack)
    if pack is None:
        raise NotFound("No pay-as-you-go package is offered")
    current = await s.usend(s.accounts.active_subscription, user_id, row.id)
    if current is not None and current.kind == "payg":
        raise InvalidInput("The domain already has a pay-as-you-go subscription")
    external_id = await s.billing.create_payg_subscription(
        user_id=user_id, domain_id=row.id, pack_code=pack.pack_code, pack_name=pack.pack_name)
    previous = await s.usend(lambda: s.accounts.replace_subscription(
        user_id=user_id, domain_id=row.id, pack_code=pack.pack_code, kind="payg",
        external_id=external_id, event="payg.created"))
    _published_soon(s)
    sub = await s.usend(s.accounts.active_subscription, user_id, row.id, "payg")
    return {"success": True, "message": "PAYG subscription created",
            "subscription": _subscription_view(sub) if sub else {}, "previous_pack": previous}


async def get_payg(s: AccountServices, user_id: int, domain_id: int) -> dict[str, Any]:
    row = await owned_domain(s, user_id, domain_id)
    sub = await s.usend(s.accounts.active_subscription, user_id, row.id, "payg")
    if sub is None:
        raise NotFound("No pay-as-you-go subscription for this domain")
    return {"subscription": _subscription_view(sub)}


async def cancel_payg(s: AccountServices, user_id: int, domain_id: int) -> dict[str, Any]:
    row = await owned_domain(s, user_id, domain_id)
    sub = await s.usend(s.accounts.active_subscription, user_id, row.id, "payg")
    if sub is None:
        raise NotFound("No pay-as-you-go subscription for this domain")
    await s.billing.cancel_payg_subscription(user_id=user_id, domain_id=row.id)
    await s.usend(s.accounts.cancel_subscription, user_id, row.id, "payg", "payg.cancelled")
    _published_soon(s)
    return {"success": True, "message": "PAYG subscription cancelled"}


async def set_pack_for_testing(s: AccountServices, user_id: int, pack_code: str
                               ) -> dict[str, Any]:
    """Testing only: no billing gateway, no event (the route exists only when enabled)."""
    pack = await s.usend(s.accounts.pack, pack_code)
    if pack is None:
        raise InvalidInput(f"Invalid pack_code: {pack_code}")
    domains = await s.read(s.domains.all_for_user, user_id)
    updated = await s.usend(s.accounts.set_pack_for_testing, user_id, [d.id for d in domains],
                            pack.pack_code)
    return {"pack_code": pack.pack_code, "pack_name": pack.pack_name,
            "domain_limit": pack.domain_limit, "daily_email_limit": pack.daily_email_limit,
            "domains_updated": updated}
