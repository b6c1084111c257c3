"""The suppression list on the send path (:mod:`etrans.app.emails`), on in-memory fakes.

One lookup per email over all its recipients (to, cc, bcc; normalised); suppressed recipients
are left out of the Kafka record (each field keeps its role) and reported in the response and in
GET /emails/{id}; an email whose every recipient is suppressed is stored ``suppressed``: no
outbox record, no quota, never published.  The same rules run against PostgreSQL, SQLite and the
real servers in tests/integration/test_api_suppressed_sends.py and the e2e suites.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from etrans.api.emails import accepted_view, batch_view, detail_view, list_view
from etrans.app.emails import GetEmail, ListEmails, SendBatch, SendEmail
from etrans.app.records import Suppression
from etrans.errors import InvalidInput, UpstreamUnavailable
from tests.unit.test_app_emails import VERIFIED, World, email

NOW = datetime(2026, 3, 10, 14, 30, tzinfo=UTC)


class SuppressingWorld(World):
    """``guarded``: as serve and dev wire it, the store checks the list as it saves
    (EmailDeps.guarded_saves); the send path looks it up only when the store refuses."""

    def __init__(self, *listed: tuple[str, str], guarded: bool = False) -> None:
        from tests.unit.fakes_sending import FakeSuppressions

        self.suppressions = FakeSuppressions()
        for address, reason in listed:
            self.suppressions.entries[1, address] = Suppression(1, address, reason)
        super().__init__(suppressions=self.suppressions, guarded_saves=guarded)

    def payload(self, index: int = -1) -> dict[str, Any]:
        return json.loads(self.store.outbox[index][2])["payload"]  # type: ignore[no-any-return]


async def test_suppressed_recipients_are_left_out_and_reported() -> None:
    world = SuppressingWorld(("bob@x.org", "hard_bounce"), ("dee@x.org", "manual"))
    new = await world.bus.handle(SendEmail(1, email(
        to=["amy@x.org", "Bob <Bob@X.org>"], cc=["cy@x.org"], bcc=["DEE@x.org", "eve@x.org"])))
    assert world.suppressions.lookups == 1  # one lookup for to, cc and bcc
    view = accepted_view(new)
    assert view["status"] == "queued"
    assert view["to"] == ["amy@x.org", "Bob <Bob@X.org>"]  # as requested
    assert view["suppressed"] == [{"email": "Bob@X.org", "reason": "hard_bounce"},
                                  {"email": "DEE@x.org", "reason": "manual"}]
    payload = world.payload()
    assert (payload["recipients"], payload["cc"], payload["bcc"]) == (
        ["amy@x.org"], ["cy@x.org"], ["eve@x.org"])
    assert world.outbox.notified == 1
    assert await world.used() == 1
    detail = detail_view(await world.bus.handle(GetEmail(1, new.message_id)))
    assert detail["status"] == "Queued"
    assert detail["to"] == ["amy@x.org", "Bob <Bob@X.org>"]
    assert [(r["email"], r["outcome"], r["response"]) for r in detail["recipients"]] == [
        ("bob@x.org", "Suppressed", "hard_bounce"), ("dee@x.org", "Suppressed", "manual")]


async def test_an_email_without_suppressed_recipients_says_so() -> None:
    world = SuppressingWorld(("someone@else.org", "manual"))
    new = await world.bus.handle(SendEmail(1, email(cc=["c@x.org"])))
    assert accepted_view(new)["suppressed"] == []
    assert (world.payload()["recipients"], world.payload()["cc"]) == (["bob@x.org"], ["c@x.org"])
    detail = detail_view(await world.bus.handle(GetEmail(1, new.message_id)))
    assert detail["recipients"] == []


async def test_every_to_suppressed_keeps_the_cc_as_cc() -> None:
    world = SuppressingWorld(("bob@x.org", "complaint"))
    await world.bus.handle(SendEmail(1, email(cc=["c@x.org"], bcc=["b@x.org"])))
    payload = world.payload()
    assert (payload["recipients"], payload["cc"], payload["bcc"]) == ([], ["c@x.org"], ["b@x.org"])


async def test_an_email_whose_every_recipient_is_suppressed_is_stored_never_sent() -> None:
    world = SuppressingWorld(("bob@x.org", "hard_bounce"), ("c@x.org", "complaint"))
    new = await world.bus.handle(SendEmail(1, email(to=["BOB@x.org"],
                                                    bcc=["c@x.org", "bob@x.org"])))
    view = accepted_view(new)
    assert view["status"] == "suppressed"
    assert view["suppressed"] == [{"email": "BOB@x.org", "reason": "hard_bounce"},
                                  {"email": "c@x.org", "reason": "complaint"}]
    assert world.store.outbox == []
    assert world.outbox.notified == 0
    assert await world.used() == 0
    assert world.cache.values == {}  # nothing will log in with them
    detail = detail_view(await world.bus.handle(GetEmail(1, new.message_id)))
    assert (detail["status"], detail["to"]) == ("Suppressed", ["BOB@x.org"])
    assert [r["outcome"] for r in detail["recipients"]] == ["Suppressed", "Suppressed"]
    listed = list_view(await world.bus.handle(ListEmails(1, status="suppressed")))
    assert [(e["id"], e["status"]) for e in listed["data"]] == [(new.message_id, "Suppressed")]
    assert listed["stats"] == [{"label": "Suppressed", "count": 1, "percentage": 100.0}]


async def test_a_batch_sends_the_others_and_stores_the_fully_suppressed_items() -> None:
    world = SuppressingWorld(("bob@x.org", "hard_bounce"))
    outcome = await world.bus.handle(SendBatch(1, [
        (0, email()), (1, email(to=["amy@x.org", "bob@x.org"])), (2, email(to=["Bob@x.org"])),
        (3, email("alice@unknown.example"))]))
    view = batch_view(outcome)
    assert [(d["status"], d["suppressed"]) for d in view["data"]] == [
        ("suppressed", [{"email": "bob@x.org", "reason": "hard_bounce"}]),
        ("queued", [{"email": "bob@x.org", "reason": "hard_bounce"}]),
        ("suppressed", [{"email": "Bob@x.org", "reason": "hard_bounce"}])]
    assert [e["index"] for e in view["errors"]] == [3]
    assert [row["status"] for row in world.store.rows] == ["suppressed", "queued", "suppressed"]
    assert len(world.store.outbox) == 1
    assert world.payload()["recipients"] == ["amy@x.org"]
    assert await world.used(VERIFIED) == 1
    assert world.suppressions.lookups == 3


async def test_a_suppression_list_that_does_not_answer_fails_the_request() -> None:
    world = SuppressingWorld()
    world.suppressions.down = True
    with pytest.raises(UpstreamUnavailable):
        await world.bus.handle(SendEmail(1, email()))
    with pytest.raises(UpstreamUnavailable):
        await world.bus.handle(SendBatch(1, [(0, email()), (1, email())]))
    assert (world.store.rows, await world.used()) == ([], 0)


# -- guarded saves: the store checks the list in the insert (serve, dev) ---------------------------

async def test_guarded_a_send_without_listed_recipients_costs_no_lookup() -> None:
    world = SuppressingWorld(("someone@else.org", "manual"), guarded=True)
    new = await world.bus.handle(SendEmail(1, email(cc=["c@x.org"], bcc=["Someone@else.org.uk"])))
    assert (world.suppressions.lookups, world.store.refused) == (0, 0)
    assert accepted_view(new)["suppressed"] == []
    assert (world.payload()["recipients"], world.payload()["cc"]) == (["bob@x.org"], ["c@x.org"])
    assert (await world.used(), world.outbox.notified) == (1, 1)


async def test_guarded_listed_recipients_are_left_out_after_one_refusal() -> None:
    world = SuppressingWorld(("bob@x.org", "hard_bounce"), ("dee@x.org", "manual"),
                             guarded=True)
    new = await world.bus.handle(SendEmail(1, email(
        to=["amy@x.org", "Bob <Bob@X.org>"], cc=["cy@x.org"], bcc=["DEE@x.org", "eve@x.org"])))
    assert (world.store.refused, world.suppressions.lookups) == (1, 1)
    assert accepted_view(new)["suppressed"] == [{"email": "Bob@X.org", "reason": "hard_bounce"},
                                                {"email": "DEE@x.org", "reason": "manual"}]
    payload = world.payload()
    assert (payload["recipients"], payload["cc"], payload["bcc"]) == (
        ["amy@x.org"], ["cy@x.org"], ["eve@x.org"])
    assert len(world.store.rows) == 1  # the refused save stored nothing
    assert (await world.used(), world.outbox.notified) == (1, 1)  # the quota counted once
    detail = detail_view(await world.bus.handle(GetEmail(1, new.message_id)))
    assert [(r["email"], r["outcome"]) for r in detail["recipients"]] == [
        ("bob@x.org", "Suppressed"), ("dee@x.org", "Suppressed")]


async def test_guarded_every_recipient_listed_is_stored_suppressed_without_quota() -> None:
    world = SuppressingWorld(("bob@x.org", "hard_bounce"), guarded=True)
    new = await world.bus.handle(SendEmail(1, email(to=["BOB@x.org"])))
    assert accepted_view(new)["status"] == "suppressed"
    assert [row["status"] for row in world.store.rows] == ["suppressed"]
    assert (world.store.outbox, world.outbox.notified, await world.used()) == ([], 0, 0)


async def test_guarded_a_full_quota_still_stores_an_all_suppressed_email() -> None:
    """The quota refuses the guarded send before the list is known: the send path looks the
    list up and stores the email ``suppressed`` (no quota needed), as without guards."""
    world = SuppressingWorld(("bob@x.org", "hard_bounce"), guarded=True)
    for _ in range(3):  # VERIFIED takes 3 an hour
        await world.bus.handle(SendEmail(1, email(to=["amy@x.org"])))
    new = await world.bus.handle(SendEmail(1, email(to=["bob@x.org"])))
    assert accepted_view(new)["status"] == "suppressed"
    assert await world.used() == 3
    with pytest.raises(InvalidInput, match="Hourly sending quota exceeded"):
        await world.bus.handle(SendEmail(1, email(to=["amy@x.org", "bob@x.org"])))
    assert await world.used() == 3


async def test_guarded_a_batch_is_refused_whole_then_sent_as_without_guards() -> None:
    world = SuppressingWorld(("bob@x.org", "hard_bounce"), guarded=True)
    outcome = await world.bus.handle(SendBatch(1, [
        (0, email()), (1, email(to=["amy@x.org", "bob@x.org"])), (2, email(to=["amy@x.org"])),
        (3, email("alice@unknown.example"))]))
    view = batch_view(outcome)
    assert [d["status"] for d in view["data"]] == ["suppressed", "queued", "queued"]
    assert [e["index"] for e in view["errors"]] == [3]
    assert world.store.refused == 1
    assert [row["status"] for row in world.store.rows] == ["suppressed", "queued", "queued"]
    assert await world.used(VERIFIED) == 2
