"""What is particular to the embedded stand-ins of ``etrans dev`` (their shared contracts with the
real adapters are in ``tests/contract``):

- the in-process topics resume from the committed offsets after a restart, replay for a new
  group or ``from_earliest``, drop what every group consumed when the file is opened again, and
  spread unkeyed records round-robin;
- data directories of an older ``etrans dev`` get the columns added since.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from etrans.app.records import LogFilter
from etrans.dev.log_store import SqliteLogStore
from etrans.dev.topics import LocalPublisher, LocalTopics
from etrans.pipeline import Message, Pipeline, PipelineConfig
from etrans.runtime import Shutdown

BASE = datetime(2026, 3, 10, 4, 0, tzinfo=UTC)
EARLY = BASE - timedelta(days=1)


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
