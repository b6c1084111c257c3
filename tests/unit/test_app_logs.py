"""The GET /logs use case (:mod:`etrans.app.logs`) through the MessageBus, on in-memory fakes.

Who sees an event (``docs/delivery-logs.md``): the user's own messages wherever they went, and
the events of the domains the user holds verified from their verification on, never before;
the filters (time, action, sender, recipient, message id, source api/smtp), sorts and pages; the
stats by status and source; documents stored before fetchlog recorded ``source`` are labelled
from ``email_messages`` (API when the message is a row there, else SMTP).  The fake log reader
answers as MongoDB does (``tests/contract/test_log_store_contract.py``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from etrans.api.logs import entry_view, list_view
from etrans.app.logs import ListLogs
from etrans.app.records import LogFilter, LogGroup, LogList
from etrans.errors import InvalidInput
from tests.unit.fakes_sending import (
    FakeEmailStore,
    FakeLogReader,
    FakeSenderCredentials,
    FakeSendingDomains,
    build_email_bus,
)

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def doc(n: int, *, domain: str = "a.example", minutes: int = 0, action: str = "delivered",
        event: str = "Sender", source: str | None = "SMTP", user_id: int | None = None,
        sender: str | None = None, recipient: str = "r@x.org") -> dict[str, Any]:
    document: dict[str, Any] = {
        "event": event, "timestamp": T0 + timedelta(minutes=minutes), "action": action,
        "response": "250 2.0.0 Ok: queued as ABC", "sender": sender or f"s@{domain}",
        "recipient": recipient, "from_domain": domain, "to_domain": "x.org",
        "message_id": f"<m{n}@{domain}>", "event_id": f"e{n}",
    }
    if source is not None:
        document["source"] = source
    if user_id is not None:
        document["user_id"] = user_id
    return document


DOCUMENTS = [
    doc(1, minutes=-30),                                       # before user 1 verified a.example
    doc(2, minutes=5, action="deferred", event="Deferred"),
    doc(3, minutes=10, source="API", user_id=1, recipient="z@x.org"),
    doc(4, domain="b.example", minutes=15, source="API", user_id=1),  # own, not a held domain
    doc(5, domain="b.example", minutes=20, source="API", user_id=2),  # another user's
    doc(6, minutes=25, action="rejected", event="Reject", sender="t@a.example"),
    doc(7, minutes=30, source=None),                           # stored before ``source``
    doc(8, minutes=35, source=None),
]


def bus(documents: list[dict[str, Any]] | None = None,
        store: FakeEmailStore | None = None) -> Any:
    domains = FakeSendingDomains(since={1: {"a.example": T0}, 2: {"b.example": T0}})
    return build_email_bus(domains=domains, credentials=FakeSenderCredentials(),
                           logs=FakeLogReader(list(DOCUMENTS if documents is None else documents)),
                           store=store)


def ids(answer: LogList) -> list[str | None]:
    return [log.message_id for log in answer.logs]


async def test_a_user_sees_their_messages_and_their_verified_domains_from_verification() -> None:
    answer = await bus().handle(ListLogs(1))
    assert ids(answer) == ["<m8@a.example>", "<m7@a.example>", "<m6@a.example>",
                           "<m4@b.example>", "<m3@a.example>", "<m2@a.example>"]
    assert answer.total == 6
    other = await bus().handle(ListLogs(2))
    assert ids(other) == ["<m5@b.example>", "<m4@b.example>"]  # b.example verified, m4 its
    nothing = await bus().handle(ListLogs(3))
    assert nothing == LogList(logs=[], total=0, page=1, per_page=20, stats=[])
    assert list_view(nothing) == {"logs": [], "total": 0, "page": 1, "per_page": 20,
                                  "stats": []}


async def test_filters_narrow_the_visible_set() -> None:
    logs = bus()
    assert ids(await logs.handle(ListLogs(1, source="api"))) == ["<m4@b.example>",
                                                                 "<m3@a.example>"]
    assert ids(await logs.handle(ListLogs(1, source="smtp"))) == [
        f"<m{n}@a.example>" for n in (8, 7, 6, 2)]  # unlabelled documents count as SMTP
    assert ids(await logs.handle(ListLogs(1, source="API, smtp"))) == ids(
        await logs.handle(ListLogs(1)))
    assert ids(await logs.handle(ListLogs(1, action="deferred, rejected"))) == [
        "<m6@a.example>", "<m2@a.example>"]
    assert ids(await logs.handle(ListLogs(1, sender="t@a.example"))) == ["<m6@a.example>"]
    assert ids(await logs.handle(ListLogs(1, recipient=" z@x.org "))) == ["<m3@a.example>"]
    assert ids(await logs.handle(ListLogs(1, message_id="<m2@a.example>"))) == ["<m2@a.example>"]
    assert ids(await logs.handle(ListLogs(1, message_id="<m5@b.example>"))) == []  # not theirs
    window = ListLogs(1, log_after="2026-03-10T12:05:00Z", log_before="2026-03-10T12:25:00Z")
    assert ids(await logs.handle(window)) == ["<m4@b.example>", "<m3@a.example>"]  # strict


async def test_sorts_and_pages() -> None:
    logs = bus()
    oldest_first = await logs.handle(ListLogs(1, sorts="timestamp"))
    assert ids(oldest_first)[0] == "<m2@a.example>"
    by_action = await logs.handle(ListLogs(1, sorts="-action,timestamp"))
    assert ids(by_action) == [  # rejected, delivered, ...
        "<m6@a.example>", "<m3@a.example>", "<m4@b.example>", "<m7@a.example>",
        "<m8@a.example>", "<m2@a.example>"]
    second = await logs.handle(ListLogs(1, page=2, per_page=4))
    assert ids(second) == ["<m3@a.example>", "<m2@a.example>"]
    assert (second.total, second.page, second.per_page) == (6, 2, 4)


async def test_stats_count_statuses_and_sources_of_the_whole_set() -> None:
    answer = await bus().handle(ListLogs(1, per_page=1))
    stats = {s["label"]: (s["count"], s["percentage"]) for s in answer.stats}
    assert stats == {"Delivered": (4, 66.7), "Bounced": (1, 16.7), "Delayed": (1, 16.7),
                     "API": (2, 33.3), "SMTP": (4, 66.7)}  # unlabelled documents: SMTP


async def test_unlabelled_documents_are_labelled_from_the_emails_sent_through_the_api() -> None:
    store = FakeEmailStore()
    store.rows.append({"message_id": "m7@a.example", "user_id": 1})  # the bare id of <m7@...>
    logs = bus(store=store)
    answer = await logs.handle(ListLogs(1, sorts="-timestamp", per_page=2))
    assert [(log.message_id, log.source) for log in answer.logs] == [
        ("<m8@a.example>", "SMTP"), ("<m7@a.example>", "API")]


async def test_a_log_reads_as_the_api_shows_it() -> None:
    [log] = (await bus().handle(ListLogs(1, message_id="<m6@a.example>"))).logs
    assert log.timestamp == T0 + timedelta(minutes=25)
    assert entry_view(log) == {
        "event": "Reject", "timestamp": "2026-03-10T12:25:00Z", "status": "Bounced",
        "action": "250 2.0.0", "action_detail": "250 2.0.0 Ok: queued as ABC",
        "sender": "t@a.example", "recipient": "r@x.org", "from_domain": "a.example",
        "to_domain": "x.org", "message_id": "<m6@a.example>", "source": "SMTP",
    }
    assert list(entry_view(log)) == ["event", "timestamp", "status", "action", "action_detail",
                                     "sender", "recipient", "from_domain", "to_domain",
                                     "message_id", "source"]


class PagesAsked(FakeLogReader):
    """Records the skip of every page asked for."""

    def __init__(self, documents: list[dict[str, Any]]) -> None:
        super().__init__(documents)
        self.skips: list[int] = []

    async def page(self, query: LogFilter, *, skip: int, limit: int) -> list[dict[str, Any]]:
        self.skips.append(skip)
        return await super().page(query, skip=skip, limit=limit)


async def test_a_page_past_the_last_document_is_not_read() -> None:
    """The counts first: MongoDB walks every document a find skips (page 1000000 is a skip of
    99,999,900), for an empty page."""
    reader = PagesAsked([doc(n, minutes=n, user_id=1) for n in range(3)])
    logs = build_email_bus(domains=FakeSendingDomains(), credentials=FakeSenderCredentials(),
                           logs=reader)
    far = await logs.handle(ListLogs(1, page=1_000_000, per_page=100))
    assert (far.logs, far.total) == ([], 3)
    last = await logs.handle(ListLogs(1, page=2, per_page=2))
    first = await logs.handle(ListLogs(1, per_page=2))
    assert (len(last.logs), last.total, len(first.logs)) == (1, 3, 2)
    assert reader.skips == [2, 0]


class AsStored(FakeLogReader):
    """Answers its documents as they are, whatever the query (odd timestamps included)."""

    async def counts(self, query: LogFilter) -> list[LogGroup]:
        return []

    async def page(self, query: LogFilter, *, skip: int, limit: int) -> list[dict[str, Any]]:
        return [dict(d) for d in self.documents]


async def test_a_timestamp_stored_naive_is_utc_and_anything_else_is_shown_as_stored() -> None:
    naive, odd = doc(1), doc(2)
    naive["timestamp"] = datetime(2026, 3, 10, 12, 5, 30, 250000)  # as pymongo reads a date
    odd["timestamp"] = "yesterday"
    logs = build_email_bus(domains=FakeSendingDomains(), credentials=FakeSenderCredentials(),
                           logs=AsStored([naive, odd]))
    answer = await logs.handle(ListLogs(1))
    assert answer.logs[0].timestamp == datetime(2026, 3, 10, 12, 5, 30, 250000, tzinfo=UTC)
    assert [entry_view(e)["timestamp"] for e in answer.logs] == ["2026-03-10T12:05:30Z",
                                                                  "yesterday"]


@pytest.mark.parametrize("query", [
    {"source": "fax"}, {"sorts": "password"}, {"log_before": "soon"},
    {"log_after": "2026-03-11T00:00:00Z", "log_before": "2026-03-10T00:00:00Z"},
])
async def test_invalid_filters_are_400(query: dict[str, str]) -> None:
    with pytest.raises(InvalidInput):
        await bus().handle(ListLogs(1, **query))
