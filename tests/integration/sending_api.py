"""Builds the sending API (auth, emails, logs; every route with ``all_routes=True``) in-process,
wired by :mod:`etrans.bootstrap.api` exactly as ``etrans serve`` wires it, against real
PostgreSQL, Redis, MongoDB (and Kafka when asked).  Each build gets its own Redis key prefix, so
parallel runs never share counters."""

from __future__ import annotations

import secrets
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import jwt
from sqlalchemy import insert

from etrans import settings
from etrans.adapters.crypto.credentials import CredentialCipher
from etrans.adapters.mongo.log_reader import MongoLogReader
from etrans.adapters.mongo.store import MongoStore
from etrans.adapters.redis.client import TrioRedis, open_redis
from etrans.adapters.sql import billing_database, usend_database
from etrans.adapters.sql.usend import ApiKey
from etrans.adapters.sql.usend_repo import UsendRepository
from etrans.api import emails, logs
from etrans.api.app import ApiDependencies, create_app
from etrans.bootstrap.api import (
    ApiBackends,
    ApiSections,
    api_services,
    authenticator,
    rate_limiter,
    unavailable_errors,
)
from etrans.bootstrap.stores import redis_api_stores
from etrans.domain.api_keys import generate_api_key, hash_api_key

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

JWT_SECRET = "sending-jwt-secret-" + "y" * 32


def new_user_id() -> int:
    return secrets.randbelow(2**40) + 10**9


@dataclass
class SendingApi:
    app: Any
    client: Any
    settings: Any
    redis: TrioRedis
    usend: Any
    billing: Any
    mongo: MongoStore
    seed: Any  # tests.harness.databases.BillingSeeder
    cipher: CredentialCipher
    env: dict[str, str]
    relay: Any = None
    producer: Any = None
    stores: Any = None
    closers: list[Any] = field(default_factory=list)

    # -- credentials -------------------------------------------------------------------------

    @staticmethod
    def bearer(user_id: int, *, ttl: int = 600) -> dict[str, str]:
        token = jwt.encode({"sub": str(user_id), "exp": int(time.time()) + ttl}, JWT_SECRET,
                           algorithm="HS256")
        return {"Authorization": f"Bearer {token}"}

    def api_key(self, user_id: int, permission: str = "full_access", *,
                expires_at: datetime | None = None, deleted: bool = False) -> tuple[str, int]:
        key = generate_api_key()
        row = {"user_id": user_id, "name": "test", "key_hash": hash_api_key(key),
               "key_prefix": key[:16], "permission": permission, "expires_at": expires_at}
        if deleted:
            row.update(active=False, deleted_at=datetime.now().astimezone())
        with self.usend.engine.begin() as conn:
            key_id = conn.execute(insert(ApiKey.__table__).values(**row)
                                  .returning(ApiKey.__table__.c.id)).scalar_one()
        return key, int(key_id)

    # -- billing rows ------------------------------------------------------------------------

    def user(self) -> int:
        user_id = new_user_id()
        self.seed._insert("users", {"id": user_id, "email": f"u{user_id}@example.test"})
        return user_id

    def sender(self, *, daily: int | None = 500, hourly: int | None = 50,
               status: str = "verified", credentials: bool = True,
               verified_at: datetime | None = None,
               name: str | None = None) -> tuple[int, int, str]:
        """A user, one domain (limits as given), SMTP credentials: (user, domain_id, name)."""
        user_id = self.user()
        name = name or f"d{uuid.uuid4().hex[:12]}.example.test"
        domain_id = self.seed.domain(user_id, name, status=status, verified_at=verified_at)
        self.seed.mkt_domain(domain_id, daily_limit=daily, hourly_limit=hourly)
        if credentials:
            self.seed.temporary_password(user_id, f"smtp-{user_id}", f"pw-{user_id}-secret")
        return user_id, domain_id, name

    # -- requests ----------------------------------------------------------------------------

    async def call(self, method: str, path: str, headers: dict[str, str] | None = None,
                   json: Any = None, **kw: Any) -> tuple[int, Any]:
        response = await self.client.open(path, method=method, json=json, headers=headers or {},
                                          **kw)
        return response.status_code, await response.get_json()

    def close(self) -> None:
        for close in reversed(self.closers):
            close()


@asynccontextmanager
async def open_sending_api(etrans_env: Any, billing_db: Any, *, with_relay: bool = False,
                           all_routes: bool = False, redis_reply_timeout: float = 5.0,
                           tracer: Any = None, **overrides: Any) -> AsyncIterator[SendingApi]:
    """The sending API on its own Redis client (``open_redis``, as ``etrans serve``), closed
    on exit; ``all_routes``: the account routes too (every route of ``etrans serve``)."""
    values: dict[str, Any] = {
        "ETRANS_REDIS_PREFIX": f"test:{uuid.uuid4().hex[:12]}:", "JWT_SECRET": JWT_SECRET,
        "BILLING_V4_URI": "http://127.0.0.1:9/", "DB_URI": billing_db.readonly_url,
    }
    values.update(overrides)
    env = etrans_env(**values)
    conf = settings.for_command("serve", env)
    assert conf.redis is not None
    async with open_redis(conf.redis.url.get(), reply_timeout=redis_reply_timeout) as redis:
        api = _build(conf, env, billing_db, redis, with_relay=with_relay, all_routes=all_routes,
                     tracer=tracer)
        try:
            yield api
        finally:
            api.close()


def _build(conf: Any, env: dict[str, str], billing_db: Any, redis: TrioRedis, *,
           with_relay: bool, all_routes: bool, tracer: Any = None) -> SendingApi:
    from tests.harness.databases import BillingSeeder

    timeout = conf.databases.statement_timeout_seconds  # as serve (DB_STATEMENT_TIMEOUT_SECONDS)
    billing = billing_database(conf.databases.billing_uri.get(), pool_size=5,
                               statement_timeout=timeout)
    usend = usend_database(conf.databases.usend_uri.get(), pool_size=10,
                           statement_timeout=timeout)
    mongo = MongoStore(conf.mongo)
    relay = producer = None
    usend_repo = UsendRepository(usend)
    if with_relay:
        from etrans.adapters.kafka.client import KafkaProducer
        from etrans.adapters.sql.outbox import OutboxRelay
        from etrans.adapters.sql.outbox_store import PgOutboxStore
        from etrans.bootstrap.stores import release_domains, release_screen

        producer = KafkaProducer.from_settings(conf.kafka, **{"message.timeout.ms": 60000})
        # As etrans serve wires it (etrans.bootstrap.serve).
        relay = OutboxRelay(PgOutboxStore.of(usend, release_screen(
                                usend_repo, conf.kafka.events_topic,
                                release_domains(billing if conf.http.billing_v4_uri else None,
                                                usend))),
                            producer, idle_seconds=0.2, events_topic=conf.kafka.events_topic,
                            tracer=tracer)
    stores = redis_api_stores(redis, prefix=conf.http.redis_prefix,
                              usend_repo=usend_repo, log_reader=MongoLogReader(mongo))
    sections = ApiSections(http=conf.http, tokens=conf.tokens, kafka=conf.kafka,
                           outbox=conf.outbox)
    backends = ApiBackends(usend_db=usend, stores=stores, billing_db=billing, relay=relay)
    app = create_app(ApiDependencies(
        authenticator=authenticator(conf.http, stores), services=api_services(sections, backends),
        routers=None if all_routes else [emails.register, logs.register],
        rate_limiter=rate_limiter(conf.http, stores.rate_counter), tracer=tracer,
        unavailable=unavailable_errors()))
    api = SendingApi(app=app, client=app.test_client(), settings=conf, redis=redis, usend=usend,
               billing=billing, mongo=mongo, seed=BillingSeeder(billing_db.owner_url),
               cipher=CredentialCipher(conf.tokens.secret.get(), conf.tokens.iv.get()), env=env,
               relay=relay, producer=producer, stores=stores)
    api.closers += [billing.dispose, usend.dispose, mongo.close]
    if producer is not None:
        api.closers.append(lambda: producer.close(5.0))
    return api


def email(sender_domain: str, **fields: Any) -> dict[str, Any]:
    body = {"from": f"Sender <hello@{sender_domain}>", "to": ["rcpt@example.org"],
            "subject": "Hello", "html": "<p>Hi</p>"}
    body.update(fields)
    return body
