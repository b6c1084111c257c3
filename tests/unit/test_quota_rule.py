"""THE quota rule (:func:`etrans.domain.quota.domain_quota`), used by POST /emails and by
GET /domains/{id}/quota and current-pack: which source wins, and how missing windows derive."""

from __future__ import annotations

from etrans.domain.quota import (
    MktLimits,
    PackLimits,
    QuotaFacts,
    QuotaLimits,
    domain_limit,
    domain_quota,
    pack_code_for,
)

FREE = PackLimits("FREE", "Free", 100)
SMALL = PackLimits("SMALL", "Small", 48, hourly=5)
BIG = PackLimits("BIG", "Big", 2400, monthly=1000)
CATALOGUE = {p.pack_code: p for p in (FREE, SMALL, BIG)}


def facts(*, mkt: MktLimits | None = None, sub: str | None = None, user: str | None = None,
          packs: dict[str, PackLimits] | None = None) -> QuotaFacts:
    return QuotaFacts(mkt=mkt, subscription_pack=sub, user_pack=user,
                      packs=CATALOGUE if packs is None else packs)


def test_pack_precedence_subscription_then_mkt_pack_then_user_pack_then_default():
    assert pack_code_for(facts(mkt=MktLimits(pack_code="BIG"), sub="SMALL", user="BIG")) == "SMALL"
    assert pack_code_for(facts(mkt=MktLimits(pack_code="BIG"), user="SMALL")) == "BIG"
    assert pack_code_for(facts(mkt=MktLimits(), user="SMALL")) == "SMALL"
    assert pack_code_for(facts()) == "FREE"
    assert pack_code_for(facts(), "OTHER") == "OTHER"


def test_no_source_is_the_default_pack():
    quota = domain_quota(facts())
    assert quota.limits == QuotaLimits(daily=100, hourly=4, monthly=3100)
    assert (quota.pack_code, quota.pack_name) == ("FREE", "Free")


def test_pack_values_win_over_derivation():
    assert domain_quota(facts(sub="SMALL")).limits == QuotaLimits(48, 5, 48 * 31)
    assert domain_quota(facts(user="BIG")).limits == QuotaLimits(2400, 100, 1000)


def test_mkt_limits_win_over_any_pack():
    quota = domain_quota(facts(mkt=MktLimits(pack_code="BIG", daily=10), sub="SMALL"))
    # daily from mkt_domain, hourly/monthly derived from it (not the pack's hourly of 5)
    assert quota.limits == QuotaLimits(10, 1, 310)
    assert quota.pack_code == "SMALL"
    quota = domain_quota(facts(mkt=MktLimits(daily=500, hourly=50, monthly=7)))
    assert quota.limits == QuotaLimits(500, 50, 7)


def test_mkt_window_without_daily_overrides_only_that_window():
    quota = domain_quota(facts(mkt=MktLimits(hourly=3), user="BIG"))
    assert quota.limits == QuotaLimits(2400, 3, 1000)


def test_no_pack_row_is_unlimited_except_mkt_values():
    quota = domain_quota(facts(mkt=MktLimits(pack_code="GONE", pack_name="Gone", hourly=9),
                               packs={}))
    assert quota.limits == QuotaLimits(daily=None, hourly=9, monthly=None)
    assert (quota.pack_code, quota.pack_name) == ("GONE", "Gone")
    assert domain_quota(facts(packs={})).limits == QuotaLimits()


def test_domain_limit_is_the_largest_subscribed_pack_else_the_user_level_pack():
    assert domain_limit({"PRO": 5, "PAYG": 3}, ("FREE", 1), 1) == (5, "PRO")
    assert domain_limit({"B": 3, "A": 3}, None, 1) == (3, "A")  # a tie: the first code
    assert domain_limit({}, ("FREE", 2), 1) == (2, "FREE")
    assert domain_limit({}, None, 1) == (1, None)  # not even the default pack is known
