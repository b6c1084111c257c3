"""Use cases of billing: packs, current pack, subscriptions, pay as you go, testing set-pack.

Order of every change: the billing gateway first (it may refuse: 403/404, or fail: 502/503, and
then nothing of ours has changed), then our ``domain_subscription_status`` row together with its
KAFKA_BILLING_TOPIC event in the outbox, one transaction (``SubscriptionRepository``); the
outbox relay publishes the event, later if the broker is down (``docs/wire-formats.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from etrans.app.account_records import CurrentPack, PackAssigned, PaygSubscribed
from etrans.app.accounts import domain_limit, owned_domain, published_soon, quota_of, usage_of
from etrans.domain.quota import QuotaLimits, QuotaUsage
from etrans.errors import InvalidInput, NotFound
from etrans.observability import get_logger

if TYPE_CHECKING:
    from etrans.app.account_records import DomainRow, Pack, Subscription
    from etrans.app.accounts import AccountDeps
    from etrans.app.bus import MessageBus

log = get_logger(__name__)


@dataclass(frozen=True)
class ListPacks:
    """The packs on offer for a subscription (pay as you go is offered apart)."""


@dataclass(frozen=True)
class GetCurrentPack:
    user_id: int


@dataclass(frozen=True)
class CreateSubscription:
    user_id: int
    pack_code: str
    domain_id: int


@dataclass(frozen=True)
class GetPaygPackage:
    pass


@dataclass(frozen=True)
class CreatePaygSubscription:
    user_id: int
    domain_id: int


@dataclass(frozen=True)
class GetPaygSubscription:
    user_id: int
    domain_id: int


@dataclass(frozen=True)
class CancelPaygSubscription:
    user_id: int
    domain_id: int


@dataclass(frozen=True)
class SetPackForTesting:
    """Testing only: no billing gateway, no event (the route exists only when enabled)."""

    user_id: int
    pack_code: str


async def list_packs(deps: AccountDeps, cmd: ListPacks) -> list[Pack]:
    return [p for p in await deps.packs.packs() if not p.is_payg]


def _sum(values: list[int | None]) -> int | None:
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


async def get_current_pack(deps: AccountDeps, cmd: GetCurrentPack) -> CurrentPack:
    """The pack of the user's newest domain by the quota rule (without domains: the user-level
    pack, else the default pack); the limits sum the domains' limits (each by the rule POST
    /emails enforces) and usage; ``domain_limit`` is what POST /domains enforces."""
    domains = await deps.domains.all_for_user(cmd.user_id)
    quotas = [await quota_of(deps, cmd.user_id, row.id) for row in domains] or \
        [await quota_of(deps, cmd.user_id, None)]
    limits = QuotaLimits(daily=_sum([q.limits.daily for q in quotas]),
                         hourly=_sum([q.limits.hourly for q in quotas]),
                         monthly=_sum([q.limits.monthly for q in quotas]))
    used = QuotaUsage(daily=0, hourly=0, monthly=0)
    for row in domains:
        u = await usage_of(deps, row.id)
        used = QuotaUsage(used.daily + u.daily, used.hourly + u.hourly, used.monthly + u.monthly)
    newest = quotas[-1]  # all_for_user is ordered by id
    pack = await deps.packs.pack(newest.pack_code) if newest.pack_code else None
    limit, _ = await domain_limit(deps, cmd.user_id)
    return CurrentPack(
        pack_code=newest.pack_code, pack_name=newest.pack_name, pack=pack,
        daily_email_limit=pack.daily_email_limit if pack else newest.limits.daily,
        domain_limit=limit, limits=limits, usage=used, domains=domains)


async def create_subscription(deps: AccountDeps, cmd: CreateSubscription) -> DomainRow:
    """The domain now subscribed to ``cmd.pack_code``."""
    pack = await deps.packs.pack(cmd.pack_code)
    if pack is None or not pack.is_active:
        raise NotFound(f"Pack {cmd.pack_code} not found")
    if pack.is_payg:
        raise InvalidInput(
            f"Pack {cmd.pack_code} is pay as you go: use /billing/payg/subscriptions")
    row = await owned_domain(deps, cmd.user_id, cmd.domain_id)
    external_id = await deps.billing.create_subscription(
        user_id=cmd.user_id, domain_id=row.id, pack_code=pack.pack_code,
        pack_name=pack.pack_name, price=pack.price)
    await deps.subscriptions.replace(
        user_id=cmd.user_id, domain_id=row.id, pack_code=pack.pack_code, kind="subscription",
        external_id=external_id, event="subscription.created")
    published_soon(deps)
    return row


async def _payg_pack(deps: AccountDeps) -> Pack:
    pack = await deps.packs.payg_pack()
    if pack is None:
        raise NotFound("No pay-as-you-go package is offered")
    return pack


async def get_payg_package(deps: AccountDeps, cmd: GetPaygPackage) -> Pack:
    return await _payg_pack(deps)


async def create_payg(deps: AccountDeps, cmd: CreatePaygSubscription) -> PaygSubscribed:
    row = await owned_domain(deps, cmd.user_id, cmd.domain_id)
    pack = await _payg_pack(deps)
    current = await deps.subscriptions.active(cmd.user_id, row.id)
    if current is not None and current.kind == "payg":
        raise InvalidInput("The domain already has a pay-as-you-go subscription")
    external_id = await deps.billing.create_payg_subscription(
        user_id=cmd.user_id, domain_id=row.id, pack_code=pack.pack_code,
        pack_name=pack.pack_name)
    previous = await deps.subscriptions.replace(
        user_id=cmd.user_id, domain_id=row.id, pack_code=pack.pack_code, kind="payg",
        external_id=external_id, event="payg.created")
    published_soon(deps)
    return PaygSubscribed(await deps.subscriptions.active(cmd.user_id, row.id, "payg"),
                          previous)


async def _active_payg(deps: AccountDeps, user_id: int, domain_id: int
                       ) -> tuple[DomainRow, Subscription]:
    row = await owned_domain(deps, user_id, domain_id)
    sub = await deps.subscriptions.active(user_id, row.id, "payg")
    if sub is None:
        raise NotFound("No pay-as-you-go subscription for this domain")
    return row, sub


async def get_payg(deps: AccountDeps, cmd: GetPaygSubscription) -> Subscription:
    _, sub = await _active_payg(deps, cmd.user_id, cmd.domain_id)
    return sub


async def cancel_payg(deps: AccountDeps, cmd: CancelPaygSubscription) -> None:
    row, _ = await _active_payg(deps, cmd.user_id, cmd.domain_id)
    await deps.billing.cancel_payg_subscription(user_id=cmd.user_id, domain_id=row.id)
    await deps.subscriptions.cancel(cmd.user_id, row.id, "payg", "payg.cancelled")
    published_soon(deps)


async def set_pack_for_testing(deps: AccountDeps, cmd: SetPackForTesting) -> PackAssigned:
    pack = await deps.packs.pack(cmd.pack_code)
    if pack is None:
        raise InvalidInput(f"Invalid pack_code: {cmd.pack_code}")
    domains = await deps.domains.all_for_user(cmd.user_id)
    updated = await deps.subscriptions.assign_for_testing(
        cmd.user_id, [d.id for d in domains], pack.pack_code)
    return PackAssigned(pack, updated)


def register(bus: MessageBus, deps: AccountDeps) -> None:
    bus.register(ListPacks, partial(list_packs, deps))
    bus.register(GetCurrentPack, partial(get_current_pack, deps))
    bus.register(CreateSubscription, partial(create_subscription, deps))
    bus.register(GetPaygPackage, partial(get_payg_package, deps))
    bus.register(CreatePaygSubscription, partial(create_payg, deps))
    bus.register(GetPaygSubscription, partial(get_payg, deps))
    bus.register(CancelPaygSubscription, partial(cancel_payg, deps))
    bus.register(SetPackForTesting, partial(set_pack_for_testing, deps))
