"""POST /emails and POST /emails/batch skip the sender's suppressed recipients: in-process (Quart
test client, wired as ``etrans serve``) against real PostgreSQL (a USEND DB of the test's own, so
the outbox relay's passes see only its rows), Redis and a Kafka-API broker.

Entries go on the list through the store ``serve`` wires (``PgSuppressionStore.add``); what goes
out is read back from the topic the relay published to.  The SMTP side (the message reaches the
others only) is in tests/e2e/test_send_flow.py and tests/e2e/test_flow_backends.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
import trio
from sqlalchemy import func, select

from etrans.adapters.sql.suppressions_repo import PgSuppressionStore
from etrans.adapters.sql.usend import EmailOutbox
from etrans.app.records import Suppression
from etrans.domain.events import EmailEvent, EventType, decode_event, derived_event_id
from tests.e2e.send_support import read_topic
from tests.integration.sending_api import SendingApi, email, open_sending_api

OUTBOX = EmailOutbox.__table__


@pytest.fixture
def own_usend(fresh_database: Any) -> str:
    from etrans.adapters.sql import migrations

    url = fresh_database("suppressed")
    migrations.upgrade(url)
    return url


@pytest.fixture
async def api(etrans_env: Any, billing_db: Any, own_usend: str, new_topic: Any) -> Any:
    async with open_sending_api(etrans_env, billing_db, with_relay=True,
                                USEND_DB_URI=own_usend,
                                KAFKA_EVENTS_TOPIC=new_topic(prefix="events")) as built:
        yield built


async def suppress(api: SendingApi, user: int, *entries: tuple[str, str]) -> None:
    added = await PgSuppressionStore(api.usend).add([
        Suppression(user, address, reason, message_id=None, response=None)
        for address, reason in entries])
    assert added == len(entries)


async def published(api: SendingApi, kafka_test_config: dict[str, Any], want: int,
                    events: int = 0) -> list[dict[str, Any]]:
    """The relay publishes what is pending; the payloads on the send topic (``want`` of them).
    ``events``: the email.suppressed events pending with them (outbox rows of their own)."""
    assert await api.relay.relay_once() == (want + events, 0), api.relay.stats
    records = await trio.to_thread.run_sync(lambda: read_topic(
        api.env["KAFKA_BOOTSTRAP_SERVERS"], api.env["KAFKA_TOPIC"], want=want,
        overrides=kafka_test_config))
    return [record["value"]["payload"] for record in records]


async def used(api: SendingApi, domain_id: int) -> int:
    return (await api.stores.quota.usage(domain_id, datetime.now(UTC))).hourly  # type: ignore[no-any-return]


async def email_events(api: SendingApi, kafka_test_config: dict[str, Any], want: int
                       ) -> list[EmailEvent]:
    records = await trio.to_thread.run_sync(lambda: read_topic(
        api.env["KAFKA_BOOTSTRAP_SERVERS"], api.env["KAFKA_EVENTS_TOPIC"], want=want,
        overrides=kafka_test_config))
    return [decode_event(json.dumps(record["value"]).encode()) for record in records]


def outbox_rows(api: SendingApi) -> int:
    with api.usend.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(OUTBOX)).scalar())


async def test_suppressed_recipients_are_skipped_and_reported(
        api: SendingApi, kafka_test_config: dict[str, Any]) -> None:
    user, domain_id, domain = api.sender()
    await suppress(api, user, ("gone@example.org", "hard_bounce"),
                   ("spam@example.org", "complaint"))
    headers = api.bearer(user)
    status, sent = await api.call("POST", "/emails", headers, json=email(
        domain, to=["Ann <ann@example.org>", "Gone <GONE@Example.ORG>"],
        cc=["spam@EXAMPLE.org", "cy@example.org"], bcc=["bee@example.org"]))
    assert status == 200, sent
    assert sent["status"] == "queued"
    assert sent["to"] == ["Ann <ann@example.org>", "Gone <GONE@Example.ORG>"]
    assert sent["suppressed"] == [{"email": "GONE@Example.ORG", "reason": "hard_bounce"},
                                  {"email": "spam@EXAMPLE.org", "reason": "complaint"}]
    [payload] = await published(api, kafka_test_config, 1, events=2)
    assert payload["message_id"] == sent["id"]
    # One email.suppressed per suppressed recipient (written with the email), and email.queued.
    events = await email_events(api, kafka_test_config, 3)
    suppressed = sorted((e for e in events if e.type is EventType.SUPPRESSED),
                        key=lambda e: e.data["recipient"])
    assert [(e.data["recipient"], e.data["reason"], e.message_id, e.user_id)
            for e in suppressed] == [("gone@example.org", "hard_bounce", sent["id"], user),
                                     ("spam@example.org", "complaint", sent["id"], user)]
    for event in suppressed:
        assert event.id == derived_event_id(sent["id"], "email.suppressed",
                                            event.data["recipient"])
    assert [e.type for e in events].count(EventType.QUEUED) == 1
    assert (payload["recipients"], payload["cc"], payload["bcc"]) == (
        ["Ann <ann@example.org>"], ["cy@example.org"], ["bee@example.org"])
    assert await used(api, domain_id) == 1

    status, detail = await api.call("GET", f"/emails/{sent['id']}", headers)
    assert status == 200, detail
    assert detail["status"] == "Queued"
    assert [(r["email"], r["outcome"], r["response"], r["bounce_class"])
            for r in detail["recipients"]] == [
        ("gone@example.org", "Suppressed", "hard_bounce", None),
        ("spam@example.org", "Suppressed", "complaint", None)]
    assert detail["recipients"][0]["updated_at"] == sent["created_at"]

    # Another user's list does not apply.
    other, _, other_domain = api.sender()
    status, theirs = await api.call("POST", "/emails", api.bearer(other),
                                    json=email(other_domain, to=["gone@example.org"]))
    assert (status, theirs["status"], theirs["suppressed"]) == (200, "queued", [])


async def test_an_email_whose_every_recipient_is_suppressed_is_never_sent(
        api: SendingApi, kafka_test_config: dict[str, Any]) -> None:
    user, domain_id, domain = api.sender()
    await suppress(api, user, ("gone@example.org", "hard_bounce"), ("cc@example.org", "manual"))
    headers = api.bearer(user)
    status, sent = await api.call("POST", "/emails", headers, json=email(
        domain, to=["gone@example.org"], cc=["CC@example.org"]))
    assert status == 200, sent
    assert sent["status"] == "suppressed"
    assert sent["to"] == ["gone@example.org"]
    assert [s["email"] for s in sent["suppressed"]] == ["gone@example.org", "CC@example.org"]
    assert outbox_rows(api) == 2  # its two email.suppressed events, no send request
    assert await api.relay.relay_once() == (2, 0)
    assert sorted(e.data["recipient"] for e in await email_events(
        api, kafka_test_config, 2)) == ["cc@example.org", "gone@example.org"]
    assert await used(api, domain_id) == 0

    status, detail = await api.call("GET", f"/emails/{sent['id']}", headers)
    assert (status, detail["status"]) == (200, "Suppressed")
    assert [(r["email"], r["outcome"]) for r in detail["recipients"]] == [
        ("cc@example.org", "Suppressed"), ("gone@example.org", "Suppressed")]
    status, listed = await api.call("GET", "/emails?status=Suppressed", headers)
    assert status == 200, listed
    assert [(e["id"], e["status"]) for e in listed["data"]] == [(sent["id"], "Suppressed")]

    # A normal email of the same user afterwards is the only record on the topic.
    status, normal = await api.call("POST", "/emails", headers, json=email(domain))
    assert (status, normal["status"]) == (200, "queued")
    assert [p["message_id"] for p in await published(api, kafka_test_config, 1)] == [normal["id"]]
    assert await used(api, domain_id) == 1


async def test_a_batch_sends_to_the_others_and_stores_the_fully_suppressed_items(
        api: SendingApi, kafka_test_config: dict[str, Any]) -> None:
    user, domain_id, domain = api.sender()
    await suppress(api, user, ("gone@example.org", "hard_bounce"))
    headers = api.bearer(user)
    status, answer = await api.call("POST", "/emails/batch", headers, json={"emails": [
        email(domain, to=["Gone@example.org"]),
        email(domain, to=["ann@example.org", "gone@example.org"]),
        email(domain, to=["gone@EXAMPLE.ORG"], bcc=["gone@example.org"]),
        email(domain, to=["bob@example.org"]),
        {"from": "x"},
    ]})
    assert status == 200, answer
    assert [(d["status"], [s["email"] for s in d["suppressed"]]) for d in answer["data"]] == [
        ("suppressed", ["Gone@example.org"]), ("queued", ["gone@example.org"]),
        ("suppressed", ["gone@EXAMPLE.ORG"]), ("queued", [])]
    assert [e["index"] for e in answer["errors"]] == [4]
    payloads = await published(api, kafka_test_config, 2, events=3)
    assert [(p["message_id"], p["recipients"]) for p in payloads] == [
        (answer["data"][1]["id"], ["ann@example.org"]),
        (answer["data"][3]["id"], ["bob@example.org"])]
    assert await used(api, domain_id) == 2
    statuses = []
    for item in answer["data"]:
        _, detail = await api.call("GET", f"/emails/{item['id']}", headers)
        statuses.append(detail["status"])
    assert statuses == ["Suppressed", "Queued", "Suppressed", "Queued"]


async def test_the_openapi_document_describes_the_suppressed_recipients(api: SendingApi) -> None:
    status, document = await api.call("GET", "/openapi.json")
    assert status == 200
    text = json.dumps(document)
    assert "SuppressedRecipient" in text
    schemas = document["components"]["schemas"]
    assert schemas["SendEmailResponse"]["properties"]["status"]["enum"] == [
        "queued", "scheduled", "suppressed"]  # scheduled: a send with scheduled_at
