"""The billing use cases (:mod:`etrans.app.billing`) through the MessageBus, on in-memory fakes.

The catalogue offers subscriptions apart from pay as you go; a change goes to the billing
gateway first (a refusal changes nothing of ours), then our subscription row with its event in
the outbox (and the relay is woken); one pay-as-you-go subscription per domain; current-pack sums
the domains' limits by THE quota rule; the testing set-pack changes every domain and the
user-level pack, without the gateway or an event.
"""

from __future__ import annotations

import pytest

from etrans.app.billing import (
    CancelPaygSubscription,
    CreatePaygSubscription,
    CreateSubscription,
    GetCurrentPack,
    GetPaygPackage,
    GetPaygSubscription,
    ListPacks,
    SetPackForTesting,
)
from etrans.domain.quota import QuotaLimits
from etrans.errors import Forbidden, InvalidInput, NotFound
from tests.unit.fakes_account_stores import pack
from tests.unit.fakes_accounts import NOW, AccountWorld


@pytest.fixture
def world() -> AccountWorld:
    return AccountWorld()


async def test_the_catalogue_lists_subscriptions_and_offers_payg_apart(world):
    assert [p.pack_code for p in await world.handle(ListPacks())] == ["FREE", "PRO"]
    payg = await world.handle(GetPaygPackage())
    assert (payg.pack_code, payg.pricing) == ("PAYG", {"per_email": 0.001})
    bare = AccountWorld(packs=(pack("FREE"),))
    with pytest.raises(NotFound, match="No pay-as-you-go package is offered"):
        await bare.handle(GetPaygPackage())


async def test_a_subscription_goes_to_the_gateway_then_ours_with_its_event(world):
    domain = world.domains.add(1, "a.example")
    row = await world.handle(CreateSubscription(1, "PRO", domain.id))
    assert row.id == domain.id
    assert world.billing.calls[-1] == ("create_subscription", {
        "user_id": 1, "domain_id": domain.id, "pack_code": "PRO", "price": 20.0})
    active = await world.subscriptions.active(1, domain.id)
    assert (active.pack_code, active.kind, active.started_at) == ("PRO", "subscription", NOW)
    assert world.subscriptions.events == [{
        "event": "subscription.created", "user_id": 1, "domain_id": domain.id,
        "pack_code": "PRO", "previous_pack_code": None}]
    assert world.outbox.notified == 1


async def test_a_refused_subscription_changes_nothing_of_ours(world):
    domain = world.domains.add(1, "a.example")
    world.billing.refuse = Forbidden("Insufficient balance")
    with pytest.raises(Forbidden):
        await world.handle(CreateSubscription(1, "PRO", domain.id))
    assert world.subscriptions.rows == []
    assert world.subscriptions.events == []
    assert world.outbox.notified == 0


@pytest.mark.parametrize(("code", "error", "message"), [
    ("NOPE", NotFound, "Pack NOPE not found"),
    ("OLD", NotFound, "Pack OLD not found"),
    ("PAYG", InvalidInput, "is pay as you go"),
])
async def test_only_active_subscription_packs_are_bought(code, error, message):
    world = AccountWorld(packs=(pack("FREE"), pack("OLD", active=False),
                                pack("PAYG", payg=True)))
    domain = world.domains.add(1, "a.example")
    with pytest.raises(error, match=message):
        await world.handle(CreateSubscription(1, code, domain.id))
    assert world.billing.calls == []


async def test_another_users_domain_is_not_found(world):
    theirs = world.domains.add(2, "theirs.example")
    with pytest.raises(NotFound, match="Domain not found"):
        await world.handle(CreateSubscription(1, "PRO", theirs.id))
    with pytest.raises(NotFound, match="Domain not found"):
        await world.handle(CreatePaygSubscription(1, theirs.id))
    assert world.billing.calls == []


async def test_payg_replaces_the_subscription_once_and_is_cancelled(world):
    domain = world.domains.add(1, "a.example")
    await world.handle(CreateSubscription(1, "PRO", domain.id))
    made = await world.handle(CreatePaygSubscription(1, domain.id))
    assert (made.previous_pack, made.subscription.kind, made.subscription.pack_code) == \
        ("PRO", "payg", "PAYG")
    with pytest.raises(InvalidInput, match="already has a pay-as-you-go subscription"):
        await world.handle(CreatePaygSubscription(1, domain.id))
    assert (await world.handle(GetPaygSubscription(1, domain.id))).pack_code == "PAYG"
    await world.handle(CancelPaygSubscription(1, domain.id))
    assert world.billing.calls[-1][0] == "cancel_payg_subscription"
    assert [e["event"] for e in world.subscriptions.events] == \
        ["subscription.created", "payg.created", "payg.cancelled"]
    assert world.outbox.notified == 3
    with pytest.raises(NotFound, match="No pay-as-you-go subscription for this domain"):
        await world.handle(GetPaygSubscription(1, domain.id))
    with pytest.raises(NotFound, match="No pay-as-you-go subscription for this domain"):
        await world.handle(CancelPaygSubscription(1, domain.id))


async def test_current_pack_without_domains_is_the_user_level_pack(world):
    current = await world.handle(GetCurrentPack(1))
    assert (current.pack_code, current.domain_limit, current.domains) == ("FREE", 1, [])
    assert current.limits == QuotaLimits(daily=100, hourly=4, monthly=3100)
    world.subscriptions.user_packs[1] = "PRO"
    current = await world.handle(GetCurrentPack(1))
    assert (current.pack_code, current.domain_limit, current.daily_email_limit) == \
        ("PRO", 5, 10_000)


async def test_current_pack_sums_the_domains_limits_and_usage(world):
    first = world.domains.add(1, "a.example")
    second = world.domains.add(1, "b.example")
    await world.handle(CreateSubscription(1, "PRO", second.id))
    assert await world.quota.reserve(first.id, QuotaLimits(), 2, NOW) is None
    assert await world.quota.reserve(second.id, QuotaLimits(), 3, NOW) is None
    current = await world.handle(GetCurrentPack(1))
    assert current.pack_code == "PRO"  # the newest domain's
    assert current.limits.daily == 100 + 10_000
    assert current.usage.daily == 5
    assert current.domain_limit == 5
    assert [d.name for d in current.domains] == ["a.example", "b.example"]


async def test_set_pack_for_testing_needs_no_gateway_and_queues_no_event(world):
    first = world.domains.add(1, "a.example")
    with pytest.raises(InvalidInput, match="Invalid pack_code: NOPE"):
        await world.handle(SetPackForTesting(1, "NOPE"))
    done = await world.handle(SetPackForTesting(1, "PRO"))
    assert (done.pack.pack_code, done.domains_updated) == ("PRO", 1)
    assert (await world.subscriptions.active(1, first.id)).pack_code == "PRO"
    assert world.subscriptions.user_packs[1] == "PRO"
    assert (world.billing.calls, world.subscriptions.events) == ([], [])
