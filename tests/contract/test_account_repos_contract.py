"""The account ports (:mod:`etrans.app.account_ports`) on PostgreSQL, on the ``etrans dev``
SQLite file and on the fakes of the unit tests (``tests/unit/fakes_accounts.py``): one suite, so
a use-case rule tested on the fakes in milliseconds holds on both databases.

What the use cases rely on:

- DomainRepository: only the user's live domains (deleted ones are gone everywhere), with their
  newest DKIM key; a name found across users; ``verified_by_another``; pages newest first with
  the totals of the whole filtered set; ``all_for_user`` by id; the ``mkt_domain`` limits.
- PackCatalogue: active packs cheapest first, any pack by code, the active pay-as-you-go pack.
- SubscriptionRepository: one active subscription per domain (``replace`` ends the previous and
  answers its pack), ``cancel`` by kind, the active pack codes of a user, the user-level pack,
  the facts of the quota rule, the testing assignment.
- DomainSettings: tracking per setting; ``forget_domain`` deactivates the domain's senders (by
  id or name) and answers their credential values, ends its subscriptions, drops its tracking.
- ApiKeyRepository: a key reads back as created; a creator that is not a live key of the user
  refuses the mint; ``delete`` takes the keys the key created, recursively, root first.
- SenderRepository: an account exists once, across users.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest

from etrans.domain.quota import MktLimits, PackLimits
from tests.contract.account_backends import (
    T0,
    FakeAccountBackend,
    catalogue_pack,
    fresh_code,
    fresh_name,
    postgres_accounts,
    sqlite_accounts,
)
from tests.contract.usend_backends import fresh_user

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


@pytest.fixture(params=["fake", "postgres", "sqlite"])
async def accounts(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    if request.param == "fake":
        backend = FakeAccountBackend.build()
    elif request.param == "postgres":
        backend = postgres_accounts(request.getfixturevalue("usend_db_url"))
    else:
        backend = sqlite_accounts(tmp_path / "usend.sqlite3")
    yield backend
    await backend.close()


# -- domains --------------------------------------------------------------------------------------

async def test_only_the_users_live_domains_are_reached(accounts: Any) -> None:
    domains, user, other = accounts.domains, fresh_user(), fresh_user()
    mine = accounts.add_domain(user, name := fresh_name())
    theirs = accounts.add_domain(other, fresh_name())
    gone = accounts.add_domain(user, fresh_name())
    accounts.delete_domain(gone)
    row = await domains.get(user, mine)
    assert (row.id, row.user_id, row.name, row.status) == (mine, user, name, "pending")
    assert (row.dkim_selector, row.dkim_public_key, row.created_at) == ("dkim", "PUB", T0)
    assert await domains.get(user, theirs) is None
    assert await domains.get(user, gone) is None
    assert await domains.count(user) == 1
    assert [r.id for r in await domains.all_for_user(user)] == [mine]
    assert (await domains.find_live_by_name(name)).id == mine  # whoever holds it
    assert await domains.find_live_by_name(fresh_name()) is None


async def test_a_verified_name_is_seen_from_another_account(accounts: Any) -> None:
    user, other = fresh_user(), fresh_user()
    verified, pending, deleted = fresh_name(), fresh_name(), fresh_name()
    accounts.add_domain(other, verified, status="verified", verified_at=T0)
    accounts.add_domain(other, pending)
    accounts.delete_domain(accounts.add_domain(other, deleted, status="verified",
                                               verified_at=T0))
    assert await accounts.domains.verified_by_another(user, verified)
    assert not await accounts.domains.verified_by_another(other, verified)  # not another's
    assert not await accounts.domains.verified_by_another(user, pending)
    assert not await accounts.domains.verified_by_another(user, deleted)


async def test_pages_are_newest_first_with_the_totals_of_the_filtered_set(accounts: Any) -> None:
    user = fresh_user()
    ids = [accounts.add_domain(user, f"{tag}-{fresh_name()}", created_at=T0 + timedelta(i),
                               status="verified" if i == 1 else "pending")
           for i, tag in enumerate(("alpha", "beta", "alpha", "gamma"))]
    rows, total, verified = await accounts.domains.page(user, page=1, per_page=3, search="")
    assert ([r.id for r in rows], total, verified) == (ids[::-1][:3], 4, 1)
    rows, total, verified = await accounts.domains.page(user, page=2, per_page=1,
                                                        search="alpha")
    assert ([r.id for r in rows], total, verified) == ([ids[0]], 2, 0)


async def test_the_mkt_domain_limits_read_back(accounts: Any) -> None:
    domain = accounts.add_domain(fresh_user(), fresh_name())
    assert await accounts.domains.mkt_limits(domain) is None
    limits = MktLimits(pack_code="PRO", pack_name="Pro", daily=240, hourly=None, monthly=5000)
    accounts.set_mkt(domain, limits)
    assert await accounts.domains.mkt_limits(domain) == limits


# -- packs and subscriptions ----------------------------------------------------------------------

async def test_the_catalogue(accounts: Any) -> None:
    cheap, dear, old, payg = (catalogue_pack(fresh_code(), price=1.0),
                              catalogue_pack(fresh_code(), price=9.0, domain_limit=5),
                              catalogue_pack(fresh_code(), active=False),
                              catalogue_pack(fresh_code(), payg=True))
    for pack in (dear, cheap, old, payg):
        accounts.add_pack(pack)
    listed = [p.pack_code for p in await accounts.packs.packs()]
    assert listed.index(cheap.pack_code) < listed.index(dear.pack_code)
    assert old.pack_code not in listed
    assert await accounts.packs.pack(dear.pack_code) == dear
    assert await accounts.packs.pack(old.pack_code) == old
    assert await accounts.packs.pack(fresh_code()) is None
    offered = await accounts.packs.payg_pack()
    assert offered is not None
    assert (offered.is_payg, offered.is_active) == (True, True)


async def test_one_active_subscription_per_domain(accounts: Any) -> None:
    subs, user = accounts.subscriptions, fresh_user()
    domain, other = accounts.add_domain(user, fresh_name()), accounts.add_domain(user,
                                                                                 fresh_name())
    assert await subs.replace(user_id=user, domain_id=domain, pack_code="PRO",
                              kind="subscription", event="subscription.created") is None
    assert await subs.replace(user_id=user, domain_id=domain, pack_code="PAYG", kind="payg",
                              event="payg.created") == "PRO"
    await subs.replace(user_id=user, domain_id=other, pack_code="PRO", kind="subscription")
    active = await subs.active(user, domain)
    assert (active.domain_id, active.pack_code, active.kind, active.status) == \
        (domain, "PAYG", "payg", "active")
    assert active.previous_pack_code == "PRO"
    assert await subs.active(user, domain, "subscription") is None
    assert await subs.active(fresh_user(), domain) is None
    assert sorted(await subs.active_pack_codes(user)) == ["PAYG", "PRO"]
    assert not await subs.cancel(user, domain, "subscription")
    assert await subs.cancel(user, domain, "payg", "payg.cancelled")
    assert await subs.active(user, domain) is None
    assert await subs.active_pack_codes(user) == ["PRO"]


async def test_the_facts_of_the_quota_rule(accounts: Any) -> None:
    subs, user = accounts.subscriptions, fresh_user()
    default, sub, mine = (catalogue_pack(fresh_code(), daily=10),
                          catalogue_pack(fresh_code(), daily=20, hourly=3),
                          catalogue_pack(fresh_code(), daily=30))
    for pack in (default, sub, mine):
        accounts.add_pack(pack)
    domain = accounts.add_domain(user, fresh_name())
    facts = await subs.quota_facts(user, domain, None, default.pack_code)
    assert (facts.subscription_pack, facts.user_pack, list(facts.packs)) == \
        (None, None, [default.pack_code])
    assert facts.packs[default.pack_code] == PackLimits(default.pack_code, default.pack_name, 10)
    await subs.assign_for_testing(user, [], mine.pack_code)
    assert await subs.user_pack_code(user) == mine.pack_code
    await subs.replace(user_id=user, domain_id=domain, pack_code=sub.pack_code,
                       kind="subscription")
    mkt = MktLimits(pack_code=fresh_code(), daily=5)  # a code the catalogue does not know
    facts = await subs.quota_facts(user, domain, mkt, default.pack_code)
    assert (facts.mkt, facts.subscription_pack, facts.user_pack) == \
        (mkt, sub.pack_code, mine.pack_code)
    assert sorted(facts.packs) == sorted([default.pack_code, sub.pack_code, mine.pack_code])
    assert facts.packs[sub.pack_code].hourly == 3
    without = await subs.quota_facts(user, None, None, default.pack_code)  # no domain yet
    assert (without.subscription_pack, without.user_pack) == (None, mine.pack_code)


async def test_the_testing_assignment(accounts: Any) -> None:
    subs, user = accounts.subscriptions, fresh_user()
    domains = [accounts.add_domain(user, fresh_name()) for _ in range(2)]
    assert await subs.assign_for_testing(user, domains, "PRO") == 2
    assert await subs.assign_for_testing(user, domains, "BIG") == 2
    assert await subs.user_pack_code(user) == "BIG"
    assert [(await subs.active(user, d)).pack_code for d in domains] == ["BIG", "BIG"]


# -- domain settings ------------------------------------------------------------------------------

async def test_tracking_per_setting(accounts: Any) -> None:
    settings, user = accounts.settings, fresh_user()
    domain = accounts.add_domain(user, fresh_name())
    assert await settings.tracking(user, domain) == (False, False)
    assert await settings.set_tracking(user, domain, True, None) == (True, False)
    assert await settings.set_tracking(user, domain, None, True) == (True, True)
    assert await settings.set_tracking(user, domain, False, None) == (False, True)
    assert await settings.tracking(user, domain) == (False, True)
    assert await settings.tracking(fresh_user(), domain) == (False, False)


async def test_forgetting_a_domain(accounts: Any) -> None:
    user, name, kept_name = fresh_user(), fresh_name(), fresh_name()
    domain, kept = accounts.add_domain(user, name), accounts.add_domain(user, kept_name)
    for account, domain_id, domain_name in ((f"a@{name}", domain, name),
                                            (f"b@{kept_name}", kept, kept_name)):
        await accounts.senders.create(user_id=user, domain_id=domain_id, domain=domain_name,
                                      account=account, password_encrypted=f"v:{account}",
                                      daily_limit=100, hourly_limit=4)
    await accounts.settings.set_tracking(user, domain, True, True)
    for domain_id in (domain, kept):
        await accounts.subscriptions.replace(user_id=user, domain_id=domain_id,
                                             pack_code="PRO", kind="subscription")
    assert await accounts.settings.forget_domain(user, domain, name) == [f"v:a@{name}"]
    assert await accounts.settings.tracking(user, domain) == (False, False)
    assert await accounts.subscriptions.active(user, domain) is None
    assert (await accounts.subscriptions.active(user, kept)).pack_code == "PRO"
    assert await accounts.settings.forget_domain(user, domain, name) == []  # already inactive


# -- API keys and senders -------------------------------------------------------------------------

async def _key(accounts: Any, user: int, name: str, by: int | None = None) -> Any:
    return await accounts.api_keys.create(
        user_id=user, name=name, key_hash=uuid.uuid4().hex * 2,
        key_prefix="etrans_live_abcd", permission="sending_access",
        expires_at=T0 + timedelta(days=30), created_by_key_id=by)


async def test_a_key_reads_back_as_created(accounts: Any) -> None:
    user = fresh_user()
    made = await _key(accounts, user, "ci")
    got = await accounts.api_keys.get(user, made.id)
    assert got == made
    assert (got.user_id, got.name, got.permission, got.expires_at, got.active) == \
        (user, "ci", "sending_access", T0 + timedelta(days=30), True)
    assert got.created_at is not None
    assert await accounts.api_keys.get(fresh_user(), made.id) is None
    later = await _key(accounts, user, "later")
    rows, total = await accounts.api_keys.page(user, page=1, per_page=1)
    assert ([r.id for r in rows], total) == ([later.id], 2)


async def test_a_key_is_minted_only_by_a_live_key_of_the_user(accounts: Any) -> None:
    user = fresh_user()
    root = await _key(accounts, user, "root")
    assert await _key(accounts, fresh_user(), "foreign", by=root.id) is None
    assert await accounts.api_keys.delete(user, root.id) == [root.key_hash]
    assert await _key(accounts, user, "orphan", by=root.id) is None
    assert (await accounts.api_keys.page(user, page=1, per_page=10))[1] == 0


async def test_delete_takes_the_keys_a_key_created_recursively(accounts: Any) -> None:
    user = fresh_user()
    root = await _key(accounts, user, "root")
    child = await _key(accounts, user, "child", by=root.id)
    grandchild = await _key(accounts, user, "grandchild", by=child.id)
    sibling = await _key(accounts, user, "sibling")
    assert await accounts.api_keys.delete(fresh_user(), root.id) is None
    hashes = await accounts.api_keys.delete(user, root.id)
    assert hashes[0] == root.key_hash
    assert sorted(hashes[1:]) == sorted([child.key_hash, grandchild.key_hash])
    for gone in (root, child, grandchild):
        assert await accounts.api_keys.get(user, gone.id) is None
    assert await accounts.api_keys.delete(user, root.id) is None
    rows, total = await accounts.api_keys.page(user, page=1, per_page=10)
    assert ([r.id for r in rows], total) == ([sibling.id], 1)


async def test_a_sender_account_exists_once_across_users(accounts: Any) -> None:
    user, name = fresh_user(), fresh_name()
    domain = accounts.add_domain(user, name)
    account = f"noreply@{name}"
    assert not await accounts.senders.exists(account)
    made = await accounts.senders.create(user_id=user, domain_id=domain, domain=name,
                                         account=account, password_encrypted="v",
                                         daily_limit=100, hourly_limit=4)
    assert (made.user_id, made.account, made.domain, made.active) == (user, account, name, True)
    assert (made.daily_limit, made.hourly_limit) == (100, 4)
    assert made.created_at is not None
    assert await accounts.senders.exists(account)
    assert await accounts.senders.create(user_id=fresh_user(), domain_id=domain, domain=name,
                                         account=account, password_encrypted="w",
                                         daily_limit=100, hourly_limit=4) is None
