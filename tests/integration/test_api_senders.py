"""POST /senders: account in one of the user's domains, password >= 8, duplicates, the
transport row and the Redis ``auth`` credential in the sendmail worker's format."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from etrans.adapters.crypto.credentials import AUTH_HASH, CredentialCipher
from etrans.adapters.sql.usend import Transport
from tests.integration.account_api import (  # noqa: F401 - api is a fixture
    TOKEN_IV,
    TOKEN_SECRET,
    api,
    create_domain,
    new_domain_name,
    new_user_id,
)


async def test_create_sender_stores_transport_and_caches_credentials(api):  # noqa: F811
    user = new_user_id()
    domain = (await create_domain(api, user))["domain"]
    status, body = await api.call("POST", "/senders", user, json={
        "account": f"NoReply@{domain}", "domain": domain, "password": "s3cret-pass"})
    assert status == 200, body
    assert body["id"].startswith("sender_")
    assert (body["account"], body["domain"], body["active"], body["daily_limit"],
            body["hourly_limit"]) == (f"noreply@{domain}", domain, True, 100, 4)
    assert body["created_at"].endswith("Z")
    cipher = CredentialCipher(TOKEN_SECRET, TOKEN_IV)
    cached = await api.redis.execute("HGET", AUTH_HASH, str(user))
    creds = cipher.decrypt(cached)
    assert (creds.username, creds.password) == (f"noreply@{domain}", "s3cret-pass")
    with Session(api.usend.engine) as session:
        row = session.scalars(select(Transport).where(Transport.account == body["account"])).one()
    assert "s3cret-pass" not in row.password_encrypted
    assert cipher.decrypt(row.password_encrypted) == creds
    await api.redis.execute("HDEL", AUTH_HASH, str(user))


async def test_sender_rules(api):  # noqa: F811
    user, other = new_user_id(), new_user_id()
    domain = (await create_domain(api, user))["domain"]
    foreign = (await create_domain(api, other))["domain"]
    cases = [
        ({"account": f"a@{domain}", "domain": domain, "password": "short"}, "password"),
        ({"account": f"a@{new_domain_name()}", "domain": domain, "password": "12345678"},
         "not an address of domain"),
        ({"account": f"a@{foreign}", "domain": foreign, "password": "12345678"},
         "not one of your domains"),
        ({"account": "no-at-sign", "domain": domain, "password": "12345678"}, None),
        ({"account": f"a@{domain}", "password": "12345678"}, None),
        ({"account": f"a@{domain}", "domain": domain, "password": "1234567\x00"}, None),
        ({"account": f"a@{domain}", "domain": domain, "password": "12345678\udc80"}, None),
    ]
    for body, message in cases:
        status, err = await api.call("POST", "/senders", user, json=body)
        assert status == 400, body
        if message:
            assert message in str(err["detail"])
    ok = {"account": f"dup@{domain}", "domain": domain, "password": "12345678"}
    assert (await api.call("POST", "/senders", user, json=ok))[0] == 200
    status, err = await api.call("POST", "/senders", user, json={**ok, "account": f"DUP@{domain}"})
    assert status == 400
    assert "already exists" in err["detail"]
    await api.redis.execute("HDEL", AUTH_HASH, str(user))


async def test_deleting_a_domain_deactivates_its_senders_and_drops_their_cached_credential(
        api):  # noqa: F811
    user = new_user_id()
    assert (await api.call("POST", "/testing/set-pack", user,
                           json={"pack_code": "DEDICATED_100K"}))[0] == 200
    first, second = await create_domain(api, user), await create_domain(api, user)

    async def add_sender(domain):
        status, body = await api.call("POST", "/senders", user, json={
            "account": f"hello@{domain['domain']}", "domain": domain["domain"],
            "password": "sender-pw-123"})
        assert status == 200, body

    async def cached():
        value = await api.redis.execute("HGET", AUTH_HASH, str(user))
        return value.decode() if value is not None else None

    def senders():
        with Session(api.usend.engine) as session:
            return {(t.domain, t.active, t.password_encrypted) for t in session.scalars(
                select(Transport).where(Transport.user_id == user))}

    await add_sender(first)
    await add_sender(second)  # the cache now holds the second domain's credential
    second_value = await cached()
    assert second_value is not None
    # Deleting the first domain: its sender is deactivated, the cached (second) one stays.
    assert (await api.call("DELETE", f"/domains/{first['id']}", user))[0] == 200
    assert {(d, active) for d, active, _ in senders()} == \
        {(first["domain"], False), (second["domain"], True)}
    assert await cached() == second_value
    # Deleting the second domain: its sender is deactivated and its cached credential dropped.
    assert (await api.call("DELETE", f"/domains/{second['id']}", user))[0] == 200
    assert all(not active for _, active, _ in senders())
    assert await cached() is None
