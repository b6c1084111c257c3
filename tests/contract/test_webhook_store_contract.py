"""WebhookStore (:mod:`etrans.app.webhook_ports`) on PostgreSQL and on the ``etrans dev``
SQLite file (``SqlWebhooks`` on both).

What the API's use cases rely on: an endpoint reads back as created (never with its secret);
the cap per user holds, concurrent creations included; pages newest first with the user's
total; every call is within the user's endpoints (another user's id is not found); enabling
clears the failure state; deleting takes the deliveries and retries with it; deliveries come
newest first, paged.  Unreachable: UpstreamUnavailable.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
import trio

from etrans.adapters.sql.usend_webhooks import Webhook, WebhookDelivery, WebhookRetry
from etrans.app.webhook_records import WebhookChanges
from etrans.errors import UpstreamUnavailable
from tests.contract.usend_backends import fresh_user
from tests.contract.webhook_backends import (
    postgres_webhooks,
    sqlite_webhooks,
    unreachable_webhooks,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

T0 = datetime(2026, 12, 6, 7, 0, tzinfo=UTC)


@pytest.fixture(params=["postgres", "sqlite"])
def webhooks(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    backend = (postgres_webhooks(request.getfixturevalue("usend_db_url"))
               if request.param == "postgres" else sqlite_webhooks(tmp_path / "usend.sqlite3"))
    yield backend
    backend.close()


async def _create(webhooks: Any, user: int, url: str = "https://a.example/h",
                  cap: int = 20, **fields: Any) -> Any:
    values = {"description": None, "event_types": (), "secret_sealed": "v1:x", **fields}
    return await webhooks.store.create(user, url=url, max_per_user=cap, **values)


async def test_created_reads_back_and_pages_newest_first(webhooks: Any) -> None:
    user = fresh_user()
    first = await _create(webhooks, user, "https://a.example/1", description="d",
                          event_types=("email.sent", "email.bounced"))
    assert (first.user_id, first.url, first.description, first.event_types, first.enabled,
            first.disabled_reason, first.failing_since) == (
        user, "https://a.example/1", "d", ("email.sent", "email.bounced"), True, None, None)
    assert first.created_at.tzinfo is not None
    assert await webhooks.store.get(user, first.id) == first
    second = await _create(webhooks, user, "https://a.example/2")
    rows, total = await webhooks.store.page(user, page=1, per_page=1)
    assert ([r.id for r in rows], total) == ([second.id], 2)
    rows, _ = await webhooks.store.page(user, page=2, per_page=1)
    assert [r.id for r in rows] == [first.id]
    assert await webhooks.store.page(fresh_user(), page=1, per_page=20) == ([], 0)


async def test_the_cap_holds_under_concurrent_creations(webhooks: Any) -> None:
    user = fresh_user()
    results: list[Any] = []

    async def create() -> None:
        results.append(await _create(webhooks, user, cap=3))

    async with trio.open_nursery() as nursery:
        for _ in range(6):
            nursery.start_soon(create)
    assert sum(r is not None for r in results) == 3
    assert (await webhooks.store.page(user, page=1, per_page=20))[1] == 3


async def test_another_users_endpoint_is_not_found(webhooks: Any) -> None:
    owner, other = fresh_user(), fresh_user()
    row = await _create(webhooks, owner)
    assert await webhooks.store.get(other, row.id) is None
    assert await webhooks.store.update(other, row.id, WebhookChanges(enabled=False)) is None
    assert await webhooks.store.deliveries(other, row.id, page=1, per_page=20) is None
    assert await webhooks.store.delete(other, row.id) is False
    assert (await webhooks.store.get(owner, row.id)).enabled is True


async def test_update_and_enabling_clears_the_failure_state(webhooks: Any) -> None:
    user = fresh_user()
    row = await _create(webhooks, user)
    with webhooks.db.engine.begin() as conn:
        conn.execute(Webhook.__table__.update().where(Webhook.id == row.id).values(
            enabled=False, disabled_reason="failing", failing_since=T0))
    changed = await webhooks.store.update(user, row.id, WebhookChanges(
        url="https://b.example/", event_types=("email.opened",), description="new"))
    assert (changed.url, changed.event_types, changed.description, changed.enabled,
            changed.disabled_reason, changed.failing_since) == (
        "https://b.example/", ("email.opened",), "new", False, "failing", T0)
    assert changed.updated_at >= row.updated_at
    enabled = await webhooks.store.update(user, row.id, WebhookChanges(enabled=True))
    assert (enabled.enabled, enabled.disabled_reason, enabled.failing_since) == (True, None, None)
    unchanged = await webhooks.store.update(user, row.id, WebhookChanges())
    assert unchanged.url == "https://b.example/"


async def test_deliveries_newest_first_and_deleted_with_the_endpoint(webhooks: Any) -> None:
    user = fresh_user()
    row = await _create(webhooks, user)
    webhooks.add_deliveries([
        {"webhook_id": row.id, "event_id": f"evt_{i:032x}", "event_type": "email.sent",
         "attempt": 1, "status_code": None if i == 0 else 200, "error": "timeout" if i == 0
         else None, "latency_ms": i, "attempted_at": T0 + timedelta(seconds=i)}
        for i in range(3)])
    with webhooks.db.engine.begin() as conn:
        conn.execute(WebhookRetry.__table__.insert(), {
            "webhook_id": row.id, "event_id": "evt_" + "0" * 32, "event": b"{}", "attempt": 2,
            "due_at": T0})
    attempts, total = await webhooks.store.deliveries(user, row.id, page=1, per_page=2)
    assert total == 3
    assert [(a.event_id[-1], a.status_code, a.latency_ms) for a in attempts] == [
        ("2", 200, 2), ("1", 200, 1)]
    attempts, _ = await webhooks.store.deliveries(user, row.id, page=2, per_page=2)
    assert [(a.status_code, a.error, a.attempted_at) for a in attempts] == [
        (None, "timeout", T0)]
    assert await webhooks.store.delete(user, row.id) is True
    assert await webhooks.store.get(user, row.id) is None
    assert webhooks.count(WebhookDelivery, row.id) == 0
    assert webhooks.count(WebhookRetry, row.id) == 0
    assert await webhooks.store.delete(user, row.id) is False


@pytest.mark.parametrize("name", ["postgres", "sqlite"])
async def test_a_database_that_does_not_answer_is_unavailable(name: str, tmp_path: Path
                                                               ) -> None:
    backend = unreachable_webhooks(name, tmp_path)
    try:
        with pytest.raises(UpstreamUnavailable):
            await backend.store.page(1, page=1, per_page=20)
    finally:
        backend.close()
