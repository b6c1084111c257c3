"""ONE quota rule for sending and showing: for a domain whose limits come from each source
(``mkt_domain``, the active subscription's pack, the user-level pack, none = the default pack),
GET /domains/{id}/quota shows a limit and POST /emails accepts exactly that many emails, then
answers 400.  The whole API (parts 1 and 2) is wired by ``bootstrap`` as ``etrans serve`` wires
it, in the local billing mode, against real PostgreSQL and Redis."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import insert, update
from sqlalchemy.orm import Session

from etrans import settings
from etrans.adapters.mongo.log_reader import MongoLogReader
from etrans.adapters.mongo.store import MongoStore
from etrans.adapters.redis.client import TrioRedis, open_redis
from etrans.adapters.sql import usend_database
from etrans.adapters.sql.usend import EmailTransactionPack, LocalDomain, LocalMktDomain
from etrans.adapters.sql.usend_repo import UsendRepository
from etrans.api.app import ApiDependencies, create_app
from etrans.bootstrap.api import ApiBackends, ApiSections, api_services, authenticator
from etrans.bootstrap.stores import redis_api_stores
from tests.integration.sending_api import JWT_SECRET, SendingApi, new_user_id


class FullApi:
    def __init__(self, conf: Any, redis: TrioRedis) -> None:
        self.usend = usend_database(conf.databases.usend_uri.get(), pool_size=10)
        self.redis = redis
        self.mongo = MongoStore(conf.mongo)
        stores = redis_api_stores(redis, prefix=conf.http.redis_prefix,
                                  usend_repo=UsendRepository(self.usend),
                                  log_reader=MongoLogReader(self.mongo))
        sections = ApiSections(http=conf.http, tokens=conf.tokens, kafka=conf.kafka,
                               outbox=conf.outbox)
        self.services = api_services(sections, ApiBackends(usend_db=self.usend, stores=stores))
        self.app = create_app(ApiDependencies(authenticator=authenticator(conf.http, stores),
                                              services=self.services))
        self.client = self.app.test_client()

    async def call(self, method: str, path: str, user: int, json: Any = None
                   ) -> tuple[int, Any]:
        response = await self.client.open(path, method=method, json=json,
                                          headers=SendingApi.bearer(user))
        return response.status_code, await response.get_json()

    def close(self) -> None:
        self.usend.dispose()
        self.mongo.close()

    # -- set-up through the API, plus the rows an operator or billing system would write ----

    def add_pack(self, *, daily: int, hourly: int | None = None, domain_limit: int = 3) -> str:
        code = f"TINY_{uuid.uuid4().hex[:10].upper()}"
        with self.usend.engine.begin() as conn:
            conn.execute(insert(EmailTransactionPack).values(
                pack_code=code, pack_name=f"Tiny {code}", pack_type="shared_ip",
                daily_email_limit=daily, hourly_email_limit=hourly, domain_limit=domain_limit,
                price=Decimal(0), is_active=True, is_payg=False))
        return code

    async def verified_domain_with_sender(self, user: int) -> tuple[str, str]:
        """(public id, name): a domain created through the API, verified (as POST /verify
        would record it), with a sender for SMTP credentials."""
        name = f"q{uuid.uuid4().hex[:12]}.example"
        status, body = await self.call("POST", "/domains", user, json={"domain": name})
        assert status == 200, body
        with self.usend.engine.begin() as conn:
            conn.execute(update(LocalDomain).where(LocalDomain.id == int(body["id"][4:]))
                         .values(status="verified"))
        status, sender = await self.call("POST", "/senders", user, json={
            "account": f"hello@{name}", "domain": name, "password": "quota-rule-pw"})
        assert status == 200, sender
        return body["id"], name

    async def sends_accepted(self, user: int, name: str, attempts: int) -> list[int]:
        statuses = []
        for i in range(attempts):
            status, body = await self.call("POST", "/emails", user, json={
                "from": f"hello@{name}", "to": ["rcpt@example.org"], "subject": f"s{i}",
                "text": "hi"})
            statuses.append(status)
            if status == 400:
                assert "quota exceeded" in body["detail"], body
        return statuses


@pytest.fixture
async def full_api(etrans_env):
    env = etrans_env(JWT_SECRET=JWT_SECRET, BILLING_V4_URI=None,
                     ETRANS_ENABLE_TESTING_ROUTES="true",
                     ETRANS_REDIS_PREFIX=f"qr:{uuid.uuid4().hex[:12]}:")
    conf = settings.for_command("serve", env)
    assert conf.redis is not None
    async with open_redis(conf.redis.url.get()) as redis:
        api = FullApi(conf, redis)
        try:
            yield api
        finally:
            api.close()


async def _check_shown_equals_enforced(api: FullApi, user: int, domain_id: str, name: str,
                                       expected: dict[str, Any]) -> None:
    status, quota = await api.call("GET", f"/domains/{domain_id}/quota", user)
    assert status == 200, quota
    assert {k: quota[k] for k in expected} == expected
    allowed = min(quota["daily_remaining"], quota["hourly_remaining"],
                  quota["monthly_remaining"])
    assert allowed < 20  # small enough to exhaust here
    statuses = await api.sends_accepted(user, name, allowed + 1)
    assert statuses == [200] * allowed + [400]
    quota = (await api.call("GET", f"/domains/{domain_id}/quota", user))[1]
    assert (quota["daily_used"], quota["hourly_used"]) == (allowed, allowed)
    assert min(quota["daily_remaining"], quota["hourly_remaining"]) == 0


async def test_limits_from_mkt_domain(full_api: FullApi) -> None:
    user = new_user_id()
    domain_id, name = await full_api.verified_domain_with_sender(user)
    with Session(full_api.usend.engine) as session, session.begin():
        session.add(LocalMktDomain(domain_id=int(domain_id[4:]), pack_code=None,
                                   pack_name=None, daily_limit=3, hourly_limit=3))
    await _check_shown_equals_enforced(full_api, user, domain_id, name, {
        "daily_limit": 3, "hourly_limit": 3, "monthly_limit": 93, "pack_code": "FREE"})


async def test_limits_from_the_subscription_pack(full_api: FullApi) -> None:
    user = new_user_id()
    code = full_api.add_pack(daily=2, hourly=2)
    domain_id, name = await full_api.verified_domain_with_sender(user)
    status, body = await full_api.call("POST", "/billing/subscription/subs", user,
                                       json={"pack_code": code, "domain_id": int(domain_id[4:])})
    assert status == 200, body
    await _check_shown_equals_enforced(full_api, user, domain_id, name, {
        "daily_limit": 2, "hourly_limit": 2, "monthly_limit": 62, "pack_code": code})
    current = (await full_api.call("GET", "/billing/subscription/current-pack", user))[1]
    assert (current["pack_code"], current["quota"]["daily_limit"],
            current["quota"]["daily_used"]) == (code, 2, 2)


async def test_limits_from_the_user_level_pack(full_api: FullApi) -> None:
    user = new_user_id()
    code = full_api.add_pack(daily=48)  # hourly derived: 48 / 24 = 2
    status, body = await full_api.call("POST", "/testing/set-pack", user,
                                       json={"pack_code": code})
    assert (status, body["domains_updated"]) == (200, 0)  # no domains: the user-level pack
    domain_id, name = await full_api.verified_domain_with_sender(user)
    await _check_shown_equals_enforced(full_api, user, domain_id, name, {
        "daily_limit": 48, "hourly_limit": 2, "monthly_limit": 48 * 31, "pack_code": code})


async def test_no_source_is_the_default_free_pack(full_api: FullApi) -> None:
    user = new_user_id()
    domain_id, name = await full_api.verified_domain_with_sender(user)
    await _check_shown_equals_enforced(full_api, user, domain_id, name, {
        "daily_limit": 100, "hourly_limit": 4, "monthly_limit": 3100, "pack_code": "FREE",
        "pack_name": "Free"})
    current = (await full_api.call("GET", "/billing/subscription/current-pack", user))[1]
    assert (current["pack_code"], current["quota"]["hourly_limit"],
            current["quota"]["hourly_remaining"]) == ("FREE", 4, 0)
