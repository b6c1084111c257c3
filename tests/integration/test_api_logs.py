"""GET /logs against a real MongoDB-wire server (documents as the fetchlog worker writes them,
``source`` and ``user_id`` included) and the Billing/USEND DBs.

Who sees an event (docs/delivery-logs.md): the sender of its message, and the user holding its
domain verified from the moment it was verified - never the user who registers a name someone else
used.  Documents stored before fetchlog recorded ``source`` are served through the backfill."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import event

from etrans.adapters.mongo.log_writer import MongoLogWriter
from etrans.adapters.sql.message_owners import MessageOwnerLookup
from etrans.workers.log_labels import backfill_labels, label_documents
from tests.integration.sending_api import SendingApi, email, open_sending_api

EARLY = datetime(2026, 3, 1, tzinfo=UTC)  # the test domains are verified before their events


@pytest.fixture
async def api(etrans_env: Any, billing_db: Any) -> Any:
    async with open_sending_api(etrans_env, billing_db) as built:
        yield built


def _doc(domain: str, message_id: str, minute: int, *, event_type: str = "Sender",
         action: str = "delivered", response: str = "250 2.0.0 OK 1772679259 xyz",
         recipient: str = "user@example.org") -> dict[str, Any]:
    return {
        "event": event_type, "timestamp": datetime(2026, 3, 10, 4, minute, tzinfo=UTC),
        "action": action, "sender": f"hello@{domain}", "recipient": recipient,
        "response": response, "from_domain": domain, "message_id": message_id,
        "to_domain": recipient.split("@")[1], "event_id": f"evt-{message_id}-{minute}",
    }


async def _ingest(api: SendingApi, docs: list[dict[str, Any]]) -> None:
    """Store as fetchlog does: ``source`` / ``user_id`` looked up in the USEND DB, then insert."""
    await label_documents(docs, MessageOwnerLookup(api.usend))
    api.mongo.collection.insert_many(docs)


async def _visible(api: SendingApi, user: int, query: str = "") -> list[dict[str, Any]]:
    status, page = await api.call("GET", f"/logs?per_page=100&{query}", api.bearer(user))
    assert status == 200, page
    assert page["total"] == len(page["logs"])
    return page["logs"]


async def test_logs(api: SendingApi) -> None:
    user, _, domain = api.sender(daily=1000, hourly=1000, verified_at=EARLY)
    h = api.bearer(user)
    api_ids = []
    for i in range(3):
        status, sent = await api.call("POST", "/emails", h, json=email(domain, subject=str(i)))
        assert status == 200
        api_ids.append(sent["id"])
    other_user, _, other_domain = api.sender(verified_at=EARLY)
    docs = [
        _doc(domain, api_ids[0], 1),
        _doc(domain, api_ids[1], 2, event_type="Deferred", action="deferred",
             response="451 4.7.1 Try again later"),
        _doc(domain, api_ids[2], 3, event_type="Reject", action="rejected",
             response="550 5.1.1 <x@example.org>: Recipient address rejected"),
        _doc(domain, "smtp-1@" + domain, 4, recipient="other@example.net"),
        _doc(domain, "smtp-2@" + domain, 5, event_type="Queue", action="queued", response=""),
        _doc(other_domain, "foreign@" + other_domain, 6),
    ]
    await _ingest(api, docs)

    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "email_messages" in statement:
            statements.append(statement)

    event.listen(api.usend.engine, "before_cursor_execute", count)
    try:
        status, page = await api.call("GET", "/logs?per_page=2", h)
    finally:
        event.remove(api.usend.engine, "before_cursor_execute", count)
    assert status == 200, page
    assert statements == []  # ``source`` was recorded at ingestion: no USEND query at all
    assert (page["total"], page["page"], page["per_page"]) == (5, 1, 2)
    first = page["logs"][0]  # default sort: -timestamp
    assert first["message_id"] == "smtp-2@" + domain
    assert first["source"] == "SMTP"
    assert first["status"] == "Queued"
    stats = {s["label"]: (s["count"], s["percentage"]) for s in page["stats"]}
    assert stats == {"Delivered": (2, 40.0), "Delayed": (1, 20.0), "Bounced": (1, 20.0),
                     "Queued": (1, 20.0), "API": (3, 60.0), "SMTP": (2, 40.0)}
    assert [s["label"] for s in page["stats"]][-2:] == ["API", "SMTP"]

    status, page = await api.call("GET", "/logs?sorts=timestamp", h)
    by_id = {log["message_id"]: log for log in page["logs"]}
    assert page["logs"][0]["message_id"] == api_ids[0]
    delivered = by_id[api_ids[0]]
    assert delivered == {
        "event": "Sender", "timestamp": "2026-03-10T04:01:00Z", "status": "Delivered",
        "action": "250 2.0.0 OK", "action_detail": "250 2.0.0 OK 1772679259 xyz",
        "sender": f"hello@{domain}", "recipient": "user@example.org", "from_domain": domain,
        "to_domain": "example.org", "message_id": api_ids[0], "source": "API",
    }
    assert by_id[api_ids[2]]["action"] == "550 5.1.1"
    assert by_id[api_ids[2]]["status"] == "Bounced"
    assert "foreign@" + other_domain not in by_id  # another user's domain

    async def ids(query: str) -> set[str]:
        status, page = await api.call("GET", f"/logs?{query}", h)
        assert status == 200, (query, page)
        assert page["total"] == len(page["logs"])
        return {log["message_id"] for log in page["logs"]}

    assert await ids("source=api") == set(api_ids)
    assert await ids("source=SMTP") == {"smtp-1@" + domain, "smtp-2@" + domain}
    assert len(await ids("source=api,smtp")) == 5
    assert await ids("action=deferred") == {api_ids[1]}
    assert await ids("action=deferred,rejected") == {api_ids[1], api_ids[2]}
    assert await ids("recipient=other@example.net") == {"smtp-1@" + domain}
    assert await ids(f"message_id={api_ids[0]}") == {api_ids[0]}
    assert await ids(f"sender=hello@{domain}&source=smtp&action=delivered") \
        == {"smtp-1@" + domain}
    after = (datetime(2026, 3, 10, 4, 2, tzinfo=UTC)).isoformat()
    before = (datetime(2026, 3, 10, 4, 5, tzinfo=UTC)).isoformat().replace("+00:00", "Z")
    assert await ids(f"log_after={after.replace('+', '%2B')}&log_before={before}") \
        == {api_ids[2], "smtp-1@" + domain}
    status, page = await api.call("GET", "/logs?source=api&sorts=-recipient,timestamp", h)
    assert status == 200
    status, page = await api.call("GET", "/logs?page=3&per_page=2", h)
    assert len(page["logs"]) == 1

    for bad in ("source=email", "per_page=101", "per_page=0", "sorts=password",
                "log_before=soon", "page=0",
                f"log_after={(datetime.now(UTC) + timedelta(days=1)).date()}"
                f"&log_before={datetime.now(UTC).date()}"):
        status, answer = await api.call("GET", f"/logs?{bad}", h)
        assert status == 400, (bad, answer)
        assert answer["detail"]

    # The other user sees only their own domain's log, as SMTP (not one of their API sends).
    status, page = await api.call("GET", "/logs", api.bearer(other_user))
    assert [log["message_id"] for log in page["logs"]] == ["foreign@" + other_domain]
    # A user with no domain gets an empty answer.
    status, page = await api.call("GET", "/logs", api.bearer(api.user()))
    assert (status, page["total"], page["logs"], page["stats"]) == (200, 0, [], [])


def _billing_sql(api: SendingApi, statement: str, *params: Any) -> None:
    """A change the billing system makes (the API reads the Billing DB read-only)."""
    with psycopg.connect(api.seed.owner_url, autocommit=True) as conn:
        conn.execute(statement, params)


async def test_a_name_used_before_shows_none_of_its_past_events(api: SendingApi) -> None:
    """Issue 13.1: A sends from a domain and deletes it; B registers the same name (pending,
    then verified) and sees none of A's events - only those after B verified it.  A keeps the
    events of A's own messages."""
    a, a_domain_id, name = api.sender(daily=100, hourly=100, verified_at=EARLY)
    status, sent = await api.call("POST", "/emails", api.bearer(a), json=email(name))
    assert status == 200, sent
    await _ingest(api, [
        _doc(name, sent["id"], 1, recipient="secret-customer@example.org"),
        _doc(name, "smtp-a@" + name, 2, recipient="another-customer@example.org"),
    ])
    assert {log["message_id"] for log in await _visible(api, a)} == {sent["id"],
                                                                     "smtp-a@" + name}
    _billing_sql(api, "UPDATE domain SET deleted_at = now() WHERE id = %s", a_domain_id)

    b = api.user()
    b_domain_id = api.seed.domain(b, name, status="pending")
    assert await _visible(api, b) == []
    for query in ("sorts=recipient", f"sender=hello@{name}", "source=smtp", "source=api",
                  "recipient=secret-customer@example.org"):
        assert await _visible(api, b, query) == [], query
    _billing_sql(api, "UPDATE domain SET status = 'verified', verified_at = now() WHERE id = %s",
                 b_domain_id)
    assert await _visible(api, b) == []

    later = _doc(name, "smtp-b@" + name, 0)
    later["timestamp"] = datetime.now(UTC) + timedelta(seconds=5)
    await _ingest(api, [later])
    assert [log["message_id"] for log in await _visible(api, b)] == ["smtp-b@" + name]
    # A no longer holds the domain: only A's own message remains visible to A.
    assert [log["message_id"] for log in await _visible(api, a)] == [sent["id"]]


async def test_own_messages_are_visible_outside_held_domains(api: SendingApi) -> None:
    """The events of a user's own API messages are theirs whatever the domain's state (pending,
    deleted), and nobody else's unless they hold the domain verified."""
    user, _, domain = api.sender(daily=100, hourly=100, verified_at=EARLY)
    status, sent = await api.call("POST", "/emails", api.bearer(user), json=email(domain))
    assert status == 200, sent
    doc = _doc("not-held.example", sent["id"], 7)
    await _ingest(api, [doc])
    assert (doc["source"], doc["user_id"]) == ("API", user)
    logs = await _visible(api, user)
    assert [(log["message_id"], log["source"]) for log in logs] == [(sent["id"], "API")]
    assert await _visible(api, api.user()) == []


async def test_documents_stored_before_source_are_served_then_backfilled(api: SendingApi) -> None:
    """Documents without ``source``/``user_id`` (written before this version): a page's rows get
    their source from a bounded USEND lookup; the backfill then records both fields, after which
    the stats, the source filter and the own-message branch are exact."""
    user, _, domain = api.sender(daily=100, hourly=100, verified_at=EARLY)
    ids = []
    for i in range(2):
        status, sent = await api.call("POST", "/emails", api.bearer(user),
                                      json=email(domain, subject=str(i)))
        assert status == 200, sent
        ids.append(sent["id"])
    legacy = [_doc(domain, f"<{ids[0]}>", 1), _doc(domain, "smtp-old@" + domain, 2),
              _doc("released.example", ids[1], 3)]  # own message, domain not held
    api.mongo.collection.insert_many([dict(d) for d in legacy])

    logs = {log["message_id"]: log["source"] for log in await _visible(api, user)}
    assert logs == {f"<{ids[0]}>": "API", "smtp-old@" + domain: "SMTP"}

    writer = MongoLogWriter(api.settings.mongo)
    try:
        changed = await backfill_labels(writer, MessageOwnerLookup(api.usend), batch=2)
        assert changed >= 3
        assert await backfill_labels(writer, MessageOwnerLookup(api.usend)) == 0  # idempotent
    finally:
        writer.close()
    status, page = await api.call("GET", "/logs", api.bearer(user))
    assert {log["message_id"]: log["source"] for log in page["logs"]} == {
        f"<{ids[0]}>": "API", "smtp-old@" + domain: "SMTP", ids[1]: "API"}
    stats = {s["label"]: s["count"] for s in page["stats"]}
    assert (stats["API"], stats["SMTP"]) == (2, 1)
    assert {log["message_id"] for log in await _visible(api, user, "source=smtp")} \
        == {"smtp-old@" + domain}
