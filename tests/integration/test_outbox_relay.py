"""The outbox relay's pass on PostgreSQL (Trio thread, its own connection) against real
PostgreSQL and the Kafka-API broker: the stored bytes are published as they are, in id order,
and a connection lost between passes costs one failed pass, not the relay."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import psycopg
import pytest
import trio
import trio.testing
from sqlalchemy import func, insert, select, text

from etrans.adapters._net.trio_pq import TrioPqConnection
from etrans.adapters.kafka.client import KafkaProducer
from etrans.adapters.sql import migrations, usend_database
from etrans.adapters.sql.outbox import OutboxRelay
from etrans.adapters.sql.outbox_store import PgOutboxStore
from etrans.adapters.sql.usend import EmailMessage, EmailOutbox
from tests.harness.servers import TansuBroker, create_topic, unique_name

OUTBOX = EmailOutbox.__table__


def _raw_records(bootstrap: str, topic: str, want: int, overrides: dict[str, Any]
                 ) -> list[tuple[bytes | None, bytes | None]]:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"raw-{topic}",
                         "enable.auto.commit": False, **overrides})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    records: list[tuple[bytes | None, bytes | None]] = []
    try:
        for _ in range(120):
            for message in consumer.consume(max(1, want - len(records)), 0.5):
                if not message.error():
                    records.append((message.key(), message.value()))
            if len(records) >= want:
                break
    finally:
        consumer.close()
    return records


async def test_trio_pass_publishes_the_stored_bytes_and_survives_a_lost_connection(
        fresh_database: Any, kafka_bootstrap: str, kafka_test_config: dict[str, Any],
        new_topic: Any) -> None:
    url = fresh_database("relay")
    migrations.upgrade(url)
    db = usend_database(url, pool_size=2)
    with db.engine.begin() as conn:  # not the default 'hex': the relay must not depend on it
        name = conn.execute(text("SELECT current_database()")).scalar()
        conn.execute(text(f'ALTER DATABASE "{name}" SET bytea_output = \'escape\''))
    topic = new_topic()
    payloads = [f'{{"n":{i},"s":"Grüße ✓ \\"q\\" \\\\"}}'.encode() for i in range(5)]
    payloads.append(b"\x00\xff not even UTF-8")
    now = datetime.now(UTC)
    with db.engine.begin() as conn:
        conn.execute(insert(OUTBOX), [{"topic": topic, "key": f"k{i}", "payload": p,
                                       "message_id": f"m{i}", "created_at": now}
                                      for i, p in enumerate(payloads)])
    producer = KafkaProducer({"bootstrap.servers": kafka_bootstrap})
    relay = OutboxRelay(PgOutboxStore.of(db), producer)
    try:
        assert await relay.relay_once() == (6, 0)
        records = await trio.to_thread.run_sync(
            _raw_records, kafka_bootstrap, topic, 6, kafka_test_config)
        assert records == [(f"k{i}".encode(), p) for i, p in enumerate(payloads)]

        # The server ends the relay's session between passes: that pass fails (the relay's
        # loop logs it and backs off), the next one reconnects and publishes.
        with db.engine.begin() as conn:
            conn.execute(insert(OUTBOX).values(topic=topic, key="late", payload=b"{}",
                                               message_id="late", created_at=now))
        with db.engine.connect() as conn:
            ended = conn.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar()
        assert ended >= 1
        with pytest.raises(psycopg.OperationalError):
            await relay.relay_once()
        assert await relay.relay_once() == (1, 0)
        with db.engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(OUTBOX).where(
                OUTBOX.c.published_at.is_(None))).scalar() == 0
    finally:
        await relay.aclose()
        producer.close(5.0)
        db.dispose()


def _migrated(fresh_database: Any, prefix: str) -> Any:
    url = fresh_database(prefix)
    migrations.upgrade(url)
    return usend_database(url, pool_size=2)


async def test_unpublishable_rows_at_the_head_do_not_hold_back_a_good_row(
        fresh_database: Any, kafka_bootstrap: str, kafka_test_config: dict[str, Any],
        new_topic: Any) -> None:
    """300 rows the producer refuses (larger than its message.max.bytes), left at the head of
    the table by a relay that retried them, ahead of one good row: the good row is published in
    the first pass, and every bad row is failed within two passes, never to take a slot again.
    (Before: the 200 oldest rows were selected whatever their attempts, the bad ones failed
    forever, and the good row was never published.)"""
    db = _migrated(fresh_database, "relay_hol")
    topic = new_topic()
    now = datetime.now(UTC)
    too_large = b"{" + b" " * 20_000 + b"}"
    with db.engine.begin() as conn:
        conn.execute(insert(OUTBOX), [{"topic": topic, "key": f"bad{i}", "payload": too_large,
                                       "created_at": now, "attempts": 3,
                                       "last_error": "refused"} for i in range(300)])
        conn.execute(insert(OUTBOX).values(topic=topic, key="good", payload=b'{"good":1}',
                                           created_at=now))
    producer = KafkaProducer({"bootstrap.servers": kafka_bootstrap, "message.max.bytes": 10_000})
    relay = OutboxRelay(PgOutboxStore.of(db), producer, batch_size=200)
    try:
        assert await relay.relay_once() == (1, 199)
        records = await trio.to_thread.run_sync(
            _raw_records, kafka_bootstrap, topic, 1, kafka_test_config)
        assert records == [(b"good", b'{"good":1}')]
        assert await relay.relay_once() == (0, 101)
        assert await relay.relay_once() == (0, 0)
        assert relay.stats.given_up == 300
        with db.engine.connect() as conn:
            failed = conn.execute(select(func.count()).select_from(OUTBOX).where(
                OUTBOX.c.failed_at.is_not(None), OUTBOX.c.attempts == 3,
                OUTBOX.c.last_error.contains("MSG_SIZE_TOO_LARGE"))).scalar()
        assert failed == 300
    finally:
        await relay.aclose()
        producer.close(1.0)
        db.dispose()


async def test_published_rows_are_deleted_after_the_retention_in_batches(
        fresh_database: Any) -> None:
    db = _migrated(fresh_database, "relay_retention")
    now = datetime.now(UTC)
    old = now - timedelta(days=3)
    with db.engine.begin() as conn:
        conn.execute(insert(OUTBOX), [
            {"topic": "t", "key": str(i), "payload": b"{}", "created_at": now,
             "published_at": now - timedelta(hours=25 if i < 2500 else 23)} for i in range(3000)])
        conn.execute(insert(OUTBOX), [
            {"topic": "t", "key": "pending", "payload": b"{}", "created_at": old},
            {"topic": "t", "key": "failed", "payload": b"{}", "created_at": old, "failed_at": old}])
    relay = OutboxRelay(PgOutboxStore.of(db), object(),  # type: ignore[arg-type]
                        retention_seconds=24 * 3600)
    try:
        assert await relay.delete_published(batch=1000, max_batches=2) == 2000
        assert await relay.delete_published(batch=1000) == 500
        assert await relay.delete_published(batch=1000) == 0
        with db.engine.connect() as conn:
            left = conn.execute(select(OUTBOX.c.key, OUTBOX.c.published_at)).all()
        assert len(left) == 502
        assert {r.key for r in left if r.published_at is None} == {"pending", "failed"}
    finally:
        await relay.aclose()
        db.dispose()


class _ValidatingTansu(TansuBroker):
    """tansu with a JSON schema for topic ``strict`` that no record of ours satisfies: the
    broker answers INVALID_RECORD for every record sent to it (a real broker's refusal)."""

    def prepare(self) -> None:
        assert self.workdir is not None
        schemas = self.workdir / "schema"
        schemas.mkdir()
        (schemas / "strict.json").write_text(json.dumps({
            "type": "object",
            "properties": {"value": {"type": "object", "required": ["never-present"]}}}))

    def command(self) -> list[str]:
        return [*super().command(), "--schema-registry", "file://./schema"]


async def test_a_row_the_broker_refuses_max_attempts_times_fails_its_email(
        fresh_database: Any, kafka_test_config: dict[str, Any]) -> None:
    from etrans.workers.reject_events import outbox_agent, reject_events

    db = _migrated(fresh_database, "relay_attempts")
    broker = _ValidatingTansu().start()
    try:
        create_topic(broker.bootstrap, "strict")
        good_topic = create_topic(broker.bootstrap, unique_name("good"))
        log_topic = create_topic(broker.bootstrap, unique_name("logs"))
        now = datetime.now(UTC)
        message_id = "msg_refused@example.test"
        request = {"payload": {"sender": {"name": "S", "email": "s@example.test"},
                               "recipients": ["r@example.org"], "cc": [], "bcc": [],
                               "subject": "Hi", "body": "<p>Hi</p>", "message_id": message_id,
                               "attachments": [], "user_id": "7"}}
        with db.engine.begin() as conn:
            conn.execute(insert(EmailMessage.__table__).values(
                message_id=message_id, user_id=7, from_address="S <s@example.test>",
                to_addresses=["r@example.org"], subject="Hi", html="<p>Hi</p>", created_at=now))
            conn.execute(insert(OUTBOX).values(topic="strict", key=message_id,
                                               payload=json.dumps(request).encode(),
                                               message_id=message_id, created_at=now))
        # Not idempotent: tansu fences an idempotent producer after it refused a batch.
        producer = KafkaProducer({"bootstrap.servers": broker.bootstrap,
                                  "enable.idempotence": False})
        relay = OutboxRelay(PgOutboxStore.of(db), producer, max_attempts=3,
                            log_topic=log_topic,
                            reject_events=partial(reject_events, agent=outbox_agent()))
        try:
            for attempt in (1, 2):
                with db.engine.begin() as conn:
                    conn.execute(insert(OUTBOX).values(topic=good_topic, key=f"g{attempt}",
                                                       payload=b"{}", created_at=now))
                # The good row is published, the refused one retried (behind untried rows).
                assert await relay.relay_once() == (1, 1)
                with db.engine.connect() as conn:
                    row = conn.execute(select(OUTBOX).where(OUTBOX.c.topic == "strict")).one()
                assert (row.attempts, row.failed_at) == (attempt, None)
                assert "INVALID_RECORD" in row.last_error
            assert await relay.relay_once() == (0, 1)
            assert relay.stats.given_up == 1
            with db.engine.connect() as conn:
                row = conn.execute(select(OUTBOX).where(OUTBOX.c.topic == "strict")).one()
                email = conn.execute(select(EmailMessage.__table__).where(
                    EmailMessage.__table__.c.message_id == message_id)).one()
            assert row.attempts == 3
            assert row.failed_at is not None
            assert email.status == "failed"
            assert email.response.startswith(
                "etrans: not queued for delivery: the Kafka broker refused the record 3 times:")
            assert "INVALID_RECORD" in email.response
            # The Reject event is published by the next pass; the failed row never again.
            assert await relay.relay_once() == (1, 0)
            assert await relay.relay_once() == (0, 0)
            records = await trio.to_thread.run_sync(
                _raw_records, broker.bootstrap, log_topic, 1, kafka_test_config)
            assert len(records) == 1
            event = json.loads(records[0][1] or b"")
            assert (event["Event"], event["recipient"], event["message_id"]) == (
                "Reject", "r@example.org", message_id)
            assert event["response"] == "554 5.3.4 " + email.response
        finally:
            await relay.aclose()
            producer.close(1.0)
    finally:
        broker.cleanup()
        db.dispose()


async def test_etrans_dev_sqlite_upgrades_an_older_data_dir_and_fails_rows_the_same_way(
        tmp_path: Any, kafka_bootstrap: str, new_topic: Any) -> None:
    """``etrans dev``'s SQLite: a data directory made before failed_at and the failed status
    is brought up to date at start (rows kept), and the relay's SQLite pass fails a refused
    row and its email like the PostgreSQL pass."""
    from etrans.dev import sqlite_db
    from etrans.dev.sqlite_outbox import SqliteOutboxStore

    db = sqlite_db.sqlite_database(tmp_path / "usend.sqlite3")
    sqlite_db.create_schema(db)
    now = datetime.now(UTC)
    with db.engine.begin() as conn:  # back to the schema of an older etrans
        conn.exec_driver_sql("DROP INDEX ix_email_outbox_unpublished")
        conn.exec_driver_sql("DROP INDEX ix_email_outbox_published_at")
        conn.exec_driver_sql("DROP INDEX ix_email_outbox_due_at")
        conn.exec_driver_sql("ALTER TABLE email_outbox DROP COLUMN due_at")
        conn.exec_driver_sql("ALTER TABLE email_outbox DROP COLUMN failed_at")
        conn.exec_driver_sql("CREATE INDEX ix_email_outbox_unpublished ON email_outbox (id) "
                             "WHERE published_at IS NULL")
        ddl = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = "
                                   "'email_messages'").scalar()
        statuses = ", 'failed', 'suppressed', 'scheduled', 'cancelled')"
        assert statuses in ddl
        for (name,) in conn.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND "
                "tbl_name = 'email_messages' AND sql IS NOT NULL").all():
            conn.exec_driver_sql(f'DROP INDEX "{name}"')
        conn.exec_driver_sql("DROP TABLE email_messages")
        conn.exec_driver_sql(ddl.replace(statuses, ")"))
    topic = new_topic()
    with db.engine.begin() as conn:
        conn.execute(insert(EmailMessage.__table__).values(
            message_id="m-big", user_id=7, from_address="s@example.test",
            to_addresses=["r@example.org"], subject="Hi", html="x", created_at=now))
        conn.exec_driver_sql(
            "INSERT INTO email_outbox (topic, key, payload, message_id, created_at, attempts) "
            "VALUES (?, 'm-big', ?, 'm-big', ?, 0)", (topic, b"{" + b" " * 20_000 + b"}", now))
    sqlite_db.create_schema(db)  # what `etrans dev` does at start
    sqlite_db.create_schema(db)  # and again: idempotent
    producer = KafkaProducer({"bootstrap.servers": kafka_bootstrap, "message.max.bytes": 10_000})
    relay = OutboxRelay(SqliteOutboxStore(db), producer)
    try:
        assert await relay.relay_once() == (0, 1)
        assert relay.stats.given_up == 1
        with db.engine.connect() as conn:
            email = conn.execute(select(EmailMessage.__table__)).one()
            row = conn.execute(select(OUTBOX)).one()
            indexes = {r[0] for r in conn.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert (email.message_id, email.status) == ("m-big", "failed")
        assert "MSG_SIZE_TOO_LARGE" in email.response
        assert row.failed_at is not None
        assert {"ix_email_outbox_unpublished", "ix_email_outbox_published_at",
                "ix_email_messages_user_id_status"} <= indexes
        assert await relay.relay_once() == (0, 0)
    finally:
        await relay.aclose()
        producer.close(1.0)
        db.dispose()


async def test_one_pass_takes_up_to_1000_rows_by_default(
        fresh_database: Any, kafka_bootstrap: str, kafka_test_config: dict[str, Any],
        new_topic: Any) -> None:
    """Under load a pass is slow (its statements and its broker waits queue behind the requests
    of ``etrans serve`` for the Trio thread and the CPU: 1-2 s per pass measured by
    bench/e2e.py), so the rows a pass may take bound what the relay publishes per second.  At
    200 rows per pass the outbox backlog grew by 200-row steps while POST /emails accepted 250/s
    (docs/performance.md); a default pass now takes up to 1000 rows, in order."""
    db = _migrated(fresh_database, "relay_batch")
    topic = new_topic()
    now = datetime.now(UTC)
    with db.engine.begin() as conn:
        conn.execute(insert(OUTBOX), [{"topic": topic, "key": f"k{i}", "payload": b"%d" % i,
                                       "created_at": now} for i in range(1001)])
    producer = KafkaProducer({"bootstrap.servers": kafka_bootstrap})
    relay = OutboxRelay(PgOutboxStore.of(db), producer)
    try:
        assert await relay.relay_once() == (1000, 0)
        assert await relay.relay_once() == (1, 0)
        records = await trio.to_thread.run_sync(
            _raw_records, kafka_bootstrap, topic, 1001, kafka_test_config)
        assert [value for _, value in records] == [b"%d" % i for i in range(1001)]
    finally:
        await relay.aclose()
        producer.close(1.0)
        db.dispose()


async def test_a_pass_holds_at_most_max_pass_bytes_of_payloads(
        fresh_database: Any, kafka_bootstrap: str, kafka_test_config: dict[str, Any],
        new_topic: Any) -> None:
    """Big emails: a pass reads payloads up to its byte budget (at least one row), the rest go
    in the next passes, in order (200 emails of 25 MB would otherwise be 7 GB in one pass)."""
    db = _migrated(fresh_database, "relay_budget")
    topic = new_topic()
    now = datetime.now(UTC)
    payloads = [bytes([65 + i]) * 1_500_000 for i in range(3)]
    with db.engine.begin() as conn:
        conn.execute(insert(OUTBOX), [{"topic": topic, "key": f"k{i}", "payload": p,
                                       "created_at": now} for i, p in enumerate(payloads)])
    producer = KafkaProducer({"bootstrap.servers": kafka_bootstrap,
                              "message.max.bytes": 5_000_000})
    relay = OutboxRelay(PgOutboxStore.of(db), producer, max_pass_bytes=2_000_000)
    try:
        assert [await relay.relay_once() for _ in range(4)] == [(1, 0), (1, 0), (1, 0), (0, 0)]
        records = await trio.to_thread.run_sync(
            _raw_records, kafka_bootstrap, topic, 3, kafka_test_config)
        assert [value for _, value in records] == payloads
    finally:
        await relay.aclose()
        producer.close(1.0)
        db.dispose()


async def test_the_relay_loop_deletes_old_published_rows_while_every_pass_is_full(
        fresh_database: Any, kafka_bootstrap: str, new_topic: Any) -> None:
    """run(): the retention runs between passes even when each pass is full (so the table
    cannot grow without bound under a steady load), and shutdown ends the loop."""
    db = _migrated(fresh_database, "relay_loop")
    topic = new_topic()
    now = datetime.now(UTC)
    with db.engine.begin() as conn:
        conn.execute(insert(OUTBOX), [{"topic": topic, "key": f"old{i}", "payload": b"{}",
                                       "created_at": now - timedelta(days=2),
                                       "published_at": now - timedelta(days=2)}
                                      for i in range(5)])
        conn.execute(insert(OUTBOX), [{"topic": topic, "key": f"new{i}", "payload": b"{}",
                                       "created_at": now} for i in range(12)])
    producer = KafkaProducer({"bootstrap.servers": kafka_bootstrap})
    relay = OutboxRelay(PgOutboxStore.of(db), producer, batch_size=3,
                        cleanup_every_seconds=0.0, retention_seconds=3600.0)
    done = trio.Event()

    def count(*where: Any) -> int:
        with db.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(OUTBOX).where(*where))
                       .scalar())

    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                await nursery.start(relay.run, done)
                for _ in range(300):  # polls the database: no event to wait for
                    if not count(OUTBOX.c.published_at.is_(None)) and relay.stats.deleted >= 5:
                        break
                    await trio.sleep(0.1)
                done.set()
        assert count() == 12
        assert relay.stats.published == 12
    finally:
        producer.close(1.0)
        db.dispose()


async def _until(condition: Any, seconds: float = 20.0) -> bool:
    """Wait in real time (the test's Trio clock is frozen) until ``condition()`` holds; whether
    it did within ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        await trio.to_thread.run_sync(time.sleep, 0.02)
    return True


async def test_an_idle_relay_publishes_at_once_when_a_commit_wakes_it(
        fresh_database: Any, kafka_bootstrap: str, kafka_test_config: dict[str, Any],
        new_topic: Any, mock_clock: trio.testing.MockClock) -> None:
    """At idle (the last pass carried fewer than ``linger_min_rows`` rows) a commit's notify()
    starts the next pass without waiting: Trio's clock is frozen here, so any sleep between the
    wake-up and the pass would never end.  (Before: it slept the 50 ms linger after every
    wake-up, 50 ms on every email's time to inbox; under load it still lingers.)"""
    db = _migrated(fresh_database, "relay_idle")
    topic = new_topic()
    producer = KafkaProducer({"bootstrap.servers": kafka_bootstrap})
    relay = OutboxRelay(PgOutboxStore.of(db), producer, idle_seconds=3600.0,
                        linger_seconds=3600.0)
    done = trio.Event()

    def add(key: str) -> None:
        with db.engine.begin() as conn:
            conn.execute(insert(OUTBOX).values(topic=topic, key=key, payload=b"{}",
                                               created_at=datetime.now(UTC)))

    try:
        add("a")
        async with trio.open_nursery() as nursery:
            await nursery.start(relay.run, done)
            # The first pass publishes "a" and ends (one row: fewer than linger_min_rows).
            assert await _until(lambda: relay.stats.published == 1)
            add("b")
            relay.notify()
            published_at_once = await _until(lambda: relay.stats.published == 2)
            if published_at_once:
                done.set()
            else:  # still waiting on the frozen clock: stop it, and fail below
                nursery.cancel_scope.cancel()
        assert published_at_once, "the relay waited on the clock between wake-up and pass"
        records = await trio.to_thread.run_sync(
            _raw_records, kafka_bootstrap, topic, 2, kafka_test_config)
        assert records == [(b"a", b"{}"), (b"b", b"{}")]
    finally:
        producer.close(1.0)
        db.dispose()


async def test_a_failed_rows_error_line_carries_its_trace_id(
        fresh_database: Any, kafka_bootstrap: str, new_topic: Any) -> None:
    import structlog
    from structlog.testing import capture_logs

    db = _migrated(fresh_database, "relay_trace")
    trace = "6bf92f3577b34da6a3ce929d0e0e4736"
    with db.engine.begin() as conn:
        conn.execute(insert(OUTBOX).values(
            topic=new_topic(), key="big", payload=b"{" + b" " * 20_000 + b"}",
            message_id="msg_traced", created_at=datetime.now(UTC),
            traceparent=f"00-{trace}-00f067aa0ba902b7-01"))
    producer = KafkaProducer({"bootstrap.servers": kafka_bootstrap, "message.max.bytes": 10_000})
    relay = OutboxRelay(PgOutboxStore.of(db), producer)
    try:
        with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
            assert await relay.relay_once() == (0, 1)
    finally:
        await relay.aclose()
        producer.close(1.0)
        db.dispose()
    [failed] = [line for line in logs if line["event"] == "outbox row failed: never published"]
    assert (failed["message_id"], failed["trace_id"]) == ("msg_traced", trace)


class _CountingConnection(TrioPqConnection):
    """Counts the requests sent to PostgreSQL (each one round trip)."""

    calls = 0

    async def execute(self, sql: bytes, params: Any = (), *,
                      prepared: bytes | None = None) -> Any:
        self.calls += 1
        return await super().execute(sql, params, prepared=prepared)

    async def execute_script(self, sql: bytes) -> Any:
        self.calls += 1
        return await super().execute_script(sql)


async def test_a_pass_makes_two_round_trips_to_postgresql(
        fresh_database: Any, kafka_bootstrap: str, kafka_test_config: dict[str, Any],
        new_topic: Any) -> None:
    """Under load each wait of the relay is a scheduling delay behind the requests of ``etrans
    serve`` (docs/performance.md), so a pass whose rows all got through makes two requests to
    PostgreSQL: BEGIN with the lock and the read of its rows, then the write with the COMMIT
    (before: BEGIN, the lock, the read, the write, COMMIT: five).  An empty pass: two (three)."""
    db = _migrated(fresh_database, "relay_round_trips")
    topic, events_topic = new_topic(), new_topic(prefix="events")
    now = datetime.now(UTC)
    with db.engine.begin() as conn:
        conn.execute(insert(OUTBOX), [{"topic": topic, "key": f"k{i}", "payload": b"%d" % i,
                                       "created_at": now} for i in range(3)])
    connection = _CountingConnection.from_sqlalchemy_url(db.engine.url)
    store = PgOutboxStore(connection, TrioPqConnection.from_sqlalchemy_url(db.engine.url))
    producer = KafkaProducer({"bootstrap.servers": kafka_bootstrap})
    relay = OutboxRelay(store, producer, events_topic=events_topic)
    try:
        assert await relay.relay_once() == (3, 0)
        assert connection.calls == 2
        assert await relay.relay_once() == (0, 0)
        assert connection.calls == 4
        records = await trio.to_thread.run_sync(
            _raw_records, kafka_bootstrap, topic, 3, kafka_test_config)
        assert [value for _, value in records] == [b"0", b"1", b"2"]
        with db.engine.connect() as conn:
            rows = conn.execute(select(OUTBOX.c.published_at, OUTBOX.c.attempts)).all()
        assert [(at is not None, attempts) for at, attempts in rows] == [(True, 1)] * 3
    finally:
        await relay.aclose()
        producer.close(1.0)
        db.dispose()
