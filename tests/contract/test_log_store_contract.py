"""The delivery-log store: MongoDB (``MongoLogWriter`` + ``MongoLogReader``), the ``etrans dev``
SQLite store (``SqliteLogStore``) and, for GET /logs's side, the fake of the unit tests.

What fetchlog relies on (LogDocumentWriter, LogLabels): inserts are idempotent by ``event_id``
(a replay is counted as duplicates, not stored twice); the backfill finds unlabelled documents,
labels them, and remembers whether it finished.  What GET /logs relies on (LogReader): the
stand-in and the fake answer every query - visibility (own messages, verified domains from their
verification on), time bounds, filters, sources, sorts, pages and the counts of the stats - as
MongoDB does for the same documents.
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from etrans.app.records import LogFilter
from etrans.domain.delivery_log import to_document
from tests.unit.fakes_sending import FakeLogReader

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

BASE = datetime(2026, 3, 10, 4, 0, tzinfo=UTC)
EARLY, MID = BASE - timedelta(days=1), BASE + timedelta(seconds=20)


def _events() -> list[dict[str, Any]]:
    events = []
    for i in range(40):
        domain = ("a.example", "b.example", "other.example")[i % 3]
        action = ("delivered", "deferred", "rejected", "delivered")[i % 4]
        event = ("Sender", "Deferred", "Reject", "Sender")[i % 4]
        events.append({
            "Event": event, "@timestamp": (BASE + timedelta(seconds=i * 7 % 60,
                                                            milliseconds=i)).isoformat(),
            "SMTP_Action": action, "from": f"s{i % 2}@{domain}", "recipient": f"r{i % 5}@x.org",
            "response": f"250 2.0.0 OK {i}", "from_domain": domain, "Event_ID": f"evt-{i}",
            "message_id": f"msg-{i % 9}", "to_domain": "x.org",
        })
    return events


def _documents() -> list[dict[str, Any]]:
    """As fetchlog stores them: msg-0..2 sent through the API by user 7, msg-3 by user 8, the
    rest SMTP; msg-8's documents are unlabelled (stored before ``source`` existed)."""
    documents = [to_document(event) for event in _events()]
    for document in documents:
        number = int(document["message_id"].split("-")[1])
        if number < 4:
            document.update(source="API", user_id=7 if number < 3 else 8)
        elif number < 8:
            document["source"] = "SMTP"
    return documents


QUERIES = [
    LogFilter(owner=7, domains=(("a.example", EARLY), ("b.example", EARLY))),
    LogFilter(owner=7, domains=(("a.example", EARLY),), actions=("delivered", "rejected")),
    LogFilter(owner=7, domains=(("a.example", MID), ("b.example", EARLY)),
              after=BASE + timedelta(seconds=10), before=BASE + timedelta(seconds=40)),
    LogFilter(owner=7, domains=(("a.example", EARLY), ("b.example", EARLY)),
              sender="s1@b.example"),
    LogFilter(owner=8, domains=(("a.example", EARLY), ("b.example", EARLY),
                                ("other.example", MID)),
              recipient="r2@x.org", sorts=(("sender", 1), ("timestamp", -1))),
    LogFilter(owner=7, domains=(("b.example", EARLY),), message_id="msg-4"),
    LogFilter(owner=7, domains=(("a.example", EARLY), ("b.example", EARLY)),
              sorts=(("message_id", -1), ("timestamp", 1))),
    LogFilter(owner=7, domains=(("a.example", MID),), source="API"),
    LogFilter(owner=7, domains=(("a.example", MID), ("other.example", EARLY)), source="SMTP"),
    LogFilter(owner=7),
    LogFilter(owner=None),
]


@dataclass
class LogStore:
    name: str
    writer: Any  # LogDocumentWriter and LogLabels
    reader: Any  # LogReader


@pytest.fixture
def mongo_logs(mongo_uri: str) -> Iterator[LogStore]:
    from etrans.adapters.mongo.log_reader import MongoLogReader
    from etrans.adapters.mongo.log_writer import MongoLogWriter
    from etrans.adapters.mongo.store import MongoStore
    from etrans.settings import MongoSettings, Secret

    settings = MongoSettings(uri=Secret(mongo_uri), dbname=f"contract_{uuid.uuid4().hex[:10]}",
                             collection="email_logs")
    writer, store = MongoLogWriter(settings), MongoStore(settings)
    try:
        yield LogStore("mongo", writer, MongoLogReader(store))
    finally:
        store.client.drop_database(settings.dbname)
        store.close()
        writer.close()


@pytest.fixture
def sqlite_logs(tmp_path: Path) -> Iterator[LogStore]:
    from etrans.dev.log_store import SqliteLogStore

    store = SqliteLogStore(tmp_path / "logs.sqlite3")
    yield LogStore("sqlite", store, store)
    store.close()


@pytest.fixture(params=["mongo", "sqlite"])
def log_store(request: pytest.FixtureRequest) -> LogStore:
    return request.getfixturevalue(f"{request.param}_logs")  # type: ignore[no-any-return]


async def test_inserts_are_idempotent_by_event_id(log_store: LogStore) -> None:
    writer = log_store.writer
    await writer.ensure_indexes()
    await writer.ensure_indexes()  # every start: no error the second time
    documents = _documents()
    first = await writer.insert(documents)
    assert (first.inserted, first.duplicates) == (40, 0)
    again = await writer.insert(documents[:5])  # a replay: counted, not stored twice
    assert (again.inserted, again.duplicates) == (0, 5)
    mixed = await writer.insert([*_documents()[38:], *[to_document({
        **_events()[0], "Event_ID": "evt-new"})]])
    assert (mixed.inserted, mixed.duplicates) == (1, 2)
    counts = await log_store.reader.counts(LogFilter(owner=None, domains=(
        ("a.example", EARLY), ("b.example", EARLY), ("other.example", EARLY))))
    assert sum(group.count for group in counts) == 41


async def test_the_backfill_labels_what_was_stored_unlabelled(log_store: LogStore) -> None:
    writer = log_store.writer
    await writer.ensure_indexes()
    await writer.insert(_documents())
    ids, position = await writer.unlabelled(None, 100)
    assert (sorted(ids), position) == (["msg-8"] * 4, None)
    first, position = await writer.unlabelled(None, 3)  # a page: continue from ``position``
    assert len(first) == 3
    assert position is not None
    assert await writer.unlabelled(position, 3) == (["msg-8"], None)
    assert await writer.label(["msg-8"], "API", 9) == 4
    assert await writer.label(["msg-8"], "SMTP", None) == 0  # labelled once, never relabelled
    assert await writer.unlabelled(None, 100) == ([], None)
    groups = await log_store.reader.counts(LogFilter(owner=9))
    assert {group.source for group in groups} == {"API"}
    assert sum(group.count for group in groups) == 4
    assert await writer.labels_complete() is False
    await writer.set_labels_complete(True)
    assert await writer.labels_complete() is True
    await writer.set_labels_complete(False)
    assert await writer.labels_complete() is False


@pytest.mark.parametrize("candidate", ["sqlite", "fake"])
async def test_queries_answer_as_mongodb_does(mongo_logs: LogStore, candidate: str,
                                              request: pytest.FixtureRequest) -> None:
    documents = _documents()
    if candidate == "fake":
        reader: Any = FakeLogReader(copy.deepcopy(documents))
    else:
        other: LogStore = request.getfixturevalue(f"{candidate}_logs")
        await other.writer.ensure_indexes()
        await other.writer.insert(copy.deepcopy(documents))
        reader = other.reader
    await mongo_logs.writer.ensure_indexes()
    await mongo_logs.writer.insert(documents)
    for query in QUERIES:
        want = sorted(await mongo_logs.reader.counts(query), key=repr)
        assert sorted(await reader.counts(query), key=repr) == want, query
        for skip, limit in ((0, 100), (3, 5)):
            expected = await mongo_logs.reader.page(query, skip=skip, limit=limit)
            got = await reader.page(query, skip=skip, limit=limit)
            # Ties in the sort keys may come in any order in MongoDB: compare as sets when
            # the page is complete, and the sort keys when it is cut.
            keys = [name for name, _ in query.sorts]
            assert [[d[k] for k in keys] for d in got] == \
                [[d[k] for k in keys] for d in expected], (query, skip)
            if limit >= 40:
                assert _canonical(got) == _canonical(expected), query


def _canonical(documents: list[dict[str, Any]]) -> list[str]:
    return sorted(repr(sorted((k, v.astimezone(UTC).isoformat() if isinstance(v, datetime) else v)
                              for k, v in d.items())) for d in documents)


@pytest.mark.parametrize("candidate", ["sqlite", "fake"])
async def test_timestamps_have_mongodbs_millisecond_precision(
        mongo_logs: LogStore, candidate: str, request: pytest.FixtureRequest) -> None:
    """BSON dates are milliseconds: a stored time and a query bound lose their microseconds,
    so an event in the same millisecond as a domain's verification is visible."""
    events = [{**_events()[0], "Event_ID": f"us-{n}", "message_id": f"us-{n}",
               "@timestamp": f"2026-03-10T04:00:00.{stamp}+00:00"}
              for n, stamp in enumerate(("123456", "123999", "124000", "122999"))]
    documents = [to_document(event) for event in events]
    if candidate == "fake":
        reader: Any = FakeLogReader(copy.deepcopy(documents))
    else:
        other: LogStore = request.getfixturevalue(f"{candidate}_logs")
        await other.writer.ensure_indexes()
        await other.writer.insert(copy.deepcopy(documents))
        reader = other.reader
    await mongo_logs.writer.ensure_indexes()
    await mongo_logs.writer.insert(documents)
    verified = datetime(2026, 3, 10, 4, 0, 0, 123500, tzinfo=UTC)
    for query in (
        LogFilter(owner=None, domains=(("a.example", verified),), sorts=(("message_id", 1),)),
        LogFilter(owner=None, domains=(("a.example", EARLY),), sorts=(("message_id", 1),),
                  after=datetime(2026, 3, 10, 4, 0, 0, 123100, tzinfo=UTC),
                  before=datetime(2026, 3, 10, 4, 0, 0, 124900, tzinfo=UTC)),
    ):
        expected = await mongo_logs.reader.page(query, skip=0, limit=10)
        got = await reader.page(query, skip=0, limit=10)
        assert [(d["message_id"], d["timestamp"].astimezone(UTC)) for d in got] == [
            (d["message_id"], d["timestamp"].astimezone(UTC)) for d in expected], query
        assert sorted(await reader.counts(query), key=repr) == sorted(
            await mongo_logs.reader.counts(query), key=repr)
