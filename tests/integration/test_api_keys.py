"""/api-keys: create (shown once, stored hashed), permissions, expiry choices, list, get,
delete (401 on the very next request even with a warm cache), tenant isolation."""

from __future__ import annotations

import hashlib

from sqlalchemy import select
from sqlalchemy.orm import Session

from etrans.adapters.sql.usend import ApiKey
from tests.integration.account_api import api, create_domain, new_user_id

__all__ = ["api"]


async def _key(api, user, **body):
    status, created = await api.call("POST", "/api-keys", user, json={"name": "k", **body})
    assert status == 200, created
    return created


async def test_create_key_shown_once_and_stored_as_sha256(api):
    user = new_user_id()
    created = await _key(api, user, name="My API Key")
    assert created["id"].startswith("key_")
    assert created["key"].startswith("etrans_live_")
    assert (created["name"], created["permission"], created["expires_at"]) == \
        ("My API Key", "full_access", None)
    with Session(api.usend.engine) as session:
        row = session.scalars(select(ApiKey).where(ApiKey.id == int(created["id"][4:]))).one()
    assert row.key_hash == hashlib.sha256(created["key"].encode()).hexdigest()
    status, got = await api.call("GET", f"/api-keys/{created['id']}", user)
    assert status == 200
    assert "key" not in got
    assert (got["active"], got["is_expired"], got["expires_at"]) == (True, False, None)
    assert got["updated_at"].endswith("Z")


async def test_expiry_choices_and_invalid_input(api):
    user = new_user_id()
    for days in (7, 30, 60, 90, 180, 365):
        created = await _key(api, user, expires_in_days=days)
        assert created["expires_at"] is not None
    for bad in (0, 1, 31, 400, -7, "30", 30.5, True):
        status, _ = await api.call("POST", "/api-keys", user,
                                   json={"name": "k", "expires_in_days": bad})
        assert status == 400, bad
    for body in ({"name": ""}, {}, {"name": "k", "permission": "admin"},
                 {"name": "a\r\nb"}, {"name": "k", "extra": 1}, {"name": "nul\x00"},
                 {"name": "lone \ud9dc surrogate"}):
        status, _ = await api.call("POST", "/api-keys", user, json=body)
        assert status == 400, body


async def test_permission_matrix_of_account_routes(api):
    user = new_user_id()
    keys = {p: (await _key(api, user, permission=p))["key"]
            for p in ("read_only", "sending_access", "full_access")}
    await api.call("POST", "/testing/set-pack", user, json={"pack_code": "DEDICATED_100K"})
    did = (await create_domain(api, user))["id"]
    reads = [("GET", "/domains"), ("GET", f"/domains/{did}"), ("GET", f"/domains/{did}/quota"),
             ("GET", "/api-keys"), ("GET", "/billing/subscription/packs"),
             ("GET", "/billing/subscription/current-pack"), ("GET", "/billing/payg/packages")]
    writes = [("POST", "/domains", {"domain": "x.invalid-tld-1"}),
              ("PATCH", f"/domains/{did}", {"open_tracking": True}),
              ("POST", "/api-keys", {"name": "n"}),
              ("POST", "/senders", {"account": "a@b.example", "domain": "b.example",
                                    "password": "12345678"}),
              ("POST", "/billing/subscription/subs", {"pack_code": "FREE", "domain_id": 1}),
              ("POST", "/billing/payg/subscriptions", {"domain_id": 1}),
              ("DELETE", "/billing/payg/subscriptions/1", None),
              ("POST", "/testing/set-pack", {"pack_code": "FREE"})]
    for level, key in keys.items():
        headers = {"X-API-KEY": key}
        for method, path in reads:
            status, _ = await api.call(method, path, headers)
            assert status == 200, (level, method, path)
        for method, path, body in writes:
            status, _ = await api.call(method, path, headers, json=body)
            if level == "full_access":
                assert status != 403, (level, method, path)
            else:
                assert status == 403, (level, method, path, status)
    for method, path in reads:
        assert (await api.call(method, path, {}))[0] == 401
        assert (await api.call(method, path, {"X-API-KEY": "etrans_live_nope"}))[0] == 401
        assert (await api.call(method, path, {"Authorization": "Bearer bad"}))[0] == 401


async def test_list_pagination_and_tenant_isolation(api):
    user, other = new_user_id(), new_user_id()
    made = [await _key(api, user, name=f"k{i}") for i in range(3)]
    status, page = await api.call("GET", "/api-keys?per_page=2", user)
    assert status == 200
    assert (page["total"], page["page"], page["per_page"], len(page["data"])) == (3, 1, 2, 2)
    assert all("key" not in item and item["is_expired"] is False for item in page["data"])
    page2 = (await api.call("GET", "/api-keys?per_page=2&page=2", user))[1]
    assert {i["id"] for i in page["data"] + page2["data"]} == {m["id"] for m in made}
    assert (await api.call("GET", "/api-keys?per_page=101", user))[0] == 400
    assert (await api.call("GET", "/api-keys", other))[1]["total"] == 0
    assert (await api.call("GET", f"/api-keys/{made[0]['id']}", other))[0] == 404
    assert (await api.call("DELETE", f"/api-keys/{made[0]['id']}", other))[0] == 404
    assert (await api.call("GET", "/api-keys/abc", user))[0] == 400
    assert (await api.call("GET", "/api-keys/key_99999999999", user))[0] == 404


async def test_deleted_key_is_refused_on_the_very_next_request(api):
    user = new_user_id()
    created = await _key(api, user, permission="read_only")
    headers = {"X-API-KEY": created["key"]}
    # warm the cache: the key is now cached as valid
    assert (await api.call("GET", "/api-keys", headers))[0] == 200
    assert (await api.call("GET", "/api-keys", headers))[0] == 200
    status, body = await api.call("DELETE", f"/api-keys/{created['id']}", user)
    assert (status, body) == (200, {"id": created["id"], "deleted": True})
    assert (await api.call("GET", "/api-keys", headers))[0] == 401
    assert (await api.call("GET", f"/api-keys/{created['id']}", user))[0] == 404


async def test_expired_key_is_401_and_listed_as_expired(api):
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    user = new_user_id()
    created = await _key(api, user, expires_in_days=7)
    headers = {"X-API-KEY": created["key"]}
    with Session(api.usend.engine) as session, session.begin():
        session.execute(update(ApiKey).where(ApiKey.id == int(created["id"][4:]))
                        .values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    status, body = await api.call("GET", "/api-keys", headers)
    assert (status, body) == (401, {"detail": "API key expired"})
    listed = (await api.call("GET", f"/api-keys/{created['id']}", user))[1]
    assert listed["is_expired"] is True


# -- a key cannot escalate (issue 13.4) ------------------------------------------------------------

async def test_a_key_cannot_mint_a_key_that_outlives_it(api):
    user = new_user_id()
    parent = await _key(api, user, name="parent", expires_in_days=30)
    as_parent = {"X-API-KEY": parent["key"]}
    for days in (None, 60, 365):
        status, body = await api.call("POST", "/api-keys", as_parent,
                                      json={"name": "child", "expires_in_days": days})
        assert status == 403, (days, status, body)
        assert "cannot create a key that outlives it" in body["detail"], body
    status, body = await api.call("POST", "/api-keys", as_parent, json={"name": "child"})
    assert status == 403, body  # the default is "never expires"
    status, child = await api.call("POST", "/api-keys", as_parent,
                                   json={"name": "child", "expires_in_days": 7})
    assert status == 200, child
    assert child["expires_at"] < parent["expires_at"]
    # A never-expiring key may mint keys of any lifetime; sessions and tokens keep full rights.
    forever = await _key(api, user, name="forever")
    status, _ = await api.call("POST", "/api-keys", {"X-API-KEY": forever["key"]},
                               json={"name": "child"})
    assert status == 200
    assert (await _key(api, user, name="by token"))["expires_at"] is None


async def test_a_minted_key_is_deleted_with_the_key_that_created_it(api):
    user = new_user_id()
    root = await _key(api, user, name="root")
    status, child = await api.call("POST", "/api-keys", {"X-API-KEY": root["key"]},
                                   json={"name": "child"})
    assert status == 200, child
    status, grandchild = await api.call("POST", "/api-keys", {"X-API-KEY": child["key"]},
                                        json={"name": "grandchild", "permission": "read_only"})
    assert status == 200, grandchild
    sibling = await _key(api, user, name="sibling")  # made with a token: not the root's
    for made in (child, grandchild, sibling):  # warm the cache: cached as valid
        assert (await api.call("GET", "/api-keys", {"X-API-KEY": made["key"]}))[0] == 200
    # The child deletes its creator (it has full_access): it goes too, with its own child.
    status, _ = await api.call("DELETE", f"/api-keys/{root['id']}", {"X-API-KEY": child["key"]})
    assert status == 200
    for gone in (root, child, grandchild):
        status, _ = await api.call("GET", "/api-keys", {"X-API-KEY": gone["key"]})
        assert status == 401, gone["name"]
        assert (await api.call("GET", f"/api-keys/{gone['id']}", user))[0] == 404
    assert (await api.call("GET", "/api-keys", {"X-API-KEY": sibling["key"]}))[0] == 200
    listed = (await api.call("GET", "/api-keys", user))[1]
    assert [k["id"] for k in listed["data"]] == [sibling["id"]]


async def test_a_key_minted_while_its_creator_is_deleted_never_outlives_it(api):
    """The creator row is share-locked while a key is minted: whichever of the two transactions
    commits first, the minted key is either refused or deleted with its creator.  The two run
    at once, each in a worker thread of its own (the repository's ``Database.run``)."""
    import trio

    repo = api.services.api_keys
    user = new_user_id()
    outcomes = set()
    for round_ in range(20):
        root = await repo.create(user_id=user, name="root", key_hash=f"{round_:064x}",
                                 key_prefix="etrans_live_x", permission="full_access",
                                 expires_at=None)
        made = {}

        async def mint(root_id=root.id, made=made, round_=round_):
            made["child"] = await repo.create(
                user_id=user, name="child", key_hash=f"{round_ + 1000:064x}",
                key_prefix="etrans_live_y", permission="full_access", expires_at=None,
                created_by_key_id=root_id)

        async def delete(root_id=root.id, made=made):
            made["deleted"] = await repo.delete(user, root_id)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(mint)
            nursery.start_soon(delete)
        child = made["child"]
        if child is None:
            outcomes.add("refused")
        else:
            assert await repo.get(user, child.id) is None, round_  # deleted with the root
            assert child.key_hash in made["deleted"]
            outcomes.add("deleted with its creator")
    assert outcomes  # (which ones occur depends on scheduling)
