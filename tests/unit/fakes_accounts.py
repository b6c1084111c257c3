"""In-memory fakes of the ports the account use cases depend on (:mod:`etrans.app.account_ports`,
and ``BillingGateway`` / ``DomainVerifier`` of :mod:`etrans.app.ports`): the domains, the billing
gateway, DNS and keys here, the USEND DB's stores in :mod:`tests.unit.fakes_account_stores`.

Each implements the same Protocol as the SQL adapter (``etrans/adapters/sql/*_repo.py``), with
the behaviour the use cases rely on: tenant isolation by ``user_id``, soft deletes, a key deleted
with the keys it created, one active subscription per domain, unique sender accounts, the local
billing gateway's atomic domain limit.  The shared ones (quota counters, API key cache,
credential cache, the send path's domain cache, the outbox notifier) are :mod:`tests.unit.
fakes_sending`'s.

:class:`AccountWorld` holds one test's fakes and the :class:`~etrans.app.bus.MessageBus` built on
them with :func:`etrans.app.accounts.register`, as the bootstrap does with the real adapters.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import trio

from etrans.app import accounts
from etrans.app.account_records import DomainRow, Pack
from etrans.app.accounts import AccountDeps
from etrans.app.bus import MessageBus
from etrans.domain.domains import (
    DkimKeyPair,
    DkimRecord,
    DnsTemplate,
    DnsVerification,
    RecordCheck,
    domain_limit_message,
)
from etrans.domain.quota import MktLimits
from etrans.errors import InvalidInput, NotFound
from tests.unit.fakes_account_stores import (
    CATALOGUE,
    FakeApiKeys,
    FakeDomainSettings,
    FakePackCatalogue,
    FakeSenders,
    FakeSubscriptions,
)
from tests.unit.fakes_sending import (
    FakeApiKeyCache,
    FakeCredentialCache,
    FakeOutboxNotifier,
    FakeQuota,
    FakeSendingDomains,
)

if TYPE_CHECKING:
    from collections.abc import Callable

NOW = datetime(2026, 3, 10, 14, 30, tzinfo=UTC)
TEMPLATE = DnsTemplate(spf_value="v=spf1 include:_spf.etrans.test ~all", mx_host="mx.etrans.test",
                       mx_priority=5)


async def _checkpoint() -> None:
    await trio.lowlevel.checkpoint()


class FakeDomains:
    """DomainRepository over ``rows`` (id -> DomainRow, deleted ones kept with ``deleted``)."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self.rows: dict[int, DomainRow] = {}
        self.deleted: set[int] = set()
        self.mkt: dict[int, MktLimits] = {}
        self.clock = clock

    def add(self, user_id: int, name: str, *, status: str = "pending",
            dkim_public_key: str | None = "PUB", verified_at: datetime | None = None) -> DomainRow:
        row = DomainRow(id=len(self.rows) + 1, user_id=user_id, name=name, status=status,
                        created_at=self.clock(), verified_at=verified_at,
                        dkim_selector="dkim" if dkim_public_key else None,
                        dkim_public_key=dkim_public_key)
        self.rows[row.id] = row
        return row

    def live(self) -> list[DomainRow]:
        return [r for i, r in sorted(self.rows.items()) if i not in self.deleted]

    async def get(self, user_id: int, domain_id: int) -> DomainRow | None:
        await _checkpoint()
        row = self.rows.get(domain_id)
        ok = row is not None and row.user_id == user_id and domain_id not in self.deleted
        return row if ok else None

    async def find_live_by_name(self, name: str) -> DomainRow | None:
        await _checkpoint()
        return next((r for r in self.live() if r.name == name), None)

    async def verified_by_another(self, user_id: int, name: str) -> bool:
        await _checkpoint()
        return any(r.name == name and r.user_id != user_id and r.verified for r in self.live())

    async def count(self, user_id: int) -> int:
        return len(await self.all_for_user(user_id))

    async def page(self, user_id: int, *, page: int, per_page: int, search: str
                   ) -> tuple[list[DomainRow], int, int]:
        mine = [r for r in await self.all_for_user(user_id) if search in r.name]
        newest_first = sorted(mine, key=lambda r: (r.created_at or NOW, r.id), reverse=True)
        start = (page - 1) * per_page
        return (newest_first[start:start + per_page], len(mine),
                sum(1 for r in mine if r.verified))

    async def all_for_user(self, user_id: int) -> list[DomainRow]:
        await _checkpoint()
        return [r for r in self.live() if r.user_id == user_id]

    async def mkt_limits(self, domain_id: int) -> MktLimits | None:
        await _checkpoint()
        return self.mkt.get(domain_id)


class FakeBillingGateway:
    """BillingGateway writing ``FakeDomains`` as the local gateway writes its tables: the domain
    limit checked atomically with the insert; ``refuse`` makes every call raise it."""

    mode = "local"

    def __init__(self, domains: FakeDomains) -> None:
        self.domains = domains
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.refuse: Exception | None = None
        self.private_keys: dict[int, bytes] = {}

    async def _call(self, call: str, **args: Any) -> None:
        await _checkpoint()
        if self.refuse is not None:
            raise self.refuse
        self.calls.append((call, args))

    async def create_domain(self, *, user_id: int, name: str, dkim_selector: str,
                            dkim_public_key: str, dkim_private_key_pem: bytes,
                            max_domains: int | None = None) -> int:
        await self._call("create_domain", user_id=user_id, name=name)
        if max_domains is not None and len(await self.domains.all_for_user(user_id)) \
                >= max_domains:
            raise InvalidInput(domain_limit_message(max_domains))
        row = self.domains.add(user_id, name, dkim_public_key=dkim_public_key)
        self.private_keys[row.id] = dkim_private_key_pem
        return row.id

    async def delete_domain(self, *, user_id: int, domain_id: int) -> None:
        await self._call("delete_domain", user_id=user_id, domain_id=domain_id)
        if await self.domains.get(user_id, domain_id) is None:
            raise NotFound("Domain not found")
        self.domains.deleted.add(domain_id)

    async def mark_domain_verified(self, *, user_id: int, domain_id: int,
                                   verified_at: datetime) -> None:
        await self._call("mark_domain_verified", user_id=user_id, domain_id=domain_id)
        row = self.domains.rows[domain_id]
        self.domains.rows[domain_id] = replace(row, status="verified", verified_at=verified_at)

    async def create_subscription(self, *, user_id: int, domain_id: int, pack_code: str,
                                  pack_name: str, price: float) -> str | None:
        await self._call("create_subscription", user_id=user_id, domain_id=domain_id,
                         pack_code=pack_code, price=price)
        return f"ext-{domain_id}-{pack_code}"

    async def create_payg_subscription(self, *, user_id: int, domain_id: int, pack_code: str,
                                       pack_name: str) -> str | None:
        await self._call("create_payg_subscription", user_id=user_id, domain_id=domain_id)
        return None

    async def cancel_payg_subscription(self, *, user_id: int, domain_id: int) -> None:
        await self._call("cancel_payg_subscription", user_id=user_id, domain_id=domain_id)


@dataclass
class FakeVerifier:
    """DomainVerifier: every record found, unless ``missing`` names it ("spf", "mx", "dkim")."""

    missing: set[str] = field(default_factory=set)
    asked: list[tuple[str, DkimRecord]] = field(default_factory=list)

    async def verify(self, domain: str, dkim: DkimRecord) -> DnsVerification:
        await _checkpoint()
        self.asked.append((domain, dkim))

        def check(kind: str) -> RecordCheck:
            return RecordCheck(False, f"no {kind} record") if kind in self.missing else \
                RecordCheck(True)

        return DnsVerification(spf=check("spf"), mx=check("mx"), dkim=check("dkim"))


@dataclass
class FakeDkimKeys:
    made: int = 0

    async def generate(self) -> DkimKeyPair:
        await _checkpoint()
        self.made += 1
        return DkimKeyPair(DkimRecord("dkim", f"PUBKEY{self.made}"), b"PEM")


class FakeSealer:
    """CredentialSealer: a readable stand-in for AES (the wire format is tested elsewhere)."""

    def seal(self, username: str, password: str) -> str:
        return f"sealed({username}:{password})"


class AccountWorld:
    """The fakes of one test and the bus with the account use cases on them."""

    def __init__(self, *, packs: tuple[Pack, ...] = CATALOGUE, **options: Any) -> None:
        self.now = NOW
        clock = self.clock
        self.domains = FakeDomains(clock)
        self.billing = FakeBillingGateway(self.domains)
        self.packs = FakePackCatalogue(packs)
        self.subscriptions = FakeSubscriptions(self.packs, clock)
        self.senders = FakeSenders(clock)
        self.settings = FakeDomainSettings(self.senders, self.subscriptions)
        self.api_keys = FakeApiKeys(clock)
        self.verifier = FakeVerifier()
        self.quota = FakeQuota()
        self.key_cache = FakeApiKeyCache()
        self.credential_cache = FakeCredentialCache()
        self.sending_domains = FakeSendingDomains()
        self.outbox = FakeOutboxNotifier()
        self.deps = AccountDeps(
            domains=self.domains, packs=self.packs, subscriptions=self.subscriptions,
            domain_settings=self.settings, api_keys=self.api_keys, senders=self.senders,
            billing=self.billing, verifier=self.verifier, dkim_keys=FakeDkimKeys(),
            sealer=FakeSealer(), template=TEMPLATE, quota=self.quota,
            api_key_cache=self.key_cache, credential_cache=self.credential_cache,
            sending_domains=self.sending_domains, outbox=self.outbox, clock=clock, **options)
        self.bus = MessageBus()
        accounts.register(self.bus, self.deps)

    def clock(self) -> datetime:
        return self.now

    async def handle(self, command: Any) -> Any:
        return await self.bus.handle(command)
