"""The email use cases (:mod:`etrans.app.emails`) through the MessageBus, on in-memory fakes.

The rules of POST /emails, POST /emails/batch, GET /emails and GET /emails/{id}, in milliseconds:
the ``from`` domain must be the user's and verified, the user must have SMTP credentials, the
quota is reserved before the commit and given back whatever stops the request afterwards (a
failed commit, a cancelled request), a batch sends what passes and lists the rest by index, and
a user only ever sees their own emails.  The fakes pass the same contract suites as the Redis and
PostgreSQL adapters (``tests/contract``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio

from etrans.api.emails import accepted_view, batch_view, detail_view, list_view
from etrans.app.emails import (
    DOMAIN_NOT_VERIFIED,
    NO_CREDENTIALS,
    GetEmail,
    ListEmails,
    SendBatch,
    SendEmail,
)
from etrans.app.records import (
    BatchOutcome,
    EmailDetail,
    EmailList,
    NewEmail,
    RejectedEmail,
    SendingDomain,
)
from etrans.domain.quota import QuotaLimits
from etrans.errors import InvalidInput, NotFound, UpstreamUnavailable
from tests.unit.fakes_sending import (
    FakeCredentialCache,
    FakeEmailStore,
    FakeOutboxNotifier,
    FakeQuota,
    FakeSenderCredentials,
    FakeSendingDomains,
    build_email_bus,
)

NOW = datetime(2026, 3, 10, 14, 30, tzinfo=UTC)
VERIFIED = SendingDomain(id=11, user_id=1, name="a.example", verified=True,
                         limits=QuotaLimits(daily=100, hourly=3))
PENDING = SendingDomain(id=12, user_id=1, name="pending.example", verified=False)
OTHERS = SendingDomain(id=21, user_id=2, name="b.example", verified=True)


def email(sender: str = "Alice <alice@a.example>", **fields: Any) -> dict[str, Any]:
    return {"from": sender, "to": ["bob@x.org"], "subject": "Hello", "html": "<p>Hi</p>",
            **fields}


class World:
    """The fakes of one test and the bus built on them."""

    def __init__(self, clock: Any = lambda: NOW, **options: Any) -> None:
        self.domains = FakeSendingDomains([VERIFIED, PENDING, OTHERS])
        self.credentials = FakeSenderCredentials({1: {"a.example": "secret-1"},
                                                  2: {"b.example": "secret-2"}})
        self.cache = FakeCredentialCache()
        self.quota = FakeQuota()
        self.store = FakeEmailStore()
        self.outbox = FakeOutboxNotifier()
        self.bus = build_email_bus(domains=self.domains, credentials=self.credentials,
                                   credential_cache=self.cache, quota=self.quota,
                                   store=self.store, outbox=self.outbox,
                                   clock=clock, **options)

    async def used(self, domain: SendingDomain = VERIFIED) -> int:
        return (await self.quota.usage(domain.id, NOW)).hourly


# -- sending one ----------------------------------------------------------------------------------

async def test_an_accepted_email_is_stored_with_its_record_and_counted() -> None:
    world = World()
    answer = await world.bus.handle(SendEmail(1, email(cc=["c@x.org"])))
    assert isinstance(answer, NewEmail)
    assert answer.message_id.endswith("@a.example")
    assert accepted_view(answer) == {
        "id": answer.message_id, "from": "Alice <alice@a.example>", "to": ["bob@x.org"],
        "status": "queued", "created_at": "2026-03-10T14:30:00Z", "suppressed": []}
    [row] = world.store.rows
    assert (row["message_id"], row["user_id"], row["domain_id"]) == (answer.message_id, 1, 11)
    assert row["status"] == "queued"
    [(topic, key, value)] = world.store.outbox
    message = json.loads(value)["payload"]
    assert (topic, key) == ("sendmail", answer.message_id.encode())
    assert message["message_id"] == answer.message_id
    assert message["user_id"] == "1"  # sendmail finds the credentials with it
    assert world.cache.values == {1: "secret-1"}  # cached before the commit
    assert world.outbox.notified == 1
    assert await world.used() == 1


@pytest.mark.parametrize("sender", ["alice@pending.example", "alice@b.example",
                                    "alice@unknown.example"])
async def test_a_domain_not_verified_or_not_the_users_is_refused(sender: str) -> None:
    world = World()
    with pytest.raises(InvalidInput) as refused:
        await world.bus.handle(SendEmail(1, email(sender)))
    assert refused.value.detail == DOMAIN_NOT_VERIFIED
    assert world.store.rows == []
    assert world.quota.counters == {}


async def test_a_user_without_smtp_credentials_is_refused() -> None:
    world = World()
    world.credentials.values.pop(1)
    with pytest.raises(InvalidInput) as refused:
        await world.bus.handle(SendEmail(1, email()))
    assert refused.value.detail == NO_CREDENTIALS
    assert (world.store.rows, world.quota.counters, world.cache.values) == ([], {}, {})


async def test_the_quota_refuses_what_is_over_the_limit() -> None:
    world = World()
    for _ in range(3):
        await world.bus.handle(SendEmail(1, email()))
    with pytest.raises(InvalidInput) as refused:
        await world.bus.handle(SendEmail(1, email()))
    assert refused.value.detail == ("Hourly sending quota exceeded: the limit is 3 emails per "
                                    "hour")
    assert len(world.store.rows) == 3
    assert await world.used() == 3


@pytest.mark.parametrize("fields", [{"template_id": "welcome"}, {"template_id": "tpl_7"},
                                    {"html": None, "text": None},
                                    {"to": [f"r{i}@x.org" for i in range(51)]}])
async def test_rules_of_the_email_itself_are_checked_before_anything_else(
        fields: dict[str, Any]) -> None:
    world = World()
    with pytest.raises(InvalidInput):
        await world.bus.handle(SendEmail(1, email(**fields)))
    assert (world.store.rows, world.quota.counters, world.cache.values) == ([], {}, {})


async def test_an_email_too_large_for_its_kafka_record_is_refused() -> None:
    world = World(max_record_bytes=2000)
    await world.bus.handle(SendEmail(1, email(html="x" * 1000)))
    with pytest.raises(InvalidInput, match="Email too large to queue"):
        await world.bus.handle(SendEmail(1, email(html="x" * 2000)))
    assert len(world.store.rows) == 1
    assert await world.used() == 1


async def test_the_quota_is_given_back_when_the_commit_fails() -> None:
    world = World()
    world.store.fail_next = ConnectionError("database went away")
    with pytest.raises(UpstreamUnavailable) as failed:
        await world.bus.handle(SendEmail(1, email()))
    assert failed.value.retry_after_seconds == 5
    assert world.store.rows == []
    assert world.outbox.notified == 0
    assert await world.used() == 0
    assert world.quota.released == [(11, 1)]


async def test_data_the_store_refuses_is_a_400_and_the_quota_is_given_back() -> None:
    world = World()
    world.store.fail_next = InvalidInput("The email could not be stored: 22001 DataError")
    with pytest.raises(InvalidInput, match="could not be stored"):
        await world.bus.handle(SendEmail(1, email()))
    assert await world.used() == 0


async def test_the_quota_is_given_back_when_the_request_is_cancelled() -> None:
    world = World()
    world.store.block_saves = trio.Event()  # the commit never returns
    with trio.move_on_after(0.05) as cancelled:
        await world.bus.handle(SendEmail(1, email()))
    assert cancelled.cancelled_caught
    assert world.store.rows == []
    assert await world.used() == 0


# -- sending a batch ------------------------------------------------------------------------------

async def test_a_batch_sends_what_passes_and_lists_the_rest_by_index() -> None:
    world = World()
    answer = await world.bus.handle(SendBatch(1, [
        (0, email()), (2, email("alice@pending.example")), (3, email()),
        (4, email(template_id="tpl_404")), (5, email()), (6, email()),
    ], invalid=[(1, "to: field required")]))
    assert isinstance(answer, BatchOutcome)
    assert len(answer.sent) == 3
    assert [row["message_id"] for row in world.store.rows] == [e.message_id
                                                               for e in answer.sent]
    assert answer.rejected == [
        RejectedEmail(1, "to: field required"),
        RejectedEmail(2, DOMAIN_NOT_VERIFIED),
        RejectedEmail(4, "template_id 'tpl_404': template not found"),
        RejectedEmail(6, "Hourly sending quota exceeded: the limit is 3 emails per hour"),
    ]
    assert batch_view(answer) == {
        "data": [{"id": e.message_id, "status": "queued", "suppressed": []}
                 for e in answer.sent],
        "errors": [{"index": 1, "error": "to: field required"},
                   {"index": 2, "error": DOMAIN_NOT_VERIFIED},
                   {"index": 4, "error": answer.rejected[2].error},
                   {"index": 6, "error": answer.rejected[3].error}]}
    assert await world.used() == 3
    assert world.outbox.notified == 1  # one commit for the batch


async def test_a_failed_batch_commit_sends_nothing_and_gives_every_reservation_back() -> None:
    world = World()
    world.store.fail_next = ConnectionError("database went away")
    with pytest.raises(UpstreamUnavailable):
        await world.bus.handle(SendBatch(1, [(0, email()), (1, email()), (2, email())]))
    assert world.store.rows == []
    assert await world.used() == 0
    assert world.quota.released == [(11, 3)]  # one release per domain


async def test_a_batch_cancelled_in_its_commit_gives_the_quota_back() -> None:
    world = World()
    world.store.block_saves = trio.Event()
    with trio.move_on_after(0.05):
        await world.bus.handle(SendBatch(1, [(0, email()), (1, email())]))
    assert await world.used() == 0


# -- reading --------------------------------------------------------------------------------------

async def test_users_see_only_their_own_emails() -> None:
    world = World()
    mine = (await world.bus.handle(SendEmail(1, email()))).message_id
    theirs = (await world.bus.handle(SendEmail(2, email("b@b.example")))).message_id
    assert (await world.bus.handle(GetEmail(1, mine))).message_id == mine
    with pytest.raises(NotFound):
        await world.bus.handle(GetEmail(1, theirs))
    with pytest.raises(NotFound):
        await world.bus.handle(GetEmail(2, mine))
    listed = await world.bus.handle(ListEmails(1))
    assert [e.message_id for e in listed.emails] == [mine]
    assert listed.total == 1


async def test_an_email_reads_back_as_it_was_sent() -> None:
    world = World()
    sent = await world.bus.handle(SendEmail(1, email(bcc=["d@x.org"], text="Hi",
                                                    tags=[{"name": "k", "value": "v"}])))
    got = await world.bus.handle(GetEmail(1, sent.message_id))
    assert isinstance(got, EmailDetail)
    assert got.from_address == "Alice <alice@a.example>"
    assert (got.to, got.cc, got.bcc) == (["bob@x.org"], [], ["d@x.org"])
    assert (got.status, got.created_at, got.sent_at) == ("Queued", sent.created_at, None)
    assert got.failure_reason is None
    assert got.attachments == []
    view = detail_view(got)
    assert list(view) == ["id", "from", "to", "cc", "bcc", "reply_to", "subject", "html",
                          "text", "headers", "tags", "attachments", "template_id",
                          "template_data", "status", "created_at", "sent_at", "delivered_at",
                          "failure_reason", "recipients", "opens", "clicks",
                          "first_opened_at", "first_clicked_at", "scheduled_at"]
    assert view["recipients"] == []  # no delivery-log event yet
    assert (view["opens"], view["clicks"], view["first_opened_at"],
            view["first_clicked_at"]) == (0, 0, None, None)  # no open or click yet
    assert (view["id"], view["created_at"], view["sent_at"], view["delivered_at"]) == (
        sent.message_id, "2026-03-10T14:30:00Z", None, None)
    assert (view["text"], view["tags"], view["failure_reason"]) == (
        "Hi", [{"name": "k", "value": "v"}], None)


async def test_a_failed_email_says_why() -> None:
    world = World()
    sent = await world.bus.handle(SendEmail(1, email()))
    world.store.rows[0].update(status="failed", response="Kafka refused the record")
    got = await world.bus.handle(GetEmail(1, sent.message_id))
    assert (got.status, got.failure_reason) == ("Failed", "Kafka refused the record")


async def test_the_list_filters_by_status_and_time_and_pages_newest_first() -> None:
    clock = [NOW]
    world = World(clock=lambda: clock[0])
    ids = []
    for minute in range(3):
        clock[0] = NOW + timedelta(minutes=minute)
        ids.append((await world.bus.handle(SendEmail(1, email()))).message_id)
    world.store.rows[0]["status"] = "delivered"
    page = await world.bus.handle(ListEmails(1, per_page=2))
    assert isinstance(page, EmailList)
    assert [e.message_id for e in page.emails] == [ids[2], ids[1]]
    assert (page.total, page.page, page.per_page) == (3, 1, 2)
    assert {s["label"]: s["count"] for s in page.stats} == {"Queued": 2, "Delivered": 1}
    assert list_view(page)["data"][0] == {
        "id": ids[2], "from": "Alice <alice@a.example>", "to": ["bob@x.org"],
        "subject": "Hello", "status": "Queued", "created_at": "2026-03-10T14:32:00Z"}
    assert list(list_view(page)) == ["data", "total", "page", "per_page", "stats"]
    second = await world.bus.handle(ListEmails(1, page=2, per_page=2))
    assert [e.message_id for e in second.emails] == [ids[0]]
    delivered = await world.bus.handle(ListEmails(1, status="Delivered"))
    assert [e.message_id for e in delivered.emails] == [ids[0]]
    assert delivered.emails[0].status == "Delivered"
    window = await world.bus.handle(ListEmails(1, created_at_from="2026-03-10T14:31:00",
                                               created_at_to="2026-03-10T14:32:00Z"))
    assert [e.message_id for e in window.emails] == [ids[2], ids[1]]


@pytest.mark.parametrize("query", [
    {"status": "lost"}, {"created_at_from": "yesterday"},
    {"created_at_from": "2026-03-11T00:00:00Z", "created_at_to": "2026-03-10T00:00:00Z"},
])
async def test_invalid_list_filters_are_400(query: dict[str, str]) -> None:
    with pytest.raises(InvalidInput):
        await World().bus.handle(ListEmails(1, **query))
