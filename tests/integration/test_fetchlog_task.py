"""The fetchlog BatchTask against the real MongoDB-wire server and the migrated USEND DB.

No Kafka here: the task is called with :class:`~etrans.pipeline.Message` objects, as the pipeline
does.  The end-to-end runs through Kafka are in ``test_fetchlog_cli.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import trio
from pymongo import MongoClient
from sqlalchemy import text

from etrans.adapters.mongo.log_writer import MongoLogWriter
from etrans.adapters.sql import Database, make_engine
from etrans.adapters.sql.email_status import EmailStatusUpdater
from etrans.adapters.sql.message_owners import MessageOwnerLookup
from etrans.domain.delivery_log import (
    EventFilter,
    decode_event,
    recipient_outcomes,
    to_document,
)
from etrans.errors import PoisonMessage, RetryLater
from etrans.pipeline import Message
from etrans.settings import MongoSettings, Secret
from etrans.workers.fetchlog import FetchlogTask
from tests.harness.servers import SecantusServer, unique_name


def _event(event_id: str, kind: str = "Sender", message_id: str = "msg_1",
           action: str = "delivered", at: str = "2026-03-10T04:16:58Z") -> dict[str, object]:
    return {
        "Event": kind, "@timestamp": at, "SMTP_Action": action, "from": "hello@shop.example",
        "recipient": "user@mail.example", "response": f"250 2.0.0 OK {event_id}",
        "from_domain": "shop.example", "Event_ID": event_id, "message_id": message_id,
        "to_domain": "mail.example",
        "agent": {"type": "filebeat", "hostname": "mx1", "name": "beat-1", "id": "a1"},
    }


def _messages(events: list[object], start: int = 0) -> list[Message]:
    return [
        Message("email-logs", 0, start + i, None,
                e if isinstance(e, bytes) else json.dumps(e).encode())
        for i, e in enumerate(events)
    ]


@pytest.fixture
def mongo_settings(mongo_uri: str) -> MongoSettings:
    return MongoSettings(uri=Secret(mongo_uri), dbname=unique_name("fl").replace("-", "_"),
                         collection="email_logs")


@pytest.fixture
def collection(mongo_uri: str, mongo_settings: MongoSettings) -> Iterator[object]:
    client: MongoClient = MongoClient(mongo_uri, tz_aware=True)
    yield client[mongo_settings.dbname][mongo_settings.collection]
    client.drop_database(mongo_settings.dbname)
    client.close()


@pytest.fixture
def usend(usend_db_url: str) -> Iterator[Database]:
    database = Database(make_engine(usend_db_url, pool_size=4), name="usend_db")
    yield database
    database.dispose()


def _insert_email(database: Database, message_id: str, status: str = "queued",
                  user_id: int = 1) -> None:
    with database.engine.begin() as conn:
        conn.execute(
            text("INSERT INTO email_messages (message_id, user_id, from_address, to_addresses,"
                 " subject, status) VALUES (:m, :u, 'hello@shop.example', '[\"u@x\"]', 's', :s)"),
            {"m": message_id, "s": status, "u": user_id},
        )


def _email(database: Database, message_id: str) -> tuple[str, datetime | None]:
    with database.engine.connect() as conn:
        row = conn.execute(text("SELECT status, delivered_at FROM email_messages"
                                " WHERE message_id = :m"), {"m": message_id}).one()
    return row.status, row.delivered_at


async def test_indexes_are_created(mongo_settings: MongoSettings, collection) -> None:  # type: ignore[no-untyped-def]
    writer = MongoLogWriter(mongo_settings)
    try:
        await writer.ensure_indexes()
        await writer.ensure_indexes()  # idempotent at every start
    finally:
        writer.close()
    indexes = {ix["name"]: ix for ix in collection.list_indexes()}
    assert list(indexes["idx_from_domain_timestamp"]["key"].items()) == [
        ("from_domain", 1), ("timestamp", -1)]
    assert list(indexes["idx_message_id"]["key"].items()) == [("message_id", 1)]
    assert list(indexes["idx_event_timestamp"]["key"].items()) == [("event", 1), ("timestamp", -1)]
    assert list(indexes["idx_user_id_timestamp"]["key"].items()) == [
        ("user_id", 1), ("timestamp", -1)]
    assert list(indexes["uniq_event_id"]["key"].items()) == [("event_id", 1)]
    assert indexes["uniq_event_id"].get("unique") is True


async def test_store_filter_skip_and_replay(mongo_settings: MongoSettings, collection) -> None:  # type: ignore[no-untyped-def]
    writer = MongoLogWriter(mongo_settings)
    task = FetchlogTask(EventFilter(), writer)
    events = [
        _event("e1", "Sender", "msg_a"),
        _event("e2", "Queue", "msg_a", action=""),
        _event("e3", "Connect", "msg_a"),  # filtered: not a stored event type
        _event("e4", "Deferred", "abc@bizfly.vn", action="deferred"),  # skipped: internal mail
        _event("e5", "Reject", "msg_b", action="rejected"),
        _event("e5", "Reject", "msg_b", action="rejected"),  # the same event twice in a batch
    ]
    try:
        await writer.ensure_indexes()
        await task(_messages(events))
        first = task.statistics()
        await task(_messages(events))  # a replay of the same messages
    finally:
        writer.close()
    assert (first.stored, first.duplicates, first.filtered, first.skipped) == (3, 1, 1, 1)
    again = task.statistics()
    assert (again.stored, again.duplicates, again.filtered, again.skipped) == (3, 5, 2, 2)
    assert sorted(d["event_id"] for d in collection.find()) == ["e1", "e2", "e5"]
    stored = collection.find_one({"event_id": "e1"}, {"_id": 0})
    assert stored["timestamp"] == datetime(2026, 3, 10, 4, 16, 58, tzinfo=UTC)
    assert stored["sender"] == "hello@shop.example"
    assert stored["agent_hostname"] == "mx1"


async def test_bounced_documents_store_their_bounce_class(  # type: ignore[no-untyped-def]
        mongo_settings: MongoSettings, collection) -> None:
    writer = MongoLogWriter(mongo_settings)
    task = FetchlogTask(EventFilter(), writer)
    gone = {**_event("c1", "Reject", "msg_c", action="rejected"),
            "response": "550-5.1.1 The email account that you tried to reach does not exist."}
    full = {**_event("c2", "Sender", "msg_c", action="bounced"),
            "response": "host mx[192.0.2.7] said: 552 5.2.2 Mailbox full"}
    # sendmail's Reject events carry the class they were published with: stored as given.
    given = {**_event("c3", "Reject", "msg_c", action="rejected"),
             "response": "550 5.7.1 blocked using Spamhaus", "bounce_class": "policy"}
    try:
        await writer.ensure_indexes()
        await task(_messages([gone, full, given, _event("c4", "Sender", "msg_c"),
                              _event("c5", "Deferred", "msg_c", action="deferred")]))
    finally:
        writer.close()
    stored = {d["event_id"]: d.get("bounce_class") for d in collection.find({}, {"_id": 0})}
    assert stored == {"c1": "hard", "c2": "soft", "c3": "policy", "c4": None, "c5": None}


async def test_recipient_outcomes_are_computed_only_for_a_store_that_takes_them(  # type: ignore[no-untyped-def]
        mongo_settings: MongoSettings, collection, monkeypatch: pytest.MonkeyPatch) -> None:
    # Without the USEND DB (no status store, no suppression list) nothing reads the outcomes:
    # computing them cost ~6% of the CPU per event of bench/fetchlog.py's no-op sink run.
    from etrans.workers import fetchlog

    calls: list[int] = []

    def counted(documents):  # type: ignore[no-untyped-def]
        calls.append(len(documents))
        return recipient_outcomes(documents)

    monkeypatch.setattr(fetchlog, "recipient_outcomes", counted)
    writer = MongoLogWriter(mongo_settings)
    task = FetchlogTask(EventFilter(), writer)
    try:
        await writer.ensure_indexes()
        await task(_messages([_event("o1", "Reject", "msg_o", action="rejected"),
                              _event("o2", "Sender", "msg_p")]))
    finally:
        writer.close()
    assert calls == []
    assert task.statistics().stored == 2
    assert collection.count_documents({}) == 2


async def test_invalid_events_are_poison(mongo_settings: MongoSettings, collection) -> None:  # type: ignore[no-untyped-def]
    writer = MongoLogWriter(mongo_settings)
    task = FetchlogTask(EventFilter(), writer)
    try:
        await writer.ensure_indexes()
        # In a batch: nothing is stored, the pipeline will re-run it one message at a time.
        with pytest.raises(PoisonMessage):
            await task(_messages([_event("g1"), b"{not json", _event("g2")]))
        assert collection.count_documents({}) == 0
        for message in _messages([_event("g1"), b"{not json", _event("g2")]):
            try:
                await task([message])
            except PoisonMessage:
                assert message.offset == 1
        with pytest.raises(PoisonMessage):
            await task(_messages([{**_event("g3"), "@timestamp": "not a time"}]))
    finally:
        writer.close()
    counters = task.statistics()
    assert (counters.stored, counters.invalid) == (2, 2)
    assert sorted(d["event_id"] for d in collection.find()) == ["g1", "g2"]


async def test_status_propagation_out_of_order(
    mongo_settings: MongoSettings, collection, usend: Database  # type: ignore[no-untyped-def]
) -> None:
    ids = {name: unique_name(name) for name in ("delivered", "bounced", "deferred", "sent", "late")}
    for message_id in ids.values():
        _insert_email(usend, message_id)
    writer = MongoLogWriter(mongo_settings)
    task = FetchlogTask(EventFilter(), writer, EmailStatusUpdater(usend))
    t = "2026-03-10T04:{:02d}:00Z".format
    batches = [
        # Delivered arrives before the earlier Queue and Deferred events of the same email.
        [_event("d3", "Sender", ids["delivered"], "delivered", t(30)),
         _event("b1", "Queue", ids["bounced"], "", t(1)),
         _event("x1", "Sender", "not-in-usend", "delivered", t(1))],
        [_event("d2", "Deferred", ids["delivered"], "deferred", t(20)),
         _event("d1", "Queue", f"<{ids['delivered']}>", "", t(10)),
         _event("b2", "Reject", ids["bounced"], "rejected", t(5)),
         _event("f1", "Deferred", ids["deferred"], "deferred", t(7))],
        [_event("b3", "Sender", ids["bounced"], "delivered", t(9)),  # bounced is final too
         _event("f0", "Queue", ids["deferred"], "", t(6)),  # a late Queue never undoes deferred
         _event("s1", "Sender", ids["sent"], "", t(3))],
        # The late email: deferred twice, then delivered in the same batch as a late deferral.
        [_event("l1", "Deferred", ids["late"], "deferred", t(1))],
        [_event("l3", "Deferred", ids["late"], "deferred", t(50)),
         _event("l2", "Sender", ids["late"], "delivered", t(40))],
    ]
    try:
        await writer.ensure_indexes()
        for number, batch in enumerate(batches):
            await task(_messages(batch, start=10 * number))
        # Replaying everything changes nothing.
        for number, batch in enumerate(batches):
            await task(_messages(batch, start=10 * number))
    finally:
        writer.close()

    status, delivered_at = _email(usend, ids["delivered"])
    assert (status, delivered_at) == ("delivered", datetime(2026, 3, 10, 4, 30, tzinfo=UTC))
    assert _email(usend, ids["bounced"]) == ("bounced", None)
    assert _email(usend, ids["deferred"]) == ("deferred", None)
    assert _email(usend, ids["sent"]) == ("sent", None)
    assert _email(usend, ids["late"]) == ("delivered", datetime(2026, 3, 10, 4, 40, tzinfo=UTC))
    assert collection.count_documents({}) == sum(len(b) for b in batches)


async def test_mongo_down_is_retry_later_and_nothing_is_lost(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with SecantusServer() as server:
        settings = MongoSettings(uri=Secret(server.url), dbname="fl", collection="email_logs")
        writer = MongoLogWriter(settings, insert_timeout=2.0, server_selection_timeout=1.0)
        task = FetchlogTask(EventFilter(), writer)
        try:
            await writer.ensure_indexes()
            await task(_messages([_event("m1")]))
            server.stop()
            with trio.fail_after(30), pytest.raises(RetryLater):
                await task(_messages([_event("m2"), _event("m3")]))
            assert task.statistics().stored == 1  # the failed attempt is not counted
        finally:
            writer.close()


async def test_documents_record_who_sent_the_message(
    mongo_settings: MongoSettings, collection, usend: Database  # type: ignore[no-untyped-def]
) -> None:
    """``source`` / ``user_id`` looked up in ``email_messages`` once per batch (ids with or without
    angle brackets), remembered for the next batches; the spec's fields are unchanged."""
    api_id = unique_name("api") + "@shop.example"
    _insert_email(usend, api_id, user_id=42)
    owners = MessageOwnerLookup(usend)
    writer = MongoLogWriter(mongo_settings)
    task = FetchlogTask(EventFilter(), writer, owners=owners)
    events = [_event("o1", message_id=f"<{api_id}>"), _event("o2", message_id="smtp-1@mx"),
              _event("o3", "Deferred", message_id=api_id, action="deferred")]
    try:
        await writer.ensure_indexes()
        await task(_messages(events))
        assert owners.queries == 1
        await task(_messages([_event("o4", message_id=api_id),
                              _event("o5", message_id="smtp-1@mx")]))
        assert owners.queries == 1  # remembered: no query for ids seen before
    finally:
        writer.close()
    stored = {d["event_id"]: d for d in collection.find({}, {"_id": 0})}
    assert {k: (d.get("source"), d.get("user_id")) for k, d in stored.items()} == {
        "o1": ("API", 42), "o2": ("SMTP", None), "o3": ("API", 42), "o4": ("API", 42),
        "o5": ("SMTP", None)}
    spec = to_document(decode_event(json.dumps(events[0]).encode()))
    assert {k: v for k, v in stored["o1"].items() if k not in ("source", "user_id")} == spec


async def test_owner_lookup_of_more_ids_than_one_statement_takes(usend: Database) -> None:
    """100k ids (a replay's worth) in chunks: never one IN list above PostgreSQL's 65,535
    parameters."""
    known = unique_name("many") + "@shop.example"
    _insert_email(usend, known, user_id=9)
    owners = MessageOwnerLookup(usend)
    ids = [f"{i}-{known}" for i in range(100_000)] + [known]
    assert await owners.owners(ids) == {known: 9}
    assert owners.queries == 21


async def test_fetchlog_run_backfills_documents_stored_before(
    mongo_settings: MongoSettings, collection, usend: Database, tmp_path  # type: ignore[no-untyped-def]
) -> None:
    """Documents without ``source`` (stored by an older version, or by a fetchlog without
    USEND_DB_URI) are labelled by the backfill that ``etrans fetchlog`` runs at start; a replay to
    the end (--stop-at-end) waits for it; a finished backfill is remembered, and withdrawn by a
    run that stores unlabelled documents."""
    from etrans.dev.topics import LocalPublisher, LocalTopics
    from etrans.pipeline import PipelineConfig
    from etrans.runtime import Shutdown
    from etrans.workers.fetchlog import run_fetchlog

    api_id = unique_name("old") + "@shop.example"
    _insert_email(usend, api_id, user_id=77)
    old = [to_document(decode_event(json.dumps(_event(f"b{i}", message_id=m)).encode()))
           for i, m in enumerate([f"<{api_id}>", "smtp-old@mx", api_id] * 700)]
    collection.insert_many(old)
    state = collection.database[f"{mongo_settings.collection}_etrans_state"]
    topics = LocalTopics(tmp_path / "topics.sqlite3", partitions=1)
    publisher = LocalPublisher(topics)
    config = PipelineConfig(topics=("logs",), group_id="g", kafka={}, workers=2,
                            channel_size=100, commit_interval=0.05, stop_at_end=True)

    async def run(*, with_usend: bool, event_id: str) -> None:
        await publisher.publish("logs", json.dumps(_event(event_id, message_id=api_id)).encode())
        writer = MongoLogWriter(mongo_settings)
        owners = MessageOwnerLookup(usend) if with_usend else None
        try:
            with trio.fail_after(60):
                await run_fetchlog(config, FetchlogTask(EventFilter(), writer, owners=owners),
                                   Shutdown(5.0), source=topics.source())
        finally:
            writer.close()

    try:
        await run(with_usend=True, event_id="new-1")
        assert collection.count_documents({"source": {"$exists": False}}) == 0
        assert collection.count_documents({"source": "API", "user_id": 77}) == 1401
        assert collection.count_documents({"source": "SMTP"}) == 700
        assert state.find_one({"_id": "labels"})["complete"] is True
        await run(with_usend=False, event_id="new-2")  # stored unlabelled: marker withdrawn
        assert collection.find_one({"event_id": "new-2"}).get("source") is None
        assert state.find_one({"_id": "labels"})["complete"] is False
        await run(with_usend=True, event_id="new-3")
        assert collection.count_documents({"source": {"$exists": False}}) == 0
        assert collection.find_one({"event_id": "new-2"})["user_id"] == 77
        assert state.find_one({"_id": "labels"})["complete"] is True
    finally:
        topics.close()


async def test_an_event_with_a_traceparent_is_stored_in_its_trace(  # type: ignore[no-untyped-def]
    mongo_settings: MongoSettings, collection
) -> None:
    from structlog.testing import capture_logs

    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    writer = MongoLogWriter(mongo_settings)
    task = FetchlogTask(EventFilter(), writer)
    traced, plain = _messages(
        [_event("t1", "Reject", "msg_t", action="rejected"), _event("t2", "Sender", "msg_u")]
    )
    traced = traced._replace(headers=(("traceparent", f"00-{trace}-00f067aa0ba902b7-01".encode()),))
    try:
        await writer.ensure_indexes()
        with capture_logs() as logs:
            await task([traced, plain])
    finally:
        writer.close()
    stored = [line for line in logs if line["event"] == "delivery event stored"]
    assert [(line["message_id"], line["trace_id"]) for line in stored] == [("msg_t", trace)]


async def test_an_smtp_servers_event_takes_its_emails_trace(  # type: ignore[no-untyped-def]
    mongo_settings: MongoSettings, collection, usend: Database
) -> None:
    from structlog.testing import capture_logs

    trace = "5bf92f3577b34da6a3ce929d0e0e4736"
    message_id = f"msg_{unique_name('tr')}"
    _insert_email(usend, message_id)
    with usend.engine.begin() as conn:
        conn.execute(
            text("UPDATE email_messages SET traceparent = :t WHERE message_id = :m"),
            {"t": f"00-{trace}-00f067aa0ba902b7-01", "m": message_id},
        )
    writer = MongoLogWriter(mongo_settings)
    task = FetchlogTask(EventFilter(), writer, owners=MessageOwnerLookup(usend))
    try:
        await writer.ensure_indexes()
        with capture_logs() as logs:
            await task(_messages([_event("s1", "Sender", f"<{message_id}>")]))
    finally:
        writer.close()
    stored = [line for line in logs if line["event"] == "delivery event stored"]
    assert [(line["message_id"], line["trace_id"]) for line in stored] == [
        (f"<{message_id}>", trace)
    ]
