"""The embedded stand-ins of ``etrans dev`` against the contracts of the adapters they replace.

- the SQLite log store answers GET /logs's queries exactly as MongoDB does (same documents
  written to secantus and to SQLite, same filters, sorts, pages and groups);
- the in-process topics keep Kafka's offset semantics (commit after completion, resume from the
  committed offset after a restart, redelivery of what was not committed, per-key ordering);
- the local store's quota is atomic (200 concurrent reservations against a limit of 50), the
  API-key cache never lets a lookup overwrite a revocation, idempotency keys go through their
  states, and the SQLite email-status update is monotonic.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trio

from etrans.app.records import MISSING, REVOKED, ApiKeyRecord, LogFilter
from etrans.dev import kv
from etrans.dev.log_store import SqliteLogStore
from etrans.dev.topics import LocalPublisher, LocalTopics
from etrans.domain.api_keys import Permission
from etrans.domain.delivery_log import StatusChange, to_document
from etrans.domain.quota import QuotaLimits
from etrans.pipeline import Message, Pipeline, PipelineConfig
from etrans.runtime import Shutdown

BASE = datetime(2026, 3, 10, 4, 0, tzinfo=UTC)


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


EARLY, MID = BASE - timedelta(days=1), BASE + timedelta(seconds=20)
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


def _labelled(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """As fetchlog stores them: msg-0..2 sent through the API by user 7, msg-3 by user 8, the
    rest SMTP; msg-8's documents are unlabelled (stored before ``source`` existed)."""
    for document in documents:
        number = int(document["message_id"].split("-")[1])
        if number < 4:
            document.update(source="API", user_id=7 if number < 3 else 8)
        elif number < 8:
            document["source"] = "SMTP"
    return documents


async def test_sqlite_log_store_answers_like_mongodb(mongo_uri: str, tmp_path: Path) -> None:
    from etrans.adapters.mongo.log_reader import MongoLogReader
    from etrans.adapters.mongo.log_writer import MongoLogWriter
    from etrans.adapters.mongo.store import MongoStore
    from etrans.settings import MongoSettings, Secret

    mongo_settings = MongoSettings(uri=Secret(mongo_uri), dbname=f"dev_{uuid.uuid4().hex[:10]}",
                                   collection="email_logs")
    mongo_writer = MongoLogWriter(mongo_settings)
    mongo = MongoStore(mongo_settings)
    sqlite = SqliteLogStore(tmp_path / "logs.sqlite3")
    try:
        documents = _labelled([to_document(event) for event in _events()])
        for writer in (mongo_writer, sqlite):
            await writer.ensure_indexes()
            first = await writer.insert(documents)
            assert (first.inserted, first.duplicates) == (40, 0)
            again = await writer.insert(documents[:5])  # a replay: counted, not stored twice
            assert (again.inserted, again.duplicates) == (0, 5)
        reader = MongoLogReader(mongo)
        for query in QUERIES:
            want = sorted(await reader.counts(query), key=repr)
            assert sorted(await sqlite.counts(query), key=repr) == want, query
            for skip, limit in ((0, 100), (3, 5)):
                expected = await reader.page(query, skip=skip, limit=limit)
                got = await sqlite.page(query, skip=skip, limit=limit)
                # Ties in the sort keys may come in any order in MongoDB: compare as sets when
                # the page is complete, and the sort keys when it is cut.
                keys = [name for name, _ in query.sorts]
                assert [[d[k] for k in keys] for d in got] == \
                    [[d[k] for k in keys] for d in expected], (query, skip)
                if limit >= 40:
                    assert _canonical(got) == _canonical(expected), query
        # The backfill's two calls answer alike too.
        for store in (mongo_writer, sqlite):
            ids, position = await store.unlabelled(None, 100)
            assert (sorted(ids), position) == (["msg-8"] * 4, None), store
            assert await store.label(["msg-8"], "SMTP", None) == 4
            assert await store.unlabelled(None, 100) == ([], None)
            assert await store.labels_complete() is False
            await store.set_labels_complete(True)
            assert await store.labels_complete() is True
            await store.set_labels_complete(False)
            assert await store.labels_complete() is False
    finally:
        mongo.client.drop_database(mongo_settings.dbname)
        mongo.close()
        mongo_writer.close()
        sqlite.close()


def _canonical(documents: list[dict[str, Any]]) -> list[str]:
    return sorted(repr(sorted((k, v.astimezone(UTC).isoformat() if isinstance(v, datetime) else v)
                              for k, v in d.items())) for d in documents)


# -- topics ---------------------------------------------------------------------------------------

def _config(**overrides: Any) -> PipelineConfig:
    values: dict[str, Any] = {"topics": ("t",), "group_id": "g", "kafka": {}, "workers": 4,
                              "channel_size": 20, "commit_interval": 0.05, "stop_at_end": True}
    values.update(overrides)
    return PipelineConfig(**values)


async def test_local_topics_resume_from_committed_offsets(tmp_path: Path) -> None:
    topics = LocalTopics(tmp_path / "topics.sqlite3", partitions=3)
    publisher = LocalPublisher(topics)
    for i in range(300):
        await publisher.publish("t", f"{i}".encode(), key=f"k{i % 7}".encode(),
                                headers=[("n", str(i).encode())])
    seen: list[Message] = []

    async def record(message: Message) -> None:
        seen.append(message)

    stats = await Pipeline(_config(), record, source=topics.source()).run(Shutdown(5.0))
    assert stats.processed == 300
    assert sorted(int(m.value or b"") for m in seen) == list(range(300))
    # One key, one partition, in publishing order.
    by_key: dict[bytes | None, set[int]] = {}
    for m in seen:
        by_key.setdefault(m.key, set()).add(m.partition)
        assert m.header("n") == m.value
    assert all(len(partitions) == 1 for partitions in by_key.values())
    for partition in range(3):
        offsets = [m.offset for m in seen if m.partition == partition]
        assert sorted(offsets) == list(range(len(offsets)))
        assert topics.committed("g", "t", partition) == topics.end_offset("t", partition)

    # Another group starts from the beginning; from_earliest replays for this group too.
    seen.clear()
    await Pipeline(_config(group_id="g2"), record, source=topics.source()).run(Shutdown(5.0))
    assert len(seen) == 300
    seen.clear()
    await Pipeline(_config(from_earliest=True), record, source=topics.source()).run(Shutdown(5.0))
    assert len(seen) == 300

    # A restart (new LocalTopics on the same file) drops what every group consumed but keeps
    # the offsets going; only new records are delivered.
    ends = [topics.end_offset("t", p) for p in range(3)]
    topics.close()
    topics = LocalTopics(tmp_path / "topics.sqlite3", partitions=3)
    assert topics.pruned == 300 - 3  # the last record of each partition stays
    assert [topics.end_offset("t", p) for p in range(3)] == ends
    partition, offset = topics.append("t", b"new", key=b"k0")
    assert offset == ends[partition]
    seen.clear()
    await Pipeline(_config(), record, source=topics.source()).run(Shutdown(5.0))
    assert [m.value for m in seen] == [b"new"]
    topics.close()


async def test_what_was_not_committed_is_delivered_again(tmp_path: Path) -> None:
    topics = LocalTopics(tmp_path / "topics.sqlite3")
    publisher = LocalPublisher(topics)
    for i in range(10):
        await publisher.publish("t", f"{i}".encode())
    started = trio.Event()

    async def slow_on_5(message: Message) -> None:
        if message.value == b"5":
            started.set()
            await trio.sleep_forever()  # never completes: cancelled at the drain deadline

    shutdown = Shutdown(0.5)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(Pipeline(_config(stop_at_end=False), slow_on_5,
                                    source=topics.source()).run, shutdown)
        await started.wait()
        await trio.sleep(0.3)  # the others finish and are committed up to 5
        shutdown.request()
        nursery.cancel_scope.deadline = trio.current_time() + 2.0
    assert topics.committed("g", "t", 0) == 5

    seen: list[bytes | None] = []

    async def record(message: Message) -> None:
        seen.append(message.value)

    await Pipeline(_config(workers=1), record, source=topics.source()).run(Shutdown(5.0))
    assert seen[0] == b"5"  # redelivered from the committed offset
    assert set(seen) == {f"{i}".encode() for i in range(5, 10)}
    topics.close()


# -- the local store ------------------------------------------------------------------------------

async def test_local_quota_is_exact_under_200_concurrent_reservations(tmp_path: Path) -> None:
    store = kv.LocalStore(tmp_path / "state.sqlite3")
    quota = kv.LocalQuota(store)
    now = datetime.now(UTC)
    limits = QuotaLimits(daily=1000, hourly=50, monthly=None)
    refusals: list[str] = []

    async def one() -> None:
        refused = await quota.reserve(7, limits, 1, now)
        if refused is not None:
            refusals.append(refused)

    async with trio.open_nursery() as nursery:
        for _ in range(200):
            nursery.start_soon(one)
    assert refusals == ["hourly"] * 150
    usage = await quota.usage(7, now)
    assert (usage.daily, usage.hourly, usage.monthly) == (50, 50, 50)
    await quota.release(7, 60, now)  # never below zero
    assert (await quota.usage(7, now)).hourly == 0
    store.close()


async def test_local_api_key_cache_never_overwrites_a_revocation(tmp_path: Path) -> None:
    store = kv.LocalStore(tmp_path / "state.sqlite3")
    cache = kv.LocalApiKeyCache(store)
    record = ApiKeyRecord(id=3, user_id=9, permission=Permission.sending_access,
                          expires_at=datetime(2030, 1, 1, tzinfo=UTC))
    assert await cache.get("h") is None
    await cache.put("h", record)
    assert await cache.get("h") == record
    await cache.revoke("h")
    await cache.put("h", record)  # a lookup that raced with the deletion
    assert await cache.get("h") == REVOKED
    await cache.put("unknown", None)
    assert await cache.get("unknown") == MISSING
    store.close()


async def test_local_idempotency_and_delivery_marks(tmp_path: Path) -> None:
    store = kv.LocalStore(tmp_path / "state.sqlite3")
    keys = kv.LocalIdempotencyStore(store)
    assert await keys.begin("s", "fp") == ("started", None)
    assert await keys.begin("s", "fp") == ("in_flight", None)
    assert await keys.begin("s", "other") == ("mismatch", None)
    await keys.complete("s", "fp", 200, {"id": "x"})
    assert await keys.begin("s", "fp") == ("replay", (200, {"id": "x"}))
    await keys.abandon("s")
    assert await keys.begin("s", "fp") == ("started", None)

    marks = kv.LocalDeliveryMarks(store)
    assert await marks.outcome("m") is None
    await marks.record("m", "delivered")
    store.close()
    reopened = kv.LocalStore(tmp_path / "state.sqlite3")  # survives a restart
    assert await kv.LocalDeliveryMarks(reopened).outcome("m") == "delivered"
    reopened.close()


async def test_sqlite_email_status_update_is_monotonic(tmp_path: Path) -> None:
    from etrans.app.records import NewEmail
    from etrans.dev.sqlite_db import (
        SqliteEmailStatusUpdater,
        SqliteUsendRepository,
        create_schema,
        sqlite_database,
    )

    db = sqlite_database(tmp_path / "usend.sqlite3")
    await db.run(create_schema, db)
    await db.run(create_schema, db)  # idempotent
    repo = SqliteUsendRepository(db)
    now = datetime.now(UTC)
    await repo.save([NewEmail(
        message_id="m1", user_id=1, domain_id=None, from_address="a@b.example", to=["c@d.org"],
        cc=[], bcc=[], reply_to=None, subject="s", html="<b>x</b>", text=None, headers=None,
        tags=None, attachments=None, template_id=None, template_data=None, created_at=now,
        topic="sendmail", kafka_key=b"m1", kafka_value=b"{}")])
    updater = SqliteEmailStatusUpdater(db)
    assert await updater.apply([StatusChange("m1", "deferred", now, "Deferred", "451")]) == 1
    assert await updater.apply([StatusChange("m1", "delivered", now, "Sender", "250")]) == 1
    assert await updater.apply([StatusChange("m1", "deferred", now, "Deferred", "451")]) == 0
    assert await updater.apply([StatusChange("nope", "delivered", now)]) == 0
    row = await repo.get(1, "m1")
    assert row is not None
    assert (row["status"], row["response"]) == ("delivered", "250")
    assert row["delivered_at"] == now.replace(microsecond=now.microsecond)
    assert row["created_at"].tzinfo is not None
    db.dispose()


@pytest.mark.parametrize("partitions", [1, 4])
async def test_publisher_spreads_unkeyed_records(tmp_path: Path, partitions: int) -> None:
    topics = LocalTopics(tmp_path / "topics.sqlite3", partitions=partitions)
    publisher = LocalPublisher(topics)
    for _ in range(8):
        await publisher.publish("u", b"x")
    assert sum(topics.end_offset("u", p) for p in range(partitions)) == 8
    assert all(topics.end_offset("u", p) == 8 // partitions for p in range(partitions))
    topics.close()


def test_sqlite_schema_of_an_older_data_dir_gets_the_new_columns(tmp_path: Path) -> None:
    """A data directory made before migration 0003 gets api_keys.created_by_key_id (with its
    foreign key and index) at the next start, and keeps its rows."""
    import sqlite3

    from sqlalchemy import inspect

    from etrans.dev.sqlite_db import create_schema, sqlite_database

    db = sqlite_database(tmp_path / "usend.sqlite3")
    create_schema(db)
    db.dispose()
    raw = sqlite3.connect(tmp_path / "usend.sqlite3")
    columns = [row[1] for row in raw.execute("PRAGMA table_info(api_keys)")
               if row[1] != "created_by_key_id"]
    # SQLite cannot drop a column with a foreign key: rebuild the table as it was before 0003.
    raw.executescript(f"""
        CREATE TABLE old_keys AS SELECT {", ".join(columns)} FROM api_keys;
        DROP TABLE api_keys;
        ALTER TABLE old_keys RENAME TO api_keys;
        INSERT INTO api_keys (id, user_id, name, key_hash, key_prefix, permission, active,
                              created_at, updated_at)
        VALUES (1, 1, 'old', 'ab', 'etrans_live_x', 'full_access', 1, '2026-01-01', '2026-01-01');
    """)
    raw.commit()
    raw.close()
    db = sqlite_database(tmp_path / "usend.sqlite3")
    try:
        create_schema(db)
        with db.engine.connect() as conn:
            found = inspect(conn)
            assert "created_by_key_id" in {c["name"] for c in found.get_columns("api_keys")}
            assert "ix_api_keys_created_by_key_id" in {i["name"] for i in
                                                       found.get_indexes("api_keys")}
            # (table, from, to, on_delete) of the foreign keys
            assert [(r[2], r[3], r[4], r[6]) for r in
                    conn.exec_driver_sql("PRAGMA foreign_key_list(api_keys)")] == \
                [("api_keys", "created_by_key_id", "id", "CASCADE")]
            assert conn.exec_driver_sql("SELECT name FROM api_keys").scalars().all() == ["old"]
    finally:
        db.dispose()


async def test_sqlite_log_store_of_an_older_etrans_dev_gets_the_new_columns(
        tmp_path: Path) -> None:
    """A ``logs.sqlite3`` written before ``source``/``user_id`` existed: the columns are added at
    start, its rows are served (unlabelled, as MongoDB's old documents) and backfilled."""
    import sqlite3

    path = tmp_path / "logs.sqlite3"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE logs (id INTEGER PRIMARY KEY, timestamp INTEGER NOT NULL,"
                + ", ".join(f"{name} TEXT NOT NULL DEFAULT ''" for name in (
                    "event", "action", "sender", "recipient", "response", "from_domain",
                    "message_id", "to_domain", "event_id", "agent_type", "agent_name",
                    "agent_hostname")) + ")")
    old.execute("INSERT INTO logs (timestamp, event, from_domain, message_id, event_id)"
                " VALUES (1773115200000000, 'Sender', 'a.example', 'msg-1', 'e1')")
    old.commit()
    old.close()
    store = SqliteLogStore(path)
    try:
        await store.ensure_indexes()
        query = LogFilter(owner=1, domains=(("a.example", EARLY),))
        [document] = await store.page(query, skip=0, limit=10)
        assert "source" not in document
        assert await store.unlabelled(None, 10) == (["msg-1"], None)
        assert await store.label(["msg-1"], "API", 1) == 1
        assert [g.source for g in await store.counts(LogFilter(owner=1))] == ["API"]
    finally:
        store.close()
