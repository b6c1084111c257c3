"""POST /emails, POST /emails/batch, GET /emails, GET /emails/{id} in-process (Quart test client)
against real PostgreSQL (USEND + read-only Billing DB), Redis and MongoDB."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio
from sqlalchemy import func, select, update

from etrans.adapters.crypto.credentials import AUTH_HASH
from etrans.adapters.sql.usend import EmailMessage, EmailOutbox
from etrans.workers.send_request import decode_request
from tests.integration.sending_api import SendingApi, email, open_sending_api

EMAILS = EmailMessage.__table__
OUTBOX = EmailOutbox.__table__


@pytest.fixture
async def api(etrans_env: Any, billing_db: Any) -> Any:
    async with open_sending_api(etrans_env, billing_db) as built:
        yield built


def _count(api: SendingApi, table: Any, *where: Any) -> int:
    with api.usend.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar())


async def test_send_email_queues_row_outbox_and_credentials(api: SendingApi) -> None:
    user, _, domain = api.sender()
    key, _ = api.api_key(user, "sending_access")
    attachment = base64.b64encode(b"%PDF-1.4 hello").decode()
    body = email(domain, cc=["Cc Person <cc@example.org>"], bcc=["bcc@example.org"],
                 reply_to="reply@example.org", text="Hi", headers={"X-Campaign": "c1"},
                 tags=[{"name": "kind", "value": "welcome"}],
                 attachments=[{"filename": "a.pdf", "content": attachment,
                               "content_type": "application/pdf"}])
    status, sent = await api.call("POST", "/emails", {"X-API-KEY": key}, json=body)
    assert status == 200, sent
    assert set(sent) == {"id", "from", "to", "status", "created_at", "suppressed"}
    assert sent["suppressed"] == []
    assert sent["status"] == "queued"
    assert sent["from"] == body["from"]
    assert sent["to"] == ["rcpt@example.org"]
    assert sent["id"].startswith("msg_")
    assert sent["id"].endswith("@" + domain)
    datetime.strptime(sent["created_at"], "%Y-%m-%dT%H:%M:%SZ")

    with api.usend.engine.connect() as conn:
        row = conn.execute(select(EMAILS).where(EMAILS.c.message_id == sent["id"])).one()
        outbox = conn.execute(select(OUTBOX).where(OUTBOX.c.message_id == sent["id"])).one()
    assert (row.user_id, row.status, row.subject) == (user, "queued", "Hello")
    assert row.attachments == [{"filename": "a.pdf", "content_type": "application/pdf",
                                "size": 14}]
    assert outbox.published_at is None
    assert outbox.topic == api.settings.kafka.topic
    payload = json.loads(bytes(outbox.payload))["payload"]
    assert payload["sender"] == {"name": "Sender", "email": f"hello@{domain}"}
    assert payload["message_id"] == sent["id"]
    assert payload["user_id"] == str(user)
    assert payload["body"] == "<p>Hi</p>"
    assert payload["text"] == "Hi"
    assert payload["attachments"][0]["content"] == attachment
    assert payload["headers"] == {"X-Campaign": "c1"}

    cached = await api.redis.execute("HGET", AUTH_HASH, str(user))
    creds = api.cipher.decrypt(cached)
    assert (creds.username, creds.password) == (f"smtp-{user}", f"pw-{user}-secret")

    status, detail = await api.call("GET", f"/emails/{sent['id']}", {"X-API-KEY": key})
    assert status == 200
    assert detail["status"] == "Queued"
    assert detail["html"] == "<p>Hi</p>"
    assert detail["delivered_at"] is None


async def test_addresses_reach_kafka_as_the_worker_reads_them(api: SendingApi) -> None:
    """What POST /emails validated is what the sendmail worker reads: the record carries each
    address in its canonical text (display names quoted), which the worker's decoder reads back
    to exactly the validated addresses - never to the display name, never to nothing."""
    user, _, domain = api.sender()
    body = email(domain, to=["Smith, John <john@example.org>", "a@evil.test <bob@example.org>"],
                 cc=['"Doe; Jane" <jane@example.org>'], bcc=["Ann (ops) <ann@example.org>"],
                 reply_to="Help, Desk <help@example.org>")
    status, sent = await api.call("POST", "/emails", api.bearer(user), json=body)
    assert status == 200, sent
    assert sent["to"] == body["to"]  # the API answers (and stores) what it was given
    with api.usend.engine.connect() as conn:
        outbox = conn.execute(select(OUTBOX).where(OUTBOX.c.message_id == sent["id"])).one()
    payload = json.loads(bytes(outbox.payload))["payload"]
    assert payload["recipients"] == ['"Smith, John" <john@example.org>',
                                     '"a@evil.test" <bob@example.org>']
    assert payload["cc"] == ['"Doe; Jane" <jane@example.org>']
    assert payload["bcc"] == ['"Ann (ops)" <ann@example.org>']
    assert payload["reply_to"] == '"Help, Desk" <help@example.org>'
    outgoing = decode_request(bytes(outbox.payload))
    assert outgoing.envelope_recipients() == ["john@example.org", "bob@example.org",
                                              "jane@example.org", "ann@example.org"]
    assert [m.name for m in outgoing.to] == ["Smith, John", "a@evil.test"]
    assert outgoing.reply_to[0].email == "help@example.org"


INVALID = {
    "to empty": {"to": []},
    "to not a list": {"to": "rcpt@example.org"},
    "bad to": {"to": ["not-an-address"]},
    "to with CRLF": {"to": ["a@example.org\r\nBcc: victim@example.org"]},
    "subject CRLF": {"subject": "Hi\r\nBcc: victim@example.org"},
    "subject LF": {"subject": "Hi\nthere"},
    "no body": {"html": None},
    "header injection": {"headers": {"X-Ok": "v\r\nBcc: victim@example.org"}},
    "reserved header": {"headers": {"Bcc": "victim@example.org"}},
    "dropped header": {"headers": {"Content-Disposition": "attachment; filename=x.pdf"}},
    "bad header name": {"headers": {"X Bad": "v"}},
    "attachment bad base64": {"attachments": [{"filename": "a", "content": "***",
                                               "content_type": "text/plain"}]},
    "attachment no type": {"attachments": [{"filename": "a", "content": "aGk="}]},
    "attachment bad type": {"attachments": [{"filename": "a", "content": "aGk=",
                                             "content_type": "nope"}]},
    "too many recipients": {"to": [f"r{i}@example.org" for i in range(51)]},
    "recipients over total": {"to": [f"r{i}@example.org" for i in range(30)],
                              "cc": [f"c{i}@example.org" for i in range(30)]},
    "template_id": {"template_id": "welcome"},
    "template missing value": {"template_data": {"a": 1}, "html": "<p>{{ b }}</p>"},
    "unknown field": {"priority": "high"},
    "reply_to CRLF": {"reply_to": "a@example.org\nX: y"},
    "from display name CRLF": {"from": "Evil\r\nBcc: v@example.org <a@example.org>"},
}


async def test_invalid_requests_are_400(api: SendingApi) -> None:
    user, _, domain = api.sender()
    headers = api.bearer(user)
    for name, change in INVALID.items():
        body = email(domain)
        body.update(change)
        if change.get("html", "x") is None:
            body.pop("html")
        status, answer = await api.call("POST", "/emails", headers, json=body)
        assert status == 400, (name, status, answer)
        assert answer["detail"], name
    for raw in (b"", b"{not json", b"[]", b"null"):
        response = await api.client.post("/emails", data=raw, headers=headers)
        assert response.status_code == 400, raw
    assert _count(api, EMAILS, EMAILS.c.user_id == user) == 0


async def test_template_data_is_rendered(api: SendingApi) -> None:
    user, _, domain = api.sender()
    body = email(domain, subject="Hi {{ name }}", html="<p>{{name}} & {{ code }}</p>",
                 text="Code {{ code }}", template_data={"name": "<Ann>", "code": 42})
    status, sent = await api.call("POST", "/emails", api.bearer(user), json=body)
    assert status == 200, sent
    status, detail = await api.call("GET", f"/emails/{sent['id']}", api.bearer(user))
    assert detail["subject"] == "Hi <Ann>"
    assert detail["html"] == "<p>&lt;Ann&gt; & 42</p>"
    assert detail["text"] == "Code 42"
    assert detail["template_data"] == {"name": "<Ann>", "code": 42}


async def test_size_limits(api: SendingApi) -> None:
    user, _, domain = api.sender(daily=1000, hourly=1000)
    headers = {**api.bearer(user), "Content-Type": "application/json"}
    # Over 25 MB of decoded attachments (but under the body cap): refused after parsing.
    big = base64.b64encode(b"\0" * (25 * 1024 * 1024 + 1)).decode()
    body = email(domain, attachments=[{"filename": "big.bin", "content": big,
                                       "content_type": "application/octet-stream"}])
    status, answer = await api.call("POST", "/emails", api.bearer(user), json=body)
    assert status == 400
    assert "too large" in answer["detail"]
    # A Content-Length over the body cap is refused before the body is read.
    limit = api.app.config["MAX_CONTENT_LENGTH"]
    response = await api.client.post("/emails", data=b"x" * (limit + 1), headers=headers)
    assert response.status_code == 400
    assert "too large" in (await response.get_json())["detail"]


async def test_domain_must_be_owned_and_verified(api: SendingApi) -> None:
    user, _, _ = api.sender()
    pending_domain = f"pending-{user}.example.test"
    api.seed.domain(user, pending_domain, status="pending")
    _other_user, _, other_domain = api.sender()
    for domain in (pending_domain, other_domain, "never-registered.example.test"):
        status, answer = await api.call("POST", "/emails", api.bearer(user), json=email(domain))
        assert (status, answer) == (400, {"detail": "Domain not verified"}), domain
    assert _count(api, EMAILS, EMAILS.c.user_id == user) == 0


async def test_no_smtp_credentials(api: SendingApi) -> None:
    user, _, domain = api.sender(credentials=False)
    status, answer = await api.call("POST", "/emails", api.bearer(user), json=email(domain))
    assert status == 400
    assert "SMTP credentials" in answer["detail"]


async def test_transport_sender_credentials_win(api: SendingApi) -> None:
    from sqlalchemy import insert

    from etrans.adapters.crypto.credentials import SmtpCredentials
    from etrans.adapters.sql.usend import Transport

    user, domain_id, domain = api.sender(credentials=False)
    value = api.cipher.encrypt(SmtpCredentials(f"noreply@{domain}", "transport-pw"))
    with api.usend.engine.begin() as conn:
        conn.execute(insert(Transport.__table__).values(
            user_id=user, domain_id=domain_id, domain=domain, account=f"noreply@{domain}",
            password_encrypted=value))
    status, _ = await api.call("POST", "/emails", api.bearer(user), json=email(domain))
    assert status == 200
    assert (await api.redis.execute("HGET", AUTH_HASH, str(user))).decode() == value


async def test_hourly_quota_is_exact_under_200_concurrent_sends(api: SendingApi) -> None:
    user, _, domain = api.sender(daily=1000, hourly=50)
    headers = api.bearer(user)
    statuses: list[int] = []
    details: list[Any] = []

    async def send(i: int) -> None:
        status, answer = await api.call("POST", "/emails", headers,
                                        json=email(domain, subject=f"n{i}"))
        statuses.append(status)
        details.append(answer)

    async with trio.open_nursery() as nursery:
        for i in range(200):
            nursery.start_soon(send, i)
    assert statuses.count(200) == 50, sorted(set(statuses))
    assert statuses.count(400) == 150
    refused = {d["detail"] for d in details if "detail" in d}
    assert refused == {"Hourly sending quota exceeded: the limit is 50 emails per hour"}
    assert _count(api, EMAILS, EMAILS.c.user_id == user) == 50


async def test_daily_quota(api: SendingApi) -> None:
    user, _, domain = api.sender(daily=2, hourly=100)
    results = [(await api.call("POST", "/emails", api.bearer(user), json=email(domain)))[0]
               for _ in range(3)]
    assert results == [200, 200, 400]


async def test_idempotency_key(api: SendingApi) -> None:
    user, _, domain = api.sender()
    headers = {**api.bearer(user), "Idempotency-Key": "order-1234"}
    first = await api.client.post("/emails", json=email(domain), headers=headers)
    again = await api.client.post("/emails", json=email(domain), headers=headers)
    assert first.status_code == again.status_code == 200
    assert await first.get_json() == await again.get_json()
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert _count(api, EMAILS, EMAILS.c.user_id == user) == 1
    # Same key, different body: 409.
    changed = await api.client.post("/emails", json=email(domain, subject="other"),
                                    headers=headers)
    assert changed.status_code == 409
    # Another user may use the same key.
    other, _, other_domain = api.sender()
    other_headers = {**api.bearer(other), "Idempotency-Key": "order-1234"}
    response = await api.client.post("/emails", json=email(other_domain), headers=other_headers)
    assert response.status_code == 200
    # While the first request with a key is in flight, a second one gets 409.
    started = trio.Event()
    release = trio.Event()
    seen: list[int] = []

    async def slow_send() -> None:
        response = await api.client.post("/emails", json=email(domain),
                                         headers={**api.bearer(user), "Idempotency-Key": "k2"})
        seen.append(response.status_code)

    original = api.app.extensions["etrans"].services.bus._handlers
    from etrans.app.emails import SendEmail

    real_handler = original[SendEmail]

    async def paused_handler(cmd: Any) -> Any:
        started.set()
        await release.wait()
        return await real_handler(cmd)

    original[SendEmail] = paused_handler
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_send)
            await started.wait()
            original[SendEmail] = real_handler
            response = await api.client.post("/emails", json=email(domain),
                                              headers={**api.bearer(user), "Idempotency-Key": "k2"})
            assert response.status_code == 409
            assert "in progress" in (await response.get_json())["detail"]
            release.set()
    finally:
        original[SendEmail] = real_handler
    assert seen == [200]
    # A failed request releases its key: fixing the request and retrying works.
    bad = await api.client.post("/emails", json=email("unknown.example.test"),
                                headers={**api.bearer(user), "Idempotency-Key": "k3"})
    assert bad.status_code == 400
    good = await api.client.post("/emails", json=email("unknown.example.test"),
                                 headers={**api.bearer(user), "Idempotency-Key": "k3"})
    assert good.status_code == 400  # same body: evaluated again, not replayed as 409


async def test_batch(api: SendingApi) -> None:
    user, _, domain = api.sender(daily=None, hourly=3)
    items = [
        email(domain, subject="one"),
        {"from": f"a@{domain}", "to": []},  # schema error
        email("foreign.example.test"),  # domain not verified
        email(domain, subject="two"),
        email(domain, subject="three"),
        email(domain, subject="four"),  # over the hourly limit of 3
    ]
    status, answer = await api.call("POST", "/emails/batch", api.bearer(user),
                                    json={"emails": items})
    assert status == 200, answer
    assert len(answer["data"]) == 3
    assert [e["index"] for e in answer["errors"]] == [1, 2, 5]
    assert answer["errors"][1]["error"] == "Domain not verified"
    assert "quota" in answer["errors"][2]["error"]
    assert "to" in answer["errors"][0]["error"]
    assert _count(api, EMAILS, EMAILS.c.user_id == user) == 3
    for bad in ({"emails": []}, {"emails": [email(domain)] * 101}, {"emails": "x"}, {}):
        status, _ = await api.call("POST", "/emails/batch", api.bearer(user), json=bad)
        assert status == 400, bad


async def test_list_and_get_emails(api: SendingApi) -> None:
    user, _, domain = api.sender(daily=1000, hourly=1000)
    ids = []
    for i in range(5):
        status, sent = await api.call("POST", "/emails", api.bearer(user),
                                      json=email(domain, subject=f"s{i}"))
        assert status == 200
        ids.append(sent["id"])
    # Delivery progress as the fetchlog worker would record it.
    raw = ["delivered", "delivered", "deferred", "bounced", "queued"]
    base = datetime(2026, 3, 10, 4, 0, tzinfo=UTC)
    with api.usend.engine.begin() as conn:
        for i, (message_id, status) in enumerate(zip(ids, raw, strict=True)):
            conn.execute(update(EMAILS).where(EMAILS.c.message_id == message_id)
                         .values(status=status, created_at=base + timedelta(hours=i)))
    h = api.bearer(user)
    status, page = await api.call("GET", "/emails?per_page=2", h)
    assert status == 200
    assert (page["total"], page["page"], page["per_page"], len(page["data"])) == (5, 1, 2, 2)
    assert page["data"][0]["id"] == ids[4]  # newest first
    assert page["data"][0]["status"] == "Queued"
    assert set(page["data"][0]) == {"id", "from", "to", "subject", "status", "created_at"}
    assert page["stats"] == [
        {"label": "Delivered", "count": 2, "percentage": 40.0},
        {"label": "Bounced", "count": 1, "percentage": 20.0},
        {"label": "Delayed", "count": 1, "percentage": 20.0},
        {"label": "Queued", "count": 1, "percentage": 20.0},
    ]
    status, page3 = await api.call("GET", "/emails?per_page=2&page=3", h)
    assert [e["id"] for e in page3["data"]] == [ids[0]]
    for query, expected in [("delayed", {ids[2]}), ("deferred", {ids[2]}),
                            ("Delivered,bounced", {ids[0], ids[1], ids[3]}),
                            ("queued", {ids[4]})]:
        status, page = await api.call("GET", f"/emails?status={query}", h)
        assert status == 200
        assert {e["id"] for e in page["data"]} == expected, query
        assert page["total"] == len(expected)
    status, page = await api.call(
        "GET", "/emails?created_at_from=2026-03-10T05:00:00Z&created_at_to=2026-03-10T07:00:00Z", h)
    assert {e["id"] for e in page["data"]} == {ids[1], ids[2], ids[3]}
    for bad in ("status=lost", "created_at_from=yesterday", "per_page=0", "per_page=101",
                "page=0", "page=x",
                "created_at_from=2026-03-11T00:00:00Z&created_at_to=2026-03-10T00:00:00Z"):
        status, answer = await api.call("GET", f"/emails?{bad}", h)
        assert status == 400, (bad, answer)
        assert answer["detail"]
    status, answer = await api.call("GET", "/emails/msg_unknown@example.test", h)
    assert (status, answer) == (404, {"detail": "Email not found"})


async def test_tenant_isolation(api: SendingApi) -> None:
    owner, _, domain = api.sender()
    status, sent = await api.call("POST", "/emails", api.bearer(owner), json=email(domain))
    assert status == 200
    intruder = api.user()
    key, _ = api.api_key(intruder, "full_access")
    for headers in (api.bearer(intruder), {"X-API-KEY": key}):
        status, answer = await api.call("GET", f"/emails/{sent['id']}", headers)
        assert status == 404, answer
        status, page = await api.call("GET", "/emails", headers)
        assert (status, page["total"], page["data"]) == (200, 0, [])
        # The owner's verified domain is "not verified" for anybody else.
        status, answer = await api.call("POST", "/emails", headers, json=email(domain))
        assert (status, answer["detail"]) == (400, "Domain not verified")


async def test_lone_surrogates_and_bad_utf8_are_400(api: SendingApi) -> None:
    user, _, domain = api.sender()
    headers = {**api.bearer(user), "Content-Type": "application/json"}
    body = json.dumps(email(domain, subject="x \ud800 y"))  # ensure_ascii: "\\ud800" escape
    response = await api.client.post("/emails", data=body.encode(), headers=headers)
    assert response.status_code == 400
    paired = json.dumps(email(domain, subject="smile \U0001f600"))  # a valid surrogate pair
    response = await api.client.post("/emails", data=paired.encode(), headers=headers)
    assert response.status_code == 200
    response = await api.client.post("/emails", data=b'{"subject": "\xff"}', headers=headers)
    assert response.status_code == 400
    status, _ = await api.call("GET", "/logs?sender=%ED%A0%80&recipient=%FF", api.bearer(user))
    assert status in (200, 400)


async def test_detail_shows_each_recipients_outcome_and_bounce_class(
        api: SendingApi, mongo_uri: str) -> None:
    """Events stored by fetchlog - sendmail's Reject, the SMTP server's own log - give each
    recipient its outcome and bounce class in GET /emails/{id} (``recipients``)."""
    from etrans.adapters.mongo.log_writer import MongoLogWriter
    from etrans.adapters.sql.email_status import EmailStatusUpdater
    from etrans.domain.delivery_log import EventFilter
    from etrans.pipeline import Message
    from etrans.settings import MongoSettings, Secret
    from etrans.workers.fetchlog import FetchlogTask
    from tests.harness.servers import unique_name

    user, _, domain = api.sender()
    body = email(domain, to=["Ok <ok@example.org>", "Gone@Example.org"], cc=["full@example.org"])
    status, sent = await api.call("POST", "/emails", api.bearer(user), json=body)
    assert status == 200, sent
    status, detail = await api.call("GET", f"/emails/{sent['id']}", api.bearer(user))
    assert (status, detail["recipients"]) == (200, [])

    def event(kind: str, recipient: str, action: str, response: str, minute: int,
              **extra: Any) -> Message:
        value = {"Event": kind, "@timestamp": f"2026-03-10T04:{minute:02d}:00Z",
                 "SMTP_Action": action, "recipient": recipient, "response": response,
                 "message_id": f"<{sent['id']}>", "Event_ID": unique_name("evt"), **extra}
        return Message("email-logs", 0, minute, None, json.dumps(value).encode())

    settings = MongoSettings(uri=Secret(mongo_uri), dbname=unique_name("rcpt").replace("-", "_"),
                             collection="email_logs")
    writer = MongoLogWriter(settings)
    task = FetchlogTask(EventFilter(), writer, EmailStatusUpdater(api.usend))
    try:
        await writer.ensure_indexes()
        await task([event("Deferred", "gone@example.org", "deferred", "451 4.7.1 later", 1),
                    event("Sender", "ok@example.org", "delivered", "250 2.0.0 OK", 2),
                    event("Reject", "gone@example.org", "rejected",
                          "550 5.1.1 <gone@example.org>: Recipient address rejected: User "
                          "unknown in local recipient table", 3, bounce_class="hard"),
                    event("Sender", "full@example.org", "bounced",
                          "host mx[192.0.2.7] said: 552 5.2.2 Mailbox full", 4)])
        # A late deferral changes nothing: a bounce is final.
        await task([event("Deferred", "gone@example.org", "deferred", "451 4.7.1 later", 5)])
    finally:
        writer.close()
    status, detail = await api.call("GET", f"/emails/{sent['id']}", api.bearer(user))
    assert status == 200
    assert detail["status"] == "Delivered"  # the email's status: the first final one proven
    assert detail["recipients"] == [
        {"email": "full@example.org", "outcome": "Bounced", "bounce_class": "soft",
         "response": "host mx[192.0.2.7] said: 552 5.2.2 Mailbox full",
         "updated_at": "2026-03-10T04:04:00Z"},
        {"email": "gone@example.org", "outcome": "Bounced", "bounce_class": "hard",
         "response": "550 5.1.1 <gone@example.org>: Recipient address rejected: User unknown "
                     "in local recipient table", "updated_at": "2026-03-10T04:03:00Z"},
        {"email": "ok@example.org", "outcome": "Delivered", "bounce_class": None,
         "response": "250 2.0.0 OK", "updated_at": "2026-03-10T04:02:00Z"},
    ]
