"""/domains: create (DNS records, DKIM key encrypted at rest), duplicates, pack domain limits,
malformed names and ids, list/search/pagination, get, verify against the loopback DNS server,
tracking, delete, quota from the same Redis counters POST /emails uses."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import trio
from sqlalchemy import select
from sqlalchemy.orm import Session

from etrans.adapters.crypto.dkim_keys import DkimKeyCipher, generate_dkim_key_pair
from etrans.adapters.sql.usend import LocalDkim, LocalMktDomain
from etrans.domain.quota import QuotaLimits
from etrans.errors import InvalidInput
from tests.integration.account_api import (
    MX,
    TOKEN_SECRET,
    new_domain_name,
    new_user_id,
    open_api,
)


@pytest.fixture
async def api(usend_db_url, redis_url, dns_server):
    async with open_api(usend_db_url=usend_db_url, redis_url=redis_url,
                        dns_address=dns_server.address) as built:
        yield built


async def _create(api, user, name=None):
    status, body = await api.call("POST", "/domains", user,
                                  json={"domain": name or new_domain_name()})
    assert status == 200, body
    return body


def _publish(dns_server, body):
    name = body["domain"]
    spf, mx, dkim = body["dns_records"]
    dns_server.set_records(name, "TXT", [f'"{spf["value"]}"'])
    dns_server.set_records(name, "MX", [f'{mx["priority"]} {mx["value"]}.'])
    value = dkim["value"]
    parts = " ".join(f'"{value[i:i + 200]}"' for i in range(0, len(value), 200))
    dns_server.set_records(f'{dkim["name"]}.{name}', "TXT", [parts])


async def test_create_domain_returns_the_records_and_stores_the_key_encrypted(api):
    user = new_user_id()
    name = new_domain_name()
    body = await _create(api, user, name.upper())
    assert body["id"].startswith("dom_")
    assert body["domain"] == name
    assert body["status"] == "pending"
    assert body["created_at"].endswith("Z")
    spf, mx, dkim = body["dns_records"]
    assert spf == {"type": "TXT", "name": "@", "value": "v=spf1 include:_spf.etrans.test ~all",
                   "purpose": "spf"}
    assert mx == {"type": "MX", "name": "@", "value": MX, "priority": 5, "purpose": "mx"}
    assert dkim["name"] == "dkim._domainkey"
    assert dkim["value"].startswith("v=DKIM1; k=rsa; p=MII")
    with Session(api.usend.engine) as session:
        row = session.scalars(select(LocalDkim).where(
            LocalDkim.domain_id == int(body["id"][4:]))).one()
    assert "PRIVATE KEY" not in row.private_key_encrypted
    pem = DkimKeyCipher(TOKEN_SECRET).decrypt(row.private_key_encrypted, domain=name)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")


@pytest.mark.parametrize("bad", ["", "localhost", "exa mple.com", "-x.example", "a..b",
                                 "x" * 254, "bad_name.example"])
async def test_malformed_domain_names_are_400(api, bad):
    status, body = await api.call("POST", "/domains", new_user_id(), json={"domain": bad})
    assert status == 400
    assert "detail" in body


async def test_duplicate_domain_is_400_for_the_same_and_another_user(api):
    user = new_user_id()
    await api.call("POST", "/testing/set-pack", user, json={"pack_code": "DEDICATED_100K"})
    body = await _create(api, user)
    status, err = await api.call("POST", "/domains", user, json={"domain": body["domain"]})
    assert status == 400
    assert "already exists" in err["detail"]
    status, _ = await api.call("POST", "/domains", new_user_id(), json={"domain": body["domain"]})
    assert status == 400


async def test_domain_limit_of_the_pack(api):
    user = new_user_id()
    await _create(api, user)  # FREE pack: 1 domain
    status, err = await api.call("POST", "/domains", user, json={"domain": new_domain_name()})
    assert status == 400
    assert "Domain limit reached" in err["detail"]
    # user-level pack fallback raises the limit (DEDICATED_100K allows 5)
    status, _ = await api.call("POST", "/testing/set-pack", user,
                               json={"pack_code": "DEDICATED_100K"})
    assert status == 200
    for _ in range(4):
        await _create(api, user)
    status, err = await api.call("POST", "/domains", user, json={"domain": new_domain_name()})
    assert status == 400
    assert "5 domains" in err["detail"]


async def test_concurrent_creates_never_exceed_the_domain_limit(api):
    user = new_user_id()
    status, _ = await api.call("POST", "/testing/set-pack", user,
                               json={"pack_code": "DEDICATED_100K"})  # 5 domains
    assert status == 200
    outcomes: list[tuple[int, object]] = []

    async def create() -> None:
        outcomes.append(await api.call("POST", "/domains", user,
                                       json={"domain": new_domain_name()}))

    # Every request passes the quick count before any insert (the RSA keys take a while):
    # only the check made with the insert, serialized per user, keeps the limit.
    async with trio.open_nursery() as nursery:
        for _ in range(12):
            nursery.start_soon(create)
    statuses = sorted(status for status, _ in outcomes)
    assert statuses == [200] * 5 + [400] * 7, outcomes
    assert all("Domain limit reached" in body["detail"] for status, body in outcomes
               if status == 400)
    listed = (await api.call("GET", "/domains?per_page=100", user))[1]
    assert listed["total"] == 5


async def test_gateway_count_and_insert_are_serialized_per_user(api):
    # Straight at the local gateway (no quick check before it): 30 concurrent inserts with a
    # limit of 3, on as many connections as the pool has.
    user = new_user_id()
    gateway = api.services.billing
    pair = generate_dkim_key_pair()
    created: list[int] = []
    refused: list[str] = []

    async def create(i: int) -> None:
        try:
            created.append(await gateway.create_domain(
                user_id=user, name=f"g{i}-{new_domain_name()}", dkim_selector="dkim",
                dkim_public_key=pair.record.public_key_b64,
                dkim_private_key_pem=pair.private_key_pem, max_domains=3))
        except InvalidInput as exc:
            refused.append(str(exc))

    async with trio.open_nursery() as nursery:
        for i in range(30):
            nursery.start_soon(create, i)
    assert (len(created), len(refused)) == (3, 27)
    assert await api.services.domains.count(user) == 3


async def test_list_search_pagination_and_total_verified(api, dns_server):
    user = new_user_id()
    await api.call("POST", "/testing/set-pack", user, json={"pack_code": "DEDICATED_100K"})
    made = [await _create(api, user) for _ in range(3)]
    _publish(dns_server, made[0])
    status, _ = await api.call("POST", f"/domains/{made[0]['id']}/verify", user)
    assert status == 200
    status, page = await api.call("GET", "/domains?page=1&per_page=2", user)
    assert status == 200
    assert (page["total"], page["total_verified"], page["page"], page["per_page"]) == (3, 1, 1, 2)
    assert len(page["data"]) == 2
    status, page2 = await api.call("GET", "/domains?page=2&per_page=2", user)
    assert len(page2["data"]) == 1
    ids = {d["id"] for d in page["data"] + page2["data"]}
    assert ids == {m["id"] for m in made}
    needle = made[1]["domain"][:8]
    status, found = await api.call("GET", f"/domains?search={needle}", user)
    assert [d["domain"] for d in found["data"]] == [made[1]["domain"]]
    for bad in ("per_page=0", "per_page=101", "page=0", "page=x", "search=a%00b"):
        status, _ = await api.call("GET", f"/domains?{bad}", user)
        assert status == 400, bad


async def test_get_domain_400_for_malformed_id_404_for_unknown_and_foreign(api):
    user, other = new_user_id(), new_user_id()
    body = await _create(api, user)
    status, got = await api.call("GET", f"/domains/{body['id']}", user)
    assert status == 200
    assert got["dns_records"] == body["dns_records"]
    assert got["verified_at"] is None
    for bad in ("123", "dom_x", "dom_", "domain_1"):
        status, _ = await api.call("GET", f"/domains/{bad}", user)
        assert status == 400, bad
    assert (await api.call("GET", "/domains/dom_999999999999", user))[0] == 404
    for method, path in (("GET", ""), ("GET", "/quota"), ("POST", "/verify"), ("DELETE", "")):
        status, _ = await api.call(method, f"/domains/{body['id']}{path}", other)
        assert status == 404, (method, path)
    status, _ = await api.call("PATCH", f"/domains/{body['id']}", other,
                               json={"click_tracking": True})
    assert status == 404


async def test_verify_reports_per_record_then_verifies(api, dns_server):
    user = new_user_id()
    body = await _create(api, user)
    name = body["domain"]
    spf, mx, _ = body["dns_records"]
    dns_server.set_records(name, "TXT", [f'"{spf["value"]}"'])
    dns_server.set_records(name, "MX", [f'5 {mx["value"]}.'])
    status, err = await api.call("POST", f"/domains/{body['id']}/verify", user)
    assert status == 400
    detail = err["detail"]
    assert detail["message"] == "DNS verification failed"
    assert [r["verified"] for r in detail["dns_records"]] == [True, True, False]
    assert (await api.call("GET", f"/domains/{body['id']}", user))[1]["status"] == "pending"

    _publish(dns_server, body)
    status, ok = await api.call("POST", f"/domains/{body['id']}/verify", user)
    assert status == 200, ok
    assert ok["status"] == "verified"
    assert all(r["verified"] for r in ok["dns_records"])
    verified_at = datetime.fromisoformat(ok["verified_at"].replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - verified_at).total_seconds()) < 60
    status, got = await api.call("GET", f"/domains/{body['id']}", user)
    assert (got["status"], got["verified_at"]) == ("verified", ok["verified_at"])


async def test_patch_tracking_and_delete(api):
    user = new_user_id()
    body = await _create(api, user)
    path = f"/domains/{body['id']}"
    status, patched = await api.call("PATCH", path, user, json={"click_tracking": True})
    assert status == 200
    assert patched == {"id": body["id"], "domain": body["domain"], "click_tracking": True,
                       "open_tracking": False}
    status, patched = await api.call("PATCH", path, user, json={"open_tracking": True})
    assert (patched["click_tracking"], patched["open_tracking"]) == (True, True)
    status, _ = await api.call("PATCH", path, user, json={"click_tracking": "yes"})
    assert status == 400
    status, deleted = await api.call("DELETE", path, user)
    assert (status, deleted) == (200, {"id": body["id"], "deleted": True})
    assert (await api.call("GET", path, user))[0] == 404
    assert (await api.call("DELETE", path, user))[0] == 404
    # the name is free again after deletion
    status, _ = await api.call("POST", "/domains", user, json={"domain": body["domain"]})
    assert status == 200


async def test_quota_uses_the_send_counters_and_pack_or_mkt_domain_limits(api):
    user = new_user_id()
    body = await _create(api, user)
    domain_id = int(body["id"][4:])
    now = datetime.now(UTC)
    # POST /emails counts through RedisQuota.reserve: the quota endpoint reads the same keys.
    assert await api.services.quota.reserve(domain_id, QuotaLimits(), 7, now) is None
    status, quota = await api.call("GET", f"/domains/{body['id']}/quota", user)
    assert status == 200
    assert quota == {
        "domain": body["domain"], "daily_limit": 100, "daily_used": 7, "daily_remaining": 93,
        "hourly_limit": 4, "hourly_used": 7, "hourly_remaining": 0, "monthly_limit": 3100,
        "monthly_used": 7, "monthly_remaining": 3093, "pack_code": "FREE", "pack_name": "Free"}
    await api.call("POST", "/testing/set-pack", user, json={"pack_code": "DEDICATED_100K"})
    quota = (await api.call("GET", f"/domains/{body['id']}/quota", user))[1]
    assert (quota["daily_limit"], quota["hourly_limit"], quota["monthly_limit"]) == \
        (100000, 4166, 3100000)
    assert quota["pack_code"] == "DEDICATED_100K"
    with Session(api.usend.engine) as session, session.begin():
        session.add(LocalMktDomain(domain_id=domain_id, pack_code="DEDICATED_100K",
                                   pack_name="Dedicated 100K", daily_limit=500, hourly_limit=50))
    quota = (await api.call("GET", f"/domains/{body['id']}/quota", user))[1]
    assert (quota["daily_limit"], quota["hourly_limit"], quota["monthly_limit"]) == \
        (500, 50, 15500)
    assert quota["daily_remaining"] == 493
