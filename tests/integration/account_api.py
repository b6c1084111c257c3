"""Builds the API (account routes: domains, API keys, senders, suppressions, billing; + the auth
layer) against real PostgreSQL, Redis and the loopback DNS server, in the ``local`` billing mode
unless told otherwise. A pytest plugin-free helper: tests open :func:`open_api` in their own
fixtures."""

from __future__ import annotations

import secrets
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jwt
import pytest

from etrans.adapters.crypto.credentials import CredentialCipher
from etrans.adapters.crypto.dkim_keys import DkimKeyCipher, RsaDkimKeys
from etrans.adapters.crypto.webhook_secrets import WebhookSecretCipher
from etrans.adapters.dns.addresses import DnsHostResolver
from etrans.adapters.dns.verify import DnsVerifier
from etrans.adapters.redis.api_key_cache import RedisApiKeyCache
from etrans.adapters.redis.client import TrioRedis, open_redis
from etrans.adapters.redis.credential_cache import RedisCredentialCache
from etrans.adapters.redis.idempotency import RedisIdempotencyStore
from etrans.adapters.redis.quota import RedisQuota
from etrans.adapters.sql import Database, make_engine
from etrans.adapters.sql.api_keys_repo import SqlApiKeys
from etrans.adapters.sql.billing_events import BillingEventOutbox
from etrans.adapters.sql.billing_local import LocalBillingGateway
from etrans.adapters.sql.domain_settings_repo import SqlDomainSettings
from etrans.adapters.sql.domains_repo import BillingTables, SqlDomains
from etrans.adapters.sql.packs_repo import SqlPackCatalogue
from etrans.adapters.sql.senders_repo import SqlSenders
from etrans.adapters.sql.subscriptions_repo import SqlSubscriptions
from etrans.adapters.sql.suppressions_repo import PgSuppressionStore
from etrans.adapters.sql.usend_repo import UsendRepository
from etrans.adapters.sql.webhooks_repo import SqlWebhooks
from etrans.api import (
    routes_api_keys,
    routes_billing,
    routes_domains,
    routes_senders,
    routes_suppressions,
    routes_testing,
    routes_webhooks,
)
from etrans.api.app import ApiDependencies, create_app
from etrans.api.auth import ApiKeyResolver, Authenticator, JwtVerifier
from etrans.api.routing import ApiServices
from etrans.app import accounts, suppressions, webhooks
from etrans.app.accounts import AccountDeps
from etrans.app.bus import MessageBus
from etrans.domain.domains import DnsTemplate

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

JWT_SECRET = "test-jwt-secret-" + "x" * 32
TOKEN_SECRET = "0123456789abcdef0123456789abcdef"
TOKEN_IV = "abcdef9876543210"
SPF = "v=spf1 include:_spf.etrans.test ~all"
MX = "mx.etrans.test"
ROUTERS = [routes_domains.register, routes_api_keys.register, routes_senders.register,
           routes_suppressions.register, routes_billing.register, routes_testing.register,
           routes_webhooks.register]


def new_user_id() -> int:
    return secrets.randbelow(2**40) + 10**6


def new_domain_name() -> str:
    return f"d{uuid.uuid4().hex[:12]}.example"


@dataclass
class ApiUnderTest:
    app: Any
    client: Any
    services: AccountDeps
    redis: TrioRedis
    usend: Database

    @staticmethod
    def bearer(user_id: int, *, ttl: int = 600) -> dict[str, str]:
        token = jwt.encode({"sub": str(user_id), "exp": int(time.time()) + ttl}, JWT_SECRET,
                           algorithm="HS256")
        return {"Authorization": f"Bearer {token}"}

    async def call(self, method: str, path: str, user: int | dict[str, str] | None = None,
                   json: Any = None, **kw: Any) -> tuple[int, Any]:
        headers = self.bearer(user) if isinstance(user, int) else (user or {})
        response = await self.client.open(path, method=method, json=json, headers=headers, **kw)
        return response.status_code, await response.get_json()


@asynccontextmanager
async def open_api(*, usend_db_url: str, redis_url: str, **options: Any
                   ) -> AsyncIterator[ApiUnderTest]:
    """:func:`build_api` on a Redis client of its own; the USEND DB engine is disposed on exit."""
    async with open_redis(redis_url) as redis:
        built = build_api(usend_db_url=usend_db_url, redis=redis, **options)
        try:
            yield built
        finally:
            built.usend.dispose()


def build_api(*, usend_db_url: str, redis: TrioRedis, dns_address: str,
              billing: Any = None, billing_topic: str | None = None,
              testing_routes: bool = True,
              reader_db: Database | None = None, tables: BillingTables | None = None,
              webhooks_allow_private_urls: bool = False, max_webhooks: int = 20
              ) -> ApiUnderTest:
    usend = Database(make_engine(usend_db_url, pool_size=5), name="usend_db")
    # Ids restart at 1 in every session's fresh database: Redis keys get a prefix of their own.
    prefix = f"t2:{uuid.uuid4().hex[:12]}:"
    key_cache = RedisApiKeyCache(redis, prefix=f"{prefix}apikey:")
    services = AccountDeps(
        domains=SqlDomains(reader_db or usend, tables or BillingTables.local()),
        packs=SqlPackCatalogue(usend),
        subscriptions=SqlSubscriptions(usend, BillingEventOutbox(billing_topic)),
        domain_settings=SqlDomainSettings(usend),
        api_keys=SqlApiKeys(usend),
        senders=SqlSenders(usend),
        billing=billing or LocalBillingGateway(usend, DkimKeyCipher(TOKEN_SECRET)),
        verifier=DnsVerifier(spf_value=SPF, mx_host=MX, nameservers=[dns_address],
                             timeout_seconds=1.0, lifetime_seconds=2.0),
        dkim_keys=RsaDkimKeys(),
        sealer=CredentialCipher(TOKEN_SECRET, TOKEN_IV),
        template=DnsTemplate(spf_value=SPF, mx_host=MX, mx_priority=5),
        quota=RedisQuota(redis, prefix=f"{prefix}quota:"),
        api_key_cache=key_cache,
        credential_cache=RedisCredentialCache(redis, memo_seconds=0),
    )
    bus = MessageBus()
    accounts.register(bus, services)
    suppressions.register(bus, suppressions.SuppressionDeps(PgSuppressionStore(usend)))
    webhooks.register(bus, webhooks.WebhookDeps(
        store=SqlWebhooks(usend), sealer=WebhookSecretCipher(TOKEN_SECRET),
        resolver=DnsHostResolver(nameservers=[dns_address], timeout_seconds=1.0,
                                 lifetime_seconds=2.0),
        allow_private_urls=webhooks_allow_private_urls, max_per_user=max_webhooks))
    repo = UsendRepository(usend)
    authenticator = Authenticator(ApiKeyResolver(repo, key_cache),
                                  jwt=JwtVerifier(secret=JWT_SECRET))
    # The account routes use the bus only; Idempotency-Key is POST /emails' (not routed here).
    api_services = ApiServices(bus=bus, testing_routes=testing_routes,
                               idempotency=RedisIdempotencyStore(redis, prefix=f"{prefix}idem:"))
    app = create_app(ApiDependencies(authenticator=authenticator, services=api_services,
                                     routers=ROUTERS))
    return ApiUnderTest(app=app, client=app.test_client(), services=services, redis=redis,
                        usend=usend)


@pytest.fixture
async def api(usend_db_url, redis_url, dns_server):
    """The account API in the local billing mode (import this fixture into a test module)."""
    async with open_api(usend_db_url=usend_db_url, redis_url=redis_url,
                        dns_address=dns_server.address) as built:
        yield built


async def create_domain(api: ApiUnderTest, user: int, name: str | None = None) -> dict[str, Any]:
    status, body = await api.call("POST", "/domains", user,
                                  json={"domain": name or new_domain_name()})
    assert status == 200, body
    return body
