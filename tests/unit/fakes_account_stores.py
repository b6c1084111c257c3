"""In-memory fakes of the USEND DB's account ports (:mod:`etrans.app.account_ports`): the pack
catalogue, subscriptions, senders, domain settings and API keys, each with the behaviour of its
SQL adapter (``etrans/adapters/sql/*_repo.py``) that the use cases rely on; the contract suite
``tests/contract/test_account_repos_contract.py`` runs them beside PostgreSQL and SQLite.
Assembled with the other fakes by :class:`tests.unit.fakes_accounts.AccountWorld`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import trio

from etrans.app.account_records import ApiKey, Pack, Sender, Subscription
from etrans.domain.quota import PackLimits, QuotaFacts

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from etrans.domain.quota import MktLimits


def pack(code: str, *, domain_limit: int = 1, daily: int = 100, price: float = 0.0,
         payg: bool = False, active: bool = True) -> Pack:
    return Pack(pack_code=code, pack_name=f"{code} pack", pack_type="payg" if payg else "monthly",
                daily_email_limit=daily, hourly_email_limit=None, monthly_email_limit=None,
                domain_limit=domain_limit, price=price, is_active=active, is_payg=payg,
                pricing={"per_email": 0.001} if payg else None)


CATALOGUE = (pack("FREE", domain_limit=1, daily=100), pack("PRO", domain_limit=5, daily=10_000,
                                                           price=20.0),
             pack("PAYG", domain_limit=3, daily=50_000, payg=True))

async def _checkpoint() -> None:
    await trio.lowlevel.checkpoint()


class FakePackCatalogue:
    def __init__(self, packs: tuple[Pack, ...] = CATALOGUE) -> None:
        self.by_code = {p.pack_code: p for p in packs}

    async def packs(self) -> list[Pack]:
        await _checkpoint()
        return sorted((p for p in self.by_code.values() if p.is_active),
                      key=lambda p: (p.price, p.pack_code))

    async def pack(self, pack_code: str) -> Pack | None:
        await _checkpoint()
        return self.by_code.get(pack_code)

    async def payg_pack(self) -> Pack | None:
        await _checkpoint()
        return next((p for p in self.by_code.values() if p.is_payg and p.is_active), None)


@dataclass
class FakeSubscriptions:
    """SubscriptionRepository: rows in a list (at most one active per domain), user packs in a
    dict, the billing events queued in ``events`` (the outbox)."""

    catalogue: FakePackCatalogue
    clock: Callable[[], datetime]
    rows: list[tuple[int, Subscription]] = field(default_factory=list)  # (user id, row)
    user_packs: dict[int, str] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)

    def _active(self, domain_id: int) -> list[tuple[int, Subscription]]:
        return [(u, s) for u, s in self.rows if s.domain_id == domain_id and s.status == "active"]

    async def active(self, user_id: int, domain_id: int,
                     kind: str | None = None) -> Subscription | None:
        await _checkpoint()
        return next((s for u, s in self._active(domain_id)
                     if u == user_id and (kind is None or s.kind == kind)), None)

    async def active_pack_codes(self, user_id: int) -> list[str]:
        await _checkpoint()
        return [s.pack_code for u, s in self.rows if u == user_id and s.status == "active"]

    async def user_pack_code(self, user_id: int) -> str | None:
        await _checkpoint()
        return self.user_packs.get(user_id)

    async def quota_facts(self, user_id: int, domain_id: int | None, mkt: MktLimits | None,
                          default_pack_code: str) -> QuotaFacts:
        sub = None if domain_id is None else await self.active(user_id, domain_id)
        user = self.user_packs.get(user_id)
        codes = {default_pack_code, mkt.pack_code if mkt else None,
                 sub.pack_code if sub else None, user}
        packs = {c: PackLimits(c, p.pack_name, p.daily_email_limit, p.hourly_email_limit,
                               p.monthly_email_limit)
                 for c in codes if c and (p := self.catalogue.by_code.get(c)) is not None}
        return QuotaFacts(mkt=mkt, subscription_pack=sub.pack_code if sub else None,
                          user_pack=user, packs=packs)

    async def replace(self, *, user_id: int, domain_id: int, pack_code: str, kind: str,
                      external_id: str | None = None, event: str | None = None) -> str | None:
        await _checkpoint()
        return self._replace(user_id, domain_id, pack_code, kind, event)

    def _replace(self, user_id: int, domain_id: int, pack_code: str, kind: str,
                 event: str | None) -> str | None:
        previous = None
        for i, (u, s) in enumerate(self.rows):
            if s.domain_id == domain_id and s.status == "active":
                previous = s.pack_code
                self.rows[i] = (u, replace(s, status="cancelled"))
        self.rows.append((user_id, Subscription(
            id=len(self.rows) + 1, domain_id=domain_id, pack_code=pack_code, kind=kind,
            status="active", previous_pack_code=previous, started_at=self.clock())))
        if event is not None:
            self.events.append({"event": event, "user_id": user_id, "domain_id": domain_id,
                                "pack_code": pack_code, "previous_pack_code": previous})
        return previous

    async def cancel(self, user_id: int, domain_id: int, kind: str,
                     event: str | None = None) -> bool:
        await _checkpoint()
        cancelled = [(i, s) for i, (u, s) in enumerate(self.rows) if u == user_id
                     and s.domain_id == domain_id and s.status == "active" and s.kind == kind]
        for i, s in cancelled:
            self.rows[i] = (user_id, replace(s, status="cancelled"))
        if cancelled and event is not None:
            self.events.append({"event": event, "user_id": user_id, "domain_id": domain_id,
                                "pack_code": None,
                                "previous_pack_code": cancelled[0][1].pack_code})
        return bool(cancelled)

    async def assign_for_testing(self, user_id: int, domain_ids: list[int],
                                 pack_code: str) -> int:
        await _checkpoint()
        self.user_packs[user_id] = pack_code
        for domain_id in domain_ids:
            self._replace(user_id, domain_id, pack_code, "subscription", None)
        return len(domain_ids)


@dataclass
class FakeSenders:
    """SenderRepository: ``rows`` with their sealed credentials (account unique)."""

    clock: Callable[[], datetime]
    rows: list[tuple[Sender, int, str]] = field(default_factory=list)  # (row, domain id, value)

    async def exists(self, account: str) -> bool:
        await _checkpoint()
        return any(s.account == account for s, _, _ in self.rows)

    async def create(self, *, user_id: int, domain_id: int, domain: str, account: str,
                     password_encrypted: str, daily_limit: int, hourly_limit: int
                     ) -> Sender | None:
        if await self.exists(account):
            return None
        row = Sender(id=len(self.rows) + 1, user_id=user_id, account=account, domain=domain,
                     active=True, daily_limit=daily_limit, hourly_limit=hourly_limit,
                     created_at=self.clock())
        self.rows.append((row, domain_id, password_encrypted))
        return row


@dataclass
class FakeDomainSettings:
    """DomainSettings: tracking per (user, domain); ``forget_domain`` deactivates the domain's
    senders and ends its subscriptions (the other fakes)."""

    senders: FakeSenders
    subscriptions: FakeSubscriptions
    tracking_rows: dict[tuple[int, int], tuple[bool, bool]] = field(default_factory=dict)

    async def tracking(self, user_id: int, domain_id: int) -> tuple[bool, bool]:
        await _checkpoint()
        return self.tracking_rows.get((user_id, domain_id), (False, False))

    async def set_tracking(self, user_id: int, domain_id: int, click: bool | None,
                           open_: bool | None) -> tuple[bool, bool]:
        was_click, was_open = await self.tracking(user_id, domain_id)
        now = (was_click if click is None else click, was_open if open_ is None else open_)
        self.tracking_rows[(user_id, domain_id)] = now
        return now

    async def forget_domain(self, user_id: int, domain_id: int, name: str) -> list[str]:
        await _checkpoint()
        self.tracking_rows.pop((user_id, domain_id), None)
        values = []
        for i, (s, d, value) in enumerate(self.senders.rows):
            if s.user_id == user_id and s.active and (d == domain_id or s.domain == name):
                self.senders.rows[i] = (replace(s, active=False), d, value)
                values.append(value)
        for i, (u, s) in enumerate(self.subscriptions.rows):
            if u == user_id and s.domain_id == domain_id and s.status == "active":
                self.subscriptions.rows[i] = (u, replace(s, status="cancelled"))
        return values


@dataclass
class FakeApiKeys:
    """ApiKeyRepository: rows by id with who created each; deleted ones stay in ``deleted``."""

    clock: Callable[[], datetime]
    rows: dict[int, tuple[ApiKey, int | None]] = field(default_factory=dict)  # id -> (row, by)
    deleted: set[int] = field(default_factory=set)

    def _live(self, user_id: int, key_id: int) -> ApiKey | None:
        found = self.rows.get(key_id)
        if found is None or found[0].user_id != user_id or key_id in self.deleted:
            return None
        return found[0]

    async def create(self, *, user_id: int, name: str, key_hash: str, key_prefix: str,
                     permission: str, expires_at: datetime | None,
                     created_by_key_id: int | None = None) -> ApiKey | None:
        await _checkpoint()
        if created_by_key_id is not None and self._live(user_id, created_by_key_id) is None:
            return None
        row = ApiKey(id=len(self.rows) + 1, user_id=user_id, name=name, key_hash=key_hash,
                     permission=permission, expires_at=expires_at, active=True,
                     created_at=self.clock(), updated_at=self.clock())
        self.rows[row.id] = (row, created_by_key_id)
        return row

    async def page(self, user_id: int, *, page: int, per_page: int
                   ) -> tuple[list[ApiKey], int]:
        await _checkpoint()
        mine = [r for i, (r, _) in sorted(self.rows.items(), reverse=True)
                if self._live(user_id, i) is not None]
        return mine[(page - 1) * per_page:page * per_page], len(mine)

    async def get(self, user_id: int, key_id: int) -> ApiKey | None:
        await _checkpoint()
        return self._live(user_id, key_id)

    async def delete(self, user_id: int, key_id: int) -> list[str] | None:
        await _checkpoint()
        root = self._live(user_id, key_id)
        if root is None:
            return None
        gone, hashes, frontier = {key_id}, [root.key_hash], [key_id]
        while frontier:
            parent = frontier.pop()
            for i, (row, by) in sorted(self.rows.items()):
                if by == parent and i not in gone and self._live(user_id, i) is not None:
                    gone.add(i)
                    hashes.append(row.key_hash)
                    frontier.append(i)
        self.deleted |= gone
        return hashes
