"""The outbox backlog of ``etrans serve`` (issue 17 item 1): ``etrans_outbox_backlog`` and
``etrans_outbox_oldest_age_seconds`` scraped from a running serve whose broker does not answer
(the rows stay pending), and the query's plan: on the partial indexes of the rows waiting,
never a scan of the rows published and kept."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, text

from etrans.adapters.sql import migrations, usend_database
from etrans.adapters.sql.outbox_store import _BACKLOG
from etrans.adapters.sql.usend import EmailOutbox
from tests.harness.servers import free_port
from tests.integration.test_serve import serving
from tests.integration.test_serve_metrics import samples

OUTBOX = EmailOutbox.__table__


def add_rows(url: str, *rows: dict[str, Any]) -> None:
    db = usend_database(url, pool_size=1)
    try:
        with db.engine.begin() as conn:
            for row in rows:
                conn.execute(
                    insert(OUTBOX).values(
                        topic="sendmail",
                        key=None,
                        payload=b"{}",
                        **{"created_at": datetime.now(UTC), **row},
                    )
                )
    finally:
        db.dispose()


def test_serve_exposes_the_rows_waiting_and_the_oldest_wait(
    etrans_env: Any, fresh_database: Any
) -> None:
    url = fresh_database("usend_backlog")
    migrations.upgrade(url)
    # No broker: every pass of the relay finds it unreachable, so the rows stay pending.
    env = etrans_env(
        USEND_DB_URI=url,
        KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}",
        KAFKA_CONF_MESSAGE_TIMEOUT_MS="1000",
    )
    now = datetime.now(UTC)
    with serving(env) as served:
        empty = samples(served.get("/metrics").text)
        add_rows(
            url,
            *({"created_at": now - timedelta(seconds=120)} for _ in range(3)),
            {"created_at": now - timedelta(hours=1), "published_at": now},
            {"created_at": now - timedelta(hours=1), "failed_at": now},
            {"created_at": now - timedelta(hours=1), "due_at": now + timedelta(hours=1)},
        )
        three = samples(served.get("/metrics").text)
        add_rows(url, {}, {})
        five = samples(served.get("/metrics").text)
        time.sleep(1.5)  # the relay tried (and failed): the rows are still there
        still = samples(served.get("/metrics").text)
    backlog, age = (
        ("etrans_outbox_backlog", frozenset()),
        ("etrans_outbox_oldest_age_seconds", frozenset()),
    )
    assert (empty[backlog], empty[age]) == (0, 0)
    assert three[backlog] == 3
    assert 120 <= three[age] < 200
    assert five[backlog] == 5
    assert 120 <= five[age] < 200
    assert still[backlog] == 5
    assert still[age] > five[age]


def test_the_backlog_query_reads_the_partial_indexes_only(fresh_database: Any) -> None:
    url = fresh_database("outbox_backlog_plan")
    migrations.upgrade(url)
    db = usend_database(url, pool_size=1)
    try:
        with db.engine.begin() as conn:
            # 100,000 published rows kept for the retention, 20,000 scheduled ones over the
            # next days, 10 pending.
            conn.execute(
                text(
                    "INSERT INTO email_outbox (topic, key, payload, created_at, published_at) "
                    "SELECT 't', 'p' || n, '\\x7b7d', now(), now() "
                    "FROM generate_series(1, 100000) n"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO email_outbox (topic, key, payload, created_at, due_at) "
                    "SELECT 't', 'w' || n, '\\x7b7d', now(), now() + n * interval '20 seconds' "
                    "FROM generate_series(1, 20000) n"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO email_outbox (topic, key, payload, created_at) "
                    "SELECT 't', 'q' || n, '\\x7b7d', now() FROM generate_series(1, 10) n"
                )
            )
            conn.execute(text("ANALYZE email_outbox"))
        with db.engine.connect() as conn:
            plan = "\n".join(
                row[0]
                for row in conn.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS) {_BACKLOG.decode()}")
            )
            rows = conn.exec_driver_sql(_BACKLOG.decode()).one()
    finally:
        db.dispose()
    print(plan)
    assert rows[0] == 10
    assert "ix_email_outbox_unpublished" in plan, plan
    assert "ix_email_outbox_due_at" in plan, plan
    assert "Seq Scan" not in plan, plan
