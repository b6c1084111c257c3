"""/webhooks against PostgreSQL, Redis and the loopback DNS server: create (secret shown once,
stored sealed), list/get/patch/delete, deliveries newest first, tenant isolation, permissions,
the URL rules (https, no credentials, public addresses only unless allowed) and hostile input
(400, never 5xx), the cap per user."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, select

from etrans.adapters.crypto.webhook_secrets import WebhookSecretCipher
from etrans.adapters.sql.usend_webhooks import Webhook, WebhookDelivery
from etrans.domain.webhooks import EVENT_TYPES
from tests.integration.account_api import TOKEN_SECRET, new_user_id, open_api

PUBLIC_IP = "93.184.215.14"


def _host(dns_server, *addresses: str, aaaa: tuple[str, ...] = ()) -> str:
    name = f"h{uuid.uuid4().hex[:12]}.example"
    dns_server.set_records(name, "A", list(addresses))
    if aaaa:
        dns_server.set_records(name, "AAAA", list(aaaa))
    return name


@pytest.fixture
async def api(usend_db_url, redis_url, dns_server):
    async with open_api(usend_db_url=usend_db_url, redis_url=redis_url,
                        dns_address=dns_server.address, max_webhooks=3) as built:
        yield built


@pytest.fixture
def public_url(dns_server):
    return lambda path="/hooks": f"https://{_host(dns_server, PUBLIC_IP)}{path}"


async def _create(api, user, url, **body):
    status, created = await api.call("POST", "/webhooks", user, json={"url": url, **body})
    assert status == 201, created
    return created


async def test_create_shows_the_secret_once_and_stores_it_sealed(api, public_url):
    user = new_user_id()
    url = public_url()
    created = await _create(api, user, url, events=["email.bounced", "email.sent",
                                                    "email.sent"], description="prod")
    secret = created.pop("secret")
    assert secret.startswith("whsec_")
    assert created["id"].startswith("wh_")
    assert (created["url"], created["events"], created["description"], created["enabled"],
            created["disabled_reason"], created["failing_since"]) == (
        url, ["email.sent", "email.bounced"], "prod", True, None, None)
    status, got = await api.call("GET", f"/webhooks/{created['id']}", user)
    assert status == 200
    assert got == created
    assert "secret" not in json.dumps((await api.call("GET", "/webhooks", user))[1])
    number = int(created["id"].removeprefix("wh_"))
    with api.usend.engine.connect() as conn:
        sealed = conn.execute(select(Webhook.secret_sealed).where(Webhook.id == number)
                              ).scalar_one()
    assert secret not in sealed
    assert WebhookSecretCipher(TOKEN_SECRET).unseal(user, sealed) == secret
    every = await _create(api, user, public_url())
    assert every["events"] is None  # no events: every type


async def test_list_patch_delete_and_the_cap(api, public_url):
    user = new_user_id()
    ids = [(await _create(api, user, public_url(f"/{i}")))["id"] for i in range(3)]
    status, refused = await api.call("POST", "/webhooks", user, json={"url": public_url()})
    assert (status, refused["detail"]) == (400, "Webhook limit reached: at most 3 webhooks "
                                                "per account")
    status, page = await api.call("GET", "/webhooks?per_page=2", user)
    assert status == 200
    assert ([w["id"] for w in page["data"]], page["total"], page["page"], page["per_page"]) == (
        ids[::-1][:2], 3, 1, 2)
    assert [w["id"] for w in (await api.call("GET", "/webhooks?page=2&per_page=2", user)
                              )[1]["data"]] == ids[:1]

    number = int(ids[0].removeprefix("wh_"))
    with api.usend.engine.begin() as conn:
        conn.execute(Webhook.__table__.update().where(Webhook.id == number).values(
            enabled=False, disabled_reason="failing for 5 days",
            failing_since=datetime(2026, 1, 1, tzinfo=UTC)))
    status, disabled = await api.call("GET", f"/webhooks/{ids[0]}", user)
    assert (disabled["enabled"], disabled["disabled_reason"], disabled["failing_since"]) == (
        False, "failing for 5 days", "2026-01-01T00:00:00Z")
    new_url = public_url("/moved")
    status, patched = await api.call("PATCH", f"/webhooks/{ids[0]}", user,
                                     json={"enabled": True, "events": ["email.opened"],
                                           "url": new_url})
    assert status == 200, patched
    assert (patched["enabled"], patched["disabled_reason"], patched["failing_since"],
            patched["events"], patched["url"]) == (True, None, None, ["email.opened"], new_url)
    status, off = await api.call("PATCH", f"/webhooks/{ids[0]}", user, json={"enabled": False})
    assert (status, off["enabled"], off["events"]) == (200, False, ["email.opened"])

    response = await api.client.open(f"/webhooks/{ids[0]}", method="DELETE",
                                     headers=api.bearer(user))
    assert response.status_code == 204
    assert await response.get_data() == b""
    assert (await api.call("GET", f"/webhooks/{ids[0]}", user))[0] == 404
    assert (await api.call("DELETE", f"/webhooks/{ids[0]}", user))[0] == 404
    await _create(api, user, public_url())  # below the cap again


async def test_deliveries_newest_first_and_paged(api, public_url):
    user = new_user_id()
    wid = (await _create(api, user, public_url()))["id"]
    number = int(wid.removeprefix("wh_"))
    t0 = datetime(2026, 12, 6, 7, 0, tzinfo=UTC)
    rows = [{"webhook_id": number, "event_id": f"evt_{i:032x}", "event_type": "email.sent",
             "attempt": i + 1, "status_code": 500 if i < 2 else 200,
             "error": "HTTP 500" if i < 2 else None, "latency_ms": 10 + i,
             "attempted_at": t0 + timedelta(minutes=i)} for i in range(3)]
    with api.usend.engine.begin() as conn:
        conn.execute(insert(WebhookDelivery.__table__), rows)
    status, page = await api.call("GET", f"/webhooks/{wid}/deliveries?per_page=2", user)
    assert status == 200, page
    assert (page["total"], page["page"], page["per_page"]) == (3, 1, 2)
    assert page["data"][0] == {"event_id": f"evt_{2:032x}", "event_type": "email.sent",
                               "attempt": 3, "status_code": 200, "error": None,
                               "latency_ms": 12, "attempted_at": "2026-12-06T07:02:00Z"}
    assert page["data"][1]["status_code"] == 500
    other = (await _create(api, user, public_url()))["id"]
    status, empty = await api.call("GET", f"/webhooks/{other}/deliveries", user)
    assert (status, empty["data"], empty["total"]) == (200, [], 0)
    # Deleting the endpoint deletes its deliveries.
    assert (await api.call("DELETE", f"/webhooks/{wid}", user))[0] == 204
    with api.usend.engine.connect() as conn:
        assert conn.execute(select(WebhookDelivery.id).where(
            WebhookDelivery.webhook_id == number)).first() is None


async def test_another_users_webhooks_are_not_found(api, public_url):
    a, b = new_user_id(), new_user_id()
    wid = (await _create(api, a, public_url()))["id"]
    for method, path, body in [("GET", f"/webhooks/{wid}", None),
                               ("PATCH", f"/webhooks/{wid}", {"enabled": False}),
                               ("PATCH", f"/webhooks/{wid}", {"url": public_url()}),
                               ("GET", f"/webhooks/{wid}/deliveries", None),
                               ("DELETE", f"/webhooks/{wid}", None)]:
        status, answer = await api.call(method, path, b, json=body)
        assert (status, answer) == (404, {"detail": "Webhook not found"}), (method, path)
    assert (await api.call("GET", "/webhooks", b))[1]["data"] == []
    status, still = await api.call("GET", f"/webhooks/{wid}", a)
    assert (status, still["enabled"]) == (200, True)


async def test_permissions_read_only_reads_full_access_writes(api, public_url):
    user = new_user_id()
    wid = (await _create(api, user, public_url()))["id"]
    keys = {}
    for level in ("read_only", "sending_access", "full_access"):
        status, key = await api.call("POST", "/api-keys", user,
                                     json={"name": level, "permission": level})
        assert status == 200
        keys[level] = {"X-API-KEY": key["key"]}
    for level, headers in keys.items():
        for path in ("/webhooks", f"/webhooks/{wid}", f"/webhooks/{wid}/deliveries"):
            assert (await api.call("GET", path, headers))[0] == 200, (level, path)
        writes = [("POST", "/webhooks", {"url": public_url()}),
                  ("PATCH", f"/webhooks/{wid}", {"description": level})]
        for method, path, body in writes:
            status, _ = await api.call(method, path, headers, json=body)
            assert status == (200 + (method == "POST") if level == "full_access" else 403), (
                level, method, status)
        status, _ = await api.call("DELETE", f"/webhooks/{wid}", headers)
        assert status == (403 if level != "full_access" else 204), level
    assert (await api.call("GET", "/webhooks", {}))[0] == 401


@pytest.mark.parametrize(("addresses", "aaaa"), [
    (["127.0.0.1"], ()), (["10.0.0.5"], ()), (["192.168.1.1"], ()), (["172.16.0.1"], ()),
    (["169.254.169.254"], ()), (["100.64.0.1"], ()), (["0.0.0.0"], ()), (["224.0.0.1"], ()),
    ([PUBLIC_IP], ("::1",)), ([PUBLIC_IP], ("fc00::1",)), ([PUBLIC_IP], ("fe80::1",)),
    ([PUBLIC_IP, "10.1.1.1"], ()),
])
async def test_a_host_resolving_to_a_non_public_address_is_refused(api, dns_server, addresses,
                                                                   aaaa):
    host = _host(dns_server, *addresses, aaaa=aaaa)
    status, body = await api.call("POST", "/webhooks", new_user_id(),
                                  json={"url": f"https://{host}/h"})
    assert status == 400
    assert "not a public address" in body["detail"], body


@pytest.mark.parametrize(("url", "message"), [
    ("http://{host}/h", "must be an https:// URL"),
    ("https://user:pw@{host}/h", "must not contain a user name or password"),
    ("https://{host}/" + "a" * 2100, "at most 2048 characters"),
    ("https://127.0.0.1/h", "not a public address"),
    ("https://[::1]/h", "not a public address"),
    ("https://[::ffff:10.0.0.1]/h", "not a public address"),
    ("https://localhost:8443/h", "not a public address"),
    ("https://127.1/h", "invalid IPv4 address"),
    ("https://0x7f000001/h", "invalid IPv4 address"),
    ("https://intranet/h", "fully qualified"),
    ("https://nx{host}/h", "does not exist"),
    ("https://{host}/h x", "printable ASCII"),
    ("https://{host}/é", "printable ASCII"),
    ("ftp://{host}/h", "must be an https:// URL"),
    ("not a url", "printable ASCII"),
    ("https://{host}:99999/", "not a valid URL"),
])
async def test_url_refusals_are_400_with_the_reason(api, public_url, url, message):
    host = public_url("").removeprefix("https://")
    status, body = await api.call("POST", "/webhooks", new_user_id(),
                                  json={"url": url.format(host=host)})
    assert status == 400, body
    assert message in json.dumps(body), body


async def test_patching_the_url_rechecks_it(api, public_url, dns_server):
    user = new_user_id()
    wid = (await _create(api, user, public_url()))["id"]
    status, body = await api.call("PATCH", f"/webhooks/{wid}", user,
                                  json={"url": f"https://{_host(dns_server, '10.0.0.1')}/"})
    assert status == 400
    assert "not a public address" in body["detail"]


@pytest.mark.parametrize("body", [
    {"url": "https://a.example/" + "x" * 100_000},
    {"url": "https://a.example/\x00"}, {"url": "https://a.example/\r\nX-Evil: 1"},
    {"url": None}, {"url": 42}, {"url": ["https://a.example/"]}, {},
    {"url": "https://a.example/", "events": []},
    {"url": "https://a.example/", "events": ["email.nope"]},
    {"url": "https://a.example/", "events": ["email.sent"] * 1000},
    {"url": "https://a.example/", "events": [f"t{i}" for i in range(1000)]},
    {"url": "https://a.example/", "events": "email.sent"},
    {"url": "https://a.example/", "events": [None]},
    {"url": "https://a.example/", "description": "a\nb"},
    {"url": "https://a.example/", "description": "x" * 300},
    {"url": "https://a.example/", "secret": "whsec_mine"},
])
async def test_hostile_bodies_are_400(api, body):
    status, answer = await api.call("POST", "/webhooks", new_user_id(), json=body)
    assert status == 400, answer


async def test_non_json_and_bad_ids_are_400(api):
    user = new_user_id()
    for raw in (b"not json", b"[1,2]", b'{"url": "https://a.example/"', b"\xff\xfe"):
        response = await api.client.open("/webhooks", method="POST", data=raw, headers={
            **api.bearer(user), "Content-Type": "application/json"})
        assert response.status_code == 400, raw
    for bad in ("1", "wh_0", "wh_x", "dom_1", "wh_" + "9" * 30):
        assert (await api.call("GET", f"/webhooks/{bad}", user))[0] == 400, bad
        assert (await api.call("PATCH", f"/webhooks/{bad}", user, json={}))[0] == 400, bad


async def test_private_urls_when_allowed(usend_db_url, redis_url, dns_server):
    async with open_api(usend_db_url=usend_db_url, redis_url=redis_url,
                        dns_address=dns_server.address,
                        webhooks_allow_private_urls=True) as built:
        user = new_user_id()
        for url in ("http://127.0.0.1:8080/hook", "https://localhost/h",
                    f"http://{_host(dns_server, '10.0.0.9')}/h"):
            status, body = await built.call("POST", "/webhooks", user, json={"url": url})
            assert status == 201, (url, body)
        status, body = await built.call("POST", "/webhooks", user,
                                        json={"url": "http://u:p@127.0.0.1/"})
        assert status == 400


async def test_the_openapi_document_has_the_routes(api):
    status, doc = await api.call("GET", "/openapi.json")
    assert status == 200
    paths = doc["paths"]
    assert set(paths["/webhooks"]) == {"get", "post"}
    assert set(paths["/webhooks/{webhook_id}"]) == {"get", "patch", "delete"}
    assert "201" in paths["/webhooks"]["post"]["responses"]
    assert "204" in paths["/webhooks/{webhook_id}"]["delete"]["responses"]
    assert "get" in paths["/webhooks/{webhook_id}/deliveries"]
    events = doc["components"]["schemas"]["CreateWebhookRequest"]["properties"]["events"]
    assert set(events["anyOf"][0]["items"]["enum"]) == set(EVENT_TYPES)
