"""/billing (local billing mode) and /testing/set-pack: packs, current pack, subscriptions
(owner and balance rules), pay as you go, Kafka billing events, tenant isolation, and the
testing route answering 404 when disabled."""

from __future__ import annotations

import json
from decimal import Decimal

from confluent_kafka import Consumer
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from etrans.adapters.kafka.client import KafkaProducer
from etrans.adapters.sql.outbox import OutboxRelay
from etrans.adapters.sql.outbox_store import PgOutboxStore
from etrans.adapters.sql.usend import EmailOutbox, LocalUser
from tests.harness.servers import free_port
from tests.integration.account_api import (  # noqa: F401 - api is a fixture
    api,
    create_domain,
    new_user_id,
    open_api,
)


def _fund(api, user, balance, *, owner=True):  # noqa: F811
    with Session(api.usend.engine) as session, session.begin():
        session.merge(LocalUser(id=user, email=f"{user}@x.example", balance=Decimal(balance),
                                is_owner=owner))


async def test_packs_and_current_pack(api):  # noqa: F811
    user = new_user_id()
    status, packs = await api.call("GET", "/billing/subscription/packs", user)
    assert status == 200
    assert packs["success"] is True
    codes = {p["pack_code"]: p for p in packs["packages"]}
    assert codes["DEDICATED_100K"] == {
        "pack_code": "DEDICATED_100K", "pack_name": "Dedicated 100K", "pack_type": "dedicated_ip",
        "daily_email_limit": 100000, "domain_limit": 5, "price": 500000.0, "is_active": True}
    assert "PAYG_SHARED" not in codes
    status, current = await api.call("GET", "/billing/subscription/current-pack", user)
    assert status == 200
    assert (current["pack_code"], current["domain_limit"], current["domains"]) == ("FREE", 1, [])
    assert current["quota"]["daily_limit"] == 100
    assert current["quota"]["hourly_limit"] == 4
    domain = await create_domain(api, user)
    current = (await api.call("GET", "/billing/subscription/current-pack", user))[1]
    assert current["domains"] == [{"domain_id": domain["id"], "domain_name": domain["domain"],
                                   "status": "pending"}]


async def test_subscription_rules(api):  # noqa: F811
    user, other = new_user_id(), new_user_id()
    domain_id = int((await create_domain(api, user))["id"][4:])
    body = {"pack_code": "DEDICATED_100K", "domain_id": domain_id}
    status, err = await api.call("POST", "/billing/subscription/subs", user, json=body)
    assert status == 403
    assert "Insufficient balance" in err["detail"]
    _fund(api, user, 600000, owner=False)
    status, err = await api.call("POST", "/billing/subscription/subs", user, json=body)
    assert status == 403
    assert "owner" in err["detail"]
    _fund(api, user, 600000)
    assert (await api.call("POST", "/billing/subscription/subs", user,
                           json={**body, "pack_code": "NOPE"}))[0] == 404
    assert (await api.call("POST", "/billing/subscription/subs", other, json=body))[0] == 404
    assert (await api.call("POST", "/billing/subscription/subs", user,
                           json={"pack_code": "DEDICATED_100K", "domain_id": "dom_1"}))[0] == 400
    for bad_code in ("m\x00", "\ud961x"):  # not storable in PostgreSQL text: 400, never 500
        assert (await api.call("POST", "/billing/subscription/subs", user,
                               json={**body, "pack_code": bad_code}))[0] == 400
    status, ok = await api.call("POST", "/billing/subscription/subs", user, json=body)
    assert (status, ok) == (200, {"success": True, "message": "Subscription created successfully",
                                  "domain_id": domain_id, "pack_code": "DEDICATED_100K"})
    with Session(api.usend.engine) as session:
        assert session.get(LocalUser, user).balance == Decimal(100000)
    quota = (await api.call("GET", f"/domains/dom_{domain_id}/quota", user))[1]
    assert (quota["pack_code"], quota["daily_limit"]) == ("DEDICATED_100K", 100000)
    current = (await api.call("GET", "/billing/subscription/current-pack", user))[1]
    assert current["pack_code"] == "DEDICATED_100K"


async def test_payg_lifecycle_and_isolation(api):  # noqa: F811
    user, other = new_user_id(), new_user_id()
    domain_id = int((await create_domain(api, user))["id"][4:])
    status, package = await api.call("GET", "/billing/payg/packages", user)
    assert status == 200
    assert (package["pack_code"], package["pack_type"], package["pricing"]) == \
        ("PAYG_SHARED", "shared_ip", {})
    path = f"/billing/payg/subscriptions/{domain_id}"
    assert (await api.call("GET", path, user))[0] == 404
    assert (await api.call("DELETE", path, user))[0] == 404
    status, created = await api.call("POST", "/billing/payg/subscriptions", user,
                                     json={"domain_id": domain_id})
    assert status == 200, created
    assert (created["success"], created["message"], created["previous_pack"]) == \
        (True, "PAYG subscription created", None)
    assert created["subscription"]["pack_code"] == "PAYG_SHARED"
    assert (await api.call("POST", "/billing/payg/subscriptions", user,
                           json={"domain_id": domain_id}))[0] == 400
    assert (await api.call("GET", path, other))[0] == 404
    assert (await api.call("DELETE", path, other))[0] == 404
    assert (await api.call("POST", "/billing/payg/subscriptions", other,
                           json={"domain_id": domain_id}))[0] == 404
    status, got = await api.call("GET", path, user)
    assert status == 200
    assert got["subscription"]["kind"] == "payg"
    status, cancelled = await api.call("DELETE", path, user)
    assert (status, cancelled) == (200, {"success": True,
                                         "message": "PAYG subscription cancelled"})
    assert (await api.call("GET", path, user))[0] == 404
    assert (await api.call("GET", "/billing/payg/subscriptions/abc", user))[0] == 400


async def test_set_pack_for_all_domains_or_user_level(api):  # noqa: F811
    user = new_user_id()
    status, body = await api.call("POST", "/testing/set-pack", user,
                                  json={"pack_code": "DEDICATED_100K"})
    assert (status, body) == (200, {"pack_code": "DEDICATED_100K", "pack_name": "Dedicated 100K",
                                    "domain_limit": 5, "daily_email_limit": 100000,
                                    "domains_updated": 0})
    domains = [await create_domain(api, user) for _ in range(2)]
    status, body = await api.call("POST", "/testing/set-pack", user, json={"pack_code": "FREE"})
    assert (status, body["domains_updated"]) == (200, 2)
    for d in domains:
        assert (await api.call("GET", f"/domains/{d['id']}/quota", user))[1]["pack_code"] == "FREE"
    assert (await api.call("POST", "/testing/set-pack", user, json={"pack_code": "NOPE"}))[0] \
        == 400


async def test_testing_route_is_404_when_disabled(usend_db_url, redis_url, dns_server):
    async with open_api(usend_db_url=usend_db_url, redis_url=redis_url,
                        dns_address=dns_server.address, testing_routes=False) as built:
        status, body = await built.call("POST", "/testing/set-pack", new_user_id(),
                                        json={"pack_code": "FREE"})
        assert (status, body) == (404, {"detail": "Not Found"})
        spec = await (await built.client.get("/openapi.json")).get_json()
        assert "/testing/set-pack" not in spec["paths"]


async def test_subscription_changes_publish_billing_events_through_the_outbox(
        fresh_database, redis_url, dns_server, kafka_bootstrap, kafka_test_config, new_topic):
    from etrans.adapters.sql import migrations

    # A database of its own: the relays below publish every pending row of their database.
    usend_db_url = fresh_database("usend_outbox")
    migrations.upgrade(usend_db_url)
    topic = new_topic()
    async with open_api(usend_db_url=usend_db_url, redis_url=redis_url,
                        dns_address=dns_server.address, billing_topic=topic) as built:
        outbox = EmailOutbox.__table__
        user = new_user_id()
        domain_id = int((await create_domain(built, user))["id"][4:])
        _fund(built, user, 500000)
        # No relay runs and no broker is reachable: the changes succeed all the same, their
        # events wait in the outbox, written in the changes' transactions.
        assert (await built.call("POST", "/billing/subscription/subs", user,
                                 json={"pack_code": "DEDICATED_100K",
                                       "domain_id": domain_id}))[0] == 200
        assert (await built.call("POST", "/billing/payg/subscriptions", user,
                                 json={"domain_id": domain_id}))[0] == 200
        assert (await built.call("DELETE", f"/billing/payg/subscriptions/{domain_id}",
                                 user))[0] == 200
        # set-pack must NOT publish
        await built.call("POST", "/testing/set-pack", user, json={"pack_code": "FREE"})
        mine = (outbox.c.topic == topic)
        with built.usend.engine.connect() as conn:
            pending = conn.execute(select(func.count()).where(
                mine, outbox.c.published_at.is_(None))).scalar()
        assert pending == 3
        # A relay whose broker is down: nothing published, the rows stay pending.
        dead = KafkaProducer({"bootstrap.servers": f"127.0.0.1:{free_port()}",
                              "message.timeout.ms": 1500})
        try:
            await OutboxRelay(PgOutboxStore.of(built.usend), dead).relay_once()
        finally:
            dead.close(1.0)
        with built.usend.engine.connect() as conn:
            rows = conn.execute(select(outbox.c.published_at, outbox.c.attempts,
                                       outbox.c.last_error).where(mine)).all()
        # Unreachable is nothing against the rows: attempts (which order the relay's passes and
        # fail a row at ETRANS_OUTBOX_MAX_ATTEMPTS) count only the broker's answers.
        assert [(r.published_at, r.attempts) for r in rows] == [(None, 0)] * 3
        assert all(r.last_error for r in rows)
        # The broker is back: the next pass publishes them, in order.
        producer = KafkaProducer({"bootstrap.servers": kafka_bootstrap})
        try:
            await OutboxRelay(PgOutboxStore.of(built.usend), producer).relay_once()
        finally:
            producer.close(5.0)
        with built.usend.engine.connect() as conn:
            assert conn.execute(select(func.count()).where(
                mine, outbox.c.published_at.is_(None))).scalar() == 0
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"g-{topic}",
                         "auto.offset.reset": "earliest", **kafka_test_config})
    consumer.subscribe([topic])
    events = []
    try:
        for _ in range(60):
            msg = consumer.poll(1.0)
            if msg is not None and not msg.error():
                events.append((msg.key(), json.loads(msg.value())))
            if len(events) >= 3:
                extra = consumer.poll(2.0)
                assert extra is None or extra.error()
                break
    finally:
        consumer.close()
    assert [e["event"] for _, e in events] == ["subscription.created", "payg.created",
                                               "payg.cancelled"]
    key, first = events[0]
    assert key == str(domain_id).encode()
    assert set(first) == {"version", "event_id", "event", "occurred_at", "user_id", "domain_id",
                          "kind", "pack_code", "previous_pack_code"}
    assert (first["user_id"], first["domain_id"], first["pack_code"], first["kind"]) == \
        (str(user), domain_id, "DEDICATED_100K", "subscription")
    assert events[1][1]["previous_pack_code"] == "DEDICATED_100K"
    assert (events[2][1]["pack_code"], events[2][1]["previous_pack_code"]) == \
        (None, "PAYG_SHARED")
