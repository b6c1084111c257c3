"""Sending quota arithmetic: windows, limits, remaining.  Counting itself is atomic in Redis
(:mod:`etrans.adapters.redis.quota`); this module only says which windows and what they allow.

The one place of the pack rules: :func:`domain_quota` (a domain's sending limits, enforced by
POST /emails and shown by GET /domains/{id}/quota and current-pack) and :func:`domain_limit` (how
many domains a user may hold, enforced by POST /domains and shown by current-pack).

Windows are UTC calendar hours, days and months: an hourly limit of 50 admits 50 emails between
10:00:00 and 10:59:59 UTC.  A limit of ``None`` means unlimited.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping


@dataclass(frozen=True)
class QuotaLimits:
    daily: int | None = None
    hourly: int | None = None
    monthly: int | None = None


@dataclass(frozen=True)
class QuotaWindows:
    """Window identifiers and how long their counters must live (seconds, with a margin)."""

    hour: str
    day: str
    month: str
    hour_ttl: int
    day_ttl: int
    month_ttl: int


@dataclass(frozen=True)
class QuotaUsage:
    daily: int
    hourly: int
    monthly: int


def windows(now: datetime) -> QuotaWindows:
    now = now.astimezone(UTC)
    return QuotaWindows(
        hour=now.strftime("%Y%m%d%H"), day=now.strftime("%Y%m%d"), month=now.strftime("%Y%m"),
        hour_ttl=2 * 3600, day_ttl=2 * 86400, month_ttl=33 * 86400,
    )


def remaining(limit: int | None, used: int) -> int | None:
    if limit is None:
        return None
    return max(0, limit - used)


def hourly_from_daily(daily: int) -> int:
    """The spec's derivation when only a daily figure is known (100000/day -> 4166/hour); at
    least 1 for a positive daily limit, so a small daily limit does not forbid sending."""
    return max(1, daily // 24) if daily > 0 else 0


def monthly_from_daily(daily: int) -> int:
    return daily * 31


_PERIOD = {"hourly": "hour", "daily": "day", "monthly": "month"}


def exceeded_message(window: str, limit: int) -> str:
    """``("hourly", 50)`` -> "Hourly sending quota exceeded: the limit is 50 emails per hour"."""
    return (f"{window.capitalize()} sending quota exceeded: the limit is {limit} emails per "
            f"{_PERIOD.get(window, window)}")


# -- which limits apply to a domain ---------------------------------------------------------------

DEFAULT_PACK_CODE = "FREE"


@dataclass(frozen=True)
class PackLimits:
    """A row of the pack catalogue, as far as limits go (hourly/monthly None = derived)."""

    pack_code: str
    pack_name: str
    daily: int
    hourly: int | None = None
    monthly: int | None = None


@dataclass(frozen=True)
class MktLimits:
    """The domain's ``mkt_domain`` row (Billing DB, or ``local_mkt_domain``): None = not set."""

    pack_code: str | None = None
    pack_name: str | None = None
    daily: int | None = None
    hourly: int | None = None
    monthly: int | None = None


@dataclass(frozen=True)
class QuotaFacts:
    """What the quota rule needs to know about one domain, looked up in one go
    (:meth:`etrans.adapters.sql.subscriptions_repo.SqlSubscriptions.quota_facts`)."""

    mkt: MktLimits | None
    subscription_pack: str | None  # pack code of the domain's active subscription
    user_pack: str | None  # pack code of the user-level pack (``user_pack``)
    packs: dict[str, PackLimits]  # the catalogue rows of the candidate codes that exist


@dataclass(frozen=True)
class DomainQuota:
    limits: QuotaLimits
    pack_code: str | None
    pack_name: str | None


def pack_code_for(facts: QuotaFacts, default_pack_code: str = DEFAULT_PACK_CODE) -> str:
    """The domain's pack: its active subscription, else ``mkt_domain.pack_code``, else the
    user-level pack, else the default pack."""
    mkt_code = facts.mkt.pack_code if facts.mkt is not None else None
    return facts.subscription_pack or mkt_code or facts.user_pack or default_pack_code


def domain_quota(facts: QuotaFacts, default_pack_code: str = DEFAULT_PACK_CODE) -> DomainQuota:
    """THE quota rule, used by POST /emails (enforcing) and by GET /domains/{id}/quota and
    current-pack (showing).  Per window:

    1. the ``mkt_domain`` value when set;
    2. else, when ``mkt_domain.daily_limit`` is set, derived from it (hourly = daily / 24,
       monthly = daily x 31);
    3. else the pack's value (:func:`pack_code_for`), derived from the pack's daily limit when
       the pack does not give it;
    4. no ``mkt_domain`` limit and no pack row (the default pack missing from the catalogue):
       unlimited (None).
    """
    mkt = facts.mkt or MktLimits()
    code = pack_code_for(facts, default_pack_code)
    pack = facts.packs.get(code)
    base: QuotaLimits
    if mkt.daily is not None:
        base = QuotaLimits(daily=mkt.daily, hourly=hourly_from_daily(mkt.daily),
                           monthly=monthly_from_daily(mkt.daily))
    elif pack is not None:
        base = QuotaLimits(
            daily=pack.daily,
            hourly=pack.hourly if pack.hourly is not None else hourly_from_daily(pack.daily),
            monthly=pack.monthly if pack.monthly is not None else monthly_from_daily(pack.daily))
    else:
        base = QuotaLimits()
    limits = QuotaLimits(
        daily=base.daily,
        hourly=mkt.hourly if mkt.hourly is not None else base.hourly,
        monthly=mkt.monthly if mkt.monthly is not None else base.monthly,
    )
    if pack is not None:
        return DomainQuota(limits, pack.pack_code, pack.pack_name)
    # The chosen code names no catalogue row (a pack the billing system knows and we do not).
    return DomainQuota(limits, code, mkt.pack_name if mkt.pack_code == code else None)


def domain_limit(subscribed: Mapping[str, int], user_level: tuple[str, int] | None,
                 fallback: int) -> tuple[int, str | None]:
    """How many live domains a user may hold, and the pack that says so: the largest
    ``domain_limit`` among the packs of the user's active subscriptions (``subscribed``: pack
    code -> its domain limit; a tie goes to the first code in order), else that of the
    user-level pack (``user_level``: ``user_pack``, else the default pack; None when that pack
    is not in the catalogue), else ``fallback``."""
    if subscribed:
        code = max(sorted(subscribed), key=lambda c: subscribed[c])
        return subscribed[code], code
    if user_level is not None:
        code, limit = user_level
        return limit, code
    return fallback, None
