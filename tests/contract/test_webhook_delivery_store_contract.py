"""WebhookDeliveryStore (:mod:`etrans.app.webhook_delivery_ports`): the USEND DB on PostgreSQL
and on ``etrans dev``'s SQLite file (``SqlWebhookDeliveryStore``) keep attempts, retries and
each endpoint's health alike.

What ``etrans webhooks`` relies on: every attempt is a row; a failure schedules (or replaces)
the event's retry and starts ``failing_since`` once; a success clears both; due retries are
claimed oldest first, invisible to other claimers for the lease (two concurrent claimers never
get the same row); disabling happens once and drops the endpoint's retries; a webhook deleted
meanwhile makes the write a no-op, not an error.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
import trio
from sqlalchemy import delete, insert, select

from etrans.app.webhook_delivery_ports import DeliveryAttempt, PendingRetry

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from etrans.adapters.sql import Database

AT = datetime(2026, 12, 6, 7, 0, 0, 250000, tzinfo=UTC)


class Backend:
    def __init__(self, db: Database) -> None:
        from etrans.adapters.sql.webhook_deliveries import SqlWebhookDeliveryStore

        self.db = db
        self.store = SqlWebhookDeliveryStore(db)

    def webhook(self, **fields: Any) -> int:
        from etrans.adapters.sql.usend_webhooks import Webhook

        table = Webhook.__table__
        row = {"user_id": 1_000_000 + secrets.randbelow(2**40), "url": "https://a.example/h",
               "event_types": [], "secret_sealed": "sealed", **fields}
        with self.db.engine.begin() as conn:
            return int(conn.execute(insert(table).returning(table.c.id), row).scalar_one())

    def row(self, webhook_id: int) -> Any:
        from etrans.adapters.sql.usend_webhooks import Webhook

        table = Webhook.__table__
        with self.db.engine.connect() as conn:
            return conn.execute(select(table).where(table.c.id == webhook_id)).one()

    def delete(self, webhook_id: int) -> None:
        from etrans.adapters.sql.usend_webhooks import Webhook

        table = Webhook.__table__
        with self.db.engine.begin() as conn:
            conn.execute(delete(table).where(table.c.id == webhook_id))

    def deliveries(self, webhook_id: int) -> list[Any]:
        from etrans.adapters.sql.usend_webhooks import WebhookDelivery

        table = WebhookDelivery.__table__
        with self.db.engine.connect() as conn:
            return list(conn.execute(select(table).where(table.c.webhook_id == webhook_id)
                                     .order_by(table.c.id)).all())

    def retries(self, webhook_id: int) -> list[Any]:
        from etrans.adapters.sql.usend_webhooks import WebhookRetry

        table = WebhookRetry.__table__
        with self.db.engine.connect() as conn:
            return list(conn.execute(select(table).where(table.c.webhook_id == webhook_id)
                                     .order_by(table.c.due_at)).all())


@pytest.fixture(params=["postgres", "sqlite"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    from etrans.adapters.sql import usend_database
    from etrans.dev.sqlite_db import create_schema, sqlite_database

    if request.param == "postgres":
        db = usend_database(request.getfixturevalue("usend_db_url"), pool_size=4)
    else:
        db = sqlite_database(tmp_path / "usend.sqlite3")
        create_schema(db)
    backend = Backend(db)
    yield backend
    await backend.store.aclose()
    db.dispose()


def _event_id() -> str:
    return "evt_" + secrets.token_hex(16)


def _attempt(webhook_id: int, event_id: str, attempt: int = 1, status: int | None = 500,
             error: str | None = "HTTP 500", at: datetime = AT) -> DeliveryAttempt:
    return DeliveryAttempt(webhook_id, event_id, "email.delivered", attempt, status, error, 12,
                           at)


def _retry(webhook_id: int, event_id: str, attempt: int = 1, due: datetime = AT,
           error: str | None = "HTTP 500") -> PendingRetry:
    return PendingRetry(webhook_id, event_id, b'{"id":"%s"}' % event_id.encode(), attempt, due,
                        error)


async def test_failures_then_a_success(backend: Backend) -> None:
    store, hook, event = backend.store, backend.webhook(), _event_id()
    due = AT + timedelta(seconds=5)
    assert await store.record_failed(_attempt(hook, event), _retry(hook, event, 1, due)) == AT
    later = AT + timedelta(seconds=5)
    assert await store.record_failed(
        _attempt(hook, event, 2, None, "timeout (ReadTimeout)", later),
        _retry(hook, event, 2, later + timedelta(seconds=30), "timeout")) == AT  # still since AT
    [retry] = backend.retries(hook)
    assert (retry.attempt, retry.due_at, retry.last_error, bytes(retry.event)) == (
        2, later + timedelta(seconds=30), "timeout", b'{"id":"%s"}' % event.encode())
    assert backend.row(hook).failing_since == AT
    await store.record_delivered(_attempt(hook, event, 3, 204, None, later))
    assert backend.retries(hook) == []
    assert backend.row(hook).failing_since is None
    rows = backend.deliveries(hook)
    assert [(r.attempt, r.status_code, r.error, r.latency_ms, r.event_type) for r in rows] == [
        (1, 500, "HTTP 500", 12, "email.delivered"),
        (2, None, "timeout (ReadTimeout)", 12, "email.delivered"),
        (3, 204, None, 12, "email.delivered")]
    assert rows[0].attempted_at == AT
    assert rows[0].event_id == event


async def test_giving_up_removes_the_retry(backend: Backend) -> None:
    store, hook, event = backend.store, backend.webhook(), _event_id()
    await store.record_failed(_attempt(hook, event), _retry(hook, event))
    await store.record_failed(_attempt(hook, event, 2), None)
    assert backend.retries(hook) == []
    assert len(backend.deliveries(hook)) == 2


async def test_claims_are_due_oldest_first_and_leased(backend: Backend) -> None:
    store, hook = backend.store, backend.webhook()
    now = datetime.now(UTC)
    events = [_event_id() for _ in range(4)]
    for offset, event in zip((-3, -1, -2, 60), events, strict=True):
        await store.postpone(_retry(hook, event, 0, now + timedelta(seconds=offset)))
    claimed = [r for r in await store.claim_due(now, 100, 30.0) if r.webhook_id == hook]
    assert [r.event_id for r in claimed] == [events[0], events[2], events[1]]
    assert claimed[0].event == b'{"id":"%s"}' % events[0].encode()
    assert claimed[0].attempt == 0
    assert [r for r in await store.claim_due(now, 100, 30.0) if r.webhook_id == hook] == []
    again = await store.claim_due(now + timedelta(seconds=31), 100, 30.0)
    assert {r.event_id for r in again if r.webhook_id == hook} == set(events[:3])
    await store.drop_retry(hook, events[0])
    assert len(backend.retries(hook)) == 3


async def test_concurrent_claimers_never_share_a_row(backend: Backend) -> None:
    store, hook = backend.store, backend.webhook()
    now = datetime.now(UTC) - timedelta(days=1)  # older than any other test's rows
    events = {_event_id() for _ in range(40)}
    for event in events:
        await store.postpone(_retry(hook, event, 0, now))
    got: list[list[str]] = [[], [], [], []]

    async def claim(index: int) -> None:
        for _ in range(5):
            claimed = await store.claim_due(datetime.now(UTC), 4, 300.0)
            got[index] += [r.event_id for r in claimed if r.webhook_id == hook]

    async with trio.open_nursery() as nursery:
        for index in range(4):
            nursery.start_soon(claim, index)
    everything = [e for claimed in got for e in claimed]
    assert len(everything) == len(set(everything)) == 40
    assert set(everything) == events


async def test_disabling_happens_once_and_drops_the_retries(backend: Backend) -> None:
    store, hook, event = backend.store, backend.webhook(), _event_id()
    await store.record_failed(_attempt(hook, event), _retry(hook, event))
    assert await store.disable(hook, "failing for 3.0 days") is True
    assert await store.disable(hook, "again") is False
    row = backend.row(hook)
    assert (row.enabled, row.disabled_reason) == (False, "failing for 3.0 days")
    assert backend.retries(hook) == []
    assert await store.record_failed(_attempt(hook, event, 2), None) is None  # disabled


async def test_a_deleted_webhook_is_not_an_error(backend: Backend) -> None:
    store, hook, event = backend.store, backend.webhook(), _event_id()
    backend.delete(hook)
    assert await store.record_failed(_attempt(hook, event), _retry(hook, event)) is None
    await store.record_delivered(_attempt(hook, event, 1, 200, None))
    await store.postpone(_retry(hook, event))
    assert await store.disable(hook, "gone") is False
    assert backend.retries(hook) == []
    assert backend.deliveries(hook) == []


async def test_concurrent_successes_are_grouped_and_a_deleted_webhook_fails_alone(
        backend: Backend) -> None:
    store = backend.store
    hooks = [backend.webhook() for _ in range(3)]
    gone = backend.webhook()
    backend.delete(gone)
    events = {hook: [_event_id() for _ in range(10)] for hook in [*hooks, gone]}
    for hook in hooks:  # failing, with a pending retry each
        await store.record_failed(_attempt(hook, events[hook][0]),
                                  _retry(hook, events[hook][0]))

    async with trio.open_nursery() as nursery:
        for hook, ids in events.items():
            for n, event in enumerate(ids):
                nursery.start_soon(store.record_delivered,
                                   _attempt(hook, event, 2 if n == 0 else 1, 200, None))
    for hook in hooks:
        assert len(backend.deliveries(hook)) == 11
        assert backend.row(hook).failing_since is None
        assert backend.retries(hook) == []
    assert backend.deliveries(gone) == []
