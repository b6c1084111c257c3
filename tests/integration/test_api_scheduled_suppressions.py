"""A scheduled email skips the recipients suppressed while it waited, as POST /emails skips
them when it accepts one: through the real API (every route of ``etrans serve``) and the outbox
relay wired as ``serve`` wires it, on PostgreSQL, Redis and a Kafka-API broker.  Addresses are
suppressed with POST /suppressions after the email was accepted; what goes out is read back
from the topics the relay published to.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio
from sqlalchemy import select

from etrans.adapters.sql.usend import EmailOutbox
from etrans.domain.events import EventType
from tests.integration.sending_api import SendingApi, email, open_sending_api
from tests.integration.test_api_suppressed_sends import (
    email_events,
    outbox_rows,
    own_usend,
    published,
)

__all__ = ["own_usend"]  # the fixture, shared

OUTBOX = EmailOutbox.__table__


@pytest.fixture
async def api(etrans_env: Any, billing_db: Any, own_usend: str, new_topic: Any) -> Any:
    async with open_sending_api(etrans_env, billing_db, with_relay=True, all_routes=True,
                                USEND_DB_URI=own_usend,
                                KAFKA_EVENTS_TOPIC=new_topic(prefix="events")) as built:
        yield built


async def schedule(api: SendingApi, headers: dict[str, str], domain: str, **fields: Any
                   ) -> tuple[dict[str, Any], datetime]:
    at = (datetime.now(UTC) + timedelta(seconds=2)).replace(microsecond=0) + timedelta(seconds=1)
    status, sent = await api.call("POST", "/emails", headers, json=email(
        domain, scheduled_at=at.isoformat(), **fields))
    assert (status, sent["status"], sent["suppressed"]) == (200, "scheduled", []), sent
    return sent, at


async def suppress(api: SendingApi, headers: dict[str, str], address: str) -> None:
    status, entry = await api.call("POST", "/suppressions", headers, json={"email": address})
    assert status == 201, entry


async def release_when_due(api: SendingApi, at: datetime, want: int) -> None:
    await trio.sleep(max(0.0, (at - datetime.now(UTC)).total_seconds()) + 0.3)
    assert await api.relay.release_due() == want


def send_requests(api: SendingApi, message_id: str) -> int:
    with api.usend.engine.connect() as conn:
        return len(conn.execute(select(OUTBOX.c.id).where(OUTBOX.c.message_id == message_id))
                   .all())


async def test_a_recipient_suppressed_before_release_is_left_out(
        api: SendingApi, kafka_test_config: dict[str, Any]) -> None:
    user, _, domain = api.sender()
    headers = api.bearer(user)
    sent, at = await schedule(api, headers, domain,
                              to=["Ann <ann@example.org>", "Gone <Gone@Example.org>"])
    await suppress(api, headers, "gone@example.org")
    await release_when_due(api, at, 1)
    [payload] = await published(api, kafka_test_config, 1, events=1)
    assert (payload["message_id"], payload["recipients"]) == (sent["id"], ["Ann <ann@example.org>"])
    events = await email_events(api, kafka_test_config, 2)  # email.suppressed, email.queued
    assert sorted(e.type for e in events) == sorted([EventType.SUPPRESSED, EventType.QUEUED])
    [suppressed] = [e for e in events if e.type is EventType.SUPPRESSED]
    assert (suppressed.message_id, suppressed.user_id, suppressed.data["recipient"],
            suppressed.data["reason"]) == (sent["id"], user, "gone@example.org", "manual")

    status, detail = await api.call("GET", f"/emails/{sent['id']}", headers)
    assert status == 200, detail
    assert detail["status"] == "Queued"
    assert detail["to"] == ["Ann <ann@example.org>", "Gone <Gone@Example.org>"]  # as accepted
    assert [(r["email"], r["outcome"], r["response"]) for r in detail["recipients"]] == [
        ("gone@example.org", "Suppressed", "manual")]


async def test_an_email_whose_every_recipient_was_suppressed_before_release_is_never_sent(
        api: SendingApi, kafka_test_config: dict[str, Any]) -> None:
    user, _, domain = api.sender()
    headers = api.bearer(user)
    sent, at = await schedule(api, headers, domain, to=["gone@example.org"],
                              cc=["CC@example.org"])
    await suppress(api, headers, "gone@example.org")
    await suppress(api, headers, "cc@example.org")
    await release_when_due(api, at, 1)
    assert send_requests(api, sent["id"]) == 0  # nothing left in the outbox to send
    assert outbox_rows(api) == 2  # its two email.suppressed events
    assert await api.relay.relay_once() == (2, 0)
    assert sorted(e.data["recipient"] for e in await email_events(
        api, kafka_test_config, 2)) == ["cc@example.org", "gone@example.org"]

    status, detail = await api.call("GET", f"/emails/{sent['id']}", headers)
    assert (status, detail["status"]) == (200, "Suppressed")
    assert [(r["email"], r["outcome"]) for r in detail["recipients"]] == [
        ("cc@example.org", "Suppressed"), ("gone@example.org", "Suppressed")]
    status, change = await api.call("DELETE", f"/emails/{sent['id']}/schedule", headers)
    assert status == 409, change  # no longer scheduled

    # A normal email of the same user afterwards is the only record on the send topic.
    status, normal = await api.call("POST", "/emails", headers, json=email(domain))
    assert (status, normal["status"]) == (200, "queued")
    assert [p["message_id"] for p in await published(api, kafka_test_config, 1)] == [normal["id"]]


def change_domain(api: SendingApi, domain_id: int, *, delete: bool) -> None:
    """What DELETE /domains or a lost verification does to the Billing DB's row (the API's
    billing is external here, as in production)."""
    import psycopg

    with psycopg.connect(api.seed.owner_url, autocommit=True) as conn:
        if delete:
            conn.execute("DELETE FROM mkt_domain WHERE domain_id = %s", [domain_id])
            conn.execute("DELETE FROM domain WHERE id = %s", [domain_id])
        else:
            conn.execute("UPDATE domain SET status = 'pending' WHERE id = %s", [domain_id])


@pytest.mark.parametrize("delete", [True, False], ids=["deleted", "unverified"])
async def test_an_email_whose_domain_went_away_while_it_waited_fails_visibly(
        api: SendingApi, kafka_test_config: dict[str, Any], delete: bool) -> None:
    user, domain_id, domain = api.sender()
    headers = api.bearer(user)
    sent, at = await schedule(api, headers, domain, to=["ann@example.org"])
    change_domain(api, domain_id, delete=delete)
    await release_when_due(api, at, 1)
    # Not handed to the delivery queue: failed, with its email.failed event, never retried.
    assert await api.relay.relay_once() == (1, 0)  # the event only
    events = await email_events(api, kafka_test_config, 1)
    assert [(e.type, e.message_id, e.user_id) for e in events] == [
        (EventType.FAILED, sent["id"], user)]
    status, detail = await api.call("GET", f"/emails/{sent['id']}", headers)
    assert (status, detail["status"]) == (200, "Failed")
    says = "was deleted" if delete else "is not verified"
    assert detail["failure_reason"] == (f"etrans: not sent: the sending domain {domain} {says} "
                                        "while the email was scheduled")
    assert detail["failure_reason"] in events[0].data["response"]
    with api.usend.engine.connect() as conn:
        [row] = conn.execute(select(OUTBOX).where(OUTBOX.c.message_id == sent["id"])).all()
    assert (row.published_at, row.due_at) == (None, None)
    assert row.failed_at is not None
    assert await api.relay.relay_once() == (0, 0)
