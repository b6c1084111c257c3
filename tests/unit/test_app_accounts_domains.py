"""The domain use cases (:mod:`etrans.app.domains`) through the MessageBus, on in-memory fakes.

The rules of /domains in milliseconds: a name is taken once across users, the domain limit comes
from the user's packs, verification needs all three records and a name is verified by one user
at a time (``verified_at`` kept from the first time), deleting a domain deactivates its senders,
drops the cached credential only when it is one of theirs and tells the send path at once, the
quota report is THE quota rule plus the counters, and a user only ever reaches their own domains.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from etrans.app.domains import (
    CreateDomain,
    DeleteDomain,
    GetDomain,
    GetDomainQuota,
    ListDomains,
    UpdateDomainTracking,
    VerifyDomain,
)
from etrans.app.senders import CreateSender
from etrans.domain.quota import MktLimits, QuotaLimits
from etrans.errors import Conflict, InvalidInput, NotFound, UpstreamUnavailable
from tests.unit.fakes_accounts import NOW, AccountWorld


@pytest.fixture
def world() -> AccountWorld:
    return AccountWorld()


async def test_create_normalizes_the_name_and_answers_the_records_to_publish(world):
    made = await world.handle(CreateDomain(1, "  Example.COM. "))
    assert (made.domain.name, made.domain.status, made.domain.created_at) == \
        ("example.com", "pending", NOW)
    assert [r["purpose"] for r in made.dns_records] == ["spf", "mx", "dkim"]
    assert made.dns_records[2]["value"] == "v=DKIM1; k=rsa; p=PUBKEY1"
    assert world.billing.private_keys[made.domain.id] == b"PEM"  # the private key went along
    with pytest.raises(InvalidInput, match="invalid domain name"):
        await world.handle(CreateDomain(1, "no_dots"))


async def test_a_name_is_taken_once_across_users(world):
    await world.handle(CreateDomain(1, "taken.example"))
    with pytest.raises(InvalidInput, match=r"Domain taken\.example already exists"):
        await world.handle(CreateDomain(2, "taken.example"))
    assert [c for c, _ in world.billing.calls] == ["create_domain"]  # refused before billing


async def test_the_domain_limit_comes_from_the_users_packs(world):
    await world.handle(CreateDomain(1, "one.example"))  # FREE: 1 domain
    with pytest.raises(InvalidInput, match=r"Domain limit reached: your pack \(FREE\) allows 1 "
                                           r"domain$"):
        await world.handle(CreateDomain(1, "two.example"))
    world.subscriptions.user_packs[1] = "PRO"  # the user-level pack: 5
    await world.handle(CreateDomain(1, "two.example"))
    first = world.domains.live()[0]
    world.subscriptions._replace(1, first.id, "PAYG", "payg", None)  # a subscription wins: 3
    await world.handle(CreateDomain(1, "three.example"))
    with pytest.raises(InvalidInput, match=r"your pack \(PAYG\) allows 3 domains"):
        await world.handle(CreateDomain(1, "four.example"))


async def test_without_the_default_pack_in_the_catalogue_one_domain_is_allowed():
    world = AccountWorld(packs=())
    await world.handle(CreateDomain(1, "one.example"))
    with pytest.raises(InvalidInput, match="Domain limit reached: your pack allows 1 domain"):
        await world.handle(CreateDomain(1, "two.example"))


async def test_the_gateway_refusing_leaves_nothing_behind(world):
    world.billing.refuse = UpstreamUnavailable("billing down")
    with pytest.raises(UpstreamUnavailable):
        await world.handle(CreateDomain(1, "a.example"))
    assert world.domains.live() == []


async def test_list_get_and_tenant_isolation(world):
    world.subscriptions.user_packs[1] = "PRO"
    for name in ("a.example", "b.example", "c.other"):
        world.now += timedelta(seconds=1)
        await world.handle(CreateDomain(1, name))
    theirs = await world.handle(CreateDomain(2, "theirs.example"))
    page = await world.handle(ListDomains(1, page=1, per_page=2, search=" EXAMPLE "))
    assert [r.name for r in page.rows] == ["b.example", "a.example"]  # newest first
    assert (page.total, page.total_verified, page.page, page.per_page) == (2, 0, 1, 2)
    with pytest.raises(NotFound, match="Domain not found"):
        await world.handle(GetDomain(1, theirs.domain.id))
    got = await world.handle(GetDomain(2, theirs.domain.id))
    assert got.domain.name == "theirs.example"
    assert got.dns_records[2]["name"] == "dkim._domainkey"


async def test_verify_needs_every_record_and_says_which_is_missing(world):
    made = await world.handle(CreateDomain(1, "a.example"))
    world.verifier.missing = {"mx"}
    with pytest.raises(InvalidInput) as refused:
        await world.handle(VerifyDomain(1, made.domain.id))
    detail = refused.value.detail
    assert detail["message"] == "DNS verification failed"
    assert [(r["purpose"], r["verified"]) for r in detail["dns_records"]] == \
        [("spf", True), ("mx", False), ("dkim", True)]
    assert detail["dns_records"][1]["error"] == "no mx record"
    assert (await world.handle(GetDomain(1, made.domain.id))).domain.status == "pending"


async def test_verify_keeps_the_first_verified_at(world):
    made = await world.handle(CreateDomain(1, "a.example"))
    verified = await world.handle(VerifyDomain(1, made.domain.id))
    assert (verified.domain.status, verified.domain.verified_at) == ("verified", NOW)
    assert all(r["verified"] for r in verified.dns_records)
    world.now += timedelta(days=1)
    again = await world.handle(VerifyDomain(1, made.domain.id))
    assert again.domain.verified_at == NOW
    assert [c for c, _ in world.billing.calls].count("mark_domain_verified") == 1


async def test_a_name_is_verified_by_one_user_at_a_time(world):
    other = world.domains.add(2, "shared.example", status="verified", verified_at=NOW)
    mine = world.domains.add(1, "shared.example")  # left over from before the other's
    with pytest.raises(Conflict, match="verified by another account"):
        await world.handle(VerifyDomain(1, mine.id))
    assert (await world.handle(VerifyDomain(2, other.id))).domain.status == "verified"


async def test_a_domain_without_dkim_key_cannot_be_verified(world):
    row = world.domains.add(1, "old.example", dkim_public_key=None)
    with pytest.raises(InvalidInput, match="no DKIM key"):
        await world.handle(VerifyDomain(1, row.id))
    assert world.verifier.asked == []


async def test_tracking_is_read_or_changed_per_setting(world):
    made = await world.handle(CreateDomain(1, "a.example"))
    read = await world.handle(UpdateDomainTracking(1, made.domain.id))
    assert (read.click_tracking, read.open_tracking) == (False, False)
    changed = await world.handle(UpdateDomainTracking(1, made.domain.id, click_tracking=True))
    assert (changed.click_tracking, changed.open_tracking) == (True, False)
    changed = await world.handle(UpdateDomainTracking(1, made.domain.id, open_tracking=True))
    assert (changed.click_tracking, changed.open_tracking) == (True, True)
    with pytest.raises(NotFound):
        await world.handle(UpdateDomainTracking(2, made.domain.id, click_tracking=False))


async def test_delete_stops_its_senders_and_tells_the_send_path(world):
    world.subscriptions.user_packs[1] = "PRO"
    gone = await world.handle(CreateDomain(1, "gone.example"))
    kept = await world.handle(CreateDomain(1, "kept.example"))
    await world.handle(CreateSender(1, "a@gone.example", "gone.example", "password1"))
    assert world.credential_cache.values[1] == "sealed(a@gone.example:password1)"
    deleted = await world.handle(DeleteDomain(1, gone.domain.id))
    assert deleted.name == "gone.example"
    assert 1 not in world.credential_cache.values  # the cached credential was this domain's
    assert [s.active for s, _, _ in world.senders.rows] == [False]
    assert world.sending_domains.forgotten == [(1, "gone.example")]
    with pytest.raises(NotFound):
        await world.handle(GetDomain(1, gone.domain.id))
    # Another domain's cached credential stays.
    await world.handle(CreateSender(1, "b@kept.example", "kept.example", "password2"))
    await world.handle(DeleteDomain(1, (await world.handle(CreateDomain(1, "x.example"))
                                        ).domain.id))
    assert world.credential_cache.values[1] == "sealed(b@kept.example:password2)"
    assert kept.domain.id in {r.id for r in world.domains.live()}


async def test_delete_of_another_users_domain_is_not_found(world):
    made = await world.handle(CreateDomain(1, "a.example"))
    with pytest.raises(NotFound):
        await world.handle(DeleteDomain(2, made.domain.id))
    assert world.billing.calls[-1][0] == "create_domain"


async def test_quota_report_is_the_quota_rule_plus_the_counters(world):
    made = await world.handle(CreateDomain(1, "a.example"))
    domain_id = made.domain.id
    assert await world.quota.reserve(domain_id, QuotaLimits(), 7, NOW) is None
    report = await world.handle(GetDomainQuota(1, domain_id))
    assert (report.pack_code, report.limits) == \
        ("FREE", QuotaLimits(daily=100, hourly=4, monthly=3100))
    assert (report.usage.daily, report.usage.hourly, report.usage.monthly) == (7, 7, 7)
    world.domains.mkt[domain_id] = MktLimits(daily=240, hourly=None, monthly=5000)
    report = await world.handle(GetDomainQuota(1, domain_id))
    assert report.limits == QuotaLimits(daily=240, hourly=10, monthly=5000)
    with pytest.raises(NotFound):
        await world.handle(GetDomainQuota(2, domain_id))
